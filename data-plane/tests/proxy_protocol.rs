//! PROXY protocol through real sockets: v1 and v2 headers from a trusted
//! load balancer name the client (forwarding headers, rate limits), on the
//! plain and the TLS port; untrusted peers, missing and malformed headers
//! are refused and counted; upstreams that ask for it get a header naming
//! the client on every new connection, connections are never shared
//! between clients, and health probes send a header without addresses.

mod common;

use common::*;
use isame_testkit::tls::{KeyKind, TestCa};
use isame_testkit::Backend;
use ppp::v2;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn v1(client: &str, to: &str) -> Vec<u8> {
    let (c, t): (SocketAddr, SocketAddr) =
        (client.parse().expect("addr"), to.parse().expect("addr"));
    let family = if c.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        c.ip(),
        t.ip(),
        c.port(),
        t.port()
    )
    .into_bytes()
}

fn v2(client: &str, to: &str) -> Vec<u8> {
    let pair: (SocketAddr, SocketAddr) = (client.parse().expect("addr"), to.parse().expect("addr"));
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        pair,
    )
    .write_tlv(v2::Type::Authority, b"lb.example")
    .expect("tlv")
    .build()
    .expect("header")
}

const GET: &[u8] = b"GET /who HTTP/1.1\r\nhost: example.test\r\nconnection: close\r\n\r\n";

/// Writes `request` (or, when empty, ends the stream) and reads until the
/// proxy closes; returns what came back (empty when the proxy closed
/// without a word).
async fn through<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &[u8]) -> String {
    let _ = s.write_all(request).await;
    if request.is_empty() {
        let _ = s.shutdown().await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn send(addr: SocketAddr, preamble: &[u8], request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(preamble).await.expect("write");
    through(s, request).await
}

/// The `X-Forwarded-For` the echo backend saw, from a raw response.
fn forwarded_for(response: &str) -> String {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not an echo ({e}): {response}"));
    v["headers"]["x-forwarded-for"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn refused(proxy: &isame_data_plane::server::Server, reason: &str) -> u64 {
    let m = isame_testkit::client::get(proxy.admin_addr, "/metrics")
        .await
        .expect("metrics")
        .text();
    let series = format!("isame_lb_proxy_protocol_refused_total{{reason=\"{reason}\"}}");
    m.lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {m}"))
}

#[tokio::test]
async fn a_trusted_balancer_names_the_client_in_v1_and_v2() {
    let b = Backend::start("b").await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "server:\n  proxy_protocol:\n    trusted: [127.0.0.0/8]\n",
    ));
    let r = send(
        proxy.proxy_addr,
        &v1("203.0.113.7:5555", "10.0.0.1:80"),
        GET,
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(forwarded_for(&r), "203.0.113.7");
    let r = send(
        proxy.proxy_addr,
        &v2("[2001:db8::9]:4444", "[2001:db8::1]:80"),
        GET,
    )
    .await;
    assert_eq!(forwarded_for(&r), "2001:db8::9");
    // Without a header (not required) the peer is the client.
    let r = send(proxy.proxy_addr, b"", GET).await;
    assert_eq!(forwarded_for(&r), "127.0.0.1");
    // A health check of the balancer itself (LOCAL): the peer is the client.
    let local = v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Local,
        v2::Protocol::Unspecified,
        v2::Addresses::Unspecified,
    )
    .build()
    .expect("header");
    let r = send(proxy.proxy_addr, &local, GET).await;
    assert_eq!(forwarded_for(&r), "127.0.0.1");
    // A header sent in pieces, with the request right behind it.
    let mut s = TcpStream::connect(proxy.proxy_addr).await.expect("connect");
    let h = v1("198.51.100.4:1", "10.0.0.1:80");
    for chunk in h.chunks(7) {
        s.write_all(chunk).await.expect("write");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(forwarded_for(&through(s, GET).await), "198.51.100.4");
    stop(proxy).await;
}

#[tokio::test]
async fn untrusted_missing_and_malformed_headers_close_the_connection() {
    let b = Backend::start("b").await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "server:\n  proxy_protocol:\n    trusted: [10.0.0.0/8]\n",
    ));
    // 127.0.0.1 is not trusted: claiming a client address is refused.
    let r = send(
        proxy.proxy_addr,
        &v1("203.0.113.7:5555", "10.0.0.1:80"),
        GET,
    )
    .await;
    assert_eq!(r, "");
    assert_eq!(refused(&proxy, "untrusted").await, 1);
    // A plain request from it is served, with its own address.
    assert_eq!(
        forwarded_for(&send(proxy.proxy_addr, b"", GET).await),
        "127.0.0.1"
    );
    assert_eq!(b.hits(), 1);
    stop(proxy).await;

    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "server:\n  proxy_protocol:\n    trusted: [127.0.0.1]\n    required: true\n",
    ));
    assert_eq!(send(proxy.proxy_addr, b"", GET).await, "");
    assert_eq!(refused(&proxy, "missing").await, 1);
    let r = send(
        proxy.proxy_addr,
        b"PROXY TCP4 1.2.3.4 nonsense 1 2\r\n",
        GET,
    )
    .await;
    assert_eq!(r, "");
    let r = send(proxy.proxy_addr, b"PROXY TCP4 1.2.3.4", b"").await;
    assert_eq!(r, "", "a header cut short");
    assert_eq!(refused(&proxy, "malformed").await, 1);
    // Still serving.
    let r = send(proxy.proxy_addr, &v1("203.0.113.8:1", "10.0.0.1:80"), GET).await;
    assert_eq!(forwarded_for(&r), "203.0.113.8");
    assert_eq!(b.hits(), 2);
    stop(proxy).await;
}

