//! Data planes following a real control plane over gRPC: convergence, NACK,
//! the control plane going away and coming back, the snapshot cache, and
//! config changes under traffic.

use http::Method;
use isame_control_plane::app::{ControlPlane, Options as CpOptions};
use isame_data_plane::subscription::{self, Node};
use isame_testkit::{Backend, Client};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use common::subscribe::{api, control_plane, name_via, options, serving, TOKEN};

fn config(backend: &Backend) -> String {
    format!(
        "upstreams:\n  - name: web\n    backends: [{}]\nhealth:\n  enabled: false\nretry:\n  enabled: false\ncircuit_breaker:\n  enabled: false\n",
        backend.url()
    )
}

/// Waits until the ledger satisfies `ok`.
async fn ledger(cp: SocketAddr, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let nodes = api(cp, Method::GET, "/api/v1/nodes", "").await.json();
        if ok(&nodes) {
            return nodes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ledger never got there: {nodes}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_nack_and_keep_serving() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().expect("dir");
    let cp = control_plane(dir.path(), None).await;
    assert_eq!(
        api(cp.api_addr, Method::PUT, "/api/v1/config", &config(&a))
            .await
            .status,
        200
    );
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(
            Node::start(options(cp.grpc_addr, &format!("dp-{i}"), None))
                .await
                .expect("node"),
        );
    }
    for n in &nodes {
        assert_eq!(name_via(serving(n, 1).await).await, "a");
    }
    // A change reaches all three; the ledger shows three ACKs.
    assert_eq!(
        api(cp.api_addr, Method::PUT, "/api/v1/config", &config(&b))
            .await
            .status,
        200
    );
    for n in &nodes {
        assert_eq!(name_via(serving(n, 2).await).await, "b");
    }
    let l = ledger(cp.api_addr, |l| {
        l["nodes"].as_array().is_some_and(|n| {
            n.len() == 3
                && n.iter()
                    .all(|n| n["version"] == 2 && n["connected"] == true)
        })
    })
    .await;
    assert_eq!(l["nodes"][0]["labels"]["zone"], "test");
    // Traffic and health reports arrive.
    ledger(cp.api_addr, |l| {
        l["nodes"][0]["health"][0]["backend"] == b.url().as_str()
    })
    .await;
    ledger(cp.api_addr, |l| {
        l["nodes"][0]["traffic"]["upstreams"]
            .as_array()
            .is_some_and(|u| !u.is_empty())
    })
    .await;

    // A version no node can load (its certificate file is not on these
    // hosts): NACKed with the reason, and the nodes keep serving version 2.
    let tls = format!(
        "{}tls:\n  enabled: true\n  cert_file: /nonexistent/cert.pem\n  key_file: /nonexistent/key.pem\n",
        config(&a)
    );
    let r = api(cp.api_addr, Method::PUT, "/api/v1/config", &tls).await;
    assert_eq!(
        r.status,
        200,
        "the control plane cannot see node files: {}",
        r.text()
    );
    let l = ledger(cp.api_addr, |l| {
        l["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["last_nack"]["version"] == 3))
    })
    .await;
    let nack = l["nodes"][0]["last_nack"].to_string();
    assert!(nack.contains("cert.pem"), "{nack}");
    for n in &nodes {
        assert_eq!(n.state().version.load(Ordering::SeqCst), 2);
        let proxy = serving(n, 2).await;
        assert_eq!(name_via(proxy).await, "b", "still serving version 2");
    }
    for n in nodes {
        n.shutdown().await;
    }
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_outlive_the_control_plane_and_restart_from_their_cache() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().expect("dir");
    let cp = control_plane(dir.path(), None).await;
    let grpc = cp.grpc_addr;
    api(cp.api_addr, Method::PUT, "/api/v1/config", &config(&a)).await;
    let cache = dir.path().join("cache-1");
    let node = Node::start(options(grpc, "dp-1", Some(cache.clone())))
        .await
        .expect("node");
    serving(&node, 1).await;

    // The control plane goes away: the node keeps serving.
    cp.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!node.state().connected.load(Ordering::SeqCst));
    assert_eq!(name_via(serving(&node, 1).await).await, "a");

    // The node restarts while the control plane is down: it serves from its cache at once.
    node.shutdown().await;
    let node = Node::start(options(grpc, "dp-1", Some(cache.clone())))
        .await
        .expect("restart");
    let proxy = node.serving().borrow().expect("serving at once").0;
    assert_eq!(name_via(proxy).await, "a");
    assert_eq!(node.state().version.load(Ordering::SeqCst), 1);

    // The control plane comes back (same database, same address): the node
    // reconnects and follows the next change.
    let cp = control_plane(dir.path(), Some(grpc)).await;
    let r = api(cp.api_addr, Method::PUT, "/api/v1/config", &config(&b)).await;
    assert_eq!(r.json()["version"], 2);
    assert_eq!(name_via(serving(&node, 2).await).await, "b");
    ledger(cp.api_addr, |l| {
        l["nodes"][0]["version"] == 2 && l["nodes"][0]["connected"] == true
    })
    .await;
    node.shutdown().await;
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cache_the_proxy_port_stays_closed_until_a_config_arrives() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().expect("dir");
    // A control plane address that is not up yet.
    let grpc = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).expect("dir");
    // A corrupt cache is reported and ignored, not a crash.
    std::fs::write(subscription::cache::path(&cache), b"garbage").expect("write");
    let node = Node::start(options(grpc, "dp-w", Some(cache.clone())))
        .await
        .expect("node starts");
    assert!(
        node.serving().borrow().is_none(),
        "no proxy port without a config"
    );
    let admin = node.admin_addr();
    let ready = isame_testkit::client::get(admin, "/ready")
        .await
        .expect("ready");
    assert_eq!(ready.status, 503);
    assert_eq!(
        isame_testkit::client::get(admin, "/health")
            .await
            .expect("health")
            .status,
        200
    );
    let status = isame_testkit::client::get(admin, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(status["state"], "waiting");

    let cp = control_plane(dir.path(), Some(grpc)).await;
    api(cp.api_addr, Method::PUT, "/api/v1/config", &config(&a)).await;
    let proxy = serving(&node, 1).await;
    assert_eq!(name_via(proxy).await, "a");
    // The admin listener kept its address and now reports ready.
    assert_eq!(node.admin_addr(), admin);
    assert_eq!(
        isame_testkit::client::get(admin, "/ready")
            .await
            .expect("ready")
            .status,
        200
    );
    // The cache was replaced with the good snapshot.
    let cached = subscription::cache::load(&cache)
        .expect("readable")
        .expect("present");
    assert_eq!(cached.version, 1);
    node.shutdown().await;
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_versions_under_traffic_drop_nothing() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().expect("dir");
    let cp = control_plane(dir.path(), None).await;
    let two = format!(
        "upstreams:\n  - name: web\n    algorithm: weighted_round_robin\n    backends:\n      - url: {}\n      - url: {}\nhealth:\n  enabled: false\nretry:\n  enabled: false\ncircuit_breaker:\n  enabled: false\n",
        a.url(),
        b.url()
    );
    api(cp.api_addr, Method::PUT, "/api/v1/config", &two).await;
    let node = Node::start(options(cp.grpc_addr, "dp-1", None))
        .await
        .expect("node");
    let proxy = serving(&node, 1).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..3 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            let mut c = Client::http1(proxy).await.expect("connect");
            while !stop.load(Ordering::SeqCst) {
                match c.get("/").await {
                    Ok(r) if r.status == 200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let backend = a.url().replace("http://", "");
    for w in 2..=51u32 {
        let r = api(
            cp.api_addr,
            Method::PATCH,
            &format!("/api/v1/upstreams/web/backends/{backend}"),
            &format!("{{\"weight\": {w}}}"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    serving(&node, 51).await;
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed) = (0, 0);
    for c in clients {
        let (o, f) = c.await.expect("client");
        ok += o;
        failed += f;
    }
    assert_eq!(failed, 0, "{ok} ok");
    assert!(ok > 100, "traffic flowed: {ok}");
    node.shutdown().await;
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_nothing_is_served() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().expect("dir");
    let cp = control_plane(dir.path(), None).await;
    api(cp.api_addr, Method::PUT, "/api/v1/config", &config(&a)).await;
    let mut o = options(cp.grpc_addr, "dp-bad", None);
    o.token = Some("wrong-token".into());
    let node = Node::start(o).await.expect("node");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(node.serving().borrow().is_none());
    assert!(!node.state().connected.load(Ordering::SeqCst));
    let nodes = api(cp.api_addr, Method::GET, "/api/v1/nodes", "")
        .await
        .json();
    assert_eq!(nodes["nodes"], serde_json::json!([]));
    node.shutdown().await;
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_of_the_configured_ca() {
    use isame_testkit::tls::{KeyKind, TestCa};
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    let server = ca.issue(&["localhost", "127.0.0.1"], KeyKind::Ecdsa);
    let mut o = CpOptions::new(
        format!("sqlite://{}", dir.path().join("cp.db").display()),
        "127.0.0.1:0".parse().expect("addr"),
    );
    o.admin_token = Some(TOKEN.into());
    o.grpc_tls = Some(isame_control_plane::app::GrpcTls {
        cert_pem: server.cert_pem.clone().into_bytes(),
        key_pem: server.key_pem.clone().into_bytes(),
        client_ca_pem: Some(ca.cert_pem().into_bytes()),
    });
    let cp = ControlPlane::start(o).await.expect("control plane");
    api(cp.api_addr, Method::PUT, "/api/v1/config", &config(&a)).await;
    let url = format!("https://localhost:{}", cp.grpc_addr.port());
    let tls_options = |id: &str, client: Option<&isame_testkit::tls::Issued>| {
        let mut o = options(cp.grpc_addr, id, None);
        o.control_planes = vec![url.clone()];
        o.tls = Some(subscription::ClientTls {
            ca_pem: Some(ca.cert_pem().into_bytes()),
            identity: client.map(|c| {
                (
                    c.cert_pem.clone().into_bytes(),
                    c.key_pem.clone().into_bytes(),
                )
            }),
        });
        o
    };
    // A client certificate from this CA: admitted.
    let good = ca.issue(&["dp-good"], KeyKind::Ecdsa);
    let node = Node::start(tls_options("dp-good", Some(&good)))
        .await
        .expect("node");
    assert_eq!(name_via(serving(&node, 1).await).await, "a");
    // One from another CA, or none at all: refused at the handshake.
    let other = TestCa::new().issue(&["dp-evil"], KeyKind::Ecdsa);
    let evil = Node::start(tls_options("dp-evil", Some(&other)))
        .await
        .expect("node");
    let anonymous = Node::start(tls_options("dp-anon", None))
        .await
        .expect("node");
    // Plain text to a TLS listener fails too.
    let plain = Node::start(options(cp.grpc_addr, "dp-plain", None))
        .await
        .expect("node");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for n in [&evil, &anonymous, &plain] {
        assert!(n.serving().borrow().is_none());
        assert!(!n.state().connected.load(Ordering::SeqCst));
    }
    let nodes = api(cp.api_addr, Method::GET, "/api/v1/nodes", "")
        .await
        .json();
    let ids: Vec<_> = nodes["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["id"].clone())
        .collect();
    assert_eq!(ids, [serde_json::json!("dp-good")]);
    for n in [node, evil, anonymous, plain] {
        n.shutdown().await;
    }
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_control_plane_with_reused_version_numbers_is_followed() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().expect("dir");
    let cache = dir.path().join("cache");
    for d in ["first", "second"] {
        std::fs::create_dir_all(dir.path().join(d)).expect("dir");
    }
    let first = control_plane(&dir.path().join("first"), None).await;
    let grpc = first.grpc_addr;
    api(first.api_addr, Method::PUT, "/api/v1/config", &config(&a)).await;
    let node = Node::start(options(grpc, "dp-1", Some(cache.clone())))
        .await
        .expect("node");
    serving(&node, 1).await;
    node.shutdown().await;
    first.shutdown().await;

    // A control plane on a fresh database: its version 1 is another config.
    let second = control_plane(&dir.path().join("second"), Some(grpc)).await;
    api(second.api_addr, Method::PUT, "/api/v1/config", &config(&b)).await;
    let node = Node::start(options(grpc, "dp-1", Some(cache)))
        .await
        .expect("node");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let proxy = serving(&node, 1).await;
        if name_via(proxy).await == "b" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "kept the old version 1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waiting_for_its_first_config_stays_connected() {
    let dir = tempfile::tempdir().expect("dir");
    let mut o = CpOptions::new(
        format!("sqlite://{}", dir.path().join("cp.db").display()),
        "127.0.0.1:0".parse().expect("addr"),
    );
    o.admin_token = Some(TOKEN.into());
    o.distribution.node_timeout = Duration::from_millis(600);
    let cp = ControlPlane::start(o).await.expect("control plane");
    // Nothing applied yet: the node has nothing to serve, but reports.
    let node = Node::start(options(cp.grpc_addr, "dp-idle", None))
        .await
        .expect("node");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(node.state().connected.load(Ordering::SeqCst));
    let nodes = ledger(cp.api_addr, |l| l["nodes"][0]["connected"] == true).await;
    assert_eq!(nodes["nodes"][0]["id"], "dp-idle");
    node.shutdown().await;
    cp.shutdown().await;
}

/// A counter of the control plane's `/metrics`, summed over its series
/// whose line starts with `prefix`.
async fn cp_counter(cp: SocketAddr, prefix: &str) -> u64 {
    let text = api(cp, Method::GET, "/metrics", "").await.text();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_request_is_reported_once_however_many_tries_it_took() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.set_mode(isame_testkit::Mode::Status(503));
    b.set_mode(isame_testkit::Mode::Status(503));
    let gone = {
        let c = Backend::start("gone").await;
        c.url()
    };
    let dir = tempfile::tempdir().expect("dir");
    let cp = control_plane(dir.path(), None).await;
    // Two upstreams: one whose backends answer 503 (passed through after a
    // retry), one whose only backend refuses connections (the proxy's own
    // 502 after a retry).
    let yaml = format!(
        "upstreams:\n  - name: web\n    backends: [{}, {}]\n  - name: down\n    backends: [{gone}]\n\
         routes:\n  - name: down\n    path_prefix: /down\n    upstream: down\n  - name: web\n    path_prefix: /\n    upstream: web\n\
         health:\n  enabled: false\ncircuit_breaker:\n  enabled: false\n\
         retry:\n  max_attempts: 2\n  initial_backoff: 1ms\n  max_backoff: 1ms\n  budget_percent: 100\n",
        a.url(),
        b.url()
    );
    let r = api(cp.api_addr, Method::PUT, "/api/v1/config", &yaml).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let node = Node::start(options(cp.grpc_addr, "dp-1", None))
        .await
        .expect("node");
    let proxy = serving(&node, 1).await;
    let mut c = Client::http1(proxy).await.expect("connect");
    for _ in 0..10 {
        assert_eq!(c.get("/").await.expect("reply").status, 503);
        assert_eq!(c.get("/down").await.expect("reply").status, 502);
    }
    assert_eq!(a.hits() + b.hits(), 20, "two tries each");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let requests = cp_counter(cp.api_addr, "isame_cp_upstream_requests_total").await;
        if requests >= 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reports: {requests}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another report or two: nothing more may arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (upstream, want) in [("web", 10), ("down", 10)] {
        let label = format!("{{upstream=\"{upstream}\"}}");
        let requests = cp_counter(
            cp.api_addr,
            &format!("isame_cp_upstream_requests_total{label}"),
        )
        .await;
        let errors = cp_counter(
            cp.api_addr,
            &format!("isame_cp_upstream_errors_total{label}"),
        )
        .await;
        assert_eq!(
            (requests, errors),
            (want, want),
            "{upstream}: one error per failed request"
        );
    }
    node.shutdown().await;
}
