//! One running data plane: binds its listeners, starts the workers and the
//! control thread (admin listener, reloads, file watching), and shuts down
//! gracefully.

use crate::admin::{self, AdminInfo};
use crate::health;
use crate::listener;
use crate::metrics::Metrics;
use crate::reload::{self, ReloadError};
use crate::snapshot::{Shared, Snapshot};
use isame_proto::config::{Config, ConfigErrors};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

/// How to start a data plane.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The config to serve first.
    pub config: Config,
    /// The file it came from; watched for changes when set.
    pub config_path: Option<PathBuf>,
    /// Overrides `server.address:server.port`.
    pub listen: Option<SocketAddr>,
    /// Overrides `server.address:server.https_port` (when TLS is enabled).
    pub https_listen: Option<SocketAddr>,
    /// Overrides `metrics.address:metrics.port`.
    pub admin_listen: Option<SocketAddr>,
    /// Worker threads.
    pub workers: usize,
}

/// Why a data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config cannot be served.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Threads or runtimes could not be created, or metrics registered.
    #[error("cannot start: {0}")]
    Runtime(String),
}

enum Msg {
    FileChanged,
    Reload(oneshot::Sender<Result<u64, ReloadError>>),
    Apply(Box<Config>, oneshot::Sender<Result<u64, ReloadError>>),
    /// What a backend host name resolves to changed.
    DnsChanged,
}

/// A running data plane.
pub struct Server {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the proxy listens for HTTPS, when TLS is enabled.
    pub https_addr: Option<SocketAddr>,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    control: Option<(JoinHandle<()>, oneshot::Sender<()>)>,
    control_tx: mpsc::UnboundedSender<Msg>,
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let bind_err = |source| StartError::Bind { addr, source };
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
        .map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket.listen(4096).map_err(bind_err)?;
    Ok(socket.into())
}

impl Server {
    /// Binds the listeners and starts serving `opts.config`.
    pub fn start(opts: ServerOptions) -> Result<Server, StartError> {
        let metrics = Metrics::new().map_err(|e| StartError::Runtime(e.to_string()))?;
        let c = &opts.config;
        let proxy_addr = opts
            .listen
            .unwrap_or(SocketAddr::new(c.server.address, c.server.port));
        let admin_addr = opts
            .admin_listen
            .unwrap_or(SocketAddr::new(c.metrics.address, c.metrics.port));
        let dns = crate::dns::Dns::default();
        dns.resolve_at_start(&opts.config, &metrics);
        let snapshot = Snapshot::compile(opts.config.clone(), None, 1, &metrics, &dns)?;
        let shared = Shared::new(snapshot, metrics, dns);
        shared
            .metrics
            .config_reloads
            .with_label_values(&["success"]);

        let proxy_listener = bind(proxy_addr)?;
        let tls_listener = if c.tls.enabled {
            let addr = opts
                .https_listen
                .unwrap_or(SocketAddr::new(c.server.address, c.server.https_port));
            Some(bind(addr)?)
        } else {
            None
        };
        let https_addr = tls_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        let admin_listener = bind(admin_addr)?;
        let proxy_addr = proxy_listener
            .local_addr()
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|e| StartError::Runtime(e.to_string()))?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let listeners = listener::Listeners {
            plain: proxy_listener,
            tls: tls_listener,
        };
        let workers =
            listener::spawn_workers(opts.workers.max(1), &listeners, &shared, &shutdown_rx)
                .map_err(|e| StartError::Runtime(e.to_string()))?;
        // The workers hold their own handles of the sockets; these must go so
        // that the ports close when they stop accepting.
        drop(listeners);

