//! Subscribed mode: the config comes from the control plane over one gRPC
//! stream (docs/distribution.md). Each snapshot is checked and compiled off
//! the request path and swapped in the same way as a file reload, then
//! ACKed; one that cannot be loaded here is NACKed with its errors and the
//! node keeps serving what it had. The last good snapshot is cached on disk,
//! so a node restarts and serves while the control plane is down; with no
//! cache it opens no proxy port and says it is not ready until a snapshot
//! arrives.

mod backoff;
pub mod cache;
mod certs;
mod delta;
mod private_file;
mod stream;
mod waiting;

use crate::reload::ReloadError;
use crate::server::{Server, ServerOptions, StartError};
use isame_proto::config::ConfigErrors;
use isame_proto::pb;
use isame_proto::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How to subscribe.
#[derive(Debug, Clone)]
pub struct Options {
    /// The control plane's gRPC addresses, `http://host:port` (or
    /// `https://`): one, or one per replica. The node subscribes to one at
    /// a time, starting at a random one (so that a fleet spreads over the
    /// replicas), and moves to the next when the stream fails or ends. A
    /// host name with several addresses is tried address by address.
    pub control_planes: Vec<String>,
    /// This node's id (unique in the fleet).
    pub node_id: String,
    /// Bearer token for the control plane.
    pub token: Option<String>,
    /// Where the last good snapshot is kept.
    pub cache_dir: Option<PathBuf>,
    /// Labels reported with Hello.
    pub labels: Vec<(String, String)>,
    /// Overrides the pushed `server.address:server.port`.
    pub listen: Option<SocketAddr>,
    /// Overrides the pushed HTTPS address.
    pub https_listen: Option<SocketAddr>,
    /// Overrides the pushed admin address (also where the node answers while
    /// it waits for its first config; default 127.0.0.1:9090).
    pub admin_listen: Option<SocketAddr>,
    /// Worker threads.
    pub workers: usize,
    /// How often traffic (and changed health) is reported; also the node's
    /// heartbeat, so well under the control plane's node timeout.
    pub report_interval: Duration,
    /// TLS to the control plane (with an `https://` address).
    pub tls: Option<ClientTls>,
}

/// TLS settings of the stream, as PEM.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CAs that sign the control plane's certificate (default: the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and key, for a control plane that requires them.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// The tonic form.
    fn config(&self) -> tonic::transport::ClientTlsConfig {
        let mut c = tonic::transport::ClientTlsConfig::new();
        c = match &self.ca_pem {
            Some(ca) => c.ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            None => c.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            c = c.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        c
    }
}

/// The endpoint of the control plane at `url`, with TLS when the address
/// says `https://`.
pub(crate) fn endpoint(opts: &Options, url: &str) -> Result<tonic::transport::Endpoint, String> {
    let e = tonic::transport::Endpoint::from_shared(url.to_owned()).map_err(|e| e.to_string())?;
    if url.starts_with("https://") {
        let tls = opts.tls.clone().unwrap_or_default();
        e.tls_config(tls.config()).map_err(|e| format!("TLS: {e}"))
    } else if opts.tls.is_some() {
        Err("TLS settings need an https:// control-plane address".into())
    } else {
        Ok(e)
    }
}

/// Why a subscribed node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The control plane's address is not a URL tonic can use.
    #[error("--control-plane {0:?}: {1}")]
    BadAddress(String, String),
    /// No control-plane address was given.
    #[error("--control-plane: at least one address is needed")]
    NoAddress,
    /// The waiting admin listener could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The directory for pushed certificates could not be made.
    #[error("cannot create a private directory for pushed certificates: {0}")]
    CertDir(std::io::Error),
}

/// What a subscribed node is doing, for tests and `/status`.
#[derive(Debug, Default)]
pub struct NodeState {
    /// The control plane's version being served (0: none).
    pub version: AtomicU64,
    /// Whether the stream is open.
    pub connected: AtomicBool,
    /// Content hash of the snapshot being served.
    pub hash: Mutex<String>,
}

struct Inner {
    opts: Options,
    state: Arc<NodeState>,
    proxy: tokio::sync::Mutex<Option<Server>>,
    /// Where the admin listener is (resolved from port 0 when asked).
    admin_addr: Mutex<SocketAddr>,
    waiting: Mutex<Option<JoinHandle<()>>>,
    serving: watch::Sender<Option<(SocketAddr, SocketAddr)>>,
    /// Where pushed certificates are written.
    certs: certs::CertDir,
}

