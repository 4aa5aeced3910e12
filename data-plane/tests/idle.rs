//! Idle HTTP/1.1 client connections: parked between requests (holding no
//! buffers) without the client noticing, never when the last request must
//! not be followed by another, and closed by the idle timeout and at
//! shutdown like any other.
// These tests wait on real sockets: wall-clock time is the point.
#![allow(clippy::disallowed_types)]

mod common;

use common::*;
use isame_testkit::Backend;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `isame_lb_parked_connections` as `/status` shows it.
async fn parked(admin: SocketAddr) -> i64 {
    isame_testkit::client::get(admin, "/status")
        .await
        .expect("status")
        .json()["parked_connections"]
        .as_i64()
        .unwrap_or(-1)
}

/// Waits until `parked` is `n`.
async fn parked_becomes(admin: SocketAddr, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = parked(admin).await;
        if now == n {
            return;
        }
        assert!(Instant::now() < deadline, "parked stays {now}, not {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one response with a `Content-Length` body; returns its head and body.
async fn response(s: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                return (head, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// True when the server closes `s` within `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn an_idle_connection_is_parked_and_serves_its_next_request() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let mut s = TcpStream::connect(proxy.proxy_addr).await.expect("connect");
    for round in 0..3 {
        s.write_all(format!("GET /r{round} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let (head, body) = response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert!(body.contains(&format!("\"path\":\"/r{round}\"")), "{body}");
        parked_becomes(proxy.admin_addr, 1).await;
    }
    // A request and the first half of the next one, pipelined: the half is
    // kept (it is the start of a request, so the connection is not parked
    // again until that request is done) and the rest completes it.
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHo")
        .await
        .expect("write");
    let (_, body) = response(&mut s).await;
    assert!(body.contains("\"path\":\"/a\""), "{body}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        parked(proxy.admin_addr).await,
        0,
        "half a request is not idle"
    );
    s.write_all(b"st: x\r\n\r\n").await.expect("write");
    let (head, body) = response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("\"path\":\"/b\""), "{body}");
    assert_eq!(b.hits(), 5);
    parked_becomes(proxy.admin_addr, 1).await;
    drop(s);
    parked_becomes(proxy.admin_addr, 0).await;
    stop(proxy).await;
}

#[tokio::test]
async fn connections_that_must_close_are_never_parked() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    // The client asks for the connection to close.
    let mut s = TcpStream::connect(proxy.proxy_addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        closed_within(&mut s, Duration::from_secs(3)).await,
        "closed after the answer"
    );
    // HTTP/1.0 without keep-alive.
    let mut s = TcpStream::connect(proxy.proxy_addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = response(&mut s).await;
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        closed_within(&mut s, Duration::from_secs(3)).await,
        "closed after the answer"
    );
    // A body left unread (no route takes it): hyper decides, the proxy
    // does not park the connection with bytes of the body still unread.
    let proxy2 = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "routes:\n  - name: only\n    path_prefix: /only\n    upstream: web\n",
    ));
    let mut s = TcpStream::connect(proxy2.proxy_addr)
        .await
        .expect("connect");
    s.write_all(b"POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        .await
        .expect("write");
    let (head, _) = response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        parked(proxy2.admin_addr).await,
        0,
        "not parked with a body half read"
    );
    // Whatever hyper did with the rest, a following request is never read
    // out of the unread body.
    let _ = s
        .write_all(b"67890GET /only HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("400"), "{rest}");
    stop(proxy).await;
    stop(proxy2).await;
}

#[tokio::test]
async fn parked_connections_still_time_out_and_end_at_shutdown() {
    let b = Backend::start("b").await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "server:\n  idle_timeout: 2500ms\n  shutdown_timeout: 30s\n",
    ));
    let mut s = TcpStream::connect(proxy.proxy_addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    response(&mut s).await;
    parked_becomes(proxy.admin_addr, 1).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(4)).await,
        "the idle timeout applies"
    );
    parked_becomes(proxy.admin_addr, 0).await;
    // A parked connection does not hold up shutdown for its grace period.
    let mut s = TcpStream::connect(proxy.proxy_addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    response(&mut s).await;
    parked_becomes(proxy.admin_addr, 1).await;
    let started = Instant::now();
    stop(proxy).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(closed_within(&mut s, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn parked_tls_connections_carry_on_without_a_new_handshake() {
    let b = Backend::start("b").await;
    let (proxy, ca, _dir) = start_tls(&b);
    let https = proxy.https_addr.expect("https");
    let (mut c, _) =
        isame_testkit::Client::https(https, "localhost", ca.client_config(&[b"http/1.1"]))
            .await
            .expect("connect");
    for _ in 0..3 {
        let r = c.get("/").await.expect("the same TLS connection answers");
        assert_eq!(r.status, 200);
        parked_becomes(proxy.admin_addr, 1).await;
    }
    assert_eq!(b.hits(), 3);
    stop(proxy).await;
}
