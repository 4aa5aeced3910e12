//! Traces of the `isame-control-plane` binary: with `OTEL_*` set, API calls
//! are spans that continue the caller's `traceparent`, and every snapshot
//! pushed to a data plane is a span naming the node and version, and
//! every staged rollout is a span with its version and result.
// These tests run real processes: wall-clock time is the point.
#![allow(clippy::disallowed_types)]

mod common;

use common::{base_config, call, free_addr, wait_healthy, Subscriber};
use http::Method;
use isame_testkit::otlp::Receiver;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_isame-control-plane");
const TOKEN: &str = "telemetry-test-admin-token-0123456789abcdef";
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_and_pushes_are_exported_as_spans() {
    let receiver = Receiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("dir");
    let (api, grpc) = (free_addr(), free_addr());
    let mut child = Command::new(BIN)
        .args([
            "--database-url",
            &format!("sqlite://{}", dir.path().join("isame.db").display()),
            "--api-listen",
            &api.to_string(),
            "--grpc-listen",
            &grpc.to_string(),
        ])
        .env("ISAME_ADMIN_TOKEN", TOKEN)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_SERVICE_NAME")
        // RUST_LOG chooses log lines, not which spans are exported.
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_healthy(api, &mut child).await;

    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let r = call(
        api,
        Method::PUT,
        "/api/v1/config",
        Some(TOKEN),
        &[("traceparent", traceparent.as_str())],
        base_config(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let version = r.json()["version"].to_string();

    let span = receiver
        .wait_for(Duration::from_secs(10), |s| s.trace_id == TRACE)
        .await
        .unwrap_or_else(|| panic!("no API span; got {:?}", receiver.spans()));
    assert_eq!(span.parent_span_id, CALLER_SPAN);
    assert_eq!(span.service, "isame-control-plane");
    assert_eq!(span.name, "PUT /api/v1/config");
    assert_eq!(
        span.attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("200")
    );

    let mut node = Subscriber::connect(grpc, TOKEN, "traced-node")
        .await
        .expect("subscribed");
    node.snapshot().await;
    let push = receiver
        .wait_for(Duration::from_secs(10), |s| {
            s.name == "push" && s.attributes.get("node").map(String::as_str) == Some("traced-node")
        })
        .await
        .unwrap_or_else(|| panic!("no push span; got {:?}", receiver.spans()));
    assert_eq!(push.attributes.get("version"), Some(&version));

    // A staged rollout: its canary stage matches no node and is skipped, so
    // it completes at once, as one span.
    let policy = r#"{"stages": [{"name": "canary", "selector": {"stage": "canary"}}]}"#;
    let r = call(
        api,
        Method::PUT,
        "/api/v1/rollout-policy",
        Some(TOKEN),
        &[],
        policy,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let changed = base_config().replace("service: test", "service: staged");
    assert_ne!(changed, base_config());
    let r = call(
        api,
        Method::PUT,
        "/api/v1/config",
        Some(TOKEN),
        &[],
        changed,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rolled = r.json()["version"].to_string();
    let rollout = receiver
        .wait_for(Duration::from_secs(10), |s| s.name == "rollout")
        .await
        .unwrap_or_else(|| panic!("no rollout span; got {:?}", receiver.spans()));
    assert_eq!(rollout.attributes.get("version"), Some(&rolled));
    assert_eq!(
        rollout.attributes.get("result").map(String::as_str),
        Some("completed")
    );
    let _ = child.kill();
    let _ = child.wait();
}
