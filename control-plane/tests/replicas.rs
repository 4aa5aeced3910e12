//! Several control-plane replicas on one PostgreSQL database (a throwaway
//! server from `isame_testkit::postgres`): commits reach the nodes of every
//! replica, concurrent writers never overwrite each other, the ledger is
//! one across replicas, the jobs lease has one holder, and a database
//! restart heals by itself.

mod common;

use common::*;
use http::Method;
use isame_control_plane::app::{ControlPlane, Options};
use isame_testkit::postgres::{self, Postgres};
use std::time::Duration;
use tokio::time::Instant;

/// A replica named `name` on `url`, with fast heartbeats and leases, and
/// polling slow enough that only notifications can explain fast delivery.
async fn replica(url: &str, name: &str) -> Cp {
    let dir = tempfile::tempdir().expect("dir");
    let mut options = Options::new(url, "127.0.0.1:0".parse().expect("addr"));
    options.admin_token = Some(ADMIN.into());
    options.distribution.replica = name.into();
    options.replica.heartbeat = Duration::from_millis(100);
    options.replica.replica_timeout = Duration::from_millis(800);
    options.replica.lease_ttl = Duration::from_millis(800);
    options.replica.poll = Duration::from_secs(5);
    let cp = ControlPlane::start(options).await.expect("replica starts");
    Cp {
        addr: cp.api_addr,
        cp,
        dir,
    }
}

