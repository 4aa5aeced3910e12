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
    if on_postgres() {
        let db = cp.db().await;
        let rows: Vec<(String, String)> = db.fetch("SELECT name, hash FROM tokens").await;
        assert!(!rows.is_empty());
        assert!(rows
            .iter()
            .all(|(n, h)| !n.contains(&viewer) && !h.contains(&viewer)));
        db.close().await;
    } else {
        let bytes = std::fs::read(cp.db_path()).expect("db");
        let wal = std::fs::read(cp.dir.path().join("isame.db-wal")).unwrap_or_default();
        for file in [&bytes, &wal] {
            assert!(!file.windows(viewer.len()).any(|w| w == viewer.as_bytes()));
        }
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
async fn without_tokens_everything_is_refused_until_one_exists() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = start_in(dir, None).await;
    // No anonymous access, not even from loopback, and not for a browser's
    // form or text/plain post (which needs no CORS preflight).
    for ct in [
        "application/yaml",
        "text/plain",
        "application/x-www-form-urlencoded",
    ] {
        let r = call(
            cp.addr,
            Method::PUT,
            "/api/v1/config",
            None,
            &[("content-type", ct)],
            base_config(),
        )
        .await;
        assert_eq!(r.status, 401, "{ct}");
    }
    assert_eq!(
        call(cp.addr, Method::GET, "/api/v1/config", None, &[], "")
            .await
            .status,
        401
    );
    let store = cp.cp.configs.store().clone();
    let token = app::create_token(&store, "first", Role::Admin)
        .await
        .expect("token");
    let r = call(
        cp.addr,
        Method::PUT,
        "/api/v1/config",
        Some(&token),
        &[],
        base_config(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    cp.stop().await;
}

#[tokio::test]
async fn a_short_bootstrap_token_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("isame.db").display());
    for weak in ["", "   ", "admin", "0123456789abcdef0123456789abcde"] {
        let mut options = Options::new(url.clone(), "127.0.0.1:0".parse().expect("addr"));
        options.admin_token = Some(weak.into());
        match ControlPlane::start(options).await {
            Err(StartError::WeakToken) => {}
            Err(e) => panic!("{weak:?}: wrong error: {e}"),
            Ok(_) => panic!("{weak:?} was accepted"),
        }
    }
    assert!(
        !dir.path().join("isame.db").exists(),
        "refused before anything was written"
    );
    // Surrounding whitespace is not part of the token.
    let token = " 0123456789abcdef0123456789abcdef \n";
    let mut options = Options::new(url, "127.0.0.1:0".parse().expect("addr"));
    options.admin_token = Some(token.into());
    let cp = ControlPlane::start(options).await.expect("starts");
    let r = call(
        cp.api_addr,
        Method::GET,
        "/api/v1/versions",
        Some(token.trim()),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    cp.shutdown().await;
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
    options.admin_token = Some("s3cret-admin-token-0123456789abcdef0123".into());
    let cp = ControlPlane::start(options)
        .await
        .expect("starts with a token");
    cp.shutdown().await;
}
