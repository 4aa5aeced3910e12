//! Config distribution over gRPC: the `ConfigDiscovery` service. Each data
//! plane opens one bidirectional stream (flow in docs/distribution.md); the
//! newest version reaches every stream through the `watch` channel of
//! [`Configs`], so a slow node gets the newest version when it is ready and
//! never holds up the others.

mod deltas;
mod ledger;
mod node_schema;
mod registry;
mod session;

use crate::configs::Configs;
use crate::metrics::Metrics;
use crate::store::Role;
use crate::store::{NodeHello, NodeUpdate};
use crate::tokens;
pub use deltas::Wire;
use isame_proto::pb;
use isame_proto::pb::config_discovery_server::{ConfigDiscovery, ConfigDiscoveryServer};
use isame_proto::pb::node_message::Kind as In;
use registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Timing of the streams.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the control plane sends a heartbeat when idle.
    pub heartbeat: Duration,
    /// A node that sends nothing for this long is disconnected (nodes
    /// report at least every few seconds).
    pub node_timeout: Duration,
    /// How long a new stream may take to say Hello.
    pub hello_timeout: Duration,
    /// How long a message may wait for a node to take it; a node that reads
    /// nothing for this long is disconnected (it reconnects and gets the
    /// newest version).
    pub send_timeout: Duration,
    /// This process's name among the replicas on one database (in the
    /// node ledger, the replica table and leases).
    pub replica: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            node_timeout: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(30),
            replica: crate::replica::new_id(),
        }
    }
}

/// The service's shared state.
pub struct Distribution {
    configs: Arc<Configs>,
    metrics: Arc<Metrics>,
    registry: Registry,
    ledger: ledger::Ledger,
    options: Options,
    closing: tokio::sync::watch::Sender<bool>,
    /// Upstreams whose traffic reports are counted.
    known: crate::fleet::KnownUpstreams,
}

impl Distribution {
    /// A service over `configs`.
    pub fn new(configs: Arc<Configs>, metrics: Arc<Metrics>, options: Options) -> Arc<Self> {
        Arc::new(Self {
            ledger: ledger::Ledger::start(configs.store().clone(), options.replica.clone()),
            configs,
            metrics,
            registry: Registry::default(),
            options,
            closing: tokio::sync::watch::channel(false).0,
            known: Default::default(),
        })
    }

    /// Ends every stream (the control plane is shutting down); nodes
    /// reconnect to whichever control plane answers next.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The tonic service.
    pub fn service(self: &Arc<Self>) -> ConfigDiscoveryServer<Service> {
        ConfigDiscoveryServer::new(Service(self.clone()))
            .max_decoding_message_size(4 << 20)
            .max_encoding_message_size(256 << 20)
    }
}

/// The `ConfigDiscovery` implementation.
pub struct Service(Arc<Distribution>);

/// Longest node id, label key or value.
const MAX_NAME: usize = 128;

fn check_hello(h: &pb::Hello) -> Result<(), Status> {
    if let Err(m) = isame_proto::config::check_node_id(&h.node_id) {
        return Err(Status::invalid_argument(format!(
            "node_id {m} (1 to 128 letters, digits, '-', '_', '.' or ':', starting with a letter or digit)"
        )));
    }
    if h.labels.len() > 64
        || h.labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > MAX_NAME || v.len() > 1024)
    {
        return Err(Status::invalid_argument(
            "at most 64 labels, keys 1 to 128 bytes, values up to 1024",
        ));
    }
    if h.hostname.len() > 255 || h.build_version.len() > MAX_NAME {
        return Err(Status::invalid_argument(
            "hostname or build_version too long",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl ConfigDiscovery for Service {
    type SubscribeStream = ReceiverStream<Result<pb::ControlMessage, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::NodeMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let d = self.0.clone();
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
        let known = d
            .configs
            .store()
            .token(&tokens::hash(token))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "token lookup failed");
                Status::unavailable("the control plane's database is unavailable")
            })?;
        match known.map(|t| t.role) {
            None => return Err(Status::unauthenticated("unknown token")),
            Some(Role::Viewer) => {
                return Err(Status::permission_denied(
                    "a viewer token cannot subscribe: snapshots carry the private keys of \
                     stored certificates; use a node token \
                     (isame-control-plane token create --role node)",
                ))
            }
            Some(Role::Admin | Role::Node) => {}
        }
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(d.options.hello_timeout, inbound.message()).await {
            Ok(Ok(Some(pb::NodeMessage {
                kind: Some(In::Hello(h)),
            }))) => h,
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello")),
            Ok(Ok(_)) => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        check_hello(&hello)?;
        let node = hello.node_id.clone();
        let labels: serde_json::Map<String, serde_json::Value> = hello
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        d.ledger.record(
            &node,
            NodeUpdate::Connected(NodeHello {
                id: node.clone(),
                hostname: hello.hostname.clone(),
                build: hello.build_version.clone(),
                labels: serde_json::Value::Object(labels),
            }),
        );
        let (ticket, replaced) = d.registry.open(&node);
        d.metrics.connected_nodes.set(d.registry.len() as i64);
        tracing::info!(
            node,
            hostname = hello.hostname,
            cached = hello.cached_version,
            replaced,
            "data plane connected"
        );
        let (tx, rx) = mpsc::channel(4);
        let reads = node_schema::NodeSchema::of(&hello);
        let deltas = hello.deltas;
        tokio::spawn(session::run(d, node, ticket, reads, deltas, inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
