//! Deltas from the control plane's side: a node that says it applies them
//! gets each change as one after its first snapshot, the whole snapshot
//! again when it asks, and both ways through a rollout; a node that does
//! not say so gets whole snapshots as before.

mod common;

use common::*;
use http::Method;
use isame_proto::delta::{content_hash, Document};
use isame_proto::pb;
use isame_proto::pb::control_message::Kind as Push;
use isame_proto::pb::node_message::Kind;
use std::time::Duration;

fn expect_delta(p: Push) -> pb::Delta {
    match p {
        Push::Delta(d) => d,
        other => panic!("expected a delta, got {other:?}"),
    }
}

fn expect_full(p: Push) -> pb::Snapshot {
    match p {
        Push::Snapshot(s) => s,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

/// What `d` makes of `base`, as a node rebuilds it.
fn rebuilt(base: &pb::Snapshot, d: &pb::Delta) -> bytes::Bytes {
    assert_eq!((d.base_version, &d.base_hash), (base.version, &base.hash));
    let text = std::str::from_utf8(&base.config_json).expect("UTF-8");
    Document::split(text)
        .expect("splits")
        .apply(&d.resources, &d.removed)
        .expect("applies")
        .join()
        .into()
}

async fn weight(cp: &Cp, w: u32) {
    let r = cp
        .admin(
            Method::PATCH,
            "/api/v1/upstreams/web/backends/127.0.0.1:3001",
            &format!("weight: {w}"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn counter(text: &str, line: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_node_that_reads_deltas_gets_them_and_the_whole_snapshot_when_it_asks() {
    let cp = start().await;
    seed(&cp).await;
    let grpc = cp.cp.grpc_addr;
    let mut d = Subscriber::connect_with_deltas(grpc, ADMIN, "dp-delta", &[])
        .await
        .expect("subscribe");
    let mut f = Subscriber::connect(grpc, ADMIN, "dp-full")
        .await
        .expect("subscribe");
    let v1 = expect_full(d.push().await);
    assert_eq!(f.snapshot().await.hash, v1.hash);
    d.ack(1).await;
    f.ack(1).await;

    weight(&cp, 5).await;
    let delta = expect_delta(d.push().await);
    let whole = f.snapshot().await;
    assert_eq!(delta.version, 2);
    assert_eq!(delta.hash, whole.hash);
    assert_eq!(delta.resources.len(), 1, "{:?}", delta.resources);
    assert_eq!(delta.resources[0].name, "web");
    let json = rebuilt(&v1, &delta);
    assert_eq!(json, whole.config_json);
    assert_eq!(content_hash(&json, &Default::default()), delta.hash);
    d.ack(2).await;
    f.ack(2).await;

    // The node could not apply it (as far as it says): the whole snapshot.
    d.send(Kind::Resync(pb::Resync {
        version: 2,
        reason: "lost track".into(),
    }))
    .await;
    let again = expect_full(d.push().await);
    assert_eq!((again.version, &again.hash), (2, &whole.hash));
    d.ack(2).await;

    // The next change builds on that snapshot.
    weight(&cp, 6).await;
    let next = expect_delta(d.push().await);
    let v3 = f.snapshot().await;
    assert_eq!(rebuilt(&again, &next), v3.config_json);

    let metrics = cp.get("/metrics").await.text();
    assert_eq!(counter(&metrics, "isame_cp_resyncs_total "), 1);
    // Snapshots: 2 on connect, 2 to the full node, 1 for the resync.
    assert_eq!(
        counter(&metrics, "isame_cp_pushes_total{kind=\"full\"} "),
        5
    );
    assert_eq!(
        counter(&metrics, "isame_cp_pushes_total{kind=\"delta\"} "),
        2
    );
    let delta_bytes = counter(&metrics, "isame_cp_push_bytes_total{kind=\"delta\"} ");
    let full_bytes = counter(&metrics, "isame_cp_push_bytes_total{kind=\"full\"} ");
    assert!(
        delta_bytes / 2 < full_bytes / 5,
        "a delta ({delta_bytes} B for 2) is smaller than a snapshot ({full_bytes} B for 5)"
    );
    cp.stop().await;
}

#[tokio::test]
async fn resyncs_take_from_the_report_budget() {
    let cp = start().await;
    seed(&cp).await;
    let mut d = Subscriber::connect_with_deltas(cp.cp.grpc_addr, ADMIN, "dp-greedy", &[])
        .await
        .expect("subscribe");
    expect_full(d.push().await);
    // Each Resync would cost a whole snapshot: a node that keeps asking
    // is cut off like any other flood, however many snapshots it is owed.
    for _ in 0..60 {
        if d.to_cp
            .send(pb::NodeMessage {
                kind: Some(Kind::Resync(pb::Resync {
                    version: 1,
                    reason: "again".into(),
                })),
            })
            .await
            .is_err()
        {
            break;
        }
    }
    // The stream ends: with RESOURCE_EXHAUSTED when there is room left in
    // its queue for the status (the snapshots it asked for may fill it; the
    // control plane never waits on a node it is cutting off).
    loop {
        match tokio::time::timeout(Duration::from_secs(10), d.from_cp.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => break,
            Ok(Err(status)) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                break;
            }
            Err(_) => panic!("the stream of a node that floods with resyncs stays open"),
        }
    }
    let metrics = cp.get("/metrics").await.text();
    let resyncs = counter(&metrics, "isame_cp_resyncs_total ");
    assert!((15..=25).contains(&resyncs), "{resyncs} resyncs answered");
    cp.stop().await;
}

const POLICY: &str = r#"{
  "stages": [
    {"name": "canary", "selector": {"stage": "canary"}, "bake": "1h"},
    {"name": "rest", "percent": 100, "bake": "1s"}
  ],
  "gates": {"silence": "1h"}
}"#;

/// The next push within `within`, if any.
async fn quiet(s: &mut Subscriber, within: Duration) -> Option<Push> {
    tokio::time::timeout(within, s.push()).await.ok()
}

#[tokio::test]
async fn through_a_rollout_deltas_go_forward_and_back_and_full_nodes_stay_put() {
    let cp = start().await;
    seed(&cp).await;
    let grpc = cp.cp.grpc_addr;
    let mut canary =
        Subscriber::connect_with_deltas(grpc, ADMIN, "canary-1", &[("stage", "canary")])
            .await
            .expect("subscribe");
    let mut main = Subscriber::connect_labeled(grpc, ADMIN, "main-1", &[("stage", "main")])
        .await
        .expect("subscribe");
    let v1 = expect_full(canary.push().await);
    assert_eq!(main.snapshot().await.version, 1);
    canary.ack(1).await;
    main.ack(1).await;
    for id in ["canary-1", "main-1"] {
        wait_node(&cp, id, |n| n["version"] == 1 && n["connected"] == true).await;
    }
    let r = cp
        .admin(Method::PUT, "/api/v1/rollout-policy", POLICY)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The canary takes version 2 as a delta; the other node is not sent it.
    weight(&cp, 5).await;
    let forward = expect_delta(canary.push().await);
    assert_eq!((forward.version, forward.base_version), (2, 1));
    let v2 = rebuilt(&v1, &forward);
    canary.ack(2).await;
    let got = quiet(&mut main, Duration::from_millis(500)).await;
    assert!(
        got.is_none(),
        "{got:?} {}",
        cp.get("/api/v1/rollouts/latest").await.text()
    );

    // Aborted: the canary goes back to version 1, again as a delta.
    let r = cp.admin(Method::POST, "/api/v1/rollouts/2/abort", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let back = expect_delta(canary.push().await);
    assert_eq!((back.version, back.base_version), (1, 2));
    let v2_snapshot = pb::Snapshot {
        version: 2,
        hash: forward.hash.clone(),
        config_json: v2,
        ..Default::default()
    };
    assert_eq!(rebuilt(&v2_snapshot, &back), v1.config_json);
    assert_eq!(back.hash, v1.hash);
    canary.ack(1).await;
    assert!(quiet(&mut main, Duration::from_millis(300)).await.is_none());
    cp.stop().await;
}
