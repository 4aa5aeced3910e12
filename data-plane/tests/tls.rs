//! TLS termination and HTTPS backends, with certificates made per test.

mod common;

use common::*;
use isame_testkit::tls::{KeyKind, TestCa};
use isame_testkit::{Backend, Client};
use std::sync::Arc;

async fn https_get(
    addr: std::net::SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<(isame_testkit::Reply, isame_testkit::client::TlsInfo)> {
    let (mut c, info) = Client::https(addr, sni, config).await?;
    let r = c.get(path).await.map_err(std::io::Error::other)?;
    Ok((r, info))
}

#[tokio::test]
async fn terminates_tls_with_ecdsa_and_rsa_certificates() {
    let b = Backend::start("b").await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    for kind in [KeyKind::Ecdsa, KeyKind::Rsa] {
        let issued = ca.issue(&["localhost", "127.0.0.1"], kind);
        let (cert, key) = issued.write(dir.path(), &format!("{kind:?}"));
        let proxy = start(&config(
            &[upstream("web", "round_robin", &[(&b, 1)])],
            &tls_config(&cert, &key, ""),
        ));
        let https = proxy.https_addr.expect("https listener");
        let (r, info) = https_get(
            https,
            "localhost",
            ca.client_config(&[b"h2", b"http/1.1"]),
            "/secure",
        )
        .await
        .expect("https request");
        assert_eq!(r.status, 200, "{kind:?}");
        assert_eq!(r.json()["headers"]["x-forwarded-proto"], "https");
        assert_eq!(info.alpn.as_deref(), Some(&b"h2"[..]), "ALPN picks HTTP/2");
        assert_eq!(info.peer_cert.as_ref(), Some(&issued.cert_der()));
        // HTTP/1.1 clients get HTTP/1.1.
        let (r, info) = https_get(https, "127.0.0.1", ca.client_config(&[b"http/1.1"]), "/")
            .await
            .expect("https/1.1 request");
        assert_eq!(
            (r.status.as_u16(), info.alpn.as_deref()),
            (200, Some(&b"http/1.1"[..]))
        );
        // Plain HTTP keeps working beside it.
        assert_eq!(
            isame_testkit::client::get(proxy.proxy_addr, "/")
                .await
                .expect("http")
                .status,
            200
        );
        stop(proxy).await;
    }
}

#[tokio::test]
async fn certificates_are_chosen_by_sni() {
    let b = Backend::start("b").await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let default = ca.issue(&["default.test"], KeyKind::Ecdsa);
    let a = ca.issue(&["a.test"], KeyKind::Ecdsa);
    let wild = ca.issue(&["*.wild.test"], KeyKind::Rsa);
    let (dc, dk) = default.write(dir.path(), "default");
    let (ac, ak) = a.write(dir.path(), "a");
    let (wc, wk) = wild.write(dir.path(), "wild");
    let extra = format!(
        "  certificates:\n    - cert_file: {}\n      key_file: {}\n    - cert_file: {}\n      key_file: {}\n",
        ac.display(),
        ak.display(),
        wc.display(),
        wk.display()
    );
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        &tls_config(&dc, &dk, &extra),
    ));
    let https = proxy.https_addr.expect("https");
    let expect = [
        ("a.test", &a),
        ("x.wild.test", &wild),
        ("default.test", &default),
    ];
    for (name, issued) in expect {
        // The client verifies the name, so each handshake only succeeds
        // with the right certificate; compare it too.
        let (_, info) = https_get(https, name, ca.client_config(&[b"http/1.1"]), "/")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(info.peer_cert.as_ref(), Some(&issued.cert_der()), "{name}");
    }
    // An unknown name gets the default certificate, which the client rejects.
    assert!(
        https_get(https, "other.test", ca.client_config(&[b"http/1.1"]), "/")
            .await
            .is_err()
    );
    stop(proxy).await;
}

