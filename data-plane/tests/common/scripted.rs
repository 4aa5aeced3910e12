//! A hand-written control plane for tests: it sends the node whatever
//! messages the test hands it (snapshots and deltas built by hand, as a
//! newer or a broken control plane would send them) and passes on what
//! the node says.

use isame_proto::pb;
use isame_proto::pb::config_discovery_server::{ConfigDiscovery, ConfigDiscoveryServer};
use isame_proto::pb::node_message::Kind as In;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

struct Scripted {
    script: tokio::sync::Mutex<Option<mpsc::Receiver<pb::ControlMessage>>>,
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
        let mut script = self
            .script
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
            while let Some(msg) = script.recv().await {
                if tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A running scripted control plane (one stream).
pub struct ScriptedCp {
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// What it sends next.
    pub send: mpsc::Sender<pb::ControlMessage>,
    /// What the node said.
    pub heard: mpsc::Receiver<In>,
    server: tokio::task::JoinHandle<()>,
}

impl ScriptedCp {
    /// Starts one on a free loopback port.
    pub async fn start() -> ScriptedCp {
        let (send, script) = mpsc::channel(4);
        let (heard_tx, heard) = mpsc::channel(64);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = ConfigDiscoveryServer::new(Scripted {
            script: tokio::sync::Mutex::new(Some(script)),
            heard: heard_tx,
        });
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        ScriptedCp {
            addr,
            send,
            heard,
            server,
        }
    }

    /// Sends a snapshot.
    pub async fn snapshot(&self, s: pb::Snapshot) {
        self.message(pb::control_message::Kind::Snapshot(s)).await;
    }

    /// Sends a delta.
    pub async fn delta(&self, d: pb::Delta) {
        self.message(pb::control_message::Kind::Delta(d)).await;
    }

    async fn message(&self, kind: pb::control_message::Kind) {
        self.send
            .send(pb::ControlMessage { kind: Some(kind) })
            .await
            .expect("the stream is open");
    }

    /// The next message the node sends that `pick` accepts (others, its
    /// reports for instance, are skipped).
    pub async fn next(&mut self, pick: impl Fn(&In) -> bool) -> In {
        loop {
            let kind = tokio::time::timeout(Duration::from_secs(15), self.heard.recv())
                .await
                .expect("the node speaks in time")
                .expect("stream open");
            if pick(&kind) {
                return kind;
            }
        }
    }

    /// The next ACK or NACK.
    pub async fn answer(&mut self) -> In {
        self.next(|k| matches!(k, In::Ack(_) | In::Nack(_))).await
    }
}

impl Drop for ScriptedCp {
    fn drop(&mut self) {
        self.server.abort();
    }
}
