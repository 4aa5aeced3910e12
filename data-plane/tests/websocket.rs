//! WebSocket through the proxy, with a real WebSocket library on both sides
//! (tungstenite): messages both ways, bytes either side sends right after
//! the handshake, large frames, closes from each side, idle limits, a
//! reload and a graceful shutdown with a tunnel open, TLS from the client,
//! and the upgrade requests the proxy must not pass on.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use isame_testkit::tls::{KeyKind, TestCa};
use isame_testkit::Backend;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// A WebSocket echo server: greets each client with `hello` at once, echoes
/// text and binary messages, and closes the connection itself on `bye`.
struct WsServer {
    url: String,
    /// Headers of every handshake it accepted.
    handshakes: Arc<Mutex<Vec<http::HeaderMap>>>,
}

async fn ws_server() -> WsServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let seen = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream, seen.clone()));
        }
    });
    WsServer {
        url: format!("http://{addr}"),
        handshakes,
    }
}

// The handshake callback's error type is tungstenite's, large by design.
#[allow(clippy::result_large_err)]
async fn echo(stream: TcpStream, seen: Arc<Mutex<Vec<http::HeaderMap>>>) {
    let record = |req: &Request, resp: Response| {
        seen.lock().expect("lock").push(req.headers().clone());
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
        return;
    };
    if ws.send(Message::text("hello")).await.is_err() {
        return;
    }
    while let Some(Ok(m)) = ws.next().await {
        let sent = match m {
            Message::Text(ref t) if t.as_str() == "bye" => ws.close(None).await,
            Message::Text(_) | Message::Binary(_) => ws.send(m).await,
            _ => Ok(()),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// A config with one upstream `ws` on `server` (its YAML lines `extra`
/// added), routed at `/chat`, and `top` as more top-level YAML.
fn ws_config(server: &WsServer, extra: &str, top: &str) -> String {
    format!(
        "upstreams:\n  - name: ws\n    backends: [\"{}\"]\n{extra}routes:\n  - name: chat\n    path_prefix: /chat\n    upstream: ws\n{top}",
        server.url
    )
}

type Ws<S> = WebSocketStream<S>;

/// A client through the proxy at `addr`, past the server's greeting.
async fn connect(addr: SocketAddr) -> Ws<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (ws, resp) = tokio_tungstenite::client_async(format!("ws://{addr}/chat"), tcp)
        .await
        .expect("handshake through the proxy");
    assert_eq!(resp.status(), 101);
    greeted(ws).await
}

async fn greeted<S: AsyncRead + AsyncWrite + Unpin>(mut ws: Ws<S>) -> Ws<S> {
    assert_eq!(next(&mut ws).await, Message::text("hello"));
    ws
}

async fn next<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>) -> Message {
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(m))) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn echoes<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    assert_eq!(next(ws).await, Message::text(text));
}

