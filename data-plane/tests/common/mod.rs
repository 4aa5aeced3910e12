//! Shared helpers for the data plane's integration tests: start a proxy
//! in-process on port 0 in front of testkit backends.
#![allow(dead_code)]

pub mod binary;
pub mod scripted;
pub mod subscribe;

use isame_data_plane::server::{Server, ServerOptions};
use isame_proto::config::Config;
use isame_testkit::Backend;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A YAML upstream block listing `backends` with the given weights.
pub fn upstream(name: &str, algorithm: &str, backends: &[(&Backend, u32)]) -> String {
    let mut s = format!("  - name: {name}\n    algorithm: {algorithm}\n    backends:\n");
    for (b, w) in backends {
        s.push_str(&format!("      - url: {}\n        weight: {w}\n", b.url()));
    }
    s
}

/// A complete config with the given upstream blocks and extra top-level YAML.
/// Health checks, retries and breakers are off unless `extra` configures
/// them, so that tests count exactly the requests they send.
pub fn config(upstreams: &[String], extra: &str) -> String {
    format!("upstreams:\n{}{extra}{}", upstreams.concat(), quiet(extra))
}

/// The sections that switch off what `yaml` does not configure itself.
fn quiet(yaml: &str) -> String {
    ["health", "retry", "circuit_breaker"]
        .iter()
        .filter(|s| !yaml.lines().any(|l| l.starts_with(&format!("{s}:"))))
        .map(|s| format!("{s}:\n  enabled: false\n"))
        .collect()
}

/// The `tls` section terminating TLS with this certificate and key, then
/// `extra` (more top-level YAML).
pub fn tls_config(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "tls:\n  enabled: true\n  cert_file: {}\n  key_file: {}\n{extra}",
        cert.display(),
        key.display()
    )
}

/// Starts a proxy in front of `b` that terminates TLS for `localhost` with
/// a certificate of a new test CA; returns it, the CA (for clients) and the
/// directory holding the certificate files.
pub fn start_tls(b: &Backend) -> (Server, isame_testkit::tls::TestCa, tempfile::TempDir) {
    use isame_testkit::tls::{KeyKind, TestCa};
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca
        .issue(&["localhost"], KeyKind::Ecdsa)
        .write(dir.path(), "site");
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(b, 1)])],
        &tls_config(&cert, &key, ""),
    ));
    (proxy, ca, dir)
}

/// Parses YAML that the test knows to be valid (see [`config`] for what is
/// switched off when the YAML does not mention it).
pub fn parse(yaml: &str) -> Config {
    let yaml = format!("{yaml}{}", quiet(yaml));
    match Config::from_yaml(&yaml) {
        Ok(c) => c,
        Err(e) => panic!("test config invalid: {e}\n{yaml}"),
    }
}

/// Starts a proxy on 127.0.0.1:0 (admin too) serving `yaml`.
pub fn start(yaml: &str) -> Server {
    start_with(yaml, None, 2)
}

/// Starts a proxy with an optional watched file and a worker count.
pub fn start_with(yaml: &str, path: Option<PathBuf>, workers: usize) -> Server {
    Server::start(ServerOptions {
        config: parse(yaml),
        config_path: path,
        listen: Some(local()),
        https_listen: Some(local()),
        admin_listen: Some(local()),
        workers,
    })
    .expect("proxy starts")
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

/// Sends raw bytes on a new connection and reads until the peer closes or
/// `timeout` passes; returns what was read.
pub fn raw_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `x-backend` header of a reply.
pub fn backend_of(r: &isame_testkit::Reply) -> String {
    r.headers
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Shuts the proxy down without blocking the test's runtime, whose client
/// tasks must keep running to answer HTTP/2 pings and close connections.
pub async fn stop(proxy: Server) {
    tokio::task::spawn_blocking(move || proxy.shutdown())
        .await
        .expect("shutdown");
}

/// [`raw_exchange`] on a blocking thread, so the test's runtime keeps serving.
pub async fn exchange(addr: SocketAddr, request: impl Into<Vec<u8>>) -> String {
    let request = request.into();
    tokio::task::spawn_blocking(move || raw_exchange(addr, &request, Duration::from_secs(5)))
        .await
        .expect("exchange")
}

/// An HTTP/1.1 connection whose request bodies the test feeds part by part.
pub async fn streaming_client(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Channel<bytes::Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    tx
}
