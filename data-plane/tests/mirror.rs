//! Request mirroring on real sockets: copies reach the shadow with the
//! primary's head and body, exactly `percent` of requests are copied, and a
//! shadow that hangs or fails never slows or fails the primary.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use isame_data_plane::server::Server;
use isame_testkit::backend::Mode;
use isame_testkit::raw::{RawBackend, Reply};
use isame_testkit::{Backend, Client};
use std::time::Duration;
use tokio::time::Instant;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nshadow";

/// Upstream `web` (the primary) and `shadow`, and a route mirroring
/// `percent`% of its requests with `extra` mirror fields.
fn yaml(primary: &Backend, shadow_url: &str, percent: u32, extra: &str) -> String {
    config(
        &[
            upstream("web", "round_robin", &[(primary, 1)]),
            format!(
                "  - name: shadow\n    connect_timeout: 1s\n    response_timeout: 2s\n    backends: [\"{shadow_url}\"]\n"
            ),
        ],
        &format!(
            "routes:\n  - name: main\n    path_prefix: /\n    upstream: web\n    mirror:\n      upstream: shadow\n      percent: {percent}\n{extra}"
        ),
    )
}

async fn metrics(proxy: &Server) -> String {
    isame_testkit::client::get(proxy.admin_addr, "/metrics")
        .await
        .expect("metrics")
        .text()
}

