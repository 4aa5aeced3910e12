//! gRPC and HTTP/2 to backends through the proxy, with tonic on both sides:
//! every kind of call, large messages, status and custom trailers,
//! deadlines, multiplexing, h2 over TLS (ALPN), `protocol: auto`, the gRPC
//! health service, and retries and breakers that read `grpc-status`.

mod common;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::*;
use http_body_util::{BodyExt, Full};
use isame_testkit::grpc::pb::echo_client::EchoClient;
use isame_testkit::grpc::pb::{EchoRequest, ExpandRequest};
use isame_testkit::grpc::SERVICE;
use isame_testkit::tls::{KeyKind, TestCa};
use isame_testkit::{Backend, Client, GrpcBackend};
use prost::Message as _;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;

async fn client(proxy: &isame_data_plane::server::Server) -> EchoClient<Channel> {
    EchoClient::connect(format!("http://{}", proxy.proxy_addr))
        .await
        .expect("connect to the proxy")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

fn one(name: &str, url: &str, extra: &str) -> String {
    config(
        &[format!(
            "  - name: {name}\n{extra}    backends:\n      - url: {url}\n"
        )],
        "",
    )
}

async fn metrics(proxy: &isame_data_plane::server::Server) -> String {
    isame_testkit::client::get(proxy.admin_addr, "/metrics")
        .await
        .expect("metrics")
        .text()
}

fn echo(payload: impl Into<Vec<u8>>) -> EchoRequest {
    EchoRequest {
        payload: payload.into(),
        ..EchoRequest::default()
    }
}

#[tokio::test]
async fn unary_calls_carry_large_messages_over_shared_connections() {
    let b = GrpcBackend::start("g1").await;
    let proxy = start(&one("grpc", &b.url(), ""));
    let mut c = client(&proxy).await;

    // 3 MiB each way: many DATA frames, flow-control windows refilled.
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 253) as u8).collect();
    let r = c.unary(echo(big.clone())).await.expect("call").into_inner();
    assert_eq!(r.payload.len(), big.len());
    assert!(r.payload == big, "payload unchanged");
    assert_eq!(r.served_by, "g1");
    assert_eq!(r.metadata.get("te").map(String::as_str), Some("trailers"));
    assert_eq!(
        r.metadata.get("content-type").map(String::as_str),
        Some("application/grpc")
    );
    assert!(
        r.metadata.contains_key("x-forwarded-for"),
        "{:?}",
        r.metadata
    );

    // 64 calls at once share the proxy's connection to the backend.
    let calls = (0..64).map(|i| {
        let mut c = c.clone();
        async move { c.unary(echo(vec![i as u8; 1000])).await }
    });
    for (i, r) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        let r = r.expect("concurrent call").into_inner();
        assert_eq!(r.payload, vec![i as u8; 1000]);
    }
    assert_eq!(b.calls(), 65);
    assert!(
        b.accepted() <= 2,
        "65 calls multiplexed over {} connections",
        b.accepted()
    );
    let m = metrics(&proxy).await;
    assert!(
        m.contains(r#"isame_lb_grpc_responses_total{grpc_status="0",upstream="grpc"} 65"#),
        "{m}"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn streams_flow_both_ways_and_trailers_come_back() {
    let b = GrpcBackend::start("g1").await;
    let proxy = start(&one("grpc", &b.url(), ""));
    let mut c = client(&proxy).await;

    // Server streaming: 40 messages of 64 KiB, then a status with a
    // message and custom trailing metadata.
    let mut s = c
        .expand(ExpandRequest {
            count: 40,
            size: 64 << 10,
            fail_code: Code::FailedPrecondition as u32,
            fail_message: "stopped after forty".into(),
            trailer: "kept".into(),
            ..ExpandRequest::default()
        })
        .await
        .expect("stream starts")
        .into_inner();
    let mut got = 0u32;
    let end = loop {
        match s.message().await {
            Ok(Some(m)) => {
                assert_eq!(
                    m.payload,
                    vec![(got % 251) as u8; 64 << 10],
                    "message {got}"
                );
                got += 1;
            }
            Ok(None) => panic!("the stream ended without its status"),
            Err(status) => break status,
        }
    };
    assert_eq!(got, 40);
    assert_eq!(end.code(), Code::FailedPrecondition);
    assert_eq!(end.message(), "stopped after forty");
    assert_eq!(
        end.metadata()
            .get("x-trailer")
            .and_then(|v| v.to_str().ok()),
        Some("kept")
    );

    // Client streaming: 20 messages of 256 KiB.
    let upload = tokio_stream::iter((0..20).map(|_| echo(vec![7u8; 256 << 10])));
    let r = c.collect(upload).await.expect("collect").into_inner();
    assert_eq!(r.received, 20 * (256 << 10));

    // Bidirectional: each answer arrives before the next message is sent,
    // so nothing waits for the whole request.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut answers = c
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("chat starts")
        .into_inner();
    for i in 0..10u8 {
        tx.send(echo(vec![i; 10])).await.expect("send");
        let a = tokio::time::timeout(Duration::from_secs(5), answers.message())
            .await
            .expect("answer before the next message")
            .expect("answer")
            .expect("not ended");
        assert_eq!(a.payload, vec![i; 10]);
    }
    drop(tx);
    assert!(answers.message().await.expect("clean end").is_none());
    stop(proxy).await;
}

#[tokio::test]
async fn failed_calls_keep_their_status_message_and_trailers() {
    let b = GrpcBackend::start("g1").await;
    let proxy = start(&one("grpc", &b.url(), ""));
    let mut c = client(&proxy).await;
    let e = c
        .unary(EchoRequest {
            fail_code: Code::NotFound as u32,
            fail_message: "no such thing: ünïcode".into(),
            trailer: "t1".into(),
            ..EchoRequest::default()
        })
        .await
        .expect_err("fails");
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "no such thing: ünïcode");
    assert_eq!(
        e.metadata().get("x-trailer").and_then(|v| v.to_str().ok()),
        Some("t1")
    );
    let m = metrics(&proxy).await;
    assert!(
        m.contains(r#"isame_lb_grpc_responses_total{grpc_status="5",upstream="grpc"} 1"#),
        "{m}"
    );
    // A gRPC failure is the call's answer, not a backend failure.
    let url = b.url();
    let requests = format!(
        r#"isame_lb_requests_total{{backend="{url}",method="POST",status="200",upstream="grpc"}} 1"#
    );
    assert!(m.contains(&requests), "{m}");
    stop(proxy).await;
}

/// One gRPC call over a hand-made HTTP/2 connection, with `grpc-timeout`
/// set and no deadline of the client's own: what the proxy answers is
/// what the test sees.
async fn raw_call(
    addr: SocketAddr,
    path: &str,
    message: Bytes,
    timeout: &str,
) -> (http::StatusCode, http::HeaderMap, Bytes, http::HeaderMap) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("handshake");
    tokio::spawn(conn);
    let mut framed = BytesMut::new();
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put(message);
    let req = http::Request::post(format!("http://grpc.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(Full::new(framed.freeze()))
        .expect("request");
    let resp = send.send_request(req).await.expect("answer");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    (parts.status, parts.headers, collected.to_bytes(), trailers)
}

#[tokio::test]
async fn grpc_timeout_bounds_the_call_at_the_proxy() {
    let b = GrpcBackend::start("g1").await;
    // The upstream's own response timeout is far longer than the deadline.
    let proxy = start(&one("grpc", &b.url(), "    response_timeout: 30s\n"));

    // No answer head before the deadline: a trailers-only DEADLINE_EXCEEDED.
    let slow = EchoRequest {
        delay_ms: 5000,
        ..EchoRequest::default()
    };
    let t = Instant::now();
    let (status, head, _, trailers) = raw_call(
        proxy.proxy_addr,
        "/isame.test.v1.Echo/Unary",
        slow.encode_to_vec().into(),
        "300m",
    )
    .await;
    let took = t.elapsed();
    assert_eq!(status, 200);
    let grpc_status = trailers.get("grpc-status").or(head.get("grpc-status"));
    assert_eq!(grpc_status.map(|v| v.as_bytes()), Some(&b"4"[..]));
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "ended by the deadline: {took:?}"
    );

    // The head came, the messages do not: the stream is cut at the
    // deadline and the client gets the status in trailers.
    let trickle = ExpandRequest {
        count: 5,
        size: 10,
        interval_ms: 2000,
        ..ExpandRequest::default()
    };
    let t = Instant::now();
    let (status, head, body, trailers) = raw_call(
        proxy.proxy_addr,
        "/isame.test.v1.Echo/Expand",
        trickle.encode_to_vec().into(),
        "500m",
    )
    .await;
    let took = t.elapsed();
    assert_eq!(status, 200);
    assert_eq!(head.get("grpc-status"), None, "the head had no status");
    assert!(body.is_empty(), "no message before the deadline");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"4"[..])
    );
    assert!(
        took < Duration::from_secs(2),
        "cut at the deadline: {took:?}"
    );

    // Without a deadline the same trickle streams to its end.
    let quick = ExpandRequest {
        count: 3,
        size: 10,
        interval_ms: 50,
        ..ExpandRequest::default()
    };
    let (_, _, mut body, trailers) = raw_call(
        proxy.proxy_addr,
        "/isame.test.v1.Echo/Expand",
        quick.encode_to_vec().into(),
        "10S",
    )
    .await;
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    let mut messages = 0;
    while body.remaining() >= 5 {
        body.advance(1);
        let len = body.get_u32() as usize;
        body.advance(len);
        messages += 1;
    }
    assert_eq!(messages, 3);
    let m = metrics(&proxy).await;
    assert!(
        m.contains(r#"isame_lb_grpc_responses_total{grpc_status="4",upstream="grpc"} 2"#),
        "{m}"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn grpc_to_an_http1_upstream_is_unavailable_in_grpc_terms() {
    let b = Backend::start("plain").await;
    let proxy = start(&one("web", &b.url(), ""));
    let mut c = client(&proxy).await;
    let e = c.unary(echo("hi")).await.expect_err("refused");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(b.hits(), 0, "never sent to the HTTP/1.1 backend");

    // The same answer as raw HTTP: 200, gRPC headers, no JSON.
    let (status, head, body, _) = raw_call(proxy.proxy_addr, "/x.Y/Z", Bytes::new(), "1S").await;
    assert_eq!(status, 200);
    assert_eq!(head["content-type"], "application/grpc");
    assert_eq!(head["grpc-status"], "14");
    assert!(body.is_empty());
    // A request that is not gRPC still goes to the backend.
    let r = isame_testkit::client::get(proxy.proxy_addr, "/plain")
        .await
        .expect("plain request");
    assert_eq!(r.status, 200);
    stop(proxy).await;
}

#[tokio::test]
async fn http1_clients_reach_h2c_backends() {
    let b = Backend::start("h2").await;
    let url = b.url().replace("http://", "h2c://");
    let proxy = start(&one("web", &url, ""));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..3 {
        let r = c.get("/over-h2?x=1").await.expect("request");
        assert_eq!(r.status, 200);
        let j = r.json();
        assert_eq!(j["version"], "HTTP/2.0", "{j}");
        assert_eq!(j["path"], "/over-h2?x=1");
        assert!(j["headers"]["host"].is_null() || j["headers"]["host"].is_string());
    }
    let body = Bytes::from(vec![b'z'; 1 << 20]);
    let req = http::Request::post("/upload")
        .header("host", "example.test")
        .body(Full::new(body))
        .expect("request");
    let r = c.send(req).await.expect("upload");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 1 << 20, "{}", r.text());
    // Streamed answers come back whole.
    let r = c.get("/big?bytes=500000").await.expect("download");
    assert_eq!(r.body.len(), 500_000);
    assert_eq!(b.accepted(), 1, "one multiplexed connection");
    stop(proxy).await;
}

#[tokio::test]
async fn h2_over_tls_is_chosen_by_alpn() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("write CA");
    let cert = ca.issue(&["localhost", "127.0.0.1"], KeyKind::Ecdsa);
    let tls = format!("    tls:\n      ca_file: {}\n", ca_file.display());
    let g = GrpcBackend::start_tls("secure-grpc", cert.server_config()).await;
    let h1 = Backend::start_tls("secure-h1", cert.server_config()).await;

    for protocol in ["http2", "auto"] {
        let extra = format!("    protocol: {protocol}\n{tls}");
        let proxy = start(&one("grpc", &g.url(), &extra));
        let mut c = client(&proxy).await;
        for _ in 0..3 {
            let r = c.unary(echo("over tls")).await.expect("call").into_inner();
            assert_eq!(r.served_by, "secure-grpc", "{protocol}");
        }
        stop(proxy).await;
    }
    assert_eq!(g.accepted(), 2, "one connection per proxy");

    // `auto` to a backend whose TLS offers no h2 speaks HTTP/1.1 to it.
    let extra = format!("    protocol: auto\n{tls}");
    let proxy = start(&one("web", &h1.url(), &extra));
    let mut c = Client::http2(proxy.proxy_addr).await.expect("connect");
    for _ in 0..3 {
        let r = c.get("/fallback").await.expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["version"], "HTTP/1.1");
    }
    stop(proxy).await;

    // `http2` to it fails plainly instead.
    let extra = format!("    protocol: http2\n{tls}");
    let proxy = start(&one("web", &h1.url(), &extra));
    let r = isame_testkit::client::get(proxy.proxy_addr, "/strict")
        .await
        .expect("request");
    assert_eq!(r.status, 502);
    stop(proxy).await;
}