#[tokio::test]
async fn with_headers_required_untrusted_peers_are_closed_at_once() {
    let b = Backend::start("b").await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "server:\n  proxy_protocol:\n    trusted: [10.0.0.0/8]\n    required: true\n",
    ));
    let mut s = TcpStream::connect(proxy.proxy_addr).await.expect("connect");
    let mut buf = [0u8; 16];
    // Closed before anything is sent.
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(refused(&proxy, "untrusted").await, 1);
    assert_eq!(b.hits(), 0);
    stop(proxy).await;
}

#[tokio::test]
async fn the_header_comes_before_tls_and_the_client_it_names_is_rate_limited() {
    let b = Backend::start("b").await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca
        .issue(&["localhost"], KeyKind::Ecdsa)
        .write(dir.path(), "site");
    let mut up = upstream("web", "round_robin", &[(&b, 1)]);
    up.push_str("    rate_limit:\n      requests_per_ip: 1\n      window_size: 60s\n");
    let proxy = start(&config(
        &[up],
        &tls_config(
            &cert,
            &key,
            "server:\n  proxy_protocol:\n    trusted: [127.0.0.1]\n",
        ),
    ));
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(&[b"http/1.1"]));
    let https = |client: &'static str| {
        let connector = connector.clone();
        async move {
            let mut tcp = TcpStream::connect(proxy.https_addr.expect("https"))
                .await
                .expect("connect");
            tcp.write_all(&v2(client, "127.0.0.1:8443"))
                .await
                .expect("header");
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let tls = connector.connect(name, tcp).await.expect("handshake");
            through(tls, GET).await
        }
    };
    let r = https("203.0.113.20:1000").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(forwarded_for(&r), "203.0.113.20");
    // The same client again (another connection): over its limit.
    let r = https("203.0.113.20:1001").await;
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    // Another client behind the same balancer has its own.
    let r = https("203.0.113.21:1000").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    stop(proxy).await;
}

/// A backend that reads a PROXY header at the start of each connection,
/// then answers every request on it with that header's text and the
/// connection's number.
struct HeaderBackend {
    url: String,
    /// The header of each connection, as text (`PROXY …` for v1, the
    /// addresses for v2, `LOCAL` for a v2 health check).
    headers: Arc<Mutex<Vec<String>>>,
}

