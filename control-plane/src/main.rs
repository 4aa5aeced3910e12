//! `isame-control-plane`: stores, versions and distributes Isame configuration.

use clap::{Parser, Subcommand, ValueEnum};
use isame_control_plane::app::{self, ControlPlane, Options};
use isame_control_plane::store::Role as StoredRole;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Isame control plane: versioned config store, REST API, gRPC distribution.
#[derive(Debug, Parser)]
#[command(name = "isame-control-plane", version, about)]
struct Cli {
    /// Database URL: `sqlite://FILE` (one process) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (any number of replicas).
    #[arg(long, env = "ISAME_DATABASE_URL", default_value = "sqlite://isame.db")]
    database_url: String,
    /// REST API, dashboard and /metrics address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    api_listen: SocketAddr,
    /// gRPC address for data-plane streams.
    #[arg(long, default_value = "127.0.0.1:7071")]
    grpc_listen: SocketAddr,
    /// Bootstrap admin token (kept hashed, under the name `bootstrap-admin`).
    #[arg(long, env = "ISAME_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Serve gRPC over TLS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "grpc_tls_key")]
    grpc_tls_cert: Option<std::path::PathBuf>,
    /// The private key of --grpc-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "grpc_tls_cert")]
    grpc_tls_key: Option<std::path::PathBuf>,
    /// Require data planes to present a client certificate signed by this CA (PEM).
    #[arg(long, value_name = "FILE", requires = "grpc_tls_cert")]
    grpc_client_ca: Option<std::path::PathBuf>,
    /// Largest REST request body, in bytes.
    #[arg(long, default_value_t = isame_control_plane::api::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring the database's schema up to this build's, then exit (run once
    /// before a rolling upgrade of several replicas; every replica also
    /// migrates at start).
    Migrate,
    /// Write the whole store (versions, certificates with their keys,
    /// token hashes, the audit log) as JSON, to move it to another database.
    Export {
        /// Write here (created with mode 0600: it holds private keys)
        /// instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
    /// Load an export into the database of --database-url, which must hold
    /// no versions yet (migrated first; run before any replica starts on it).
    Import {
        /// The export, or `-` for standard input.
        #[arg(value_name = "FILE")]
        input: std::path::PathBuf,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create a token and print it once.
    Create {
        /// A name for the token (shown in versions and the audit log).
        #[arg(long)]
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: Role,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    /// Read and write.
    Admin,
    /// Read only.
    Viewer,
    /// A data plane: subscribes to config (with the private keys of stored
    /// certificates); no REST access.
    Node,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormat::Text => isame_telemetry::LogFormat::Text,
        LogFormat::Json => isame_telemetry::LogFormat::Json,
    };
    let _telemetry = match isame_telemetry::init("isame-control-plane", format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("isame-control-plane: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("isame-control-plane: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Some(Command::Token {
                action: TokenAction::Create { name, role },
            }) => create_token(&cli.database_url, &name, role).await,
            Some(Command::Migrate) => migrate(&cli.database_url).await,
            Some(Command::Export { output }) => export(&cli.database_url, output.as_deref()).await,
            Some(Command::Import { input }) => import(&cli.database_url, &input).await,
            None => serve(cli).await,
        }
    })
}

async fn migrate(url: &str) -> ExitCode {
    match app::migrate(url).await {
        Ok(n) => {
            eprintln!("schema up to date ({n} migrations applied)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("isame-control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn export(url: &str, output: Option<&std::path::Path>) -> ExitCode {
    let written = async {
        let store = app::open_store(url).await.map_err(|e| e.to_string())?;
        let dump = store.export().await;
        store.close().await;
        let dump = dump.map_err(|e| e.to_string())?;
        let json = serde_json::to_vec(&dump).map_err(|e| e.to_string())?;
        match output {
            None => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                out.write_all(&json)
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(|e| format!("standard output: {e}"))?;
            }
            Some(path) => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                f.write_all(&json)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        Ok::<_, String>(dump.versions.len())
    };
    match written.await {
        Ok(n) => {
            eprintln!("exported {n} versions");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("isame-control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn import(url: &str, input: &std::path::Path) -> ExitCode {
    let loaded = async {
        let bytes = if input == std::path::Path::new("-") {
            use std::io::Read;
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| format!("standard input: {e}"))?;
            buf
        } else {
            std::fs::read(input).map_err(|e| format!("{}: {e}", input.display()))?
        };
        let dump: isame_control_plane::store::dump::Dump = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not an export: {e}", input.display()))?;
        let n = dump.versions.len();
        let store = app::open_store(url).await.map_err(|e| e.to_string())?;
        let done = store.import(dump).await;
        store.close().await;
        done.map_err(|e| e.to_string())?;
        Ok::<_, String>(n)
    };
    match loaded.await {
        Ok(n) => {
            eprintln!("imported {n} versions");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("isame-control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn create_token(url: &str, name: &str, role: Role) -> ExitCode {
    let role = match role {
        Role::Admin => StoredRole::Admin,
        Role::Viewer => StoredRole::Viewer,
        Role::Node => StoredRole::Node,
    };
    let store = match app::open_store(url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("isame-control-plane: {e}");
            return ExitCode::FAILURE;
        }
    };
    let created = app::create_token(&store, name, role).await;
    store.close().await;
    match created {
        Ok(token) => {
            println!("{token}");
            eprintln!(
                "created {} token {name:?}; it is shown only this once",
                role.as_str()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("isame-control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> ExitCode {
    let mut options = Options::new(cli.database_url, cli.api_listen);
    options.grpc_listen = cli.grpc_listen;
    if let (Some(cert), Some(key)) = (&cli.grpc_tls_cert, &cli.grpc_tls_key) {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let tls = (|| {
            Ok::<_, String>(app::GrpcTls {
                cert_pem: read(cert)?,
                key_pem: read(key)?,
                client_ca_pem: cli.grpc_client_ca.as_deref().map(read).transpose()?,
            })
        })();
        match tls {
            Ok(t) => options.grpc_tls = Some(t),
            Err(e) => {
                eprintln!("isame-control-plane: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    options.admin_token = cli.admin_token;
    options.max_body_bytes = cli.max_body_bytes;
    let cp = match ControlPlane::start(options).await {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("isame-control-plane: {e}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal().await;
    tracing::info!("shutting down");
    cp.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