        let info = Arc::new(AdminInfo {
            proxy_addr,
            https_addr,
            admin_addr,
            workers: opts.workers.max(1),
            source: opts
                .config_path
                .as_ref()
                .map_or_else(|| "api".to_owned(), |p| p.display().to_string()),
            started: tokio::time::Instant::now(),
        });
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        // Watch before returning, so no edit made after start can be missed.
        let (file_tx, file_rx) = mpsc::unbounded_channel();
        let watcher =
            opts.config_path
                .as_deref()
                .and_then(|p| match reload::watch_file(p, file_tx) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        warn!(error = %e, "cannot watch the config file; reload with SIGHUP");
                        None
                    }
                });
        if watcher.is_some() {
            // The file may have changed between reading it and watching it.
            let _ = control_tx.send(Msg::FileChanged);
        }
        let control = spawn_control(Control {
            admin_listener,
            shared: shared.clone(),
            info,
            config_path: opts.config_path.clone(),
            control_tx: control_tx.clone(),
            control_rx,
            watcher,
            file_rx,
            stop: stop_rx,
        })?;
        info!(
            proxy = %proxy_addr,
            https = https_addr.map(|a| a.to_string()),
            admin = %admin_addr,
            workers = opts.workers.max(1),
            "isame-lb serving"
        );
        Ok(Server {
            proxy_addr,
            https_addr,
            admin_addr,
            shared,
            shutdown,
            workers,
            control: Some((control, stop_tx)),
            control_tx,
        })
    }

    /// Re-reads the config file and applies it (what SIGHUP does).
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Reload(tx), rx).await
    }

    /// Applies a config given in memory.
    pub async fn apply(&self, config: Config) -> Result<u64, ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Apply(Box::new(config), tx), rx).await
    }

    async fn send(
        &self,
        msg: Msg,
        rx: oneshot::Receiver<Result<u64, ReloadError>>,
    ) -> Result<u64, ReloadError> {
        let gone = || ReloadError::Invalid(ConfigErrors::one("", "the proxy is shutting down"));
        self.control_tx.send(msg).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// What the request path shares: the snapshot in force and the metrics.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The generation of the config being served.
    pub fn config_version(&self) -> u64 {
        self.shared.snapshot().generation
    }

    /// Stops accepting, lets in-flight requests finish within
    /// `server.shutdown_timeout`, then stops everything.
    pub fn shutdown(mut self) {
        self.shared.start_draining();
        let _ = self.shutdown.send(true);
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                warn!("a worker thread panicked");
            }
        }
        if let Some((control, stop)) = self.control.take() {
            let _ = stop.send(());
            let _ = control.join();
        }
        info!("isame-lb stopped");
    }
}

/// What the control thread owns.
struct Control {
    admin_listener: std::net::TcpListener,
    shared: Arc<Shared>,
    info: Arc<AdminInfo>,
    config_path: Option<PathBuf>,
    control_tx: mpsc::UnboundedSender<Msg>,
    control_rx: mpsc::UnboundedReceiver<Msg>,
    watcher: Option<notify::RecommendedWatcher>,
    file_rx: mpsc::UnboundedReceiver<()>,
    stop: oneshot::Receiver<()>,
}

fn spawn_control(c: Control) -> Result<JoinHandle<()>, StartError> {
    let Control {
        admin_listener,
        shared,
        info,
        config_path,
        control_tx,
        mut control_rx,
        watcher,
        mut file_rx,
        stop,
    } = c;
    admin_listener
        .set_nonblocking(true)
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    std::thread::Builder::new()
        .name("isame-control".into())
        .spawn(move || {
            rt.block_on(async move {
                let admin = match tokio::net::TcpListener::from_std(admin_listener) {
                    Ok(l) => tokio::spawn(admin::serve(l, shared.clone(), info)),
                    Err(e) => {
                        warn!(error = %e, "admin listener unavailable");
                        tokio::spawn(async {})
                    }
                };
                let _watcher = watcher;
                let dns_tx = control_tx.clone();
                // One message per burst of file events, however the editor saved.
                let debouncer = tokio::spawn(async move {
                    while reload::debounce(&mut file_rx).await {
                        if control_tx.send(Msg::FileChanged).is_err() {
                            break;
                        }
                    }
                });
                let sweeper = tokio::spawn(crate::outlier::sweep_loop(shared.clone()));
                let resolver = tokio::spawn(crate::dns::refresh_loop(shared.clone(), move || {
                    dns_tx.send(Msg::DnsChanged).is_ok()
                }));
                let mut stop = stop;
                let mut checkers = health::Checkers::default();
                checkers.reconcile(&shared.snapshot());
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        msg = control_rx.recv() => match msg {
                            None => break,
                            Some(Msg::Reload(reply)) => {
                                let result = match &config_path {
                                    Some(p) => reload::apply(&shared, reload::load_file(p)).await,
                                    None => Err(ReloadError::Invalid(ConfigErrors::one("", "no config file to reload"))),
                                };
                                let _ = reply.send(result);
                            }
                            Some(Msg::Apply(config, reply)) => {
                                let _ = reply.send(reload::apply(&shared, Ok(*config)).await);
                            }
                            Some(Msg::DnsChanged) => reload::rebuild(&shared),
                            Some(Msg::FileChanged) => {
                                let Some(p) = &config_path else { continue };
                                match reload::load_file(p) {
                                    // Saving the same config again (or a touch) is not a new version.
                                    Ok(c) if c == *shared.snapshot().config => {
                                        debug!("config file saved without changes");
                                    }
                                    loaded => {
                                        let _ = reload::apply(&shared, loaded).await;
                                    }
                                }
                            }
                        },
                    }
                    // Probes follow the config in force, whatever changed it.
                    checkers.reconcile(&shared.snapshot());
                }
                debouncer.abort();
                sweeper.abort();
                resolver.abort();
                admin.abort();
            });
        })
        .map_err(|e| StartError::Runtime(e.to_string()))
}