async fn patch_weight(cp: &Cp, weight: u32, if_match: Option<u64>) -> isame_testkit::Reply {
    let tag = if_match.map(|v| format!("\"{v}\""));
    let headers: Vec<(&str, &str)> = tag.iter().map(|t| ("if-match", t.as_str())).collect();
    call(
        cp.addr,
        Method::PATCH,
        "/api/v1/upstreams/web/backends/127.0.0.1:3001",
        Some(ADMIN),
        &headers,
        format!("{{\"weight\": {weight}}}"),
    )
    .await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_one_replica_reaches_the_nodes_of_another() {
    let url = postgres::shared().create_database();
    let a = replica(&url, "replica-a").await;
    let b = replica(&url, "replica-b").await;
    seed(&a).await;
    let mut node = Subscriber::connect(b.cp.grpc_addr, ADMIN, "edge-1")
        .await
        .expect("subscribe to b");
    let first = node.snapshot().await;
    assert_eq!(first.version, 1, "b serves what a committed");
    node.ack(1).await;
    let mut took = Vec::new();
    for i in 0..20u32 {
        let sent = Instant::now();
        let r = patch_weight(&a, 2 + i, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let want = r.json()["version"].as_u64().expect("version");
        let s = node.snapshot().await;
        took.push(sent.elapsed());
        assert_eq!(s.version, want);
        node.ack(want).await;
    }
    took.sort();
    let (p50, p99) = (percentile(&took, 0.5), percentile(&took, 0.99));
    println!("commit on a -> snapshot on b's node: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
    // Both replicas name the version alike, and a's ledger shows b's node.
    assert_eq!(a.version().await, b.version().await);
    let seen = wait_node(&a, "edge-1", |n| n["version"] == 21).await;
    assert_eq!(seen["connected"], true, "{seen}");
    assert_eq!(seen["replica"], "replica-b", "{seen}");
    drop(node);
    b.cp.shutdown().await;
    a.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_two_replicas_one_wins() {
    let url = postgres::shared().create_database();
    let a = replica(&url, "replica-a").await;
    let b = replica(&url, "replica-b").await;
    seed(&a).await;
    for round in 0..10u32 {
        let base = a.version().await;
        // Wait until b has heard of it too, so both writes are based on it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.version().await != base {
            assert!(Instant::now() < deadline, "b never caught up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (ra, rb) = tokio::join!(
            patch_weight(&a, 10 + round, Some(base)),
            patch_weight(&b, 50 + round, Some(base))
        );
        let mut statuses = [ra.status, rb.status];
        statuses.sort();
        assert_eq!(statuses, [200, 412], "{} / {}", ra.text(), rb.text());
        assert_eq!(a.version().await, base + 1);
    }
    // Every version is in the history once, numbered without gaps.
    let r = a.get("/api/v1/versions?limit=100").await;
    let numbers: Vec<u64> = r.json()["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_u64())
        .collect();
    assert_eq!(numbers, (1..=11).rev().collect::<Vec<_>>());
    b.cp.shutdown().await;
    a.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_moves_to_another_replica_is_one_node() {
    let url = postgres::shared().create_database();
    let a = replica(&url, "replica-a").await;
    let b = replica(&url, "replica-b").await;
    seed(&a).await;
    let mut on_a = Subscriber::connect(a.cp.grpc_addr, ADMIN, "edge-1")
        .await
        .expect("subscribe to a");
    on_a.snapshot().await;
    on_a.ack(1).await;
    wait_node(&b, "edge-1", |n| n["replica"] == "replica-a").await;
    // The node moves: its new stream opens before the old one is seen to
    // close, so a records the close after b recorded the open.
    let mut on_b = Subscriber::connect(b.cp.grpc_addr, ADMIN, "edge-1")
        .await
        .expect("subscribe to b");
    on_b.snapshot().await;
    wait_node(&a, "edge-1", |n| n["replica"] == "replica-b").await;
    drop(on_a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let nodes = a.get("/api/v1/nodes").await.json();
    let nodes = nodes["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["connected"], true, "{nodes:?}");
    assert_eq!(nodes[0]["replica"], "replica-b", "{nodes:?}");
    drop(on_b);
    b.cp.shutdown().await;
    a.cp.shutdown().await;
}

fn lease_held(page: &str) -> bool {
    page.lines()
        .any(|l| l.trim() == "isame_cp_jobs_lease_held 1")
}

async fn holds_lease(cp: &Cp) -> bool {
    let r = call(cp.addr, Method::GET, "/metrics", None, &[], "").await;
    lease_held(&r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_lease_has_one_holder_and_moves_when_it_leaves() {
    let url = postgres::shared().create_database();
    let a = replica(&url, "replica-a").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = replica(&url, "replica-b").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(holds_lease(&a).await, "the first replica takes the lease");
    assert!(!holds_lease(&b).await, "only one holds it");
    a.cp.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !holds_lease(&b).await {
        assert!(Instant::now() < deadline, "b never took the lease over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_recover_by_themselves_from_a_database_restart() {
    let pg = Postgres::start();
    let url = pg.create_database();
    let a = replica(&url, "replica-a").await;
    let b = replica(&url, "replica-b").await;
    seed(&a).await;
    let mut node = Subscriber::connect(b.cp.grpc_addr, ADMIN, "edge-1")
        .await
        .expect("subscribe to b");
    assert_eq!(node.snapshot().await.version, 1);
    node.ack(1).await;

    pg.stop();
    let r = patch_weight(&a, 7, None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());
    let r = call(a.addr, Method::GET, "/readyz", None, &[], "").await;
    assert_eq!(r.status, 503, "{}", r.text());
    // Every request needs its token checked in the database: 503 too.
    let r = b.get("/api/v1/config").await;
    assert_eq!(r.status, 503, "{}", r.text());
    // Streams stay up: the node keeps its stream and is sent nothing.
    let quiet = tokio::time::timeout(Duration::from_millis(500), node.from_cp.message()).await;
    assert!(
        !matches!(quiet, Ok(Err(_)) | Ok(Ok(None))),
        "the node's stream ended: {quiet:?}"
    );

    pg.resume();
    // The pools reconnect: writes succeed again, and b's listener is back
    // (the commit reaches b's node, which never lost its stream).
    let deadline = Instant::now() + Duration::from_secs(15);
    let version = loop {
        let r = patch_weight(&a, 7, None).await;
        if r.status == 200 {
            break r.json()["version"].as_u64().expect("version");
        }
        assert!(
            Instant::now() < deadline,
            "writes never recovered: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(version, 2);
    let s = node.snapshot().await;
    assert_eq!(s.version, 2);
    let r = call(b.addr, Method::GET, "/readyz", None, &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    drop(node);
    b.cp.shutdown().await;
    a.cp.shutdown().await;
}