/// Which backend answered each of `n` calls.
async fn served_by(c: &mut EchoClient<Channel>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        match c.unary(echo("who")).await {
            Ok(r) => out.push(r.into_inner().served_by),
            Err(e) => out.push(format!("error {:?}", e.code())),
        }
    }
    out
}

#[tokio::test]
async fn grpc_health_checks_take_not_serving_backends_out() {
    let a = GrpcBackend::start("a").await;
    let b = GrpcBackend::start("b").await;
    let health = format!(
        "health:\n  enabled: true\n  interval: 100ms\n  timeout: 90ms\n  protocol: grpc\n  grpc_service: {SERVICE}\n  unhealthy_threshold: 1\n  healthy_threshold: 1\n"
    );
    let yaml = config(
        &[format!(
            "  - name: grpc\n    backends:\n      - url: {}\n      - url: {}\n",
            a.url(),
            b.url()
        )],
        &health,
    );
    let proxy = start(&yaml);
    let mut c = client(&proxy).await;
    let mut both = served_by(&mut c, 4).await;
    both.sort();
    assert_eq!(both, ["a", "a", "b", "b"]);

    a.set_serving(false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served_by(&mut c, 6).await, ["b"; 6]);
    let s = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    let backends = &s["upstreams"][0]["backends"];
    assert_eq!(backends[0]["healthy"], false, "{s}");
    assert_eq!(backends[1]["healthy"], true, "{s}");

    a.set_serving(true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(served_by(&mut c, 4).await.contains(&"a".to_owned()));
    stop(proxy).await;
}

#[tokio::test]
async fn unavailable_is_retried_and_opens_the_breaker() {
    let a = GrpcBackend::start("a").await;
    let b = GrpcBackend::start("b").await;
    a.set_unavailable(true);
    let two = [format!(
        "  - name: grpc\n    backends:\n      - url: {}\n      - url: {}\n",
        a.url(),
        b.url()
    )];

    // Retries on, but gRPC calls are POSTs: none is sent twice unless a
    // route says its calls may be.
    let retry = "retry:\n  enabled: true\n  max_attempts: 2\n  initial_backoff: 1ms\n  max_backoff: 2ms\n  budget_percent: 100\n";
    let proxy = start(&config(&two, retry));
    let mut c = client(&proxy).await;
    let before = a.calls();
    let answers = served_by(&mut c, 8).await;
    assert_eq!(
        answers.iter().filter(|s| *s == "error Unavailable").count(),
        a.calls() - before,
        "every call a answered failed, none went again: {answers:?}"
    );
    assert!(a.calls() > before, "a took its turns");
    stop(proxy).await;

    // The route opts in: every call ends on the backend that serves.
    let opt_in = format!(
        "{retry}routes:\n  - name: calls\n    path_prefix: /\n    upstream: grpc\n    retry:\n      retriable_methods: [POST]\n"
    );
    let proxy = start(&config(&two, &opt_in));
    let mut c = client(&proxy).await;
    assert_eq!(served_by(&mut c, 8).await, ["b"; 8]);
    assert!(a.calls() >= 3, "a was tried: {}", a.calls());
    // A call whose request is still streaming when the answer comes cannot
    // be sent again: the client gets UNAVAILABLE itself.
    let mut refused = 0;
    for _ in 0..4 {
        let (a0, b0) = (a.calls(), b.calls());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut chat = c
            .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        tx.send(echo("still talking")).await.ok();
        let first = match &mut chat {
            Ok(s) => s.get_mut().message().await.map(|m| m.map(|m| m.served_by)),
            Err(e) => Err(e.clone()),
        };
        match first {
            Ok(Some(by)) => assert_eq!((by.as_str(), a.calls()), ("b", a0)),
            Ok(None) => panic!("chat ended without an answer"),
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable);
                assert_eq!((a.calls(), b.calls()), (a0 + 1, b0), "not resent");
                refused += 1;
            }
        }
    }
    assert!(refused >= 1, "some chat went to a");
    let m = metrics(&proxy).await;
    assert!(
        m.contains(r#"isame_lb_grpc_responses_total{grpc_status="14",upstream="grpc"}"#),
        "{m}"
    );
    stop(proxy).await;

    // Retries off, breaker on: UNAVAILABLE counts as a failure.
    let before = a.calls();
    let breaker = "circuit_breaker:\n  enabled: true\n  failure_threshold: 3\n  timeout: 60s\n";
    let proxy = start(&config(&two, breaker));
    let mut c = client(&proxy).await;
    let answers = served_by(&mut c, 20).await;
    let failed = answers.iter().filter(|s| s.starts_with("error")).count();
    assert_eq!(failed, 3, "{answers:?}");
    assert_eq!(a.calls() - before, 3, "the open circuit keeps calls off a");
    assert!(answers.iter().all(|s| s == "b" || s == "error Unavailable"));
    stop(proxy).await;
}