/// A running subscribed data plane.
pub struct Node {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Default admin address while no config says otherwise.
const DEFAULT_ADMIN: ([u8; 4], u16) = ([127, 0, 0, 1], 9090);

impl Node {
    /// Serves the cached snapshot if there is one (at once), else waits
    /// with only the admin listener up; subscribes in the background either way.
    pub async fn start(opts: Options) -> Result<Node, NodeError> {
        if opts.control_planes.is_empty() {
            return Err(NodeError::NoAddress);
        }
        for url in &opts.control_planes {
            endpoint(&opts, url).map_err(|e| NodeError::BadAddress(url.clone(), e))?;
        }
        let admin = opts.admin_listen.unwrap_or(SocketAddr::from(DEFAULT_ADMIN));
        let (serving, _) = watch::channel(None);
        let cert_dir =
            certs::CertDir::new(opts.cache_dir.as_deref()).map_err(NodeError::CertDir)?;
        let inner = Arc::new(Inner {
            certs: cert_dir,
            opts,
            state: Arc::new(NodeState::default()),
            proxy: tokio::sync::Mutex::new(None),
            admin_addr: Mutex::new(admin),
            waiting: Mutex::new(None),
            serving,
        });
        let cached = inner
            .opts
            .cache_dir
            .as_deref()
            .and_then(|dir| match cache::load(dir) {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "ignoring the snapshot cache; waiting for the control plane");
                    None
                }
            });
        let mut started = false;
        if let Some(snapshot) = cached {
            match inner.install(&snapshot).await {
                Ok(()) => {
                    info!(version = snapshot.version, "serving the cached snapshot");
                    started = true;
                }
                Err(errors) => {
                    warn!(%errors, "the cached snapshot cannot be served; waiting for the control plane")
                }
            }
        }
        if !started {
            inner.wait().await?;
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(stream::run(inner.clone(), stopped));
        Ok(Node { inner, stop, task })
    }

    /// What the node is doing.
    pub fn state(&self) -> &Arc<NodeState> {
        &self.inner.state
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        *self
            .inner
            .admin_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The proxy and admin addresses once serving; `None` while waiting.
    pub fn serving(&self) -> watch::Receiver<Option<(SocketAddr, SocketAddr)>> {
        self.inner.serving.subscribe()
    }

    /// The HTTPS listener's address, when the served config has TLS on.
    pub async fn https_addr(&self) -> Option<SocketAddr> {
        self.inner
            .proxy
            .lock()
            .await
            .as_ref()
            .and_then(|p| p.https_addr)
    }

    /// Closes the stream and stops serving (draining in-flight requests).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Some(w) = self
            .inner
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            w.abort();
        }
        let proxy = self.inner.proxy.lock().await.take();
        if let Some(p) = proxy {
            let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
        }
    }
}

impl Inner {
    /// Starts the waiting admin listener.
    async fn wait(&self) -> Result<(), NodeError> {
        let addr = *self.admin_addr.lock().unwrap_or_else(|e| e.into_inner());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| NodeError::Bind(addr, e))?;
        let bound = listener
            .local_addr()
            .map_err(|e| NodeError::Bind(addr, e))?;
        // Port 0 was resolved: the proxy's admin listener takes the same port later.
        *self.admin_addr.lock().unwrap_or_else(|e| e.into_inner()) = bound;
        let info = Arc::new(waiting::WaitingInfo {
            control_plane: self.opts.control_planes.join(", "),
            node_id: self.opts.node_id.clone(),
        });
        let task = tokio::spawn(waiting::serve(listener, info));
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        info!(admin = %bound, "no config yet: proxy port closed until the control plane sends one");
        Ok(())
    }

    /// Checks, compiles and swaps in `snapshot` (starting the proxy on the
    /// first one). Nothing changes when it fails.
    async fn install(&self, snapshot: &pb::Snapshot) -> Result<(), ConfigErrors> {
        if snapshot.config_json.is_empty() {
            return Err(ConfigErrors::one(
                "",
                "the snapshot carries no config_json (the control plane predates this node's wire format)",
            ));
        }
        let json = std::str::from_utf8(&snapshot.config_json)
            .map_err(|e| ConfigErrors::one("", format!("config_json is not UTF-8: {e}")))?;
        // The same strict reader as `isame-lb validate`: a field this build
        // does not know is refused with its path, never dropped.
        let mut config = Config::from_json(json)?;
        let mut proxy = self.proxy.lock().await;
        let cert_files = self
            .certs
            .materialize(&mut config, &snapshot.certificates)?;
        match proxy.as_ref() {
            Some(p) => {
                p.apply(config).await.map_err(|e| match e {
                    ReloadError::Invalid(errors) => errors,
                    other => ConfigErrors::one("", other.to_string()),
                })?;
            }
            None => {
                // The waiting listener gives its port to the proxy's admin listener.
                let waiting = self
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if let Some(w) = waiting {
                    w.abort();
                    let _ = w.await;
                }
                let admin = self
                    .opts
                    .admin_listen
                    .map(|_| *self.admin_addr.lock().unwrap_or_else(|e| e.into_inner()));
                let started = Server::start(ServerOptions {
                    config,
                    config_path: None,
                    listen: self.opts.listen,
                    https_listen: self.opts.https_listen,
                    admin_listen: admin,
                    workers: self.opts.workers,
                });
                match started {
                    Ok(p) => {
                        *self.admin_addr.lock().unwrap_or_else(|e| e.into_inner()) = p.admin_addr;
                        self.serving
                            .send_replace(Some((p.proxy_addr, p.admin_addr)));
                        *proxy = Some(p);
                    }
                    Err(e) => {
                        let errors = match e {
                            StartError::Config(errors) => errors,
                            other => ConfigErrors::one("", other.to_string()),
                        };
                        drop(proxy);
                        if let Err(e) = self.wait().await {
                            warn!(error = %e, "cannot reopen the waiting admin listener");
                        }
                        return Err(errors);
                    }
                }
            }
        }
        self.certs.prune(&cert_files);
        self.state.version.store(snapshot.version, Ordering::SeqCst);
        *self.state.hash.lock().unwrap_or_else(|e| e.into_inner()) = snapshot.hash.clone();
        Ok(())
    }
}
