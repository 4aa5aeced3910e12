//! Forwarding headers and hop-by-hop stripping, seen from real backends and clients.

mod common;

use common::*;
use isame_testkit::{Backend, Client};

fn echo_headers(raw: &str) -> serde_json::Value {
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    // The echo body may be chunked; take the JSON object inside.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    serde_json::from_str::<serde_json::Value>(&body[start..end]).unwrap_or_default()["headers"]
        .clone()
}

#[tokio::test]
async fn spoofed_forwarded_for_from_untrusted_peer_is_replaced() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let addr = proxy.proxy_addr;
    let raw = exchange(addr, b"GET /x HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n".to_vec()).await;
    let h = echo_headers(&raw);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{raw}");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["host"], "shop.example", "Host is kept");
    stop(proxy).await;
}

#[tokio::test]
async fn trusted_proxy_chain_is_extended() {
    let b = Backend::start("b").await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "trusted_proxies: [\"127.0.0.0/8\"]\n",
    ));
    let addr = proxy.proxy_addr;
    let raw = exchange(addr, b"GET / HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 198.51.100.4\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n".to_vec()).await;
    let h = echo_headers(&raw);
    assert_eq!(h["x-forwarded-for"], "198.51.100.4, 127.0.0.1", "{raw}");
    assert_eq!(
        h["x-forwarded-proto"], "https",
        "a trusted proxy's proto is kept"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_towards_the_backend() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let addr = proxy.proxy_addr;
    let raw = exchange(addr, b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: X-Private, close\r\nX-Private: secret\r\nKeep-Alive: timeout=9\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: websocket\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\nX-End-To-End: yes\r\n\r\n".to_vec()).await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let h = echo_headers(&raw);
    for gone in [
        "x-private",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the backend: {h}");
    }
    assert_eq!(h["x-end-to-end"], "yes");
    stop(proxy).await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_towards_the_client() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let r = client.get("/?hop=1").await.expect("request");
    assert_eq!(r.status, 200);
    for gone in ["x-hop-custom", "keep-alive", "proxy-authenticate"] {
        assert!(
            !r.headers.contains_key(gone),
            "{gone} reached the client: {:?}",
            r.headers
        );
    }
    assert_eq!(r.headers["x-end-to-end"], "kept");
    // The connection stays usable: the backend's Connection header was not relayed.
    assert_eq!(client.get("/").await.expect("second request").status, 200);
    stop(proxy).await;
}

#[tokio::test]
async fn the_request_target_host_wins_over_a_conflicting_host_header() {
    let (public, admin) = (
        Backend::start("public").await,
        Backend::start("admin").await,
    );
    let proxy = start(&config(
        &[
            upstream("public", "round_robin", &[(&public, 1)]),
            upstream("admin", "round_robin", &[(&admin, 1)]),
        ],
        "routes:\n  - name: admin\n    host: admin.example\n    upstream: admin\n  - name: public\n    host: public.example\n    upstream: public\n",
    ));
    let addr = proxy.proxy_addr;
    let raw = exchange(
        addr,
        b"GET http://public.example/x HTTP/1.1\r\nHost: admin.example\r\nConnection: close\r\n\r\n"
            .to_vec(),
    )
    .await;
    assert!(raw.contains("x-backend: public"), "{raw}");
    let h = echo_headers(&raw);
    assert_eq!(
        h["host"], "public.example",
        "the backend sees the host it was routed by"
    );
    assert_eq!(admin.hits(), 0);
    stop(proxy).await;
}

#[tokio::test]
async fn ambiguous_requests_are_refused() {
    let b = Backend::start("b").await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "routes:\n  - name: all\n    host: \"*.example\"\n    upstream: web\n",
    ));
    let addr = proxy.proxy_addr;
    for (req, status) in [
        (&b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"[..], "400"),
        (b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "501"),
        (b"GET / HTTP/1.1\r\nHost: [\r\nConnection: close\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n", "400"),
    ] {
        let raw = exchange(addr, req).await;
        assert!(
            raw.starts_with(&format!("HTTP/1.1 {status}")),
            "{:?} → {raw}",
            String::from_utf8_lossy(req)
        );
    }
    assert_eq!(b.hits(), 0);
    // The proxy counts a connection closed once its task ends, a moment
    // after the client has read the answer.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = isame_testkit::client::get(proxy.admin_addr, "/status")
            .await
            .expect("status")
            .json();
        if status["active_connections"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections still counted: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop(proxy).await;
}

#[tokio::test]
async fn hosts_that_are_not_host_and_port_get_400() {
    let b = Backend::start("b").await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        concat!(
            "routes:\n  - name: moved\n    host: \"*.example.com\"\n    upstream: web\n    middleware:\n",
            "      - redirect: {to: \"https://{host}/new\", status: 301}\n",
        ),
    ));
    let addr = proxy.proxy_addr;
    for req in [
        // Userinfo in an absolute-form target, routed and forwarded before.
        &b"GET http://user@a.example.com/ HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n"[..],
        b"GET http://evil.test@a.example.com/ HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n",
        // Hosts a suffix match took for subdomains of example.com, and that
        // a redirect would have sent a browser elsewhere with.
        b"GET / HTTP/1.1\r\nHost: evil.test/.example.com\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: evil.test\\.example.com\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: evil.test?.example.com\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: evil.test#.example.com\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@a.example.com\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: evil test.example.com\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.example.com:99999\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
        // HTTP/1.1 requires a Host.
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let raw = exchange(addr, req).await;
        assert!(
            raw.starts_with("HTTP/1.1 400"),
            "{:?} → {raw}",
            String::from_utf8_lossy(req)
        );
        assert!(!raw.to_ascii_lowercase().contains("location:"), "{raw}");
    }
    assert_eq!(b.hits(), 0);
    // A valid host still redirects, to itself.
    let raw = exchange(
        addr,
        &b"GET / HTTP/1.1\r\nHost: Shop.example.com.:8080\r\nConnection: close\r\n\r\n"[..],
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 301"), "{raw}");
    assert!(
        raw.contains("location: https://Shop.example.com/new\r\n"),
        "{raw}"
    );
    // HTTP/1.0 may leave Host out; such a request matches no host route.
    let raw = exchange(addr, &b"GET / HTTP/1.0\r\n\r\n"[..]).await;
    assert!(raw.starts_with("HTTP/1.0 404"), "{raw}");
    stop(proxy).await;
}

#[tokio::test]
async fn http2_authorities_are_checked_the_same_way() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let addr = proxy.proxy_addr;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("handshake");
    tokio::spawn(conn);
    let send = |uri: &str, host: Option<&str>| {
        let mut req = http::Request::get(uri);
        if let Some(h) = host {
            req = req.header("host", h);
        }
        req.body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request")
    };
    let ok = tx
        .send_request(send("http://a.example/", None))
        .await
        .expect("response");
    assert_eq!(ok.status(), 200);
    for (uri, host) in [
        ("http://user@a.example/", None),
        ("http://a.example/", Some("b.example")),
        ("http://a.example/", Some("bad/host")),
    ] {
        let r = tx.send_request(send(uri, host)).await.expect("response");
        assert_eq!(r.status(), 400, "{uri} with Host {host:?}");
    }
    assert_eq!(b.hits(), 1);
    stop(proxy).await;
}
