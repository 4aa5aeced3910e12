//! Per-resource endpoints: upstreams, their backends, routes. Each write is a
//! new version with the same validation as `PUT /config`, and the store's
//! resource tables follow the newest version.

mod common;

use common::*;
use http::Method;
use serde_json::json;

#[tokio::test]
async fn upstream_crud() {
    let cp = start().await;
    seed(&cp).await;
    let list = cp.get("/api/v1/upstreams").await.json();
    assert_eq!(list["version"], 1);
    assert_eq!(list["upstreams"].as_array().map(Vec::len), Some(2));

    let new = r#"{"name": "img", "algorithm": "least_connections", "backends": ["http://127.0.0.1:5001"]}"#;
    let r = call(
        cp.addr,
        Method::POST,
        "/api/v1/upstreams",
        Some(ADMIN),
        &[("content-type", "application/json")],
        new,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["version"], 2);
    let r = call(
        cp.addr,
        Method::POST,
        "/api/v1/upstreams",
        Some(ADMIN),
        &[("content-type", "application/json")],
        new,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());

    let one = cp.get("/api/v1/upstreams/img").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["algorithm"], "least_connections");
    assert_eq!(cp.get("/api/v1/upstreams/nope").await.status, 404);

    // PUT replaces in place; the name comes from the URL.
    let r = cp
        .admin(
            Method::PUT,
            "/api/v1/upstreams/img",
            "backends: [http://127.0.0.1:5002]\n",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = config(&cp).await;
    assert_eq!(
        c["upstreams"][2]["backends"][0]["url"],
        "http://127.0.0.1:5002"
    );
    assert_eq!(c["upstreams"][2]["algorithm"], "round_robin");
    // PUT of a new name creates it.
    let r = cp
        .admin(
            Method::PUT,
            "/api/v1/upstreams/video",
            "backends: [http://127.0.0.1:6001]\n",
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // A different name in the body is refused.
    let r = cp
        .admin(
            Method::PUT,
            "/api/v1/upstreams/video",
            "name: other\nbackends: [http://127.0.0.1:6001]\n",
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["path"], "name");

    // An upstream a route uses cannot go; a free one can.
    let r = cp.admin(Method::DELETE, "/api/v1/upstreams/api", "").await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["path"], "routes[0].upstream");
    let r = cp
        .admin(Method::DELETE, "/api/v1/upstreams/video", "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        cp.admin(Method::DELETE, "/api/v1/upstreams/video", "")
            .await
            .status,
        404
    );
    assert_eq!(cp.version().await, 5);
    cp.stop().await;
}

