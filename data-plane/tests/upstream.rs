//! How the proxy's HTTP/1.1 client copes with what backends really send:
//! every body framing, interim responses, malformed heads, connections that
//! close at awkward moments, and request bodies of unknown length.
// These tests time real sockets and processes: wall-clock time is the point.
#![allow(clippy::disallowed_types)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Channel, Full};
use hyper_util::rt::TokioIo;
use isame_testkit::raw::Reply;
use isame_testkit::{Client, RawBackend};
use std::time::Duration;

fn proxy_for(b: &RawBackend, extra: &str) -> isame_data_plane::server::Server {
    start(&format!(
        "upstreams:\n  - name: raw\n    backends: [\"{}\"]\n{extra}",
        b.url()
    ))
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn chunked_responses_are_relayed_and_the_connection_reused() {
    let b = RawBackend::start(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
        )
    })
    .await;
    let proxy = proxy_for(&b, "");
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..3 {
        let r = c.get("/").await.expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hello world");
        assert_eq!(r.headers["x-kind"], "chunked");
    }
    assert_eq!(
        b.accepted(),
        1,
        "the chunked exchange left the connection reusable"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn close_delimited_responses_are_relayed_and_not_reused() {
    let b = RawBackend::start(|_| {
        Reply::SendAndClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec())
    })
    .await;
    let proxy = proxy_for(&b, "");
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..2 {
        assert_eq!(c.get("/").await.expect("request").text(), "until the end");
    }
    assert_eq!(b.accepted(), 2);
    stop(proxy).await;
}

#[tokio::test]
async fn connection_close_from_backend_is_honoured() {
    let b = RawBackend::start(|_| {
        Reply::SendAndClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec(),
        )
    })
    .await;
    let proxy = proxy_for(&b, "");
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..3 {
        let r = c.get("/").await.expect("request");
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    }
    assert_eq!(b.accepted(), 3);
    stop(proxy).await;
}

#[tokio::test]
async fn head_and_bodyless_statuses() {
    let b = RawBackend::start(|r| {
        if r.head.starts_with("HEAD") {
            Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n".to_vec())
        } else if r.head.contains("/nocontent") {
            Reply::Send(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())
        } else {
            Reply::Send(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n".to_vec())
        }
    })
    .await;
    let proxy = proxy_for(&b, "");
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let head = Request::head("/")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = c.send(head).await.expect("HEAD");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["content-length"], "1234",
        "HEAD keeps the length of the body it would get"
    );
    assert!(r.body.is_empty());
    let r = c.get("/nocontent").await.expect("204");
    assert_eq!(r.status, 204);
    let r = c.get("/cached").await.expect("304");
    assert_eq!(r.status, 304);
    assert_eq!(r.headers["etag"], "\"x\"");
    assert_eq!(b.accepted(), 1);
    stop(proxy).await;
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let b = RawBackend::start(|_| {
        Reply::Send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone".to_vec())
    })
    .await;
    let proxy = proxy_for(&b, "");
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!((r.status.as_u16(), r.text().as_str()), (201, "done"));
    stop(proxy).await;
}

#[tokio::test]
async fn malformed_responses_become_502() {
    for bad in [
        b"garbage\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n".to_vec(),
        format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000)).into_bytes(),
    ] {
        let shown = String::from_utf8_lossy(&bad[..bad.len().min(60)]).into_owned();
        let b = RawBackend::start(move |_| Reply::SendAndClose(bad.clone())).await;
        let proxy = proxy_for(&b, "");
        let r = isame_testkit::client::get(proxy.proxy_addr, "/")
            .await
            .expect("request");
        assert_eq!(r.status, 502, "{shown:?} → {}", r.text());
        assert_eq!(r.json()["error"], "backend failed");
        stop(proxy).await;
    }
}

#[tokio::test]
async fn stale_pooled_connection_is_replaced_transparently() {
    // The backend answers once per connection, then closes it: every pooled
    // connection is dead by the next request.
    let b = RawBackend::start(|_| Reply::SendAndClose(ok("fresh"))).await;
    let proxy = proxy_for(&b, "");
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..5 {
        let r = c.get("/").await.expect("request");
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "fresh"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(proxy).await;
}

#[tokio::test]
async fn idempotent_request_is_resent_when_a_reused_connection_dies_unanswered() {
    // The first request on every connection is answered; a second one on the
    // same connection gets the connection closed under it (the keep-alive race).
    let b = RawBackend::start(|r| {
        if r.connection == 0 && r.head.contains("/second") {
            Reply::Close
        } else {
            Reply::Send(ok("answered"))
        }
    })
    .await;
    let proxy = proxy_for(&b, "");
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    assert_eq!(c.get("/first").await.expect("first").text(), "answered");
    let r = c.get("/second").await.expect("second");
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "answered"));
    assert_eq!(b.accepted(), 2);
    stop(proxy).await;
}

