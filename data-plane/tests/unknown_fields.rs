//! A node reads the config in a snapshot with the same strict reader as
//! `isame-lb validate`: a field it does not know is a NACK naming the
//! field's path, and the node keeps serving its last good config. The
//! control plane here is a hand-written gRPC server sending hand-built
//! snapshots, as a newer control plane would.

use common::scripted::ScriptedCp;
use isame_data_plane::subscription::Node;
use isame_proto::pb;
use isame_proto::pb::node_message::Kind as In;
use isame_testkit::{Backend, Client};
use std::sync::atomic::Ordering;

mod common;

fn snapshot(version: u64, json: String) -> pb::Snapshot {
    pb::Snapshot {
        version,
        hash: format!("hash-{version}"),
        config_json: json.into(),
        certificates: Vec::new(),
        newest_version: version,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_field_is_a_nack_naming_it_and_the_last_good_config_stays() {
    let backend = Backend::start("b1").await;
    let mut cp = ScriptedCp::start().await;
    let node = Node::start(common::subscribe::options(cp.addr, "strict-node", None))
        .await
        .expect("node starts");

    // The Hello says which schema the node reads.
    let In::Hello(hello) = cp.next(|k| matches!(k, In::Hello(_))).await else {
        unreachable!("picked a Hello")
    };
    assert_eq!(hello.schema_digest, isame_proto::config::schema::digest());
    assert!(hello
        .config_fields
        .iter()
        .any(|f| f == "upstreams[].backends[].weight"));

    let good = serde_json::json!({
        "upstreams": [{"name": "web", "backends": [{"url": backend.url()}]}],
        "health": {"enabled": false},
    });
    cp.snapshot(snapshot(1, good.to_string())).await;
    match cp.answer().await {
        In::Ack(a) => assert_eq!(a.version, 1),
        other => panic!("expected ACK of 1, got {other:?}"),
    }

    // A field this build has never heard of, as a newer control plane
    // would send it: refused with its path, not dropped.
    let mut newer = good.clone();
    newer["upstreams"][0]["backends"][0]["priority"] = serde_json::json!(2);
    newer["upstreams"][0]["warmup"] = serde_json::json!("30s");
    cp.snapshot(snapshot(2, newer.to_string())).await;
    match cp.answer().await {
        In::Nack(n) => {
            assert_eq!(n.version, 2);
            let paths: Vec<&str> = n.errors.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(
                paths,
                ["upstreams[0].warmup", "upstreams[0].backends[0].priority"],
                "{:?}",
                n.errors
            );
            assert!(n.errors[0].message.contains("unknown field `warmup`"));
        }
        other => panic!("expected NACK of 2, got {other:?}"),
    }
    assert_eq!(node.state().version.load(Ordering::SeqCst), 1);
    let (proxy, _) = (*node.serving().borrow()).expect("still serving");
    let r = Client::http1(proxy)
        .await
        .expect("connect")
        .get("/")
        .await
        .expect("reply");
    assert_eq!(r.status, 200, "the last good config still serves");

    node.shutdown().await;
}