/// Waits up to `within` for the connection to end (a close frame, end of
/// stream or a reset) and returns how long it took; then reads to the end
/// of the stream and closes the socket, as a client does.
async fn ends<S: AsyncRead + AsyncWrite + Unpin>(mut ws: Ws<S>, within: Duration) -> Duration {
    let t = Instant::now();
    let took = match tokio::time::timeout(within, ws.next()).await {
        Err(_) => panic!("still open after {within:?}"),
        Ok(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => t.elapsed(),
        Ok(Some(Ok(other))) => panic!("unexpected message {other:?}"),
    };
    let _ =
        tokio::time::timeout(within, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    took
}

async fn metrics(proxy: &isame_data_plane::server::Server) -> String {
    isame_testkit::client::get(proxy.admin_addr, "/metrics")
        .await
        .expect("metrics")
        .text()
}

fn metric<T: std::str::FromStr>(text: &str, series: &str) -> T {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

/// Polls the metrics until `series` reads `want`.
async fn metric_reaches(proxy: &isame_data_plane::server::Server, series: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(proxy).await;
        if metric::<u64>(&text, series) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {want}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const ACTIVE: &str = "isame_lb_tunnels_active{upstream=\"ws\"}";

#[tokio::test]
async fn messages_go_both_ways_and_a_client_close_ends_the_tunnel() {
    let server = ws_server().await;
    let proxy = start(&ws_config(&server, "", ""));
    let mut ws = connect(proxy.proxy_addr).await;
    metric_reaches(&proxy, ACTIVE, 1).await;
    echoes(&mut ws, "one").await;
    // A 1 MiB frame: more than any buffer on the way, so both directions
    // wait on each other (the echo is written while the frame still arrives).
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::binary(big));
    // A burst, in order.
    for i in 0..100 {
        ws.feed(Message::text(format!("m{i}"))).await.expect("feed");
    }
    ws.flush().await.expect("flush");
    for i in 0..100 {
        assert_eq!(next(&mut ws).await, Message::text(format!("m{i}")));
    }
    ws.close(None).await.expect("close");
    ends(ws, Duration::from_secs(5)).await;
    metric_reaches(&proxy, ACTIVE, 0).await;

    let text = metrics(&proxy).await;
    let sent: u64 = metric(
        &text,
        "isame_lb_tunnel_bytes_total{direction=\"to_backend\",upstream=\"ws\"}",
    );
    let got: u64 = metric(
        &text,
        "isame_lb_tunnel_bytes_total{direction=\"to_client\",upstream=\"ws\"}",
    );
    assert!(sent > 1 << 20 && got > 1 << 20, "{sent} / {got}");
    assert!(
        text.contains("status=\"101\""),
        "the handshake is a request: {text}"
    );
    // The handshake reached the backend as a WebSocket handshake, with the
    // forwarding headers every request gets.
    let h = server.handshakes.lock().expect("lock")[0].clone();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(h.contains_key("sec-websocket-key"));
    assert_eq!(
        h["upgrade"].to_str().expect("ascii").to_lowercase(),
        "websocket"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn the_backend_can_close_first() {
    let server = ws_server().await;
    let proxy = start(&ws_config(&server, "", ""));
    let mut ws = connect(proxy.proxy_addr).await;
    ws.send(Message::text("bye")).await.expect("send");
    assert!(matches!(next(&mut ws).await, Message::Close(_)));
    ends(ws, Duration::from_secs(5)).await;
    metric_reaches(&proxy, ACTIVE, 0).await;
    // The connection's slot is gone: a new client is served as usual.
    let mut again = connect(proxy.proxy_addr).await;
    echoes(&mut again, "still here").await;
    drop(again);
    metric_reaches(&proxy, ACTIVE, 0).await;
    stop(proxy).await;
}

#[tokio::test]
async fn client_timeouts_do_not_cut_a_tunnel_but_its_idle_limit_does() {
    let server = ws_server().await;
    let proxy = start(&ws_config(
        &server,
        "    tunnel_idle_timeout: 1500ms\n",
        "server:\n  read_timeout: 300ms\n  idle_timeout: 300ms\n  write_timeout: 300ms\n",
    ));
    let mut ws = connect(proxy.proxy_addr).await;
    // Silent for longer than every client timeout, shorter than the limit.
    tokio::time::sleep(Duration::from_millis(900)).await;
    echoes(&mut ws, "after a pause").await;
    // Then silent past the limit: the proxy closes the tunnel.
    let took = ends(ws, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(1300),
        "closed after {took:?}, before the idle limit"
    );
    metric_reaches(&proxy, ACTIVE, 0).await;
    // The latency of the request is that of its handshake, not the
    // tunnel's seconds.
    let spent: f64 = metric(
        &metrics(&proxy).await,
        "isame_lb_request_duration_seconds_sum{upstream=\"ws\"}",
    );
    assert!(spent < 0.5, "{spent}");
    stop(proxy).await;
}

#[tokio::test]
async fn a_reload_leaves_open_tunnels_alone() {
    let server = ws_server().await;
    let proxy = start(&ws_config(&server, "", ""));
    let mut ws = connect(proxy.proxy_addr).await;
    echoes(&mut ws, "before").await;
    let other = Backend::start("other").await;
    let reloaded = format!(
        "upstreams:\n  - name: ws\n    backends: [\"{}\"]\n    tunnel_idle_timeout: 10m\n  - name: plain\n    backends: [\"{}\"]\nroutes:\n  - name: plain\n    path_prefix: /plain\n    upstream: plain\n  - name: chat\n    path_prefix: /chat\n    upstream: ws\n",
        server.url,
        other.url()
    );
    proxy.apply(parse(&reloaded)).await.expect("reload");
    echoes(&mut ws, "after").await;
    let mut second = connect(proxy.proxy_addr).await;
    echoes(&mut second, "new tunnel").await;
    // Clients that go away end their tunnels (shutdown would wait for them).
    drop((ws, second));
    metric_reaches(&proxy, ACTIVE, 0).await;
    stop(proxy).await;
}

#[tokio::test]
async fn shutdown_waits_for_tunnels_up_to_its_timeout_then_closes_them() {
    let server = ws_server().await;
    let proxy = start(&ws_config(
        &server,
        "",
        "server:\n  shutdown_timeout: 1500ms\n",
    ));
    let mut ws = connect(proxy.proxy_addr).await;
    let t = Instant::now();
    let stopping = tokio::spawn(stop(proxy));
    tokio::time::sleep(Duration::from_millis(300)).await;
    echoes(&mut ws, "during the grace period").await;
    let took = ends(ws, Duration::from_secs(5)).await + Duration::from_millis(300);
    assert!(
        took >= Duration::from_millis(1300),
        "closed after {took:?}, before the grace period ended"
    );
    stopping.await.expect("stopped");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn websocket_over_tls_from_the_client() {
    let server = ws_server().await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca
        .issue(&["localhost"], KeyKind::Ecdsa)
        .write(dir.path(), "site");
    let proxy = start(&ws_config(&server, "", &tls_config(&cert, &key, "")));
    let addr = proxy.https_addr.expect("https listener");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(ca.client_config(&[b"http/1.1"]))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("TLS handshake");
    let (ws, resp) = tokio_tungstenite::client_async("wss://localhost/chat", tls)
        .await
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    let mut ws = greeted(ws).await;
    echoes(&mut ws, "secret").await;
    let big = vec![7u8; 300_000];
    ws.send(Message::binary(big.clone())).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::binary(big));
    ws.close(None).await.expect("close");
    ends(ws, Duration::from_secs(5)).await;
    stop(proxy).await;
}

#[tokio::test]
async fn routes_and_rate_limits_apply_to_the_handshake() {
    let server = ws_server().await;
    let proxy = start(&ws_config(
        &server,
        "    rate_limit:\n      requests_per_ip: 1\n      window_size: 1m\n",
        "",
    ));
    let first = connect(proxy.proxy_addr).await;
    let refused = |e: tungstenite::Error| match e {
        tungstenite::Error::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP answer, got {other}"),
    };
    let addr = proxy.proxy_addr;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let e = tokio_tungstenite::client_async(format!("ws://{addr}/chat"), tcp)
        .await
        .expect_err("over the limit");
    assert_eq!(refused(e), 429);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let e = tokio_tungstenite::client_async(format!("ws://{addr}/elsewhere"), tcp)
        .await
        .expect_err("no route");
    assert_eq!(refused(e), 404);
    drop(first);
    metric_reaches(&proxy, ACTIVE, 0).await;
    stop(proxy).await;
}

/// The headers the testkit backend echoed in a raw response's body.
fn echoed(raw: &str) -> serde_json::Value {
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    serde_json::from_str::<serde_json::Value>(&body[start..end]).unwrap_or_default()["headers"]
        .clone()
}

#[tokio::test]
async fn upgrades_not_allowed_and_h2c_go_on_as_plain_requests() {
    let b = Backend::start("b").await;
    let proxy = start(&format!(
        "upstreams:\n  - name: web\n    backends: [\"{}\"]\n    upgrades: []\n  - name: any\n    backends: [\"{}\"]\n    upgrades: [websocket, foo]\nroutes:\n  - name: none\n    path_prefix: /none\n    upstream: web\n  - name: any\n    path_prefix: /\n    upstream: any\n",
        b.url(),
        b.url()
    ));
    let addr = proxy.proxy_addr;
    for (path, upgrade) in [("/none", "websocket"), ("/", "h2c"), ("/", "bar")] {
        let raw = exchange(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(
            raw.starts_with("HTTP/1.1 200"),
            "{upgrade} on {path}: {raw}"
        );
        let h = echoed(&raw);
        for gone in ["upgrade", "connection", "http2-settings"] {
            assert!(
                h.get(gone).is_none(),
                "{gone} reached the backend for {upgrade} on {path}: {h}"
            );
        }
    }
    stop(proxy).await;
}

#[tokio::test]
async fn a_backend_that_declines_the_upgrade_answers_as_usual() {
    // The testkit backend does not speak WebSocket: it answers 200, and the
    // client connection goes on carrying requests.
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let raw = exchange(
        proxy.proxy_addr,
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw.matches("HTTP/1.1 200").count(), 2, "{raw}");
    let first = echoed(&raw);
    assert_eq!(first["upgrade"], "websocket", "asked for: {first}");
    assert_eq!(first["connection"], "upgrade", "{first}");
    stop(proxy).await;
}

#[tokio::test]
async fn a_drained_backends_tunnels_close_at_its_drain_timeout() {
    let server = ws_server().await;
    let other = ws_server().await;
    let up = |drain: bool| {
        format!(
            "upstreams:\n  - name: ws\n    drain_timeout: 400ms\n    backends:\n      - url: {}\n        drain: {drain}\n      - url: {}\nroutes:\n  - name: chat\n    path_prefix: /chat\n    upstream: ws\n",
            server.url, other.url
        )
    };
    let proxy = start(&up(false));
    // Round robin: the first tunnel goes to `server`, the second to `other`.
    let mut ws = connect(proxy.proxy_addr).await;
    let mut kept = connect(proxy.proxy_addr).await;
    echoes(&mut ws, "before").await;

    // Drained, then back in rotation before its deadline: nothing is cut.
    proxy.apply(parse(&up(true))).await.expect("drain");
    proxy.apply(parse(&up(false))).await.expect("undrain");
    tokio::time::sleep(Duration::from_millis(700)).await;
    echoes(&mut ws, "still here").await;

    // Drained for good: the tunnel goes on until the deadline, then closes.
    let t = Instant::now();
    proxy.apply(parse(&up(true))).await.expect("drain");
    echoes(&mut ws, "within the deadline").await;
    let took = ends(ws, Duration::from_secs(5)).await;
    let since = t.elapsed();
    assert!(
        since >= Duration::from_millis(350),
        "closed after {since:?} ({took:?})"
    );
    assert!(since < Duration::from_secs(3), "closed after {since:?}");
    // The other backend's tunnel is untouched.
    echoes(&mut kept, "unaffected").await;

    // A backend removed from the config: the same.
    let mut third = connect(proxy.proxy_addr).await;
    echoes(&mut third, "on other").await;
    let only_server = format!(
        "upstreams:\n  - name: ws\n    drain_timeout: 400ms\n    backends: [\"{}\"]\nroutes:\n  - name: chat\n    path_prefix: /chat\n    upstream: ws\n",
        server.url
    );
    let t = Instant::now();
    proxy
        .apply(parse(&only_server))
        .await
        .expect("remove other");
    echoes(&mut kept, "removed, within the deadline").await;
    ends(kept, Duration::from_secs(5)).await;
    let since = t.elapsed();
    assert!(
        since >= Duration::from_millis(350) && since < Duration::from_secs(3),
        "{since:?}"
    );
    ends(third, Duration::from_secs(5)).await;
    stop(proxy).await;
}
