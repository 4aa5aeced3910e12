//! A node reads the config in a snapshot with the same strict reader as
//! `isame-lb validate`: a field it does not know is a NACK naming the
//! field's path, and the node keeps serving its last good config. The
//! control plane here is a hand-written gRPC server sending hand-built
//! snapshots, as a newer control plane would.

use isame_data_plane::subscription::Node;
use isame_proto::pb;
use isame_proto::pb::config_discovery_server::{ConfigDiscovery, ConfigDiscoveryServer};
use isame_proto::pb::control_message::Kind as Out;
use isame_proto::pb::node_message::Kind as In;
use isame_testkit::{Backend, Client};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

mod common;

/// A control plane that sends what the test hands it and passes on what
/// the node says.
struct Scripted {
    snapshots: tokio::sync::Mutex<Option<mpsc::Receiver<pb::Snapshot>>>,
    heard: mpsc::Sender<In>,
}

#[tonic::async_trait]
impl ConfigDiscovery for Scripted {
    type SubscribeStream = ReceiverStream<Result<pb::ControlMessage, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::NodeMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut inbound = request.into_inner();
        let mut snapshots = self
            .snapshots
            .lock()
            .await
            .take()
            .ok_or_else(|| Status::unavailable("one stream only"))?;
        let heard = self.heard.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if let Some(kind) = msg.kind {
                    let _ = heard.send(kind).await;
                }
            }
        });
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(s) = snapshots.recv().await {
                let msg = pb::ControlMessage {
                    kind: Some(Out::Snapshot(s)),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn snapshot(version: u64, json: String) -> pb::Snapshot {
    pb::Snapshot {
        version,
        hash: format!("hash-{version}"),
        config_json: json,
        certificates: Vec::new(),
        newest_version: version,
    }
}

/// The next ACK or NACK the node sends (its Hello and reports are skipped).
async fn answer(heard: &mut mpsc::Receiver<In>) -> In {
    loop {
        let kind = tokio::time::timeout(Duration::from_secs(15), heard.recv())
            .await
            .expect("the node answers in time")
            .expect("stream open");
        if matches!(kind, In::Ack(_) | In::Nack(_)) {
            return kind;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_field_is_a_nack_naming_it_and_the_last_good_config_stays() {
    let backend = Backend::start("b1").await;
    let (snap_tx, snap_rx) = mpsc::channel(4);
    let (heard_tx, mut heard) = mpsc::channel(64);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let cp: SocketAddr = listener.local_addr().expect("addr");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ConfigDiscoveryServer::new(Scripted {
                snapshots: tokio::sync::Mutex::new(Some(snap_rx)),
                heard: heard_tx,
            }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let node = Node::start(common::subscribe::options(cp, "strict-node", None))
        .await
        .expect("node starts");

    // The Hello says which schema the node reads.
    let hello = loop {
        match tokio::time::timeout(Duration::from_secs(15), heard.recv())
            .await
            .expect("hello in time")
            .expect("stream open")
        {
            In::Hello(h) => break h,
            _ => continue,
        }
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
    snap_tx
        .send(snapshot(1, good.to_string()))
        .await
        .expect("send");
    match answer(&mut heard).await {
        In::Ack(a) => assert_eq!(a.version, 1),
        other => panic!("expected ACK of 1, got {other:?}"),
    }

    // A field this build has never heard of, as a newer control plane
    // would send it: refused with its path, not dropped.
    let mut newer = good.clone();
    newer["upstreams"][0]["backends"][0]["priority"] = serde_json::json!(2);
    newer["upstreams"][0]["warmup"] = serde_json::json!("30s");
    snap_tx
        .send(snapshot(2, newer.to_string()))
        .await
        .expect("send");
    match answer(&mut heard).await {
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
    server.abort();
}
