//! Deltas end to end: after its first snapshot a node is sent each change
//! as a delta, serves (and caches) exactly the control plane's version, and
//! asks for the whole snapshot when a delta does not apply.

use common::scripted::ScriptedCp;
use common::subscribe::{api, control_plane, name_via, options, serving};
use http::Method;
use isame_data_plane::subscription::{cache, Node};
use isame_proto::delta::{content_hash, Document};
use isame_proto::pb;
use isame_proto::pb::node_message::Kind as In;
use isame_testkit::Backend;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

/// A config of `n` upstreams (`u0`…) plus `web`, routed by `/`, on `web_backend`.
fn config(n: usize, backend: &Backend, web_backend: &Backend, reversed: bool) -> String {
    let mut ups: Vec<String> = (0..n)
        .map(|i| format!("  - name: u{i}\n    backends: [{}]\n", backend.url()))
        .collect();
    if reversed {
        ups.reverse();
    }
    format!(
        "upstreams:\n  - name: web\n    backends: [{}]\n{}routes:\n  - name: all\n    path_prefix: /\n    upstream: web\nhealth:\n  enabled: false\nretry:\n  enabled: false\ncircuit_breaker:\n  enabled: false\n",
        web_backend.url(),
        ups.concat()
    )
}

/// The control plane's hash of its newest version.
async fn newest_hash(cp: SocketAddr) -> String {
    let r = api(cp, Method::GET, "/api/v1/versions?limit=1", "").await;
    r.json()["versions"][0]["hash"]
        .as_str()
        .expect("hash")
        .to_owned()
}

