//! Tokens and roles: 401 without a valid token, 403 for a viewer writing,
//! tokens stored hashed, open access only on loopback before any token exists.

mod common;

use common::*;
use http::Method;
use isame_control_plane::app::{self, ControlPlane, Options, StartError};
use isame_control_plane::store::Role;

#[tokio::test]
async fn tokens_and_roles() {
    let cp = start().await;
    seed(&cp).await;
    let store = cp.cp.configs.store().clone();
    let viewer = app::create_token(&store, "dashboard", Role::Viewer)
        .await
        .expect("token");

    // No token, a malformed header, an unknown token: 401 with a JSON body.
    for auth in [None, Some("Basic YWRtaW46YWRtaW4="), Some("Bearer nope")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let r = call(cp.addr, Method::GET, "/api/v1/config", None, &headers, "").await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert!(r.json()["error"].is_string());
        assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"isame\"");
    }
    // A viewer reads but does not write.
    let r = call(
        cp.addr,
        Method::GET,
        "/api/v1/config",
        Some(&viewer),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    for (method, path) in [
        (Method::PUT, "/api/v1/config"),
        (Method::POST, "/api/v1/upstreams"),
        (Method::DELETE, "/api/v1/upstreams/web"),
        (
            Method::PATCH,
            "/api/v1/upstreams/web/backends/127.0.0.1:3001",
        ),
        (Method::POST, "/api/v1/versions/1/rollback"),
    ] {
        let r = call(
            cp.addr,
            method.clone(),
            path,
            Some(&viewer),
            &[],
            base_config(),
        )
        .await;
        assert_eq!(r.status, 403, "{method} {path}");
    }
    assert_eq!(cp.version().await, 1);
    // The secret is not in the database, only its hash.
    let bytes = std::fs::read(cp.db_path()).expect("db");
    let wal = std::fs::read(cp.dir.path().join("isame.db-wal")).unwrap_or_default();
    for file in [&bytes, &wal] {
        assert!(!file.windows(viewer.len()).any(|w| w == viewer.as_bytes()));
    }
    // Versions and the audit log name the token that wrote.
    let admin2 = app::create_token(&store, "ci-pipeline", Role::Admin)
        .await
        .expect("token");
    let r = call(
        cp.addr,
        Method::DELETE,
        "/api/v1/routes/api",
        Some(&admin2),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        cp.get("/api/v1/versions/2").await.json()["author"],
        "ci-pipeline"
    );
    let audit = cp.get("/api/v1/audit").await.json();
    assert!(audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .any(|e| e["action"] == "token.create" && e["target"] == "dashboard"));
    assert!(
        app::create_token(&store, "dashboard", Role::Admin)
            .await
            .is_err(),
        "names are unique"
    );
    cp.stop().await;
}

#[tokio::test]
async fn loopback_without_tokens_is_open_until_one_exists() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = start_in(dir, None).await;
    let r = call(
        cp.addr,
        Method::PUT,
        "/api/v1/config",
        None,
        &[],
        base_config(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = call(cp.addr, Method::GET, "/api/v1/versions/1", None, &[], "").await;
    assert_eq!(v.json()["author"], "local");
    let store = cp.cp.configs.store().clone();
    app::create_token(&store, "first", Role::Admin)
        .await
        .expect("token");
    let r = call(cp.addr, Method::GET, "/api/v1/config", None, &[], "").await;
    assert_eq!(r.status, 401, "a token exists now");
    cp.stop().await;
}

#[tokio::test]
async fn refuses_an_exposed_address_without_tokens() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("isame.db").display());
    let options = Options::new(url.clone(), "0.0.0.0:0".parse().expect("addr"));
    match ControlPlane::start(options).await {
        Err(StartError::Exposed(_)) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started on 0.0.0.0 with no token"),
    }
    // With a bootstrap token it starts.
    let mut options = Options::new(url, "0.0.0.0:0".parse().expect("addr"));
    options.admin_token = Some("s3cret-admin".into());
    let cp = ControlPlane::start(options)
        .await
        .expect("starts with a token");
    cp.shutdown().await;
}
