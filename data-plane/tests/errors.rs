//! What clients get when things go wrong: short JSON errors with the right
//! status, bad HTTP refused safely, and the connection timeouts.
// These tests time real sockets and processes: wall-clock time is the point.
#![allow(clippy::disallowed_types)]

mod common;

use common::*;
use isame_testkit::{Backend, Client, Mode};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[tokio::test]
async fn refused_backend_gives_502_json() {
    let gone = Backend::start("gone").await;
    let url = gone.url();
    drop(gone);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let proxy = start(&format!(
        "upstreams:\n  - name: web\n    backends: [\"{url}\"]\n"
    ));
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!(r.status, 502);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "backend failed", "status": 502})
    );
    assert_eq!(r.headers["content-type"], "application/json");
    stop(proxy).await;
}

#[tokio::test]
async fn hanging_backend_gives_504_after_response_timeout() {
    let b = Backend::start("slow").await;
    b.set_mode(Mode::Hang);
    let proxy = start(&format!(
        "upstreams:\n  - name: web\n    response_timeout: 300ms\n    backends: [\"{}\"]\n",
        b.url()
    ));
    let t = Instant::now();
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "backend timed out");
    assert!(t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(3));
    stop(proxy).await;
}

#[tokio::test]
async fn hanging_connect_gives_504_after_connect_timeout() {
    let hole = isame_testkit::Blackhole::start().expect("blackhole");
    let proxy = start(&format!(
        "upstreams:\n  - name: web\n    connect_timeout: 300ms\n    backends: [\"{}\"]\n",
        hole.url()
    ));
    let t = Instant::now();
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "backend timed out");
    assert!(t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(3));
    stop(proxy).await;
}

#[tokio::test]
async fn backend_closing_mid_request_gives_502_and_proxy_keeps_serving() {
    let b = Backend::start("flaky").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    b.set_mode(Mode::Close);
    assert_eq!(client.get("/").await.expect("request").status, 502);
    b.set_mode(Mode::Echo);
    assert_eq!(client.get("/").await.expect("request").status, 200);
    stop(proxy).await;
}

#[tokio::test]
async fn backend_errors_are_relayed_not_rewritten() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let r = isame_testkit::client::get(proxy.proxy_addr, "/?status=503")
        .await
        .expect("request");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["backend"],
        "b",
        "the backend's own body comes through"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn oversized_head_gets_431() {
    let b = Backend::start("b").await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "server:\n  max_header_bytes: 16384\n",
    ));
    let addr = proxy.proxy_addr;
    let big = "a".repeat(20_000);
    let raw = exchange(
        addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        raw.starts_with("HTTP/1.1 431"),
        "{}",
        &raw[..raw.len().min(200)]
    );
    // Below hyper's minimum buffer the limit is still exact.
    let small = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "server:\n  max_header_bytes: 2048\n",
    ));
    let addr = small.proxy_addr;
    let raw = tokio::task::spawn_blocking(move || {
        let big = "b".repeat(3000);
        raw_exchange(
            addr,
            format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(5),
        )
    })
    .await
    .expect("exchange");
    assert!(
        raw.starts_with("HTTP/1.1 431"),
        "{}",
        &raw[..raw.len().min(200)]
    );
    assert!(raw.contains("request header fields too large"));
    assert_eq!(b.hits(), 0);
    stop(proxy).await;
    stop(small).await;
}

#[tokio::test]
async fn malformed_requests_get_400_and_nothing_reaches_backends() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let addr = proxy.proxy_addr;
    let cases: Vec<&[u8]> = vec![
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    ];
    for req in cases {
        let raw = exchange(addr, req).await;
        assert!(
            raw.is_empty() || raw.starts_with("HTTP/1.1 400") || raw.starts_with("HTTP/1.1 505"),
            "{:?} → {raw}",
            String::from_utf8_lossy(req)
        );
    }
    assert_eq!(b.hits(), 0);
    // The proxy is unharmed.
    assert_eq!(
        isame_testkit::client::get(addr, "/")
            .await
            .expect("ok")
            .status,
        200
    );
    stop(proxy).await;
}

#[tokio::test]
async fn connect_method_is_refused() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let addr = proxy.proxy_addr;
    let raw = exchange(
        addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 405"), "{raw}");
    assert_eq!(b.hits(), 0);
    stop(proxy).await;
}

#[tokio::test]
async fn slow_headers_are_cut_off_by_read_timeout() {
    let b = Backend::start("b").await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "server:\n  read_timeout: 300ms\n",
    ));
    let addr = proxy.proxy_addr;
    let elapsed = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .expect("partial head");
        let t = Instant::now();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        (n, t.elapsed())
    })
    .await
    .expect("slow client");
    assert_eq!(elapsed.0, 0, "the connection is closed without a response");
    assert!(
        elapsed.1 >= Duration::from_millis(250) && elapsed.1 < Duration::from_secs(3),
        "{:?}",
        elapsed.1
    );
    assert_eq!(b.hits(), 0);
    stop(proxy).await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_idle_timeout() {
    let b = Backend::start("b").await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "server:\n  idle_timeout: 400ms\n  read_timeout: 5s\n",
    ));
    let addr = proxy.proxy_addr;
    let (status_line, closed_after) = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET /?bytes=2 HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("response");
        let line = String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        let t = Instant::now();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (line, t.elapsed())
    })
    .await
    .expect("client");
    assert_eq!(status_line, "HTTP/1.1 200 OK");
    assert!(
        closed_after >= Duration::from_millis(300) && closed_after < Duration::from_secs(3),
        "{closed_after:?}"
    );
    stop(proxy).await;
}
