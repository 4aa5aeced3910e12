//! Benchmark harness for config distribution (run by bench/distribution.sh):
//! N lightweight subscribers in this process, each ACKing every snapshot as
//! soon as it is decoded, against a running control plane. Commits versions
//! over REST and measures the time from the write to the last node's ACK.
//!
//!   fanout --api 127.0.0.1:7070 --grpc 127.0.0.1:7071 --token T --nodes 100 --versions 50
//!
//! `--grpc A,B` spreads the subscribers over several replicas (node i on
//! address i mod n) while the writes go to `--api`: the figures then
//! include the way from one replica to the others. `--deltas` makes the
//! subscribers say they apply deltas, so that each change after the first
//! snapshot travels as one; the pushes made while the versions were
//! committed, and their average size, are printed by kind from the control
//! plane's metrics.

use http::{Method, Request};
use http_body_util::Full;
use isame_proto::pb;
use isame_proto::pb::control_message::Kind;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

struct Args {
    api: SocketAddr,
    grpc: Vec<SocketAddr>,
    token: String,
    nodes: usize,
    versions: u32,
    deltas: bool,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut api, mut grpc, mut token, mut nodes, mut versions) = (None, None, None, 10, 20);
    let mut deltas = false;
    while let Some(flag) = it.next() {
        if flag == "--deltas" {
            deltas = true;
            continue;
        }
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--api" => api = Some(value()?.parse().map_err(|e| format!("--api: {e}"))?),
            "--grpc" => {
                grpc = Some(
                    value()?
                        .split(',')
                        .map(|a| a.parse().map_err(|e| format!("--grpc: {e}")))
                        .collect::<Result<Vec<SocketAddr>, String>>()?,
                )
            }
            "--token" => token = Some(value()?),
            "--nodes" => nodes = value()?.parse().map_err(|e| format!("--nodes: {e}"))?,
            "--versions" => versions = value()?.parse().map_err(|e| format!("--versions: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        api: api.ok_or("--api is required")?,
        grpc: grpc.ok_or("--grpc is required")?,
        token: token.ok_or("--token is required")?,
        nodes,
        versions,
        deltas,
    })
}

async fn rest(a: &Args, method: Method, path: &str, body: String) -> (u16, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cp")
        .header("authorization", format!("Bearer {}", a.token))
        .header("content-type", "application/yaml")
        .body(Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let mut c = isame_testkit::Client::http1(a.api)
        .await
        .expect("connect to the API");
    let r = c.send(req).await.expect("API answer");
    (r.status.as_u16(), r.text())
}

/// One subscriber: reports (node, version) for every snapshot, after ACKing it.
async fn subscriber(
    grpc: SocketAddr,
    token: String,
    id: usize,
    deltas: bool,
    seen: mpsc::UnboundedSender<(usize, u64, Instant)>,
) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to gRPC");
    let mut client = pb::config_discovery_client::ConfigDiscoveryClient::new(channel)
        .max_decoding_message_size(256 << 20);
    let (tx, rx) = mpsc::channel(16);
    let hello = pb::Hello {
        node_id: format!("bench-{id}"),
        hostname: "bench".into(),
        build_version: "bench".into(),
        labels: Default::default(),
        cached_version: 0,
        schema_digest: isame_proto::config::schema::digest().into(),
        config_fields: isame_proto::config::schema::fields().to_vec(),
        deltas,
    };
    let _ = tx
        .send(pb::NodeMessage {
            kind: Some(pb::node_message::Kind::Hello(hello)),
        })
        .await;
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("token"),
    );
    let mut inbound = client.subscribe(req).await.expect("subscribe").into_inner();
    let mut stats = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let Ok(Some(msg)) = msg else { return };
                let version = match msg.kind {
                    Some(Kind::Snapshot(s)) => s.version,
                    Some(Kind::Delta(d)) => d.version,
                    _ => continue,
                };
                let ack = pb::NodeMessage { kind: Some(pb::node_message::Kind::Ack(pb::Ack { version })) };
                if tx.send(ack).await.is_err() {
                    return;
                }
                let _ = seen.send((id, version, Instant::now()));
            }
            _ = stats.tick() => {
                let beat = pb::NodeMessage { kind: Some(pb::node_message::Kind::Stats(pb::StatsReport::default())) };
                if tx.send(beat).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fanout: {e}");
            std::process::exit(2);
        }
    };
    let current: serde_json::Value = {
        let (_, text) = rest(&a, Method::GET, "/api/v1/versions?limit=1", String::new()).await;
        serde_json::from_str(&text).unwrap_or_default()
    };
    let mut version = current["versions"][0]["version"].as_u64().unwrap_or(0);
    assert!(version > 0, "apply a config with an upstream `web` first");
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    for id in 0..a.nodes {
        let grpc = a.grpc[id % a.grpc.len()];
        tokio::spawn(subscriber(
            grpc,
            a.token.clone(),
            id,
            a.deltas,
            seen_tx.clone(),
        ));
    }
    // Everyone has the current version.
    let mut have = vec![0u64; a.nodes];
    let deadline = Instant::now() + Duration::from_secs(60);
    while have.iter().any(|v| *v < version) {
        let Ok(Some((id, v, _))) = tokio::time::timeout_at(deadline, seen.recv()).await else {
            panic!("not every subscriber got version {version}");
        };
        have[id] = have[id].max(v);
    }
    println!("subscribed: {} nodes", a.nodes);
    let (_, before) = rest(&a, Method::GET, "/metrics", String::new()).await;
    if let Ok(pid) = std::env::var("CP_PID") {
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS"))
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        println!("control plane {rss}");
    }
    let mut all = Vec::new();
    let mut each = Vec::new();
    for w in 0..a.versions {
        let t0 = Instant::now();
        let (status, text) = rest(
            &a,
            Method::PATCH,
            "/api/v1/upstreams/web/backends/127.0.0.1:3001",
            format!("weight: {}", 2 + w % 900),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        version += 1;
        let mut last = t0;
        while have.iter().any(|v| *v < version) {
            let Ok(Some((id, v, at))) =
                tokio::time::timeout(Duration::from_secs(30), seen.recv()).await
            else {
                panic!("version {version} did not reach every node");
            };
            if v == version {
                each.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                last = last.max(at);
            }
            have[id] = have[id].max(v);
        }
        all.push(last.duration_since(t0).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    all.sort_by(f64::total_cmp);
    each.sort_by(f64::total_cmp);
    println!(
        "nodes {:>4}: write -> all ACKed  p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms   (per node p50 {:.2} ms, p99 {:.2} ms; {} versions)",
        a.nodes,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN),
        percentile(&each, 0.5),
        percentile(&each, 0.99),
        a.versions
    );
    let (_, metrics) = rest(&a, Method::GET, "/metrics", String::new()).await;
    for kind in ["full", "delta"] {
        let since = |name| metric(&metrics, name, kind) - metric(&before, name, kind);
        let pushes = since("isame_cp_pushes_total");
        let bytes = since("isame_cp_push_bytes_total");
        if pushes > 0.0 {
            println!(
                "  {kind:>5} pushes during the versions: {pushes:.0}, {:.0} bytes each on average",
                bytes / pushes
            );
        }
    }
}

/// A counter's value for `kind` in the text exposition `text` (0 when absent).
fn metric(text: &str, name: &str, kind: &str) -> f64 {
    let prefix = format!("{name}{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
