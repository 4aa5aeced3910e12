//! `GET /config` and `PUT /config`: versions, ETags, no-op applies, dry
//! runs, `If-Match`, validation.

mod common;

use common::*;
use http::Method;

#[tokio::test]
async fn apply_then_read_back_as_json_and_yaml() {
    let cp = start().await;
    let r = cp.get("/api/v1/config").await;
    assert_eq!(r.status, 404, "nothing applied yet");
    assert!(r.json()["error"].is_string());

    let r = call(
        cp.addr,
        Method::PUT,
        "/api/v1/config",
        Some(ADMIN),
        &[
            ("content-type", "application/yaml"),
            ("x-isame-message", "first"),
        ],
        base_config(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["version"], 1);
    assert_eq!(body["created"], true);
    assert!(body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .any(|c| c["op"] == "added" && c["path"] == "upstreams[web]"));
    assert_eq!(r.headers["etag"], "\"1\"");

    let json = cp.get("/api/v1/config").await;
    assert_eq!(json.headers["etag"], "\"1\"");
    assert_eq!(json.headers["content-type"], "application/json");
    let c = json.json();
    assert_eq!(c["upstreams"][0]["name"], "web");
    assert_eq!(c["health"]["enabled"], false);
    assert_eq!(c["retry"]["max_attempts"], 3, "defaults are written out");

    let yaml = call(
        cp.addr,
        Method::GET,
        "/api/v1/config",
        Some(ADMIN),
        &[("accept", "application/yaml")],
        "",
    )
    .await;
    assert_eq!(yaml.headers["content-type"], "application/yaml");
    let back = isame_proto::Config::from_yaml(&yaml.text()).expect("YAML reads back");
    assert_eq!(
        back,
        isame_proto::Config::from_value(&c).expect("JSON reads back")
    );

    // The version remembers who and why.
    let v = cp.get("/api/v1/versions/1").await.json();
    assert_eq!(v["author"], "bootstrap-admin");
    assert_eq!(v["message"], "first");
    assert_eq!(v["config"], c);

    // If-None-Match with the current version: 304.
    let r = call(
        cp.addr,
        Method::GET,
        "/api/v1/config",
        Some(ADMIN),
        &[("if-none-match", "\"1\"")],
        "",
    )
    .await;
    assert_eq!(r.status, 304);
    cp.stop().await;
}

#[tokio::test]
async fn json_bodies_are_read_by_content_type() {
    let cp = start().await;
    let json = serde_json::json!({
        "upstreams": [{"name": "web", "backends": [{"url": "http://127.0.0.1:3001", "weight": 2}]}]
    });
    let r = call(
        cp.addr,
        Method::PUT,
        "/api/v1/config",
        Some(ADMIN),
        &[("content-type", "application/json")],
        json.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        config(&cp).await["upstreams"][0]["backends"][0]["weight"],
        2
    );
    cp.stop().await;
}

#[tokio::test]
async fn identical_apply_creates_no_version() {
    let cp = start().await;
    seed(&cp).await;
    let audit = cp.audit_len().await;
    // The same content written differently (defaults spelled out, other order).
    let same = format!("{}retry:\n  max_attempts: 3\n", base_config());
    let r = cp.admin(Method::PUT, "/api/v1/config", &same).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["version"], 1);
    assert_eq!(body["created"], false);
    assert_eq!(body["changes"], serde_json::json!([]));
    assert_eq!(cp.version().await, 1);
    assert_eq!(
        cp.audit_len().await,
        audit,
        "a no-op is not audited as a change"
    );
    cp.stop().await;
}

#[tokio::test]
async fn dry_run_returns_the_diff_and_writes_nothing() {
    let cp = start().await;
    seed(&cp).await;
    let audit = cp.audit_len().await;
    let changed = base_config().replace("http://127.0.0.1:3002", "http://127.0.0.1:3009");
    let r = cp
        .admin(Method::PUT, "/api/v1/config?dry_run=true", &changed)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["dry_run"], true);
    assert_eq!(body["created"], false);
    assert_eq!(body["version"], 1);
    let paths: Vec<_> = body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["op"].as_str().unwrap_or("").to_owned(),
                c["path"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        paths.contains(&(
            "added".into(),
            "upstreams[web].backends[http://127.0.0.1:3009]".into()
        )),
        "{paths:?}"
    );
    assert!(
        paths.contains(&(
            "removed".into(),
            "upstreams[web].backends[http://127.0.0.1:3002]".into()
        )),
        "{paths:?}"
    );
    assert_eq!(cp.version().await, 1);
    assert_eq!(cp.audit_len().await, audit);
    let c = config(&cp).await;
    assert_eq!(
        c["upstreams"][0]["backends"][1]["url"],
        "http://127.0.0.1:3002"
    );
    // An invalid dry run is still a 422.
    let r = cp
        .admin(
            Method::PUT,
            "/api/v1/config?dry_run=true",
            "upstreams: []\n",
        )
        .await;
    assert_eq!(r.status, 422);
    cp.stop().await;
}

