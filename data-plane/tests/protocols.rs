//! HTTP/1.1 keep-alive, HTTP/2 prior knowledge, pooled backend connections,
//! and bodies that stream both ways.
// These tests time real sockets and processes: wall-clock time is the point.
#![allow(clippy::disallowed_types)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Channel, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use isame_testkit::{Backend, Client};
use std::time::{Duration, Instant};

#[tokio::test]
async fn h2c_prior_knowledge_is_served_and_backends_get_http1_with_host() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let mut client = Client::http2(proxy.proxy_addr).await.expect("h2 connect");
    let r = client.get("/h2?x=1").await.expect("h2 request");
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["path"], "/h2?x=1");
    assert_eq!(echo["headers"]["host"], proxy.proxy_addr.to_string());
    assert_eq!(
        echo["headers"]["x-forwarded-host"],
        proxy.proxy_addr.to_string()
    );
    stop(proxy).await;
}

#[tokio::test]
async fn many_concurrent_h2_streams_on_one_connection() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let addr = proxy.proxy_addr;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("handshake");
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::get(format!("http://{addr}/s{i}?delay_ms=50"))
                .body(Full::new(Bytes::new()))
                .expect("request");
            let resp = tx.send_request(req).await.expect("response");
            resp.status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    assert_eq!(b.hits(), 50);
    stop(proxy).await;
}

#[tokio::test]
async fn keep_alive_connections_to_backends_are_reused() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..50 {
        assert_eq!(client.get("/").await.expect("request").status, 200);
    }
    assert_eq!(b.hits(), 50);
    assert_eq!(
        b.accepted(),
        1,
        "one pooled backend connection serves them all"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn large_bodies_pass_intact_both_ways() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let upload = vec![7u8; 16 << 20];
    let r = client
        .send(
            Request::post("/upload")
                .body(Full::new(Bytes::from(upload)))
                .expect("request"),
        )
        .await
        .expect("upload");
    assert_eq!(r.json()["body_len"], 16 << 20);
    let r = client
        .get(&format!("/?bytes={}", 16 << 20))
        .await
        .expect("download");
    assert_eq!(r.body.len(), 16 << 20);
    stop(proxy).await;
}

#[tokio::test]
async fn response_bodies_stream_to_the_client() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let stream = tokio::net::TcpStream::connect(proxy.proxy_addr)
        .await
        .expect("connect");
    let (mut tx, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let start = Instant::now();
    let req = Request::get("/?bytes=65536&trickle_ms=400")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let mut body = tx.send_request(req).await.expect("response").into_body();
    let first = body.frame().await.expect("a frame").expect("no error");
    let first_at = start.elapsed();
    assert!(first.is_data());
    let mut total = first.into_data().map_or(0, |d| d.len());
    while let Some(f) = body.frame().await {
        total += f.expect("frame").into_data().map_or(0, |d| d.len());
    }
    let all_at = start.elapsed();
    assert_eq!(total, 65536);
    assert!(all_at >= Duration::from_millis(1200), "{all_at:?}");
    assert!(
        first_at < Duration::from_millis(600),
        "first bytes only after {first_at:?}: buffered?"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn request_bodies_stream_to_the_backend() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let mut tx = streaming_client(proxy.proxy_addr).await;
    let (mut body_tx, body) = Channel::<Bytes>::new(4);
    let req = Request::post("/?early=1")
        .header("host", "x")
        .header("content-length", "20000")
        .body(body)
        .expect("request");
    body_tx
        .send_data(Bytes::from(vec![1u8; 10_000]))
        .await
        .expect("first half");
    // The rest is withheld: a proxy that buffered the body would never call the backend.
    let resp = tokio::time::timeout(Duration::from_secs(3), tx.send_request(req))
        .await
        .expect("the backend answered before the upload finished")
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(b.hits(), 1);
    drop(body_tx);
    stop(proxy).await;
}

#[tokio::test]
async fn expect_100_continue_uploads_complete() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let addr = proxy.proxy_addr;
    let reply = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\nConnection: close\r\n\r\n")
            .expect("head");
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).expect("interim response");
        let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
        s.write_all(b"hello world").expect("body");
        let mut rest = String::new();
        let _ = s.read_to_string(&mut rest);
        (interim, rest)
    })
    .await
    .expect("client");
    assert!(reply.0.starts_with("HTTP/1.1 100 Continue"), "{reply:?}");
    assert!(
        reply.1.contains("200 OK") && reply.1.contains("\"body_len\":11"),
        "{reply:?}"
    );
    stop(proxy).await;
}
