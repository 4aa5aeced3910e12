//! Losing a replica for real: two `isame-control-plane` processes on one
//! PostgreSQL database, data planes subscribed to both addresses, client
//! traffic through them and a stream of writes, then `kill -9` of the
//! replica the nodes are on. Every acknowledged write is in the history
//! once, the nodes move to the other replica and converge, no request
//! fails, the jobs lease moves, and the killed replica comes back without
//! diverging.
#![allow(clippy::disallowed_types)]
#![allow(clippy::zombie_processes)]

mod common;

use common::{call, free_addr, try_patch, wait_healthy};
use http::Method;
use isame_data_plane::subscription::{self, Node};
use isame_testkit::{Backend, Client};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_isame-control-plane");
const TOKEN: &str = "failover-test-admin-token-0123456789abcdef";

struct Replica {
    api: SocketAddr,
    child: Child,
}

async fn spawn(url: &str, api: SocketAddr, grpc: SocketAddr) -> Replica {
    let mut child = Command::new(BIN)
        .args(["--database-url", url])
        .args(["--api-listen", &api.to_string()])
        .args(["--grpc-listen", &grpc.to_string()])
        .env("ISAME_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn a replica");
    wait_healthy(api, &mut child).await;
    Replica { api, child }
}

async fn get(addr: SocketAddr, path: &str) -> Value {
    let r = call(addr, Method::GET, path, Some(TOKEN), &[], "").await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

/// Polls `addr`'s `path` until `ok` holds, for at most `secs`.
async fn until(addr: SocketAddr, path: &str, secs: u64, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = call(addr, Method::GET, path, Some(TOKEN), &[], "").await;
        if r.status == 200 && ok(&r.json()) {
            return r.json();
        }
        assert!(
            Instant::now() < deadline,
            "{path} never got there: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lease_held(addr: SocketAddr) -> bool {
    let r = call(addr, Method::GET, "/metrics", None, &[], "").await;
    r.text()
        .lines()
        .any(|l| l.trim() == "isame_cp_jobs_lease_held 1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_loses_no_write_and_fails_no_request() {
    let url = isame_testkit::postgres::shared().create_database();
    let backend = Backend::start("web").await;
    let (a_api, a_grpc, b_api, b_grpc) = (free_addr(), free_addr(), free_addr(), free_addr());
    let mut a = spawn(&url, a_api, a_grpc).await;
    let config = format!(
        "upstreams:\n  - name: web\n    backends: [{}]\nhealth:\n  enabled: false\n",
        backend.url()
    );
    let r = call(
        a.api,
        Method::PUT,
        "/api/v1/config",
        Some(TOKEN),
        &[],
        config,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // B is not up yet: every node finds it refusing and settles on A.
    let mut nodes = Vec::new();
    for i in 0..2 {
        let mut o = subscription::Options {
            control_planes: vec![format!("http://{b_grpc}"), format!("http://{a_grpc}")],
            node_id: format!("edge-{i}"),
            token: Some(TOKEN.into()),
            cache_dir: None,
            labels: Vec::new(),
            listen: Some("127.0.0.1:0".parse().expect("addr")),
            https_listen: None,
            admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
            workers: 1,
            report_interval: Duration::from_millis(500),
            tls: None,
        };
        o.labels.push(("zone".into(), "test".into()));
        nodes.push(Node::start(o).await.expect("node"));
    }
    let mut proxies = Vec::new();
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some((proxy, _)) = *n.serving().borrow() {
                proxies.push(proxy);
                break;
            }
            assert!(Instant::now() < deadline, "a node never served");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let b = spawn(&url, b_api, b_grpc).await;
    until(b.api, "/api/v1/nodes", 10, |v| {
        v["nodes"].as_array().is_some_and(|n| {
            n.len() == 2
                && n.iter()
                    .all(|n| n["connected"] == true && n["version"] == 1)
        })
    })
    .await;
    assert!(lease_held(a.api).await, "the first replica holds the lease");

    // Client traffic through both nodes, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for proxy in proxies.clone() {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut client = Client::http1(proxy).await.expect("connect");
            while !stop.load(Ordering::Relaxed) {
                match client.get("/").await {
                    Ok(r) if r.status == 200 => served.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // Writes, alternating between the replicas, each with its own message;
    // remember those that got a 2xx.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, u64)>::new()));
    let weight_path = format!(
        "/api/v1/upstreams/web/backends/{}",
        backend.url().trim_start_matches("http://")
    );
    let writer = {
        let (stop, acked, path) = (stop.clone(), acked.clone(), weight_path.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let to = if i.is_multiple_of(2) { a_api } else { b_api };
                let message = format!("write-{i}");
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    try_patch(
                        to,
                        &path,
                        TOKEN,
                        &[("x-isame-message", &message)],
                        format!("{{\"weight\": {}}}", 1 + i % 50),
                    ),
                )
                .await;
                if let Ok(Some(r)) = r {
                    // A write that changed nothing (the first sets the
                    // weight the config has) creates no version.
                    if r.status == 200 && r.json()["created"] == true {
                        if let Some(v) = r.json()["version"].as_u64() {
                            acked
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((message, v));
                        }
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.child.kill().expect("kill -9");
    let _ = a.child.wait();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    for l in load {
        l.await.expect("load");
    }
    let newest = get(b.api, "/api/v1/versions?limit=1").await["versions"][0]["version"]
        .as_u64()
        .expect("newest");
    // The nodes moved to B and run the newest version.
    until(b.api, "/api/v1/nodes", 15, |v| {
        v["nodes"].as_array().is_some_and(|n| {
            n.len() == 2
                && n.iter().all(|n| {
                    n["connected"] == true && n["version"] == newest && n["replica"] != Value::Null
                })
        })
    })
    .await;
    for n in &nodes {
        assert_eq!(n.state().version.load(Ordering::SeqCst), newest);
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests");
    assert!(served.load(Ordering::Relaxed) > 100, "traffic flowed");

    // Every acknowledged write is in the history, once, under its version.
    let history = get(b.api, "/api/v1/versions?limit=1000").await;
    let versions = history["versions"].as_array().expect("versions");
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(acked.len() > 10, "writes were made: {}", acked.len());
    for (message, version) in &acked {
        let same: Vec<&Value> = versions
            .iter()
            .filter(|v| v["message"] == *message)
            .collect();
        assert_eq!(same.len(), 1, "{message} is in the history once");
        assert_eq!(same[0]["version"], *version, "{message}");
    }
    let numbers: Vec<u64> = versions
        .iter()
        .filter_map(|v| v["version"].as_u64())
        .collect();
    assert_eq!(numbers, (1..=newest).rev().collect::<Vec<_>>(), "no gaps");

    // The jobs lease moves to B once A's has expired (10 s).
    let deadline = killed_at + Duration::from_secs(20);
    while !lease_held(b.api).await {
        assert!(
            Instant::now() < deadline,
            "B never took the jobs lease over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A comes back on the same addresses and agrees with B.
    let a = spawn(&url, a_api, a_grpc).await;
    assert_eq!(
        get(a.api, "/api/v1/config").await,
        get(b.api, "/api/v1/config").await
    );
    let r = call(
        a.api,
        Method::PATCH,
        &weight_path,
        Some(TOKEN),
        &[],
        "{\"weight\": 77}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json()["version"].as_u64().expect("version");
    assert_eq!(v, newest + 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes
        .iter()
        .any(|n| n.state().version.load(Ordering::SeqCst) != v)
    {
        assert!(
            Instant::now() < deadline,
            "the nodes never got A's new write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in nodes {
        n.shutdown().await;
    }
    for mut r in [a, b] {
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
}
