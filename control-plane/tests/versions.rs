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

#[tokio::test]
async fn resource_writes_honour_if_match_and_carry_messages() {
    let cp = start().await;
    seed(&cp).await;
    let patch = "/api/v1/upstreams/web/backends/127.0.0.1:3001";
    let r = call(
        cp.addr,
        Method::PATCH,
        patch,
        Some(ADMIN),
        &[("if-match", "\"9\"")],
        r#"{"weight": 2}"#,
    )
    .await;
    assert_eq!(r.status, 412, "{}", r.text());
    // A weak tag never matches (If-Match compares strongly).
    let r = call(
        cp.addr,
        Method::PATCH,
        patch,
        Some(ADMIN),
        &[("if-match", "W/\"1\"")],
        r#"{"weight": 2}"#,
    )
    .await;
    assert_eq!(r.status, 412, "{}", r.text());
    let r = call(
        cp.addr,
        Method::PATCH,
        patch,
        Some(ADMIN),
        &[
            ("if-match", "\"1\""),
            ("x-isame-message", "caf%C3%A9 au lait"),
        ],
        r#"{"weight": 2}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        cp.get("/api/v1/versions/2").await.json()["message"],
        "café au lait"
    );
    let r = cp
        .admin(
            Method::DELETE,
            "/api/v1/routes/api?message=api%20moves%20out",
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        cp.get("/api/v1/versions/3").await.json()["message"],
        "api moves out"
    );
    let audit = cp.get("/api/v1/audit?limit=1").await.json();
    assert_eq!(audit["entries"][0]["message"], "api moves out");
    cp.stop().await;
}

#[tokio::test]
async fn two_writers_on_one_database_never_overwrite_each_other() {
    // Two control planes on one database that do not follow each other's
    // commits: b stays behind until a write tells it.
    let a = start_with(tempfile::tempdir().expect("dir"), Some(ADMIN), |o| {
        o.replica.follow = false;
    })
    .await;
    seed(&a).await;
    let mut options =
        isame_control_plane::app::Options::new(a.db_url(), "127.0.0.1:0".parse().expect("addr"));
    options.admin_token = Some(ADMIN.into());
    options.replica.follow = false;
    let b = isame_control_plane::app::ControlPlane::start(options)
        .await
        .expect("second");
    let b_addr = b.api_addr;
    let patch = |addr, weight: u32| async move {
        call(
            addr,
            Method::PATCH,
            "/api/v1/upstreams/web/backends/127.0.0.1:3001",
            Some(ADMIN),
            &[],
            format!("{{\"weight\": {weight}}}"),
        )
        .await
    };
    assert_eq!(patch(a.addr, 2).await.status, 200, "a makes version 2");
    // b still believes version 1 is the newest; its commit of "version 2"
    // must fail rather than replace a's, and b catches up.
    let r = patch(b_addr, 3).await;
    assert_eq!(r.status, 412, "{}", r.text());
    assert_eq!(r.json()["current_version"], 2);
    let r = call(b_addr, Method::GET, "/api/v1/config", Some(ADMIN), &[], "").await;
    assert_eq!(r.headers["etag"], "\"2\"");
    assert_eq!(r.json()["upstreams"][0]["backends"][0]["weight"], 2);
    let r = patch(b_addr, 3).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 3);
    b.shutdown().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_mid_write_never_wedge_the_store() {
    use tokio::io::AsyncWriteExt;
    let cp = start().await;
    // A config big enough that a commit takes a while, so that hang-ups
    // land while it is in flight.
    let mut big = String::from("upstreams:\n");
    for u in 0..400 {
        big.push_str(&format!(
            "  - name: u{u}\n    backends: [http://10.1.{}.{}:80, http://10.2.{}.{}:80]\n",
            u / 200,
            u % 200,
            u / 200,
            u % 200
        ));
    }
    big.push_str("  - name: web\n    backends: [http://127.0.0.1:3001]\n");
    let r = cp.admin(Method::PUT, "/api/v1/config", &big).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for i in 0..40u32 {
        let body = format!("{{\"weight\": {}}}", 2 + i);
        let req = format!(
            "PATCH /api/v1/upstreams/web/backends/127.0.0.1:3001 HTTP/1.1\r\nhost: x\r\n\
             authorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut s = tokio::net::TcpStream::connect(cp.addr)
            .await
            .expect("connect");
        s.write_all(req.as_bytes()).await.expect("write");
        // Hang up at a different moment each time, mostly before the answer.
        if i % 4 != 0 {
            tokio::time::sleep(std::time::Duration::from_micros(u64::from(i) * 400)).await;
        }
        drop(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Whatever was committed is what is served, and the next write follows on.
    let newest = cp.version().await;
    let r = cp.get("/api/v1/config").await;
    assert_eq!(r.headers["etag"], format!("\"{newest}\"").as_str());
    let stored = cp.get(&format!("/api/v1/versions/{newest}")).await.json();
    assert_eq!(r.json(), stored["config"]);
    let tag = format!("\"{newest}\"");
    let r = call(
        cp.addr,
        Method::PATCH,
        "/api/v1/upstreams/web/backends/127.0.0.1:3001",
        Some(ADMIN),
        &[("if-match", tag.as_str())],
        r#"{"weight": 999}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], newest + 1);
    cp.stop().await;
}

#[tokio::test]
async fn stored_versions_cannot_be_altered() {
    let cp = start().await;
    seed(&cp).await;
    let db = cp.db().await;
    let update = db
        .execute("UPDATE config_versions SET message = 'rewritten'")
        .await;
    assert!(update.is_err(), "UPDATE must be refused");
    let delete = db.execute("DELETE FROM config_versions").await;
    assert!(delete.is_err(), "DELETE must be refused");
    if common::on_postgres() {
        let truncate = db.execute("TRUNCATE config_versions CASCADE").await;
        assert!(truncate.is_err(), "TRUNCATE must be refused");
    }
    db.close().await;
    assert_eq!(cp.get("/api/v1/versions/1").await.json()["message"], "");
    cp.stop().await;
}