#[tokio::test]
async fn minimum_version_and_cipher_suites_are_enforced() {
    let b = Backend::start("b").await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca
        .issue(&["localhost"], KeyKind::Ecdsa)
        .write(dir.path(), "site");
    let tls12_only = |ca: &TestCa| {
        ca.client_config_with(&[b"http/1.1"], |b| {
            b.with_protocol_versions(&[&rustls::version::TLS12])
        })
    };
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        &tls_config(&cert, &key, "  min_version: \"1.3\"\n"),
    ));
    let https = proxy.https_addr.expect("https");
    assert!(
        https_get(https, "localhost", tls12_only(&ca), "/")
            .await
            .is_err(),
        "TLS 1.2 is refused"
    );
    let (r, info) = https_get(https, "localhost", ca.client_config(&[b"http/1.1"]), "/")
        .await
        .expect("TLS 1.3");
    assert_eq!(
        (r.status.as_u16(), info.version),
        (200, Some(rustls::ProtocolVersion::TLSv1_3))
    );
    stop(proxy).await;

    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        &tls_config(
            &cert,
            &key,
            "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n",
        ),
    ));
    let https = proxy.https_addr.expect("https");
    let only = |suite: rustls::SupportedCipherSuite| {
        let mut p = rustls::crypto::ring::default_provider();
        p.cipher_suites = vec![suite];
        ca.client_config_for(&[b"http/1.1"], p, |b| {
            b.with_protocol_versions(&[&rustls::version::TLS12])
        })
    };
    use rustls::crypto::ring::cipher_suite as cs;
    assert!(https_get(
        https,
        "localhost",
        only(cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
        "/"
    )
    .await
    .is_err());
    let (_, info) = https_get(
        https,
        "localhost",
        only(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
        "/",
    )
    .await
    .expect("the allowed suite");
    assert_eq!(
        info.suite,
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );
    assert!(
        https_get(https, "localhost", ca.client_config(&[b"http/1.1"]), "/")
            .await
            .is_ok(),
        "TLS 1.3 clients fall back to the allowed suite"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn a_reload_swaps_certificates_without_dropping_connections() {
    let b = Backend::start("b").await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = ca.issue(&["localhost"], KeyKind::Ecdsa);
    let second = ca.issue(&["localhost"], KeyKind::Rsa);
    let (cert, key) = first.write(dir.path(), "site");
    let yaml = config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        &tls_config(&cert, &key, ""),
    );
    let proxy = start(&yaml);
    let https = proxy.https_addr.expect("https");
    let (mut open, info) = Client::https(https, "localhost", ca.client_config(&[b"http/1.1"]))
        .await
        .expect("connect");
    assert_eq!(info.peer_cert.as_ref(), Some(&first.cert_der()));
    second.write(dir.path(), "site");
    proxy.apply(parse(&yaml)).await.expect("reload");
    let (_, info) = https_get(https, "localhost", ca.client_config(&[b"http/1.1"]), "/")
        .await
        .expect("new connection");
    assert_eq!(
        info.peer_cert.as_ref(),
        Some(&second.cert_der()),
        "new connections get the new certificate"
    );
    assert_eq!(
        open.get("/")
            .await
            .expect("the open connection still works")
            .status,
        200
    );
    // A broken replacement is refused and the last good certificate stays.
    std::fs::write(&key, ca.issue(&["localhost"], KeyKind::Ecdsa).key_pem).expect("mismatched key");
    let err = proxy
        .apply(parse(&yaml))
        .await
        .expect_err("mismatched key refused");
    assert!(
        err.to_string().contains("tls.key_file") && err.to_string().contains("does not match"),
        "{err}"
    );
    let (_, info) = https_get(https, "localhost", ca.client_config(&[b"http/1.1"]), "/")
        .await
        .expect("still serving");
    assert_eq!(info.peer_cert.as_ref(), Some(&second.cert_der()));
    stop(proxy).await;
}

#[tokio::test]
async fn bad_certificate_files_are_named() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (good_cert, good_key) = ca
        .issue(&["localhost"], KeyKind::Ecdsa)
        .write(dir.path(), "good");
    let (old_cert, old_key) = ca.issue_expired(&["localhost"]).write(dir.path(), "old");
    let (_, other_key) = ca
        .issue(&["localhost"], KeyKind::Rsa)
        .write(dir.path(), "other");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let cases = [
        (
            dir.path().join("missing.pem"),
            good_key.clone(),
            "tls.cert_file",
            "cannot read",
        ),
        (old_cert, old_key, "tls.cert_file", "expired on"),
        (
            good_cert.clone(),
            other_key,
            "tls.key_file",
            "does not match the certificate",
        ),
        (garbage, good_key, "tls.cert_file", "no PEM certificate"),
    ];
    for (cert, key, path, fragment) in cases {
        let yaml = format!(
            "upstreams:\n  - name: web\n    backends: [\"http://127.0.0.1:9\"]\n{}",
            tls_config(&cert, &key, "")
        );
        let err =
            isame_data_plane::server::Server::start(isame_data_plane::server::ServerOptions {
                config: parse(&yaml),
                config_path: None,
                listen: Some("127.0.0.1:0".parse().expect("addr")),
                https_listen: Some("127.0.0.1:0".parse().expect("addr")),
                admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
                workers: 1,
            })
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(
            text.contains(path) && text.contains(fragment),
            "{path} / {fragment}: {text}"
        );
    }
}

#[tokio::test]
async fn plain_http_can_be_redirected_to_https() {
    let b = Backend::start("b").await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = ca
        .issue(&["localhost"], KeyKind::Ecdsa)
        .write(dir.path(), "site");
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        &format!(
            "server:\n  https_port: 8443\n{}",
            tls_config(&cert, &key, "  redirect_http: true\n")
        ),
    ));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let req = http::Request::get("/shop?item=1")
        .header("host", "store.example:8080")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let r = c.send(req).await.expect("redirect");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.headers["location"],
        "https://store.example:8443/shop?item=1"
    );
    assert_eq!(b.hits(), 0);
    let (r, _) = https_get(
        proxy.https_addr.expect("https"),
        "localhost",
        ca.client_config(&[b"http/1.1"]),
        "/",
    )
    .await
    .expect("https is served");
    assert_eq!(r.status, 200);
    stop(proxy).await;
}

