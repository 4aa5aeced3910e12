//! schemathesis generates requests from `/api/v1/openapi.json` against a
//! live control plane: no input may produce a 5xx, and every answer must be
//! one the document describes. The script installs schemathesis from PyPI
//! into `target/tools/` on first use.

mod common;

use common::*;
use http::Method;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors() {
    let cp = start().await;
    seed(&cp).await;
    // Viewer and admin paths both exist; the run uses the admin token so
    // that writes reach validation.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis/run.sh");
    let base = format!("http://{}", cp.addr);
    let out =
        tokio::task::spawn_blocking(move || Command::new(script).args([&base, ADMIN]).output())
            .await
            .expect("join")
            .expect("run schemathesis (needs python3 with venv)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed"), "{stdout}");
    // The server is still healthy and the seeded config is intact or changed
    // only through valid versions.
    let r = call(cp.addr, Method::GET, "/readyz", None, &[], "").await;
    assert_eq!(r.status, 200);
    let c = config(&cp).await;
    isame_proto::Config::from_value(&c).expect("the current config is valid");
    cp.stop().await;
}
