//! Version history, diffs between versions, rollback and the audit log.

mod common;

use common::*;
use http::Method;
use serde_json::json;

#[tokio::test]
async fn history_diff_and_rollback() {
    let cp = start().await;
    seed(&cp).await;
    let v1 = config(&cp).await;
    cp.admin(
        Method::PATCH,
        "/api/v1/upstreams/web/backends/127.0.0.1:3001",
        r#"{"weight": 9}"#,
    )
    .await;
    let r = call(
        cp.addr,
        Method::DELETE,
        "/api/v1/routes/api",
        Some(ADMIN),
        &[("x-isame-message", "api moves to its own host")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);

    let list = cp.get("/api/v1/versions").await.json();
    let versions: Vec<_> = list["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(versions, [3, 2, 1], "newest first");
    assert_eq!(list["versions"][0]["message"], "api moves to its own host");
    assert_eq!(list["versions"][0]["change_count"], 1);
    let page = cp.get("/api/v1/versions?limit=1&before=3").await.json();
    assert_eq!(page["versions"][0]["version"], 2);
    assert_eq!(page["versions"].as_array().map(Vec::len), Some(1));

    let v2 = cp.get("/api/v1/versions/2").await.json();
    assert_eq!(
        v2["changes"],
        json!([{"op": "changed", "path": "upstreams[web].backends[http://127.0.0.1:3001].weight", "old": 1, "new": 9}])
    );
    assert_eq!(v2["config"]["upstreams"][0]["backends"][0]["weight"], 9);
    assert_eq!(cp.get("/api/v1/versions/99").await.status, 404);

    // Diff between any two versions, both ways.
    let d = cp.get("/api/v1/versions/3/diff?against=1").await.json();
    assert_eq!(d["from"], 1);
    assert_eq!(d["changes"].as_array().map(Vec::len), Some(2), "{d}");
    let back = cp.get("/api/v1/versions/1/diff?against=3").await.json();
    assert_eq!(back["changes"].as_array().map(Vec::len), Some(2), "{back}");
    let first = cp.get("/api/v1/versions/1/diff").await.json();
    assert_eq!(first["from"], 0);
    assert!(first["changes"]
        .as_array()
        .is_some_and(|c| c.iter().all(|c| c["op"] == "added")));

    // Rollback: a new version with version 1's content.
    let r = cp
        .admin(
            Method::POST,
            "/api/v1/versions/1/rollback",
            r#"{"message": "undo"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["version"], 4);
    assert_eq!(config(&cp).await, v1);
    let v4 = cp.get("/api/v1/versions/4").await.json();
    assert_eq!(v4["rollback_of"], 1);
    assert_eq!(v4["message"], "undo");
    assert_eq!(
        v4["hash"],
        cp.get("/api/v1/versions/1").await.json()["hash"]
    );
    // Rolling back to what is already current changes nothing.
    let r = cp
        .admin(Method::POST, "/api/v1/versions/4/rollback", "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["created"], false);
    assert_eq!(cp.version().await, 4);
    // A stale If-Match stops a rollback too.
    let r = call(
        cp.addr,
        Method::POST,
        "/api/v1/versions/2/rollback",
        Some(ADMIN),
        &[("if-match", "\"3\"")],
        "",
    )
    .await;
    assert_eq!(r.status, 412);
    assert_eq!(
        cp.admin(Method::POST, "/api/v1/versions/77/rollback", "")
            .await
            .status,
        404
    );
    cp.stop().await;
}

#[tokio::test]
async fn audit_log_records_who_what_when_and_from_where() {
    let cp = start().await;
    seed(&cp).await;
    cp.admin(
        Method::POST,
        "/api/v1/upstreams/web/backends",
        "http://127.0.0.1:3005",
    )
    .await;
    // Refused changes are not recorded as changes.
    cp.admin(Method::PUT, "/api/v1/config", "upstreams: []")
        .await;
    let entries = cp.get("/api/v1/audit").await.json()["entries"].clone();
    let entries = entries.as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{entries:?}");
    let newest = &entries[0];
    assert_eq!(newest["actor"], "bootstrap-admin");
    assert_eq!(newest["action"], "backend.add");
    assert_eq!(newest["target"], "web/http://127.0.0.1:3005");
    assert_eq!(newest["version"], 2);
    assert!(
        newest["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{newest}"
    );
    assert!(newest["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        newest["changes"][0]["path"],
        "upstreams[web].backends[http://127.0.0.1:3005]"
    );
    assert_eq!(entries[1]["action"], "config.apply");
    let page = cp
        .get(&format!("/api/v1/audit?before={}", newest["id"]))
        .await
        .json();
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(cp.get("/api/v1/audit?limit=0").await.status, 400);
    cp.stop().await;
}

#[tokio::test]
async fn history_survives_a_restart() {
    let cp = start().await;
    seed(&cp).await;
    cp.admin(
        Method::PATCH,
        "/api/v1/upstreams/web/backends/127.0.0.1:3002",
        r#"{"weight": 3}"#,
    )
    .await;
    let before = config(&cp).await;
    let dir = cp.stop().await;
    let cp = start_in(dir, Some(ADMIN)).await;
    assert_eq!(cp.version().await, 2);
    assert_eq!(config(&cp).await, before);
    // The next version follows on.
    let r = cp
        .admin(Method::POST, "/api/v1/versions/1/rollback", "")
        .await;
    assert_eq!(r.json()["version"], 3);
    cp.stop().await;
}

#[tokio::test]
async fn nodes_ledger_is_served() {
    let cp = start().await;
    let r = cp.get("/api/v1/nodes").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["nodes"], json!([]));
    assert_eq!(cp.get("/api/v1/nodes/dp-1").await.status, 404);
    cp.stop().await;
}
