//! Starting and stopping the control plane: open the store, bootstrap the
//! admin token, refuse an exposed address without tokens, serve the API, and
//! drain on shutdown.

use crate::api::{self, AppState};
use crate::configs::Configs;
use crate::distribution::Distribution;
use crate::metrics::Metrics;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{DynStore, NewAudit, Role, StoreError};
use crate::tokens;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database {url}: {source}")]
    Store {
        /// The database URL, without credentials.
        url: String,
        /// What failed.
        source: StoreError,
    },
    /// The URL names a database kind this build does not support.
    #[error("unsupported database URL {0:?}: use sqlite://FILE or postgres://USER@HOST/DATABASE")]
    UnsupportedDatabase(String),
    /// The API would be reachable from other hosts with no token to protect it.
    #[error(
        "refusing to serve the API on {0} with no API token: set ISAME_ADMIN_TOKEN \
         (or --admin-token), create one with `isame-control-plane token create`, \
         or listen on a loopback address"
    )]
    Exposed(SocketAddr),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// The bootstrap token is too short to be stored with a fast hash.
    #[error(
        "the admin token (ISAME_ADMIN_TOKEN / --admin-token) must be at least {MIN_BOOTSTRAP_TOKEN} \
         characters; `isame-control-plane token create` makes strong ones"
    )]
    WeakToken,
    /// The gRPC TLS settings were refused.
    #[error("gRPC TLS: {0}")]
    Tls(String),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// How to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// `sqlite://FILE` or `postgres://…`.
    pub database_url: String,
    /// REST API, dashboard and `/metrics`.
    pub api_listen: SocketAddr,
    /// gRPC streams of data planes.
    pub grpc_listen: SocketAddr,
    /// Timing of the data-plane streams.
    pub distribution: crate::distribution::Options,
    /// TLS (and optionally client certificates) on the gRPC listener.
    pub grpc_tls: Option<GrpcTls>,
    /// Bootstrap admin token.
    pub admin_token: Option<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// Heartbeats, leases and polling among replicas on one database.
    pub replica: crate::replica::Options,
}

impl Options {
    /// Defaults for a database URL and an API address; gRPC on the same
    /// host, on any free port.
    pub fn new(database_url: impl Into<String>, api_listen: SocketAddr) -> Self {
        Self {
            database_url: database_url.into(),
            api_listen,
            grpc_listen: SocketAddr::new(api_listen.ip(), 0),
            grpc_tls: None,
            distribution: crate::distribution::Options::default(),
            admin_token: None,
            max_body_bytes: api::DEFAULT_MAX_BODY_BYTES,
            shutdown_timeout: Duration::from_secs(10),
            replica: crate::replica::Options::default(),
        }
    }
}

/// TLS of the gRPC listener, as PEM.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    /// Certificate chain presented to data planes.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
    /// When set, data planes must present a certificate signed by one of
    /// these CAs (mutual TLS).
    pub client_ca_pem: Option<Vec<u8>>,
}

/// Name of the token set by `ISAME_ADMIN_TOKEN`.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";

/// Shortest bootstrap token accepted. Tokens are stored as a plain SHA-256,
/// which is safe only for secrets too long to guess (generated ones carry
/// 256 random bits).
pub const MIN_BOOTSTRAP_TOKEN: usize = 32;

/// The database kinds a URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// `sqlite:…`: one file, one process (the embedded default).
    Sqlite,
    /// `postgres:…` or `postgresql:…`: shared by any number of replicas.
    Postgres,
}

/// The kind of database `url` names.
pub fn database_kind(url: &str) -> Result<DatabaseKind, StartError> {
    if url.starts_with("sqlite:") {
        Ok(DatabaseKind::Sqlite)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(DatabaseKind::Postgres)
    } else {
        Err(StartError::UnsupportedDatabase(redact(url)))
    }
}

/// Opens the store a database URL names, bringing its schema up to date.
pub async fn open_store(url: &str) -> Result<DynStore, StartError> {
    let err = |source| StartError::Store {
        url: redact(url),
        source,
    };
    Ok(match database_kind(url)? {
        DatabaseKind::Sqlite => Arc::new(SqliteStore::open(url).await.map_err(err)?),
        DatabaseKind::Postgres => Arc::new(PostgresStore::open(url).await.map_err(err)?),
    })
}

/// Applies the schema migrations `url` has not had; returns how many ran
/// (`isame-control-plane migrate`, run once before a rolling upgrade).
pub async fn migrate(url: &str) -> Result<usize, StartError> {
    let err = |source| StartError::Store {
        url: redact(url),
        source,
    };
    match database_kind(url)? {
        DatabaseKind::Sqlite => crate::store::sqlite::migrate(url).await.map_err(err),
        DatabaseKind::Postgres => crate::store::postgres::migrate(url).await.map_err(err),
    }
}

/// A URL with any password removed, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

