//! `isame-control-plane`: stores, versions and distributes Isame configuration.
//!
//! The store, REST API and gRPC distribution are being built; this binary
//! already carries the command-line contract of CONTRACT.md so scripts and
//! packaging can rely on it.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::process::ExitCode;

/// Isame control plane: versioned config store, REST API, gRPC distribution.
#[derive(Debug, Parser)]
#[command(name = "isame-control-plane", version, about)]
struct Cli {
    /// Database URL.
    #[arg(long, env = "ISAME_DATABASE_URL", default_value = "sqlite://isame.db")]
    database_url: String,
    /// REST API, dashboard and /metrics address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    api_listen: SocketAddr,
    /// gRPC address for data-plane streams.
    #[arg(long, default_value = "127.0.0.1:7071")]
    grpc_listen: SocketAddr,
    /// Bootstrap admin token.
    #[arg(long, env = "ISAME_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        /// A name for the token (shown in the audit log).
        #[arg(long)]
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: Role,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    Admin,
    Viewer,
}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "isame-control-plane: the server is not part of this release yet; \
         run a data plane standalone with `isame-lb --config FILE`"
    );
    ExitCode::FAILURE
}