/// `isame_cp_pushes_total` and `isame_cp_push_bytes_total` for `kind`.
async fn pushes(cp: SocketAddr, kind: &str) -> (u64, u64) {
    let text = api(cp, Method::GET, "/metrics", "").await.text();
    let read = |name: &str| {
        let prefix = format!("{name}{{kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        read("isame_cp_pushes_total"),
        read("isame_cp_push_bytes_total"),
    )
}

/// Sets the weight of `u7`'s backend.
async fn weight(cp: SocketAddr, backend: &Backend, w: u32) {
    let path = format!(
        "/api/v1/upstreams/u7/backends/{}",
        backend.url().trim_start_matches("http://")
    );
    let r = api(cp, Method::PATCH, &path, &format!("weight: {w}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Waits until the node serves `v` and checks that it serves, and caches,
/// the control plane's hash of it.
async fn in_step(cp: SocketAddr, node: &Node, cache_dir: &std::path::Path, v: u64) -> SocketAddr {
    let proxy = serving(node, v).await;
    let hash = newest_hash(cp).await;
    assert_eq!(
        *node.state().hash.lock().expect("hash"),
        hash,
        "version {v}"
    );
    // The cache is written after the ACK; give it a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let cached = cache::load(cache_dir).expect("cache reads");
        if let Some(c) = cached.filter(|c| c.version == v) {
            assert_eq!(c.hash, hash);
            let ids = c
                .certificates
                .iter()
                .map(|s| (s.name.clone(), s.id.clone()))
                .collect();
            assert_eq!(content_hash(&c.config_json, &ids), hash);
            return proxy;
        }
        assert!(tokio::time::Instant::now() < deadline, "cache of {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_travel_as_deltas_and_the_node_serves_the_control_planes_version() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().expect("dir");
    let cp = control_plane(dir.path(), None).await;
    let r = api(
        cp.api_addr,
        Method::PUT,
        "/api/v1/config",
        &config(300, &a, &a, false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cache_dir = dir.path().join("cache");
    let node = Node::start(options(cp.grpc_addr, "dp-1", Some(cache_dir.clone())))
        .await
        .expect("node");
    assert_eq!(
        name_via(in_step(cp.api_addr, &node, &cache_dir, 1).await).await,
        "a"
    );
    let (full, full_bytes) = pushes(cp.api_addr, "full").await;
    assert_eq!(full, 1);
    assert!(full_bytes > 20_000, "the whole config: {full_bytes} bytes");

    // One backend's weight: one upstream travels.
    weight(cp.api_addr, &a, 5).await;
    in_step(cp.api_addr, &node, &cache_dir, 2).await;
    let (deltas, delta_bytes) = pushes(cp.api_addr, "delta").await;
    assert_eq!(deltas, 1);
    assert!(delta_bytes < 1_000, "one upstream: {delta_bytes} bytes");

    // `web` moves to another backend and an upstream goes: the node routes
    // by what the delta carried.
    let mut text = config(300, &a, &b, false);
    text = text.replace(
        &format!("  - name: u299\n    backends: [{}]\n", a.url()),
        "",
    );
    let r = api(cp.api_addr, Method::PUT, "/api/v1/config", &text).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let proxy = in_step(cp.api_addr, &node, &cache_dir, 3).await;
    assert_eq!(name_via(proxy).await, "b");
    assert_eq!(pushes(cp.api_addr, "delta").await.0, 2);

    // Only an order changes: that travels whole.
    let mut text = config(300, &a, &b, true);
    text = text.replace(
        &format!("  - name: u299\n    backends: [{}]\n", a.url()),
        "",
    );
    let r = api(cp.api_addr, Method::PUT, "/api/v1/config", &text).await;
    assert_eq!(r.status, 200, "{}", r.text());
    in_step(cp.api_addr, &node, &cache_dir, 4).await;
    assert_eq!(pushes(cp.api_addr, "full").await.0, 2);
    assert_eq!(pushes(cp.api_addr, "delta").await.0, 2);

    // After a reconnect the first push is whole again, then deltas follow.
    node.shutdown().await;
    let node = Node::start(options(cp.grpc_addr, "dp-1", Some(cache_dir.clone())))
        .await
        .expect("node restarts");
    serving(&node, 4).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pushes(cp.api_addr, "full").await.0 < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot after the reconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    weight(cp.api_addr, &a, 6).await;
    in_step(cp.api_addr, &node, &cache_dir, 5).await;
    assert_eq!(pushes(cp.api_addr, "delta").await.0, 3);
    node.shutdown().await;
    cp.shutdown().await;
}

fn snapshot(version: u64, json: &str) -> pb::Snapshot {
    pb::Snapshot {
        version,
        hash: content_hash(json.as_bytes(), &BTreeMap::new()),
        config_json: json.to_owned().into(),
        certificates: Vec::new(),
        newest_version: version,
    }
}

fn text(s: &pb::Snapshot) -> &str {
    std::str::from_utf8(&s.config_json).expect("UTF-8")
}

/// The delta from `a` to `b`, as the control plane makes it.
fn delta(a: &pb::Snapshot, b: &pb::Snapshot) -> pb::Delta {
    let (resources, removed) = Document::split(text(a))
        .expect("a")
        .diff(&Document::split(text(b)).expect("b"))
        .expect("a delta");
    pb::Delta {
        version: b.version,
        hash: b.hash.clone(),
        base_version: a.version,
        base_hash: a.hash.clone(),
        resources,
        removed,
        newest_version: b.version,
        ..Default::default()
    }
}

fn canonical(backend: &Backend, weight: u32) -> String {
    let doc = serde_json::json!({
        "upstreams": [
            {"name": "web", "backends": [{"url": backend.url(), "weight": weight}]},
            {"name": "other", "backends": [{"url": backend.url()}]}
        ],
        "health": {"enabled": false},
    });
    let config = isame_proto::Config::from_json(&doc.to_string()).expect("valid");
    serde_json::to_string(&config).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_that_does_not_apply_is_resynced_and_never_served() {
    let backend = Backend::start("b1").await;
    let mut cp = ScriptedCp::start().await;
    let node = Node::start(options(cp.addr, "dp-1", None))
        .await
        .expect("node starts");
    let In::Hello(hello) = cp.next(|k| matches!(k, In::Hello(_))).await else {
        unreachable!("picked a Hello")
    };
    assert!(hello.deltas, "the node says it applies deltas");
    let v1 = snapshot(1, &canonical(&backend, 1));
    let v2 = snapshot(2, &canonical(&backend, 2));
    let v3 = snapshot(3, &canonical(&backend, 3));
    cp.snapshot(v1.clone()).await;
    assert!(matches!(cp.answer().await, In::Ack(a) if a.version == 1));

    // Corrupted on the way, consistently with its own hash: the whole
    // config's hash catches it.
    let mut bad = delta(&v1, &v2);
    bad.resources[0].json = bad.resources[0]
        .json
        .replace("\"weight\":2", "\"weight\":7");
    bad.resources[0].hash = isame_proto::delta::resource_hash(&bad.resources[0].json);
    cp.delta(bad).await;
    let In::Resync(r) = cp
        .next(|k| matches!(k, In::Resync(_) | In::Ack(_) | In::Nack(_)))
        .await
    else {
        panic!("expected a resync")
    };
    assert_eq!(r.version, 2);
    assert!(r.reason.contains("the result hashes to"), "{}", r.reason);
    assert_eq!(node.state().version.load(Ordering::SeqCst), 1, "not served");

    // The whole snapshot it asked for.
    cp.snapshot(v2.clone()).await;
    assert!(matches!(cp.answer().await, In::Ack(a) if a.version == 2));

    // A delta that builds on a version the node does not hold (it missed
    // one): refused, then the whole snapshot.
    cp.delta(delta(&v1, &v3)).await;
    let In::Resync(r) = cp
        .next(|k| matches!(k, In::Resync(_) | In::Ack(_) | In::Nack(_)))
        .await
    else {
        panic!("expected a resync")
    };
    assert!(r.reason.contains("builds on version 1"), "{}", r.reason);
    assert_eq!(node.state().version.load(Ordering::SeqCst), 2);
    cp.snapshot(v3.clone()).await;
    assert!(matches!(cp.answer().await, In::Ack(a) if a.version == 3));

    // A good delta applies.
    let v4 = snapshot(4, &canonical(&backend, 4));
    cp.delta(delta(&v3, &v4)).await;
    assert!(matches!(cp.answer().await, In::Ack(a) if a.version == 4));
    assert_eq!(*node.state().hash.lock().expect("hash"), v4.hash);
    node.shutdown().await;
}