#[tokio::test]
async fn if_match_guards_against_lost_updates() {
    let cp = start().await;
    seed(&cp).await;
    let edit = |port: u16| base_config().replace("3002", &port.to_string());
    let put = |tag: &'static str, body: String| {
        let addr = cp.addr;
        async move {
            call(
                addr,
                Method::PUT,
                "/api/v1/config",
                Some(ADMIN),
                &[("if-match", tag)],
                body,
            )
            .await
        }
    };
    let r = put("\"7\"", edit(3003)).await;
    assert_eq!(r.status, 412, "{}", r.text());
    assert_eq!(r.json()["current_version"], 1);
    let r = put("\"1\"", edit(3003)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    // Two writers that both read version 2: exactly one wins.
    let (a, b) = tokio::join!(put("\"2\"", edit(3004)), put("\"2\"", edit(3005)));
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 412], "{} / {}", a.text(), b.text());
    assert_eq!(cp.version().await, 3);
    let r = put("*", edit(3006)).await;
    assert_eq!(r.status, 200);
    let r = put("not-a-version", edit(3007)).await;
    assert_eq!(r.status, 400);
    cp.stop().await;
}

#[tokio::test]
async fn invalid_config_lists_every_problem_and_changes_nothing() {
    let cp = start().await;
    seed(&cp).await;
    let bad = "\
upstreams:
  - name: web
    algorithm: fastest
    backends:
      - url: ftp://x
        weight: 0
routes:
  - name: r
    upstream: nowhere
retry:
  max_attempts: lots
";
    let r = cp.admin(Method::PUT, "/api/v1/config", bad).await;
    assert_eq!(r.status, 422, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "invalid config");
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["path"].as_str().unwrap_or(""))
        .collect();
    for want in [
        "upstreams[0].algorithm",
        "upstreams[0].backends[0].url",
        "upstreams[0].backends[0].weight",
        "routes[0].upstream",
        "retry.max_attempts",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    assert_eq!(cp.version().await, 1);
    assert_eq!(config(&cp).await["upstreams"][1]["name"], "api");
    cp.stop().await;
}

#[tokio::test]
async fn metrics_and_probes_answer_without_a_token() {
    let cp = start().await;
    seed(&cp).await;
    for path in ["/healthz", "/readyz"] {
        let r = call(cp.addr, Method::GET, path, None, &[], "").await;
        assert_eq!(r.status, 200, "{path}");
    }
    let brew = Method::from_bytes(b"BREW").expect("method");
    let r = call(cp.addr, brew, "/api/v1/config", Some(ADMIN), &[], "").await;
    assert_eq!(r.status, 405);
    let m = call(cp.addr, Method::GET, "/metrics", None, &[], "")
        .await
        .text();
    assert!(m.contains("isame_cp_config_version 1"), "{m}");
    assert!(m.contains("isame_cp_connected_nodes 0"), "{m}");
    assert!(m.contains("isame_cp_push_seconds_bucket"), "{m}");
    assert!(
        m.contains(r#"method="OTHER""#),
        "unknown methods share one label: {m}"
    );
    assert!(!m.contains("BREW"), "{m}");
    assert!(
        m.contains(
            r#"isame_cp_api_requests_total{method="PUT",route="/api/v1/config",status="200"} 1"#
        ),
        "{m}"
    );
    cp.stop().await;
}

#[tokio::test]
async fn readyz_fails_when_the_database_does_not_answer() {
    let cp = start().await;
    assert_eq!(
        call(cp.addr, Method::GET, "/readyz", None, &[], "")
            .await
            .status,
        200
    );
    cp.cp.configs.store().close().await;
    let r = call(cp.addr, Method::GET, "/readyz", None, &[], "").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "not ready");
    // The API says so too, as a 503 rather than a 500.
    let r = cp.get("/api/v1/versions").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        call(cp.addr, Method::GET, "/healthz", None, &[], "")
            .await
            .status,
        200
    );
    cp.stop().await;
}
