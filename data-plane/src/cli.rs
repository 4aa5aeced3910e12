//! Command-line interface of `isame-lb` (names from CONTRACT.md).

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Isame data plane: an HTTP load balancer.
#[derive(Debug, Parser)]
#[command(
    name = "isame-lb",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Serve this YAML config; the file is watched and SIGHUP reloads it.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen for proxied traffic here instead of server.address:server.port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Listen for HTTPS here instead of server.address:server.https_port (when tls.enabled).
    #[arg(long, value_name = "ADDR")]
    pub https_listen: Option<SocketAddr>,
    /// Serve /metrics, /health, /ready and /status here instead of metrics.address:metrics.port.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Worker threads (default: the number of CPU cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config file: exit 0 when valid, 1 with every problem listed.
    Validate {
        /// The YAML file to check.
        file: PathBuf,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