#[tokio::test]
async fn post_is_never_replayed_after_reaching_a_backend() {
    let b = RawBackend::start(|r| {
        if r.head.starts_with("POST") {
            Reply::Close
        } else {
            Reply::Send(ok("warm"))
        }
    })
    .await;
    let proxy = proxy_for(&b, "");
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    c.get("/warm").await.expect("warm-up");
    let post = Request::post("/order")
        .body(Full::new(Bytes::from_static(b"{\"qty\":1}")))
        .expect("request");
    let r = c.send(post).await.expect("post");
    assert_eq!(r.status, 502);
    let posts = b
        .requests()
        .iter()
        .filter(|r| r.head.starts_with("POST"))
        .count();
    assert_eq!(posts, 1, "the backend saw the POST exactly once");
    stop(proxy).await;
}

#[tokio::test]
async fn request_bodies_of_unknown_length_go_chunked() {
    let b = RawBackend::start(|_| Reply::Send(ok("got it"))).await;
    let proxy = proxy_for(&b, "");
    let mut tx = streaming_client(proxy.proxy_addr).await;
    let (mut body_tx, body) = Channel::<Bytes>::new(4);
    let req = Request::post("/upload")
        .header("host", "x")
        .body(body)
        .expect("request");
    let sending = tokio::spawn(async move {
        for part in ["one,", "two,", "three"] {
            body_tx.send_data(Bytes::from(part)).await.expect("send");
        }
    });
    let resp = tx.send_request(req).await.expect("response");
    sending.await.expect("sender");
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(text, "got it");
    let seen = &b.requests()[0];
    assert!(seen.chunked, "{}", seen.head);
    assert_eq!(seen.body, b"one,two,three");
    assert!(seen.header("content-length").is_none());
    stop(proxy).await;
}

#[tokio::test]
async fn sized_uploads_keep_their_length() {
    let b = RawBackend::start(|_| Reply::Send(ok("stored"))).await;
    let proxy = proxy_for(&b, "");
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let put = Request::put("/f")
        .body(Full::new(Bytes::from(vec![b'z'; 100_000])))
        .expect("request");
    assert_eq!(c.send(put).await.expect("put").text(), "stored");
    let seen = &b.requests()[0];
    assert_eq!(seen.header("content-length").as_deref(), Some("100000"));
    assert_eq!(seen.body.len(), 100_000);
    assert!(!seen.chunked);
    stop(proxy).await;
}