fn mirrored(text: &str, result: &str) -> u64 {
    let series = format!("isame_lb_mirror_requests_total{{result=\"{result}\",route=\"main\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls until the mirror counted `want` requests with `result`.
async fn counted(proxy: &Server, result: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(proxy).await;
        let n = mirrored(&text, result);
        if n == want {
            return;
        }
        assert!(
            n < want && Instant::now() < deadline,
            "{result}: {n}, not {want}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn copies_carry_the_primarys_head_and_body() {
    let primary = Backend::start("primary").await;
    let shadow = RawBackend::start(|_| Reply::Send(OK.to_vec())).await;
    let proxy = start(&yaml(&primary, &shadow.url(), 100, ""));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let r = c.get("/search?q=1").await.expect("response");
    assert_eq!(
        (r.status.as_u16(), backend_of(&r).as_str()),
        (200, "primary")
    );
    let r = c
        .send(
            Request::post("/orders")
                .header("x-trace", "abc")
                .body(Full::new(Bytes::from_static(b"{\"order\":42}")))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 12, "the primary got the whole body");
    counted(&proxy, "answered", 2).await;

    let seen = shadow.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[0].head.starts_with("GET /search?q=1 HTTP/1.1"),
        "{}",
        seen[0].head
    );
    assert!(
        seen[1].head.starts_with("POST /orders HTTP/1.1"),
        "{}",
        seen[1].head
    );
    assert_eq!(seen[1].body, b"{\"order\":42}");
    assert_eq!(seen[1].header("x-trace").as_deref(), Some("abc"));
    assert_eq!(
        seen[1].header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(primary.hits(), 2, "the primary served each request once");
    // The shadow's answers count as that upstream's traffic.
    let text = metrics(&proxy).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("isame_lb_requests_total{")
                && l.contains("upstream=\"shadow\"")
                && l.contains("status=\"200\"")),
        "{text}"
    );
    let s = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(s["routes"][0]["mirror"]["upstream"], "shadow", "{s}");
    stop(proxy).await;
}

#[tokio::test]
async fn exactly_percent_of_requests_are_copied() {
    let (primary, shadow) = (
        Backend::start("primary").await,
        Backend::start("shadow").await,
    );
    let proxy = start(&yaml(&primary, &shadow.url(), 30, ""));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..200 {
        assert_eq!(c.get("/").await.expect("response").status, 200);
    }
    counted(&proxy, "answered", 60).await;
    assert_eq!(shadow.hits(), 60);
    assert_eq!(primary.hits(), 200);
    stop(proxy).await;
}

#[tokio::test]
async fn a_hanging_shadow_neither_slows_the_primary_nor_piles_up() {
    let primary = Backend::start("primary").await;
    let shadow = Backend::start("shadow").await;
    shadow.set_mode(Mode::Hang);
    let proxy = start(&yaml(
        &primary,
        &shadow.url(),
        100,
        "      max_in_flight: 4\n",
    ));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let began = Instant::now();
    for _ in 0..50 {
        let r = c.get("/").await.expect("response");
        assert_eq!(
            (r.status.as_u16(), backend_of(&r).as_str()),
            (200, "primary")
        );
    }
    let took = began.elapsed();
    // The shadow holds each copy for its 2s response_timeout: a primary
    // that waited for it would take at least that.
    assert!(
        took < Duration::from_millis(1500),
        "50 requests took {took:?}"
    );
    let text = metrics(&proxy).await;
    assert_eq!(
        mirrored(&text, "dropped"),
        46,
        "only 4 copies in flight: {text}"
    );
    assert!(
        shadow.open_connections() <= 4,
        "{}",
        shadow.open_connections()
    );
    // The four copies give up after the shadow's timeouts, and count as failed.
    counted(&proxy, "failed", 4).await;
    // Their slots came back: new copies go out again.
    shadow.set_mode(Mode::Echo);
    for _ in 0..3 {
        assert_eq!(c.get("/").await.expect("response").status, 200);
    }
    counted(&proxy, "answered", 3).await;
    stop(proxy).await;
}

#[tokio::test]
async fn a_failing_shadow_only_shows_in_metrics() {
    let primary = Backend::start("primary").await;
    let gone = Backend::start("gone").await;
    let gone_url = gone.url();
    drop(gone);
    let proxy = start(&yaml(&primary, &gone_url, 100, ""));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..10 {
        assert_eq!(c.get("/").await.expect("response").status, 200);
    }
    counted(&proxy, "failed", 10).await;
    // A shadow that answers 500 answered: its status is its own metric.
    let shadow = Backend::start("shadow").await;
    shadow.set_mode(Mode::Status(500));
    stop(proxy).await;
    let proxy = start(&yaml(&primary, &shadow.url(), 100, ""));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..5 {
        assert_eq!(c.get("/").await.expect("response").status, 200);
    }
    counted(&proxy, "answered", 5).await;
    stop(proxy).await;
}

#[tokio::test]
async fn large_and_unsized_bodies_go_to_the_primary_only() {
    let primary = Backend::start("primary").await;
    let shadow = Backend::start("shadow").await;
    let proxy = start(&yaml(
        &primary,
        &shadow.url(),
        100,
        "      max_body_bytes: 1000\n",
    ));
    let big = vec![b'x'; 5000];
    let r = Client::http1(proxy.proxy_addr)
        .await
        .expect("connect")
        .send(
            Request::post("/upload")
                .body(Full::new(Bytes::from(big)))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(
        (r.status.as_u16(), r.json()["body_len"].as_u64()),
        (200, Some(5000))
    );
    // A chunked body: its length is unknown until it ends.
    let reply = exchange(
        proxy.proxy_addr,
        "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"body_len\":5"), "{reply}");
    counted(&proxy, "skipped", 2).await;
    assert_eq!(shadow.hits(), 0);
    stop(proxy).await;
}

#[tokio::test]
async fn the_in_flight_limit_holds_across_a_reload() {
    let primary = Backend::start("primary").await;
    let shadow = Backend::start("shadow").await;
    shadow.set_mode(Mode::Hang);
    let limit = "      max_in_flight: 2\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("isame.yaml");
    std::fs::write(&path, yaml(&primary, &shadow.url(), 100, limit)).expect("write");
    let proxy = start_with(
        &yaml(&primary, &shadow.url(), 100, limit),
        Some(path.clone()),
        2,
    );
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..2 {
        assert_eq!(c.get("/").await.expect("response").status, 200);
    }
    // Another config, the same limit: the two copies still hold their slots.
    let changed = yaml(
        &primary,
        &shadow.url(),
        100,
        &format!("{limit}      max_body_bytes: 100\n"),
    );
    std::fs::write(&path, changed).expect("write");
    proxy.reload().await.expect("reload");
    for _ in 0..3 {
        assert_eq!(c.get("/").await.expect("response").status, 200);
    }
    assert_eq!(mirrored(&metrics(&proxy).await, "dropped"), 3);
    stop(proxy).await;
}
