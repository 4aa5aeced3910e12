//! Staged rollouts with a real control plane, four subscribed data planes
//! (one labelled `stage=canary`), real backends and client traffic through
//! every node: a good change passes the canary stage and reaches every
//! node; a change that sends traffic to a failing backend trips the 5xx
//! gate on the canary and is rolled back while the other nodes never serve
//! it; a NACK on the canary stops the rollout; a control-plane restart in
//! the middle of a rollout resumes it.

mod common;

use common::{start_with, Cp};
use http::Method;
use isame_data_plane::subscription::{self, Node};
use isame_testkit::backend::Mode;
use isame_testkit::{Backend, Client};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Node ids; the first is the canary.
const NODES: [&str; 4] = ["canary-1", "main-1", "main-2", "main-3"];

const POLICY: &str = r#"{
  "stages": [
    {"name": "canary", "selector": {"stage": "canary"}, "bake": "3s", "min_requests": 30},
    {"name": "rest", "percent": 100, "bake": "1s", "min_requests": 1, "on_low_traffic": "pass"}
  ],
  "gates": {"min_baseline_p99": "500ms", "silence": "20s"}
}"#;

struct Fleet {
    cp: Option<Cp>,
    api: SocketAddr,
    grpc: SocketAddr,
    nodes: Vec<Node>,
    stop: Arc<AtomicBool>,
    load: Vec<tokio::task::JoinHandle<()>>,
    /// Every version each node was seen ACKing in the ledger.
    seen: Arc<Mutex<BTreeMap<String, BTreeSet<u64>>>>,
    /// Each time a node was first seen on another version than before:
    /// (when, node, version).
    moves: Arc<Mutex<Vec<(std::time::SystemTime, String, u64)>>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    served: Arc<AtomicU64>,
}

fn config(backend: &str) -> String {
    format!("upstreams:\n  - name: web\n    backends: [\"{backend}\"]\nhealth:\n  enabled: false\n")
}

async fn cp_on(dir: tempfile::TempDir, api: SocketAddr, grpc: SocketAddr) -> Cp {
    start_with(dir, Some(common::ADMIN), |o| {
        o.api_listen = api;
        o.grpc_listen = grpc;
        o.replica.rollout_tick = Duration::from_millis(200);
        o.replica.heartbeat = Duration::from_millis(500);
    })
    .await
}

async fn write(cp: &Cp, method: Method, path: &str, body: &str) -> Value {
    let r = cp.admin(method, path, body).await;
    assert!(r.status.is_success(), "{path}: {} {}", r.status, r.text());
    r.json()
}

async fn apply(cp: &Cp, backend: &str) -> u64 {
    let v = write(cp, Method::PUT, "/api/v1/config", &config(backend)).await;
    v["version"].as_u64().expect("version")
}