#[tokio::test]
async fn early_answer_during_an_upload_reaches_the_client() {
    let b = RawBackend::start(|_| {
        Reply::EarlyAndClose(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!".to_vec())
    })
    .await;
    let proxy = proxy_for(&b, "");
    let mut tx = streaming_client(proxy.proxy_addr).await;
    let (mut body_tx, body) = Channel::<Bytes>::new(4);
    let req = Request::post("/big")
        .header("host", "x")
        .header("content-length", "1000000")
        .body(body)
        .expect("request");
    body_tx
        .send_data(Bytes::from(vec![0u8; 1000]))
        .await
        .expect("first part");
    let resp = tokio::time::timeout(Duration::from_secs(5), tx.send_request(req))
        .await
        .expect("answered before the upload ended")
        .expect("response");
    assert_eq!(resp.status(), 413);
    drop(body_tx);
    stop(proxy).await;
}

#[tokio::test]
async fn truncated_body_is_an_error_for_the_client_not_a_short_success() {
    let b = RawBackend::start(|_| {
        Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly half".to_vec())
    })
    .await;
    let proxy = proxy_for(&b, "");
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    assert!(
        c.get("/").await.is_err(),
        "the client must see the body fail"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn a_stalled_body_is_cut_after_response_timeout() {
    let b = RawBackend::start(|_| {
        Reply::Paced(vec![
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
                Duration::from_secs(30),
            ),
            (b"defghij".to_vec(), Duration::ZERO),
        ])
    })
    .await;
    let proxy = start(&format!(
        "upstreams:\n  - name: raw\n    response_timeout: 300ms\n    backends: [\"{}\"]\n",
        b.url()
    ));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let t = std::time::Instant::now();
    assert!(c.get("/").await.is_err());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    stop(proxy).await;
}

#[tokio::test]
async fn a_partial_head_times_out_with_504() {
    let b = RawBackend::start(|_| {
        Reply::Paced(vec![(
            b"HTTP/1.1 200 OK\r\nX-Slow:".to_vec(),
            Duration::from_secs(30),
        )])
    })
    .await;
    let proxy = start(&format!(
        "upstreams:\n  - name: raw\n    response_timeout: 300ms\n    backends: [\"{}\"]\n",
        b.url()
    ));
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!(r.status, 504);
    stop(proxy).await;
}

#[tokio::test]
async fn http10_backends_work() {
    let b = RawBackend::start(|_| {
        Reply::SendAndClose(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold".to_vec())
    })
    .await;
    let proxy = proxy_for(&b, "");
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..2 {
        assert_eq!(c.get("/").await.expect("request").text(), "old");
    }
    assert_eq!(b.accepted(), 2, "HTTP/1.0 without keep-alive is not reused");
    stop(proxy).await;
}

#[tokio::test]
async fn interim_responses_during_an_upload_do_not_stop_it() {
    // The backend says "100 Continue" as soon as it has the head, before the
    // client has sent any of the body.
    let b = RawBackend::start(|r| {
        if r.body_read {
            Reply::Send(ok(&format!("got {}", r.body.len())))
        } else {
            Reply::Interim(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
        }
    })
    .await;
    let proxy = proxy_for(&b, "");
    let mut tx = streaming_client(proxy.proxy_addr).await;
    let (mut body_tx, body) = Channel::<Bytes>::new(4);
    let req = Request::post("/up")
        .header("host", "x")
        .header("content-length", "10")
        .body(body)
        .expect("request");
    let sending = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        body_tx
            .send_data(Bytes::from_static(b"0123456789"))
            .await
            .expect("body");
    });
    let resp = tokio::time::timeout(Duration::from_secs(5), tx.send_request(req))
        .await
        .expect("no deadlock")
        .expect("response");
    sending.await.expect("sender");
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(text, "got 10");
    stop(proxy).await;
}

/// Sends `parts` of a body with `pause` between them; returns the response status.
async fn paced_upload(
    addr: std::net::SocketAddr,
    parts: Vec<Bytes>,
    pause: Duration,
    length: Option<usize>,
) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake::<_, Channel<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let (mut body_tx, body) = Channel::<Bytes>::new(1);
    let mut req = Request::post("/upload").header("host", "x");
    if let Some(n) = length {
        req = req.header("content-length", n.to_string());
    }
    let req = req.body(body).map_err(|e| e.to_string())?;
    let sender = tokio::spawn(async move {
        for p in parts {
            if body_tx.send_data(p).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
        // Keep the body open until the response came (a stalled client).
        std::future::pending::<()>().await;
    });
    let resp = tx.send_request(req).await.map_err(|e| e.to_string());
    sender.abort();
    resp.map(|r| r.status().as_u16())
}

#[tokio::test]
async fn an_upload_longer_than_the_response_timeout_still_gets_its_answer() {
    let b = RawBackend::start(|r| {
        if r.body_read {
            Reply::Send(ok("stored"))
        } else {
            Reply::Interim(Vec::new())
        }
    })
    .await;
    let proxy = start(&format!(
        "upstreams:\n  - name: raw\n    response_timeout: 400ms\n    backends: [\"{}\"]\n",
        b.url()
    ));
    // Five parts 250 ms apart: over a second on the wire, each pause well
    // under the client stall limit.
    let parts: Vec<Bytes> = (0..5).map(|_| Bytes::from_static(b"0123456789")).collect();
    let status = paced_upload(
        proxy.proxy_addr,
        parts,
        Duration::from_millis(250),
        Some(50),
    )
    .await;
    assert_eq!(status, Ok(200));
    assert_eq!(b.requests()[0].body.len(), 50);
    stop(proxy).await;
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_408() {
    let b = RawBackend::start(|r| {
        if r.body_read {
            Reply::Send(ok("stored"))
        } else {
            Reply::Interim(Vec::new())
        }
    })
    .await;
    let proxy = start(&format!(
        "upstreams:\n  - name: raw\n    backends: [\"{}\"]\nserver:\n  read_timeout: 300ms\n",
        b.url()
    ));
    let t = std::time::Instant::now();
    let status = paced_upload(
        proxy.proxy_addr,
        vec![Bytes::from_static(b"half")],
        Duration::ZERO,
        Some(100),
    )
    .await;
    assert_eq!(status, Ok(408));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let status = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(
        status["upstreams"][0]["backends"][0]["in_flight"], 0,
        "{status}"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn a_backend_that_stops_reading_an_upload_gets_504() {
    let b = RawBackend::start(|_| Reply::Hang).await;
    let proxy = start(&format!(
        "upstreams:\n  - name: raw\n    response_timeout: 400ms\n    backends: [\"{}\"]\n",
        b.url()
    ));
    // Far more than the socket buffers hold, sent as fast as possible.
    let parts: Vec<Bytes> = (0..400)
        .map(|_| Bytes::from(vec![7u8; 256 * 1024]))
        .collect();
    let t = std::time::Instant::now();
    let status = paced_upload(
        proxy.proxy_addr,
        parts,
        Duration::ZERO,
        Some(400 * 256 * 1024),
    )
    .await;
    assert_eq!(status, Ok(504));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    stop(proxy).await;
}

#[tokio::test]
async fn a_response_cut_off_midway_is_not_sent_again() {
    // The second request on the connection gets half a response head, then
    // the connection closes: the backend did handle it.
    let b = RawBackend::start(|r| {
        if r.head.contains("/second") {
            Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec())
        } else {
            Reply::Send(ok("first"))
        }
    })
    .await;
    let proxy = proxy_for(&b, "");
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    assert_eq!(c.get("/first").await.expect("first").text(), "first");
    let r = c.get("/second").await.expect("second");
    assert_eq!(r.status, 502);
    let seconds = b
        .requests()
        .iter()
        .filter(|r| r.head.contains("/second"))
        .count();
    assert_eq!(
        seconds, 1,
        "a request the backend began answering is never replayed"
    );
    stop(proxy).await;
}