/// A running control plane.
pub struct ControlPlane {
    /// Where the REST API listens.
    pub api_addr: SocketAddr,
    /// Where data planes connect.
    pub grpc_addr: SocketAddr,
    /// The current config and its writers.
    pub configs: Arc<Configs>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ControlPlane {
    /// Opens the store, checks exposure, binds and serves.
    pub async fn start(options: Options) -> Result<ControlPlane, StartError> {
        // Presented tokens are trimmed, so the stored one is too.
        let bootstrap = options.admin_token.as_deref().map(str::trim);
        if bootstrap.is_some_and(|t| t.chars().count() < MIN_BOOTSTRAP_TOKEN) {
            return Err(StartError::WeakToken);
        }
        let store = open_store(&options.database_url).await?;
        let store_err = |source| StartError::Store {
            url: redact(&options.database_url),
            source,
        };
        if let Some(token) = bootstrap {
            store
                .ensure_token(BOOTSTRAP_TOKEN_NAME, Role::Admin, &tokens::hash(token))
                .await
                .map_err(store_err)?;
        }
        let has_tokens = store.has_tokens().await.map_err(store_err)?;
        let loopback = options.api_listen.ip().is_loopback();
        if !loopback && !has_tokens {
            return Err(StartError::Exposed(options.api_listen));
        }
        if !has_tokens {
            tracing::warn!(
                addr = %options.api_listen,
                "no API token exists: every API request is refused until one is created \
                 (ISAME_ADMIN_TOKEN, or `isame-control-plane token create`)"
            );
        }
        let replica = options.distribution.replica.clone();
        store
            .disconnect_replica(&replica)
            .await
            .map_err(store_err)?;
        let metrics = Arc::new(Metrics::new()?);
        let configs = Arc::new(
            Configs::load(store.clone(), metrics.clone())
                .await
                .map_err(store_err)?,
        );
        let state = AppState {
            configs: configs.clone(),
            metrics,
            max_body_bytes: options.max_body_bytes,
        };
        let listener = TcpListener::bind(options.api_listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: options.api_listen,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: options.api_listen,
            source,
        })?;
        let grpc_listener = TcpListener::bind(options.grpc_listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: options.grpc_listen,
                source,
            })?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: options.grpc_listen,
                source,
            })?;
        let mut grpc_server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        if let Some(tls) = &options.grpc_tls {
            let mut config = tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem),
            );
            if let Some(ca) = &tls.client_ca_pem {
                config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            grpc_server = grpc_server
                .tls_config(config)
                .map_err(|e| StartError::Tls(e.to_string()))?;
        }
        let distribution = Distribution::new(
            configs.clone(),
            state.metrics.clone(),
            options.distribution.clone(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let grace = options.shutdown_timeout;
        let (background_stop, background) = tokio::sync::watch::channel(false);
        let follower = options.replica.follow.then(|| {
            tokio::spawn(crate::replica::follow(
                configs.clone(),
                options.replica.poll,
                background.clone(),
            ))
        });
        let (holder_tx, holder) = tokio::sync::watch::channel(false);
        let controller = tokio::spawn(crate::rollout::controller::run(
            configs.clone(),
            state.metrics.clone(),
            options.replica.rollout_tick,
            holder,
            background.clone(),
        ));
        let jobs = tokio::spawn(crate::replica::run(
            store.clone(),
            replica.clone(),
            options.replica.clone(),
            state.metrics.clone(),
            holder_tx,
            background,
        ));
        let task = tokio::spawn(async move {
            let (grpc_stop, grpc_stopped) = oneshot::channel::<()>();
            let grpc = tokio::spawn(serve_grpc(
                grpc_server,
                grpc_listener,
                distribution.clone(),
                grpc_stopped,
            ));
            serve(
                listener,
                state,
                async {
                    let _ = stopped.await;
                },
                grace,
            )
            .await;
            // Streams never end by themselves: end them, give the server a
            // moment to close, then cut.
            distribution.close();
            let _ = grpc_stop.send(());
            let abort = grpc.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), grpc)
                .await
                .is_err()
            {
                abort.abort();
            }
            background_stop.send_replace(true);
            if let Some(follower) = follower {
                let _ = follower.await;
            }
            let _ = jobs.await;
            let _ = controller.await;
            store.close().await;
        });
        tracing::info!(%api_addr, %grpc_addr, replica, version = configs.current().version, "control plane listening");
        Ok(ControlPlane {
            api_addr,
            grpc_addr,
            configs,
            stop: Some(stop),
            task,
        })
    }

    /// Stops accepting, lets requests in flight finish (up to the grace
    /// period) and closes the database.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Serves the API on `listener` until `shutdown` completes, then drains for
/// at most `grace`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let (begun, drain) = oneshot::channel::<()>();
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = begun.send(());
    });
    let deadline = async move {
        if drain.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = server => {
            if let Err(e) = r {
                tracing::error!(error = %e, "API server failed");
            }
        }
        () = deadline => tracing::warn!("shutdown grace period over; closing requests still in flight"),
    }
}

/// Serves the data-plane streams until `stop` completes.
async fn serve_grpc(
    mut server: tonic::transport::Server,
    listener: TcpListener,
    distribution: Arc<Distribution>,
    stop: oneshot::Receiver<()>,
) {
    // Small messages (ACKs, snapshots of small configs) must not wait for
    // Nagle's algorithm to meet a delayed ACK (40 ms each time).
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)));
    let served = server
        .add_service(distribution.service())
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop.await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "gRPC server failed");
    }
}

/// Creates a token and records it in the audit log; returns the secret.
pub async fn create_token(
    store: &DynStore,
    name: &str,
    role: Role,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err("a token name must be 1 to 100 printable characters".into());
    }
    let token = tokens::generate().map_err(|e| format!("cannot get random bytes: {e}"))?;
    store
        .create_token(name, role, &tokens::hash(&token))
        .await?;
    store
        .audit(NewAudit {
            actor: "isame-control-plane token create".into(),
            remote_addr: String::new(),
            action: "token.create".into(),
            target: name.into(),
            message: format!("role {}", role.as_str()),
            changes: Vec::new(),
        })
        .await?;
    Ok(token)
}