#[tokio::test]
async fn https_backends_are_verified() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let backend_cert = ca.issue(&["localhost", "127.0.0.1"], KeyKind::Ecdsa);
    let b = Backend::start_tls("secure", backend_cert.server_config()).await;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("write CA");
    let yaml = format!(
        "upstreams:\n  - name: web\n    tls:\n      ca_file: {}\n    health:\n      enabled: true\n      interval: 100ms\n      timeout: 90ms\n    backends: [\"{}\"]\n",
        ca_file.display(),
        b.url()
    );
    assert!(b.url().starts_with("https://"));
    let proxy = start(&yaml);
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..3 {
        let r = c.get("/over-tls").await.expect("request");
        assert_eq!(
            (r.status.as_u16(), backend_of(&r).as_str()),
            (200, "secure")
        );
    }
    // Each probe opens a connection of its own; the three requests shared one.
    assert!(
        b.accepted() <= b.probes() + 1,
        "pooled over TLS: {} connections, {} probes",
        b.accepted(),
        b.probes()
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(b.probes() >= 1, "health probes speak TLS too");
    let s = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(s["upstreams"][0]["backends"][0]["healthy"], true, "{s}");
    stop(proxy).await;

    // A backend whose certificate this CA did not sign is refused.
    let stranger = TestCa::new().issue(&["localhost", "127.0.0.1"], KeyKind::Ecdsa);
    let imposter = Backend::start_tls("imposter", stranger.server_config()).await;
    let proxy = start(&yaml.replace(&b.url(), &imposter.url()));
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!(r.status, 502);
    assert_eq!(imposter.hits(), 0);
    stop(proxy).await;
}

#[tokio::test]
async fn new_trust_settings_reach_pooled_connections_and_probes() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Backend::start_tls(
        "secure",
        ca.issue(&["localhost", "127.0.0.1"], KeyKind::Ecdsa)
            .server_config(),
    )
    .await;
    let (good_ca, other_ca) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&good_ca, ca.cert_pem()).expect("write CA");
    std::fs::write(&other_ca, TestCa::new().cert_pem()).expect("write CA");
    let yaml = |ca_file: &std::path::Path| {
        format!(
            "upstreams:\n  - name: web\n    tls:\n      ca_file: {}\n    health:\n      enabled: true\n      interval: 100ms\n      timeout: 90ms\n      unhealthy_threshold: 1\n    backends: [\"{}\"]\n",
            ca_file.display(),
            b.url()
        )
    };
    let proxy = start(&yaml(&good_ca));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    assert_eq!(c.get("/").await.expect("request").status, 200);
    // The CA file now names a CA that did not sign the backend: the warm,
    // already verified connection must not carry on under the new settings,
    // and the probes must use them too.
    proxy.apply(parse(&yaml(&other_ca))).await.expect("reload");
    let r = c.get("/").await.expect("request");
    assert_eq!(r.status, 502, "verified under the new CA: {}", r.text());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let s = isame_testkit::client::get(proxy.admin_addr, "/status")
            .await
            .expect("status")
            .json();
        if s["upstreams"][0]["backends"][0]["healthy"] == false {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "probes still trust the old CA: {s}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Back to the right CA: served again.
    proxy.apply(parse(&yaml(&good_ca))).await.expect("reload");
    assert_eq!(c.get("/").await.expect("request").status, 200);
    stop(proxy).await;
}

#[tokio::test]
async fn without_alpn_the_first_bytes_choose_the_protocol() {
    let b = Backend::start("b").await;
    let (proxy, ca, _dir) = start_tls(&b);
    let https = proxy.https_addr.expect("https");
    let tls = || async {
        let stream = tokio::net::TcpStream::connect(https)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let s = tokio_rustls::TlsConnector::from(ca.client_config(&[]))
            .connect(name, stream)
            .await
            .expect("handshake");
        assert_eq!(s.get_ref().1.alpn_protocol(), None, "no ALPN offered");
        hyper_util::rt::TokioIo::new(s)
    };
    // HTTP/2 with prior knowledge.
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), tls().await)
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let r = tx
        .send_request(
            http::Request::get("https://localhost/")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("h2 response");
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, http::Version::HTTP_2)
    );
    // HTTP/1.1.
    let (mut tx, conn) = hyper::client::conn::http1::handshake(tls().await)
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let r = tx
        .send_request(
            http::Request::get("/")
                .header("host", "localhost")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("h1 response");
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, http::Version::HTTP_11)
    );
    stop(proxy).await;
}
