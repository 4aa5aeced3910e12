//! Certificates from the control plane's store: a subscribed node serves
//! HTTPS with the certificate its config names, picks up a replacement
//! without a restart, keeps the files private, and restarts from its cache
//! with them while the control plane is down.

use http::Method;
use isame_data_plane::subscription::Node;
use isame_testkit::tls::{Issued, KeyKind, TestCa};
use isame_testkit::{Backend, Client, Reply};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use common::subscribe::{api, control_plane, options};

async fn upload(cp: SocketAddr, name: &str, pair: &Issued) -> Reply {
    let body = serde_json::json!({"cert_pem": pair.cert_pem, "key_pem": pair.key_pem});
    api(
        cp,
        Method::PUT,
        &format!("/api/v1/certificates/{name}"),
        &body.to_string(),
    )
    .await
}

async fn serving(node: &Node, v: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while node.state().version.load(Ordering::SeqCst) != v {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node never served version {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The certificate the node presents for `sni`, after a successful request.
async fn presented(node: &Node, ca: &TestCa, sni: &str) -> Vec<u8> {
    let https = node.https_addr().await.expect("https listener");
    let (mut c, info) = Client::https(https, sni, ca.client_config(&[b"http/1.1"]))
        .await
        .expect("handshake");
    let r = c.get("/").await.expect("reply");
    assert_eq!(r.status, 200);
    info.peer_cert.expect("a certificate").as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_node_serves_rotates_and_caches_stored_certificates() {
    let backend = Backend::start("b").await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("dir");
    let cp = control_plane(dir.path(), None).await;
    let main = ca.issue(&["localhost"], KeyKind::Ecdsa);
    let shop = ca.issue(&["shop.test"], KeyKind::Rsa);
    assert_eq!(upload(cp.api_addr, "main", &main).await.status, 201);
    assert_eq!(upload(cp.api_addr, "shop", &shop).await.status, 201);
    let config = format!(
        "upstreams:\n  - name: web\n    backends: [{}]\nhealth:\n  enabled: false\n\
         tls:\n  enabled: true\n  certificate: main\n  certificates:\n    - certificate: shop\n",
        backend.url()
    );
    let r = api(cp.api_addr, Method::PUT, "/api/v1/config", &config).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v1 = r.json()["version"].as_u64().expect("version");

    let cache = dir.path().join("cache");
    let node = Node::start(options(cp.grpc_addr, "edge-1", Some(cache.clone())))
        .await
        .expect("node");
    serving(&node, v1).await;
    assert_eq!(
        presented(&node, &ca, "localhost").await,
        main.cert_der().as_ref()
    );
    assert_eq!(
        presented(&node, &ca, "shop.test").await,
        shop.cert_der().as_ref()
    );

    // Keys on the node are readable by its user only.
    let certs = cache.join("certs");
    assert_eq!(
        std::fs::metadata(&certs).expect("dir").permissions().mode() & 0o777,
        0o700
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&certs)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    for f in &files {
        assert_eq!(
            std::fs::metadata(f).expect("file").permissions().mode() & 0o777,
            0o600,
            "{}",
            f.display()
        );
    }

    // A renewed certificate reaches the node as a new version; new
    // handshakes get it, the old files are gone.
    let renewed = ca.issue(&["localhost"], KeyKind::Ecdsa);
    let r = upload(cp.api_addr, "main", &renewed).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v2 = r.json()["version"].as_u64().expect("new version");
    serving(&node, v2).await;
    assert_eq!(
        presented(&node, &ca, "localhost").await,
        renewed.cert_der().as_ref()
    );
    assert_eq!(std::fs::read_dir(&certs).expect("list").count(), 4);

    // The control plane goes away; the node restarts from its cache and
    // still serves HTTPS with the renewed certificate.
    cp.shutdown().await;
    node.shutdown().await;
    let node = Node::start(options(
        "127.0.0.1:1".parse().expect("addr"),
        "edge-1",
        Some(cache.clone()),
    ))
    .await
    .expect("node restarts from its cache");
    serving(&node, v2).await;
    assert_eq!(
        presented(&node, &ca, "localhost").await,
        renewed.cert_der().as_ref()
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_standalone_config_cannot_name_a_stored_certificate() {
    let config = isame_proto::Config::from_yaml(
        "upstreams: [{name: a, backends: [http://127.0.0.1:1]}]\n\
         tls: {enabled: true, certificate: main}\n",
    )
    .expect("valid model");
    let Err(isame_data_plane::ReloadError::Invalid(errors)) = isame_data_plane::check(config)
    else {
        panic!("a standalone config naming a stored certificate is refused");
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors.0[0].path, "tls.certificate");
    assert!(errors.0[0].message.contains("cert_file and key_file"));
}