async fn header_backend() -> HeaderBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let headers = Arc::new(Mutex::new(Vec::new()));
    let seen = headers.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(header_conn(s, seen.clone()));
        }
    });
    HeaderBackend { url, headers }
}

async fn header_conn(mut s: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let (text, used) = loop {
        let mut chunk = [0u8; 1024];
        let Ok(n) = s.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        match ppp::HeaderResult::parse(&buf) {
            ppp::HeaderResult::V1(Ok(h)) => break (h.header.trim_end().to_owned(), h.header.len()),
            ppp::HeaderResult::V2(Ok(h)) => {
                let text = match h.command {
                    v2::Command::Local => "LOCAL".to_owned(),
                    v2::Command::Proxy => format!("{:?}", h.addresses),
                };
                break (text, h.len());
            }
            r if ppp::PartialResult::is_incomplete(&r) => continue,
            _ => return,
        }
    };
    let conn = {
        let mut seen = seen.lock().expect("lock");
        seen.push(text.clone());
        seen.len()
    };
    buf.drain(..used);
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let body = format!("{text} #{conn}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
        }
        let mut chunk = [0u8; 1024];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends `n` keep-alive requests on one client connection from the test's
/// own socket; returns the bodies and the socket's local address.
async fn requests_on_one_connection(addr: SocketAddr, n: usize) -> (Vec<String>, SocketAddr) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let me = s.local_addr().expect("addr");
    let mut bodies = Vec::new();
    for _ in 0..n {
        s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .expect("write");
        let mut resp = Vec::new();
        loop {
            let mut chunk = [0u8; 1024];
            let k = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
                .await
                .expect("response in time")
                .expect("read");
            assert!(k > 0, "closed early");
            resp.extend_from_slice(&chunk[..k]);
            let text = String::from_utf8_lossy(&resp);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    bodies.push(body.to_owned());
                    break;
                }
            }
        }
    }
    (bodies, me)
}

#[tokio::test]
async fn upstreams_get_a_header_naming_the_client_on_connections_of_their_own() {
    for version in ["v1", "v2"] {
        let backend = header_backend().await;
        let proxy = start_with(
            &format!(
                "upstreams:\n  - name: pp\n    backends: [\"{}\"]\n    send_proxy_protocol: {version}\n",
                backend.url
            ),
            None,
            // One worker: both client connections share its pool.
            1,
        );
        let (first, me) = requests_on_one_connection(proxy.proxy_addr, 3).await;
        let (second, me2) = requests_on_one_connection(proxy.proxy_addr, 2).await;
        let expected = |me: SocketAddr| {
            match version {
            "v1" => format!("PROXY TCP4 127.0.0.1 127.0.0.1 {} {}", me.port(), proxy.proxy_addr.port()),
            _ => format!(
                "IPv4(IPv4 {{ source_address: 127.0.0.1, source_port: {}, destination_address: 127.0.0.1, destination_port: {} }})",
                me.port(),
                proxy.proxy_addr.port()
            ),
        }
        };
        // One backend connection per client connection, reused for its
        // requests, never for the other client's.
        for body in &first {
            assert_eq!(body, &format!("{} #1", expected(me)), "{version}");
        }
        for body in &second {
            assert_eq!(body, &format!("{} #2", expected(me2)), "{version}");
        }
        assert_eq!(backend.headers.lock().expect("lock").len(), 2);
        stop(proxy).await;
    }
}

#[tokio::test]
async fn health_probes_send_a_header_without_addresses() {
    for (version, want) in [("v1", "PROXY UNKNOWN"), ("v2", "LOCAL")] {
        let backend = header_backend().await;
        let proxy = start(&format!(
            "upstreams:\n  - name: pp\n    backends: [\"{}\"]\n    send_proxy_protocol: {version}\nhealth:\n  interval: 1s\n  timeout: 1s\n  path: /health\n",
            backend.url
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let seen = backend.headers.lock().expect("lock").clone();
            if !seen.is_empty() {
                assert!(seen.iter().all(|h| h == want), "{version}: {seen:?}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no probe");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop(proxy).await;
    }
}
