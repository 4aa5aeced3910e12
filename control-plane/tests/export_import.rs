//! Moving a control plane from SQLite to PostgreSQL with the real binary:
//! `export` from the file, `import` into a fresh database, and a control
//! plane on it that has the same history, certificates, tokens and audit
//! log, serves the same snapshot, and refuses a second import.
#![allow(clippy::disallowed_types)]

mod common;

use common::*;
use http::Method;
use isame_control_plane::app::{ControlPlane, Options};
use isame_testkit::tls::{KeyKind, TestCa};
use serde_json::{json, Value};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_isame-control-plane");

/// What a move must keep, as the API shows it: the history, the audit log
/// (without ids, which are given anew), the config, the certificates, the
/// rollout policy and the rollouts.
async fn kept(at: std::net::SocketAddr) -> [Value; 6] {
    let get = |path: &'static str| async move {
        call(at, Method::GET, path, Some(ADMIN), &[], "")
            .await
            .json()
    };
    let mut audit = get("/api/v1/audit?limit=100").await;
    for e in audit["entries"].as_array_mut().into_iter().flatten() {
        e["id"] = Value::Null;
    }
    [
        get("/api/v1/versions?limit=100").await,
        audit,
        get("/api/v1/config").await,
        get("/api/v1/certificates").await,
        get("/api/v1/rollout-policy/history").await,
        get("/api/v1/rollouts").await,
    ]
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_moves_to_postgres_with_its_history() {
    let dir = tempfile::tempdir().expect("dir");
    let sqlite = format!("sqlite://{}", dir.path().join("isame.db").display());
    let mut options = Options::new(sqlite.clone(), "127.0.0.1:0".parse().expect("addr"));
    options.admin_token = Some(ADMIN.into());
    let cp = ControlPlane::start(options).await.expect("on sqlite");
    let at = cp.api_addr;
    let ask = |method: Method, path: &'static str, body: String| {
        call(at, method, path, Some(ADMIN), &[], body)
    };
    assert_eq!(
        ask(Method::PUT, "/api/v1/config", base_config().into())
            .await
            .status,
        200
    );
    let policy =
        r#"{"stages": [{"name": "canary", "selector": {"stage": "canary"}, "bake": "1s"}]}"#;
    let r = ask(Method::PUT, "/api/v1/rollout-policy", policy.into()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ca = TestCa::new();
    let pair = ca.issue(&["example.com"], KeyKind::Ecdsa);
    let upload = json!({"cert_pem": pair.cert_pem, "key_pem": pair.key_pem}).to_string();
    assert_eq!(
        ask(Method::PUT, "/api/v1/certificates/main", upload)
            .await
            .status,
        201
    );
    let tls = format!(
        "{}server:\n  https_port: 8443\ntls:\n  enabled: true\n  certificate: main\n",
        base_config()
    );
    assert_eq!(ask(Method::PUT, "/api/v1/config", tls).await.status, 200);
    // Staged (no node matches its stage, so it completes at once).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while call(at, Method::GET, "/api/v1/rollouts/2", Some(ADMIN), &[], "")
        .await
        .json()["state"]
        != "completed"
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout 2 never completed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = ask(Method::POST, "/api/v1/versions/1/rollback", String::new()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let before = kept(at).await;
    assert_eq!(before[4]["revisions"][0]["revision"], 1, "{}", before[4]);
    assert_eq!(
        before[5]["rollouts"].as_array().map(Vec::len),
        Some(3),
        "{}",
        before[5]
    );
    cp.shutdown().await;

    let file = dir.path().join("export.json");
    let file_arg = file.to_str().expect("path");
    let out = run(&["--database-url", &sqlite, "export", "--output", file_arg]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 3 versions"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the export holds private keys");

    let postgres = isame_testkit::postgres::shared().create_database();
    let out = run(&["--database-url", &postgres, "import", file_arg]);
    assert!(out.status.success(), "{out:?}");
    let again = run(&["--database-url", &postgres, "import", file_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds 3 config versions"),
        "{again:?}"
    );
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{\"format\": \"something else\"}").expect("write");
    let bad = run(&[
        "--database-url",
        &postgres,
        "import",
        garbage.to_str().expect("path"),
    ]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");

    // No admin token given: the imported bootstrap token is the one that works.
    let cp = ControlPlane::start(Options::new(postgres, "127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("on postgres");
    let at = cp.api_addr;
    let after = kept(at).await;
    assert_eq!(after, before);
    let r = call(
        at,
        Method::DELETE,
        "/api/v1/rollout-policy",
        Some(ADMIN),
        &[],
        "",
    )
    .await;
    assert_eq!(r.json()["revision"], 2, "{}", r.text());
    // The next version follows the history, and the resource tables match it.
    let r = call(
        at,
        Method::PATCH,
        "/api/v1/upstreams/web/backends/127.0.0.1:3001",
        Some(ADMIN),
        &[],
        "{\"weight\": 3}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 4);
    // The stored certificate's version can still be sent as committed.
    let mut node = Subscriber::connect(cp.grpc_addr, ADMIN, "edge-1")
        .await
        .expect("subscribe");
    assert_eq!(node.snapshot().await.version, 4);
    let r = call(
        at,
        Method::POST,
        "/api/v1/versions/2/rollback",
        Some(ADMIN),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let s = node.snapshot().await;
    assert_eq!(s.version, 5);
    assert_eq!(s.certificates.len(), 1);
    assert_eq!(
        s.certificates[0].key_pem, pair.key_pem,
        "the key came along"
    );
    drop(node);
    cp.shutdown().await;
}