#[tokio::test]
async fn backends_add_weight_drain_remove() {
    let cp = start().await;
    seed(&cp).await;
    let r = cp
        .admin(
            Method::POST,
            "/api/v1/upstreams/web/backends",
            "url: http://127.0.0.1:3003\nweight: 2\n",
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = cp
        .admin(
            Method::POST,
            "/api/v1/upstreams/web/backends",
            "http://127.0.0.1:3003",
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        cp.admin(
            Method::POST,
            "/api/v1/upstreams/nope/backends",
            "http://127.0.0.1:1"
        )
        .await
        .status,
        404
    );

    // By full URL (percent-encoded) or by host:port.
    let r = cp
        .admin(
            Method::PATCH,
            "/api/v1/upstreams/web/backends/http%3A%2F%2F127.0.0.1%3A3003",
            r#"{"weight": 7}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["changes"],
        json!([{"op": "changed", "path": "upstreams[web].backends[http://127.0.0.1:3003].weight", "old": 2, "new": 7}])
    );
    let r = cp
        .admin(
            Method::PATCH,
            "/api/v1/upstreams/web/backends/127.0.0.1:3001",
            r#"{"drain": true}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = config(&cp).await;
    assert_eq!(c["upstreams"][0]["backends"][0]["drain"], true);
    assert_eq!(c["upstreams"][0]["backends"][2]["weight"], 7);

    // Bad values are validation errors with their path; nothing changes.
    let r = cp
        .admin(
            Method::PATCH,
            "/api/v1/upstreams/web/backends/127.0.0.1:3001",
            r#"{"weight": 0}"#,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        r.json()["errors"][0]["path"],
        "upstreams[0].backends[0].weight"
    );
    let r = cp
        .admin(
            Method::PATCH,
            "/api/v1/upstreams/web/backends/127.0.0.1:3001",
            r#"{"url": "http://x:1"}"#,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["path"], "url");
    assert_eq!(
        cp.admin(
            Method::PATCH,
            "/api/v1/upstreams/web/backends/127.0.0.1:9",
            r#"{"weight": 2}"#
        )
        .await
        .status,
        404
    );

    let r = cp
        .admin(
            Method::DELETE,
            "/api/v1/upstreams/web/backends/127.0.0.1:3001",
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The last backend of `api` cannot go.
    let r = cp
        .admin(
            Method::DELETE,
            "/api/v1/upstreams/api/backends/127.0.0.1:4001",
            "",
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let urls: Vec<_> = config(&cp).await["upstreams"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["url"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(urls, ["http://127.0.0.1:3002", "http://127.0.0.1:3003"]);
    cp.stop().await;
}

#[tokio::test]
async fn route_crud_keeps_match_order() {
    let cp = start().await;
    seed(&cp).await;
    let r = cp
        .admin(
            Method::POST,
            "/api/v1/routes",
            "name: web\nhost: www.example.com\nupstream: web\n",
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = cp
        .admin(
            Method::POST,
            "/api/v1/routes",
            "name: bad\nupstream: nowhere\n",
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["path"], "routes[2].upstream");
    let names: Vec<_> = cp.get("/api/v1/routes").await.json()["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(names, ["api", "web"]);
    // Replacing keeps the position.
    let r = cp
        .admin(
            Method::PUT,
            "/api/v1/routes/api",
            "path_prefix: /v2\nupstream: api\n",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = cp.get("/api/v1/routes/api").await.json();
    assert_eq!(got["path_prefix"], "/v2");
    assert_eq!(config(&cp).await["routes"][0]["name"], "api");
    assert_eq!(
        cp.admin(Method::DELETE, "/api/v1/routes/web", "")
            .await
            .status,
        200
    );
    assert_eq!(cp.get("/api/v1/routes/web").await.status, 404);
    assert_eq!(
        cp.admin(Method::DELETE, "/api/v1/routes/web", "")
            .await
            .status,
        404
    );
    cp.stop().await;
}

#[tokio::test]
async fn writes_before_any_config_say_what_to_do() {
    let cp = start().await;
    let r = cp
        .admin(
            Method::POST,
            "/api/v1/upstreams",
            "name: a\nbackends: [http://127.0.0.1:1]\n",
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("PUT /api/v1/config"));
    assert_eq!(
        cp.get("/api/v1/upstreams").await.json()["upstreams"],
        json!([])
    );
    cp.stop().await;
}

#[tokio::test]
async fn resource_tables_follow_the_newest_version() {
    let cp = start().await;
    seed(&cp).await;
    cp.admin(
        Method::PATCH,
        "/api/v1/upstreams/web/backends/127.0.0.1:3002",
        r#"{"weight": 4, "drain": true}"#,
    )
    .await;
    cp.admin(Method::DELETE, "/api/v1/routes/api", "").await;
    cp.admin(
        Method::POST,
        "/api/v1/upstreams",
        "name: extra\nbackends: [http://127.0.0.1:7001]\n",
    )
    .await;
    let c = isame_proto::Config::from_value(&config(&cp).await).expect("config");
    let db = cp.db().await;
    let ups: Vec<(String, i64)> = db
        .fetch("SELECT name, position FROM upstreams ORDER BY position")
        .await;
    assert_eq!(
        ups,
        [("web".into(), 0), ("api".into(), 1), ("extra".into(), 2)]
    );
    let backends: Vec<(String, String, i64, bool)> = db
        .fetch("SELECT upstream, url, weight, drain FROM backends ORDER BY upstream, position")
        .await;
    let want: Vec<(String, String, i64, bool)> = {
        let mut v: Vec<_> = c
            .upstreams
            .iter()
            .flat_map(|u| {
                u.backends
                    .iter()
                    .map(|b| (u.name.clone(), b.url.clone(), i64::from(b.weight), b.drain))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(backends, want);
    let routes: i64 = db.one("SELECT COUNT(*) FROM routes").await;
    assert_eq!(routes, 0);
    let health: String = db
        .one("SELECT value FROM settings WHERE key = 'health'")
        .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&health).expect("json")["enabled"],
        false
    );
    db.close().await;
    cp.stop().await;
}

#[tokio::test]
async fn sql_in_stored_values_stays_text() {
    let cp = start().await;
    seed(&cp).await;
    let evil = "x'); DROP TABLE routes; --";
    let svc = base_config().replace("service: test", &format!("service: \"{evil}\""));
    let r = cp.admin(Method::PUT, "/api/v1/config", &svc).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let route =
        format!("name: evil\npath_prefix: /evil\nheaders:\n  x-q: \"{evil}\"\nupstream: web\n");
    let r = cp.admin(Method::POST, "/api/v1/routes", &route).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let c = config(&cp).await;
    assert_eq!(c["service"], evil);
    let db = cp.db().await;
    let spec: String = db.one("SELECT spec FROM routes WHERE name = 'evil'").await;
    assert!(spec.contains("DROP TABLE routes"), "{spec}");
    let service: String = db
        .one("SELECT value FROM settings WHERE key = 'service'")
        .await;
    assert_eq!(service, serde_json::Value::from(evil).to_string());
    db.close().await;
    cp.stop().await;
}
