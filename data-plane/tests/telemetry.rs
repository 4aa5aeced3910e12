//! Traces and access logs of the `isame-lb` binary: with `OTEL_*` set, each
//! proxied request is a span exported over OTLP/gRPC to a real receiver,
//! child of the client's `traceparent` and parent of what the backend sees;
//! every request has one access-log line carrying the trace id; both can be
//! turned off.
// These tests run real processes: wall-clock time is the point.
#![allow(clippy::disallowed_types)]

use isame_testkit::otlp::Receiver;
use isame_testkit::{Backend, Client};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::binary::spawn;
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// The next access-log line, within a few seconds.
fn access_line(logs: &mpsc::Receiver<String>) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = logs
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["target"] == "isame::access" {
            return Some(v);
        }
    }
}

fn config(dir: &tempfile::TempDir, backend: &Backend) -> std::path::PathBuf {
    let path = dir.path().join("isame.yaml");
    std::fs::write(
        &path,
        format!(
            "upstreams:\n  - name: web\n    backends: [{}]\nroutes:\n  - name: site\n    path_prefix: /\n    upstream: web\nhealth:\n  enabled: false\n",
            backend.url()
        ),
    )
    .expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_spans_that_continue_and_pass_on_the_trace() {
    let receiver = Receiver::start().await.expect("receiver");
    let backend = Backend::start("b").await;
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(&dir, &backend);
    let endpoint = receiver.endpoint();
    let mut lb = spawn(
        &cfg,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "edge-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        &[],
    );

    let req = http::Request::get("/shop/cart?x=1")
        .header("host", "shop.test")
        .header("traceparent", format!("00-{TRACE}-{CLIENT_SPAN}-01"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let r = Client::http1(lb.proxy)
        .await
        .expect("connect")
        .send(req)
        .await
        .expect("reply");
    assert_eq!(r.status, 200);
    // The backend is told the trace continues, with the proxy's span as parent.
    let seen = r.json()["headers"]["traceparent"]
        .as_str()
        .expect("traceparent passed on")
        .to_owned();
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{seen}");
    assert_eq!(parts[1], TRACE, "same trace");
    assert_ne!(parts[2], CLIENT_SPAN, "the proxy's own span is the parent");
    let proxy_span = parts[2].to_owned();

    let span = receiver
        .wait_for(Duration::from_secs(10), |s| s.span_id == proxy_span)
        .await
        .unwrap_or_else(|| panic!("span not exported; got {:?}", receiver.spans()));
    assert_eq!(span.trace_id, TRACE);
    assert_eq!(
        span.parent_span_id, CLIENT_SPAN,
        "child of the client's span"
    );
    assert_eq!(span.service, "edge-test");
    assert_eq!(span.name, "GET");
    let a = &span.attributes;
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/shop/cart"),
        ("isame.route", "site"),
        ("isame.upstream", "web"),
        ("isame.backend", backend.url().as_str()),
        ("isame.retries", "0"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(
            a.get(key).map(String::as_str),
            Some(value),
            "{key} in {a:?}"
        );
    }
    assert!(
        a.get("http.response.body.size")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 0),
        "{a:?}"
    );

    // The access-log line carries the same trace id.
    let line = access_line(&lb.logs).expect("an access-log line");
    let f = &line["fields"];
    assert_eq!(f["trace_id"], TRACE, "{line}");
    assert_eq!(f["status"], 200, "{line}");
    assert_eq!(f["method"], "GET");
    assert_eq!(f["target"], "/shop/cart?x=1");
    assert_eq!(f["host"], "shop.test");
    assert_eq!(f["upstream"], "web");

    // A request without a traceparent starts a trace of its own.
    let r = Client::http1(lb.proxy)
        .await
        .expect("connect")
        .get("/")
        .await
        .expect("reply");
    let fresh = r.json()["headers"]["traceparent"]
        .as_str()
        .expect("a new trace is passed on")
        .to_owned();
    let fresh_trace = fresh.split('-').nth(1).expect("trace id").to_owned();
    assert_ne!(fresh_trace, TRACE);
    let root = receiver
        .wait_for(Duration::from_secs(10), |s| s.trace_id == fresh_trace)
        .await
        .expect("root span exported");
    assert_eq!(root.parent_span_id, "", "a root span");
    let _ = lb.child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_otel_settings_headers_pass_untouched_and_the_access_log_can_be_off() {
    let backend = Backend::start("b").await;
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(&dir, &backend);
    let incoming = format!("00-{TRACE}-{CLIENT_SPAN}-01");
    for access_log in ["on", "off"] {
        let lb = spawn(&cfg, &[], &["--access-log", access_log]);
        let req = http::Request::get("/")
            .header("traceparent", incoming.as_str())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let r = Client::http1(lb.proxy)
            .await
            .expect("connect")
            .send(req)
            .await
            .expect("reply");
        assert_eq!(r.status, 200);
        // No tracing here: the client's trace context goes through unchanged.
        assert_eq!(r.json()["headers"]["traceparent"], incoming.as_str());
        let line = access_line(&lb.logs);
        match access_log {
            "on" => {
                let line = line.expect("an access-log line");
                assert_eq!(line["fields"]["trace_id"], TRACE, "{line}");
                assert_eq!(line["fields"]["backend"], backend.url().as_str());
            }
            _ => assert!(line.is_none(), "logged with --access-log off: {line:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_line_is_written_even_when_the_proxy_stops_at_once() {
    let backend = Backend::start("b").await;
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(&dir, &backend);
    let mut lb = spawn(&cfg, &[], &[]);
    let mut client = Client::http1(lb.proxy).await.expect("connect");
    for i in 0..50 {
        let r = client.get(&format!("/n/{i}")).await.expect("reply");
        assert_eq!(r.status, 200);
    }
    drop(client);
    // Stopped before the periodic hand-over: the lines still come out.
    let ok = Command::new("kill")
        .args(["-TERM", &lb.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    let status = lb.child.wait().expect("exit");
    assert!(status.success(), "{status}");
    let mut seen = std::collections::BTreeSet::new();
    while let Some(line) = access_line(&lb.logs) {
        seen.insert(line["fields"]["target"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(seen.len(), 50, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_settings_this_build_cannot_follow_leave_the_proxy_serving() {
    let backend = Backend::start("b").await;
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(&dir, &backend);
    let lb = spawn(
        &cfg,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
        &["--access-log", "off"],
    );
    let r = Client::http1(lb.proxy)
        .await
        .expect("connect")
        .get("/")
        .await
        .expect("reply");
    assert_eq!(r.status, 200);
    // Not traced: the request's headers gain no traceparent.
    assert!(r.json()["headers"]["traceparent"].is_null(), "{}", r.text());
    let warning = lb
        .startup
        .iter()
        .find(|l| l.contains("traces are not exported"))
        .unwrap_or_else(|| panic!("no warning saying why traces are off: {:#?}", lb.startup));
    assert!(warning.contains("http/protobuf"), "{warning}");
}