/// Polls the rollout of `version` until `ok` holds, for at most `secs`.
async fn until_rollout(cp: &Cp, version: u64, secs: u64, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = cp.get(&format!("/api/v1/rollouts/{version}")).await;
        if r.status == 200 && ok(&r.json()) {
            return r.json();
        }
        assert!(
            Instant::now() < deadline,
            "rollout {version} never got there: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/nodes` until every node ACKed the version `want` says.
async fn until_nodes(cp: &Cp, secs: u64, want: impl Fn(&str) -> u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = cp.get("/api/v1/nodes").await.json();
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        let ok = NODES.iter().all(|id| {
            nodes.iter().any(|n| {
                n["id"] == *id && n["connected"] == true && n["version"].as_u64() == Some(want(id))
            })
        });
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "nodes never got there: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Fleet {
    async fn start(backend: &str) -> Fleet {
        let (api, grpc) = (common::free_addr(), common::free_addr());
        let cp = cp_on(tempfile::tempdir().expect("dir"), api, grpc).await;
        assert_eq!(apply(&cp, backend).await, 1);
        let mut nodes = Vec::new();
        for id in NODES {
            let stage = if id.starts_with("canary") {
                "canary"
            } else {
                "main"
            };
            let o = subscription::Options {
                control_planes: vec![format!("http://{grpc}")],
                node_id: id.into(),
                token: Some(common::ADMIN.into()),
                cache_dir: None,
                labels: vec![("stage".into(), stage.into())],
                listen: Some("127.0.0.1:0".parse().expect("addr")),
                https_listen: None,
                admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
                workers: 1,
                report_interval: Duration::from_millis(200),
                tls: None,
            };
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
        until_nodes(&cp, 10, |_| 1).await;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let load = proxies
            .into_iter()
            .map(|proxy| {
                let (stop, served) = (stop.clone(), served.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(mut c) = Client::http1(proxy).await {
                            while !stop.load(Ordering::Relaxed) {
                                match c.get("/").await {
                                    Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                                    Err(_) => break,
                                };
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        let mut f = Fleet {
            cp: Some(cp),
            api,
            grpc,
            nodes,
            stop,
            load,
            seen: Arc::default(),
            moves: Arc::default(),
            watcher: None,
            served,
        };
        f.watch();
        f
    }

    /// Records every version each node is seen on, from the ledger, until
    /// the fleet stops.
    fn watch(&mut self) {
        let (addr, stop, seen) = (self.api, self.stop.clone(), self.seen.clone());
        let moves = self.moves.clone();
        self.watcher = Some(tokio::spawn(async move {
            let mut last: BTreeMap<String, u64> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                let r = common::try_call(
                    addr,
                    Method::GET,
                    "/api/v1/nodes",
                    common::ADMIN,
                    &[],
                    String::new(),
                )
                .await;
                if let Some(r) = r.filter(|r| r.status == 200) {
                    let v = r.json();
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    for n in v["nodes"].as_array().into_iter().flatten() {
                        if let (Some(id), Some(ver)) = (n["id"].as_str(), n["version"].as_u64()) {
                            seen.entry(id.to_owned()).or_default().insert(ver);
                            if last
                                .insert(id.to_owned(), ver)
                                .is_some_and(|was| was != ver)
                            {
                                let mut m = moves.lock().unwrap_or_else(|e| e.into_inner());
                                m.push((std::time::SystemTime::now(), id.to_owned(), ver));
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    fn versions_seen(&self, node: &str) -> BTreeSet<u64> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
            .unwrap_or_default()
    }

    fn cp(&self) -> &Cp {
        self.cp.as_ref().expect("a control plane runs")
    }

    async fn set_policy(&self) {
        write(self.cp(), Method::PUT, "/api/v1/rollout-policy", POLICY).await;
    }

    /// Stops the control plane and starts it again on its database and
    /// addresses.
    async fn restart_cp(&mut self) {
        let dir = self.cp.take().expect("a control plane runs").stop().await;
        self.cp = Some(cp_on(dir, self.api, self.grpc).await);
    }

    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for l in self.load.drain(..) {
            let _ = l.await;
        }
        if let Some(w) = self.watcher.take() {
            let _ = w.await;
        }
        for n in self.nodes {
            n.shutdown().await;
        }
        if let Some(cp) = self.cp {
            cp.stop().await;
        }
    }
}

/// Prints a rollout's timeline with the moments nodes were seen moving
/// between versions, in milliseconds after the rollout was created
/// (`cargo test --test rollouts -- --nocapture`).
fn print_timeline(f: &Fleet, r: &Value) {
    let at = |v: &Value| humantime::parse_rfc3339_weak(v.as_str().unwrap_or("")).ok();
    let Some(t0) = at(&r["created_at"]) else {
        return;
    };
    let ms = |t: std::time::SystemTime| t.duration_since(t0).map_or(0, |d| d.as_millis());
    let mut lines: Vec<(u128, String)> = r["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                ms(at(&e["at"])?),
                format!("{}: {}", e["kind"], e["message"]),
            ))
        })
        .collect();
    let moves = f.moves.lock().unwrap_or_else(|e| e.into_inner());
    for (t, node, v) in moves.iter().filter(|(t, _, _)| *t >= t0) {
        lines.push((ms(*t), format!("ledger: {node} serves version {v}")));
    }
    lines.sort();
    for (t, line) in lines {
        eprintln!("+{t:>5} ms  {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_change_passes_the_canary_and_reaches_every_node() {
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    let f = Fleet::start(&one.url()).await;
    f.set_policy().await;
    let committed = Instant::now();
    let v = apply(f.cp(), &two.url()).await;
    assert_eq!(v, 2);
    // The canary alone takes it; the others keep version 1 while it bakes.
    until_rollout(f.cp(), v, 10, |r| {
        r["stage"] == "canary" && r["stages"][0]["members"][0] == "canary-1"
    })
    .await;
    until_nodes(f.cp(), 10, |id| if id == "canary-1" { 2 } else { 1 }).await;
    let nodes = f.cp().get("/api/v1/nodes").await.json();
    for n in nodes["nodes"].as_array().into_iter().flatten() {
        let want = if n["id"] == "canary-1" { 2 } else { 1 };
        assert_eq!(n["target"], want, "{n}");
    }
    let r = until_rollout(f.cp(), v, 30, |r| r["state"] == "completed").await;
    assert!(
        committed.elapsed() >= Duration::from_secs(4),
        "the canary baked 3 s and the rest 1 s: {r}"
    );
    let canary = &r["stages"][0];
    assert_eq!(canary["status"], "passed", "{r}");
    assert!(
        canary["figures"]["candidate"]["requests"]
            .as_u64()
            .unwrap_or(0)
            >= 30,
        "{r}"
    );
    assert!(
        canary["figures"]["baseline"]["requests"]
            .as_u64()
            .unwrap_or(0)
            >= 30,
        "{r}"
    );
    until_nodes(f.cp(), 10, |_| 2).await;
    // Every decision is in the audit log under the controller's name.
    let audit = f.cp().get("/api/v1/audit").await.json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["actor"] == "rollout-controller")
        .filter_map(|e| e["action"].as_str())
        .collect();
    for want in ["rollout.stage_started", "rollout.completed"] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let metrics = common::call(f.api, Method::GET, "/metrics", None, &[], "")
        .await
        .text();
    assert!(
        metrics.contains("isame_cp_rollouts_total{result=\"completed\"} 1"),
        "{metrics}"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_fails_on_the_canary_is_rolled_back_before_others_serve_it() {
    let (good, bad) = (Backend::start("good").await, Backend::start("bad").await);
    bad.set_mode(Mode::Status(500));
    let f = Fleet::start(&good.url()).await;
    f.set_policy().await;
    let committed = Instant::now();
    let v = apply(f.cp(), &bad.url()).await;
    let r = until_rollout(f.cp(), v, 20, |r| r["state"] == "rolled_back").await;
    let tripped = committed.elapsed();
    let failure = &r["failure"];
    assert_eq!(failure["gate"], "5xx_rate", "{r}");
    assert_eq!(failure["stage"], "canary", "{r}");
    assert_eq!(failure["nodes"], serde_json::json!(["canary-1"]), "{r}");
    assert!(
        tripped < Duration::from_secs(3),
        "the gate fails as soon as enough requests were judged, before the bake ends: {tripped:?}"
    );
    // Everyone is back on (or still on) version 1; version 2 stays the
    // newest recorded, unserved.
    until_nodes(f.cp(), 10, |_| 1).await;
    assert_eq!(f.cp().version().await, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &NODES[1..] {
        assert_eq!(
            f.versions_seen(id),
            BTreeSet::from([1]),
            "{id} served version 2"
        );
    }
    assert!(
        f.versions_seen("canary-1").contains(&2),
        "the canary served it"
    );
    let kinds: Vec<&str> = r["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["created", "stage_started", "gate_failed", "rolled_back"],
        "{r}"
    );
    print_timeline(&f, &r);
    assert!(f.served.load(Ordering::Relaxed) > 0);

    // A new apply supersedes it: it starts from the first stage again.
    let v3 = apply(f.cp(), &format!("{}/", good.url().trim_end_matches('/'))).await;
    let r3 = until_rollout(f.cp(), v3, 10, |r| r["stage"] == "canary").await;
    assert_eq!(r3["base"], 1, "{r3}");
    // An explicit promote sends it everywhere at once.
    let p = write(
        f.cp(),
        Method::POST,
        &format!("/api/v1/rollouts/{v3}/promote"),
        r#"{"all": true}"#,
    )
    .await;
    assert_eq!(p["state"], "promoted", "{p}");
    until_nodes(f.cp(), 10, |_| v3).await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_on_the_canary_stops_the_rollout() {
    let one = Backend::start("one").await;
    let f = Fleet::start(&one.url()).await;
    f.set_policy().await;
    // A version the control plane accepts and no node can load (its
    // certificate file is not on these hosts): the canary NACKs.
    let doc = format!(
        "{}tls:\n  enabled: true\n  cert_file: /nonexistent/cert.pem\n  key_file: /nonexistent/key.pem\n",
        config(&one.url())
    );
    let v = write(f.cp(), Method::PUT, "/api/v1/config", &doc).await["version"]
        .as_u64()
        .expect("version");
    let r = until_rollout(f.cp(), v, 20, |r| r["state"] == "rolled_back").await;
    assert_eq!(r["failure"]["gate"], "nack", "{r}");
    assert_eq!(
        r["failure"]["nodes"],
        serde_json::json!(["canary-1"]),
        "{r}"
    );
    assert!(
        r["failure"]["figures"].to_string().contains("cert.pem"),
        "{r}"
    );
    until_nodes(f.cp(), 10, |_| 1).await;
    for id in &NODES[1..] {
        assert_eq!(f.versions_seen(id), BTreeSet::from([1]), "{id}");
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_restart_in_the_middle_of_a_rollout_resumes_it() {
    let (one, two) = (Backend::start("one").await, Backend::start("two").await);
    let mut f = Fleet::start(&one.url()).await;
    f.set_policy().await;
    let v = apply(f.cp(), &two.url()).await;
    until_rollout(f.cp(), v, 10, |r| r["stage"] == "canary").await;
    until_nodes(f.cp(), 10, |id| if id == "canary-1" { 2 } else { 1 }).await;
    // Stop the control plane mid-bake and start it again on its database.
    f.restart_cp().await;
    let r = until_rollout(f.cp(), v, 5, |r| r["state"] == "running").await;
    assert_eq!(r["stage"], "canary", "{r}");
    let r = until_rollout(f.cp(), v, 40, |r| r["state"] == "completed").await;
    assert_eq!(r["stages"][0]["status"], "passed", "{r}");
    until_nodes(f.cp(), 20, |_| 2).await;
    for id in &NODES[1..] {
        assert_eq!(f.versions_seen(id), BTreeSet::from([1, 2]), "{id}");
    }
    f.stop().await;
}
