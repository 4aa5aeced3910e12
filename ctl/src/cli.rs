//! The command line: every command, flag and argument `isame-ctl` takes.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Operate an Isame control plane: apply and diff configs, inspect
/// upstreams, routes, nodes and versions, edit backends, roll back.
#[derive(Debug, Parser)]
#[command(name = "isame-ctl", version, about)]
pub struct Cli {
    /// Control plane URL [default: http://127.0.0.1:7070, or `server:` in the config file].
    #[arg(long, env = "ISAME_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// API token [or `token:` in the config file].
    #[arg(
        long,
        env = "ISAME_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Config file with `server` and `token` [default: $XDG_CONFIG_HOME/isame/config.yaml or ~/.config/isame/config.yaml].
    #[arg(long, env = "ISAME_CTL_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format: tables for people, JSON or YAML of the server's data for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,
    /// Colour the change lists: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true, value_name = "WHEN")]
    pub color: ColorChoice,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How data is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned tables and readable lists.
    Table,
    /// The server's JSON, pretty-printed.
    Json,
    /// The server's data as YAML.
    Yaml,
}

/// When to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply a config file: it becomes the newest version.
    Apply {
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        write: WriteArgs,
        /// Apply only if version N is still the newest (otherwise the server refuses with 412).
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show what applying a config file would change (nothing is applied).
    Diff {
        #[command(flatten)]
        file: FileArg,
    },
    /// Check a config file offline, with the same rules as the server.
    Validate {
        #[command(flatten)]
        file: FileArg,
    },
    /// List upstreams, routes, nodes or versions.
    Get {
        /// What to list.
        #[arg(value_enum)]
        what: Listing,
    },
    /// Show one upstream, route or node in detail.
    Describe {
        #[command(subcommand)]
        what: Describe,
    },
    /// Remove an upstream or a route.
    Delete {
        #[command(subcommand)]
        what: Delete,
    },
    /// Add, remove, drain or reweight one backend of an upstream.
    Backend {
        #[command(subcommand)]
        action: Backend,
    },
    /// Change one route: its split between upstreams.
    Route {
        #[command(subcommand)]
        action: Route,
    },
    /// Versions, newest first, with their author, time, message and changes.
    History {
        /// How many versions (1 to 1000).
        #[arg(long, short = 'n', default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Make a new version with the content of an older one.
    Rollback {
        /// The version whose content to restore.
        version: u64,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// The fleet at a glance: newest version, nodes, refused versions, backend health.
    Status,
    /// Staged rollouts: status (live with --watch), pause, resume, promote,
    /// abort, and the rollout policy.
    Rollout {
        #[command(subcommand)]
        what: Rollout,
    },
    /// Print a shell completion script.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `--wait [--timeout D]`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Follow the version's staged rollout until it ends: exit 0 when it
    /// reached every node, 3 when it was rolled back, aborted or superseded
    /// (with the failing gate and its figures), 4 at the timeout.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 90s, 10m, 1h.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration, requires = "wait")]
    pub timeout: std::time::Duration,
}

/// Reads a duration such as `90s` or `10m`.
fn duration(s: &str) -> Result<std::time::Duration, String> {
    isame_proto::config::duration::parse(s)
}

/// `-m MESSAGE` alone, for writes that have no dry run.
#[derive(Debug, Args)]
pub struct MessageArg {
    /// Why: kept in the audit log.
    #[arg(short = 'm', long, value_name = "MESSAGE")]
    pub message: Option<String>,
}

/// `rollout` actions; VERSION is the newest rollout's when left out.
#[derive(Debug, Subcommand)]
pub enum Rollout {
    /// Stages, nodes per version, gate figures and the timeline.
    Status {
        /// The version rolled out.
        version: Option<u64>,
        /// Follow it live until it ends (exit codes as `apply --wait`).
        #[arg(long)]
        watch: bool,
    },
    /// Rollouts, newest first.
    List {
        /// How many (1 to 1000).
        #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Promote no stage until resumed (gates still roll back).
    Pause {
        /// The version rolled out.
        version: Option<u64>,
        #[command(flatten)]
        write: MessageArg,
    },
    /// Promote again; the current stage bakes again from now.
    Resume {
        /// The version rolled out.
        version: Option<u64>,
        #[command(flatten)]
        write: MessageArg,
    },
    /// Pass the current stage now; with --all (or after a rollback) send
    /// the version to every node at once.
    Promote {
        /// The version rolled out.
        version: Option<u64>,
        /// Every remaining stage at once.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        write: MessageArg,
    },
    /// Send every node back to the base version.
    Abort {
        /// The version rolled out.
        version: Option<u64>,
        #[command(flatten)]
        write: MessageArg,
    },
    /// Show, set or remove the rollout policy.
    Policy {
        #[command(subcommand)]
        action: Policy,
    },
}

/// `rollout policy` actions.
#[derive(Debug, Subcommand)]
pub enum Policy {
    /// The current policy.
    Show,
    /// Set the policy from a file (YAML or JSON; docs/rollouts.md).
    Set {
        #[command(flatten)]
        file: FileArg,
        #[command(flatten)]
        write: MessageArg,
    },
    /// Remove it: every change goes to every node at once again.
    Remove {
        #[command(flatten)]
        write: MessageArg,
    },
}

/// `-f FILE`.
#[derive(Debug, Args)]
pub struct FileArg {
    /// The config file (YAML or JSON; `-` reads standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
}

/// What every write takes.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Show the changes without making them.
    #[arg(long)]
    pub dry_run: bool,
    /// Why: kept with the version and in the audit log.
    #[arg(short = 'm', long, value_name = "MESSAGE")]
    pub message: Option<String>,
}

/// Lists `get` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Listing {
    /// Upstreams of the newest config.
    #[value(alias = "upstream")]
    Upstreams,
    /// Routes of the newest config, in match order.
    #[value(alias = "route")]
    Routes,
    /// Data planes that ever subscribed.
    #[value(alias = "node")]
    Nodes,
    /// Config versions, newest first.
    #[value(alias = "version")]
    Versions,
}

/// `describe` targets.
#[derive(Debug, Subcommand)]
pub enum Describe {
    /// An upstream, its backends and their health across the fleet.
    Upstream {
        /// Upstream name.
        name: String,
    },
    /// A route.
    Route {
        /// Route name.
        name: String,
    },
    /// A data plane: version served, last refusal, backend health, traffic.
    Node {
        /// Node id.
        id: String,
    },
}

/// `delete` targets.
#[derive(Debug, Subcommand)]
pub enum Delete {
    /// An upstream (refused while a route uses it).
    Upstream {
        /// Upstream name.
        name: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// A route.
    Route {
        /// Route name.
        name: String,
        #[command(flatten)]
        write: WriteArgs,
    },
}

/// `route` actions.
#[derive(Debug, Subcommand)]
pub enum Route {
    /// Share a route's requests between upstreams by weight, e.g.
    /// `route split shop v1=90 v2=10`; `v1=0 v2=100` moves everything.
    /// Applied only if nobody changed the config since it was read.
    Split {
        /// Route name.
        name: String,
        /// `UPSTREAM=WEIGHT` (weights 0 to 1000), in the order to keep.
        #[arg(required = true, value_name = "UPSTREAM=WEIGHT", value_parser = share)]
        shares: Vec<(String, u32)>,
        #[command(flatten)]
        write: WriteArgs,
    },
}

/// Reads `UPSTREAM=WEIGHT`.
fn share(s: &str) -> Result<(String, u32), String> {
    let (name, weight) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected UPSTREAM=WEIGHT"))?;
    let weight: u32 = weight
        .parse()
        .map_err(|_| format!("{s:?}: the weight must be a whole number from 0 to 1000"))?;
    if name.is_empty() || weight > 1000 {
        return Err(format!(
            "{s:?}: expected UPSTREAM=WEIGHT with a weight from 0 to 1000"
        ));
    }
    Ok((name.to_owned(), weight))
}

/// `backend` actions. A backend is named by its URL or its `host:port`.
#[derive(Debug, Subcommand)]
pub enum Backend {
    /// Add a backend to an upstream.
    Add {
        /// Upstream name.
        upstream: String,
        /// Backend URL, e.g. http://10.0.0.5:8080.
        url: String,
        /// Share of traffic under weighted_round_robin (1 to 1000).
        #[arg(long, value_name = "N")]
        weight: Option<u32>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Remove a backend (drain it first so that nothing in flight is cut off).
    Remove {
        /// Upstream name.
        upstream: String,
        /// Backend URL or host:port.
        backend: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Drain a backend: no new requests, those in flight finish.
    Drain {
        /// Upstream name.
        upstream: String,
        /// Backend URL or host:port.
        backend: String,
        /// Take requests again.
        #[arg(long)]
        undo: bool,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Set a backend's weight.
    Weight {
        /// Upstream name.
        upstream: String,
        /// Backend URL or host:port.
        backend: String,
        /// The new weight (1 to 1000).
        weight: u32,
        #[command(flatten)]
        write: WriteArgs,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["isame-ctl", "get", "nodes", "-o", "json"]).expect("parses");
        assert_eq!(cli.output, Format::Json);
        assert!(matches!(
            cli.command,
            Command::Get {
                what: Listing::Nodes
            }
        ));
    }
}
