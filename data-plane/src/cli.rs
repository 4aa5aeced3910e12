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
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        conflicts_with = "control_plane"
    )]
    pub config: Option<PathBuf>,
    /// Follow the control plane at this gRPC address (http://host:7071).
    /// Repeat it, or separate addresses with commas, for several replicas:
    /// the node holds one stream, to one of them, and moves to the next when
    /// it fails.
    #[arg(long, value_name = "URL", requires = "node_id", value_delimiter = ',')]
    pub control_plane: Vec<String>,
    /// This node's id in the fleet (with --control-plane).
    #[arg(long, value_name = "ID", requires = "control_plane", value_parser = parse_node_id)]
    pub node_id: Option<String>,
    /// Token for the control plane.
    #[arg(long, env = "ISAME_TOKEN", hide_env_values = true, value_name = "T")]
    pub token: Option<String>,
    /// Keep the last good config here; serve it at start when the control plane is down.
    #[arg(long, value_name = "DIR", requires = "control_plane")]
    pub cache_dir: Option<PathBuf>,
    /// A label reported to the control plane (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label, requires = "control_plane")]
    pub labels: Vec<(String, String)>,
    /// CA certificate(s) that sign the control plane's (with an https:// --control-plane).
    #[arg(long, value_name = "FILE", requires = "control_plane")]
    pub ca: Option<PathBuf>,
    /// Client certificate for a control plane that requires one (PEM).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// How often traffic and backend health are reported to the control plane.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub report_interval: std::time::Duration,
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
    /// One log line per request (target `isame::access`; `RUST_LOG` can
    /// also silence it with `isame::access=off`).
    #[arg(long, value_enum, default_value_t = Switch::On, value_name = "on|off")]
    pub access_log: Switch,
    #[command(subcommand)]
    pub command: Option<Command>,
}

fn parse_node_id(s: &str) -> Result<String, String> {
    isame_proto::config::check_node_id(s)?;
    Ok(s.to_owned())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = isame_proto::config::duration::parse(s)?;
    if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(60) {
        return Err("must be between 100ms and 60s".into());
    }
    Ok(d)
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a config file: exit 0 when valid, 1 with every problem listed.
    Validate {
        /// The YAML file to check.
        file: PathBuf,
    },
    /// Print the JSON Schema of a config file (for editors and CI checks).
    Schema {
        /// Print the configuration reference (Markdown) instead.
        #[arg(long)]
        reference: bool,
    },
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_control_planes_repeated_or_comma_separated() {
        let cli = Cli::try_parse_from([
            "isame-lb",
            "--control-plane",
            "http://cp-a:7071,http://cp-b:7071",
            "--control-plane",
            "http://cp-c:7071",
            "--node-id",
            "edge-1",
        ])
        .expect("parses");
        assert_eq!(
            cli.control_plane,
            ["http://cp-a:7071", "http://cp-b:7071", "http://cp-c:7071"]
        );
        let file = Cli::try_parse_from(["isame-lb", "--config", "lb.yaml"]).expect("parses");
        assert!(file.control_plane.is_empty());
        assert!(Cli::try_parse_from([
            "isame-lb",
            "--config",
            "lb.yaml",
            "--control-plane",
            "http://cp:7071",
            "--node-id",
            "n"
        ])
        .is_err());
    }
}
