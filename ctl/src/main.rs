//! `isame-ctl`: the operator's and CI pipeline's tool.
//!
//! `validate` works offline today, with the same model and messages as the
//! data plane and control plane. Commands that talk to the control plane's
//! REST API say so and exit 1 until that API exists.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Isame CLI.
#[derive(Debug, Parser)]
#[command(name = "isame-ctl", version, about)]
struct Cli {
    /// Control plane URL.
    #[arg(
        long,
        env = "ISAME_SERVER",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    server: String,
    /// API token.
    #[arg(long, env = "ISAME_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config file offline.
    Validate {
        /// The YAML file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Apply a config file to the control plane.
    Apply {
        /// The YAML file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Show the changes without applying them.
        #[arg(long)]
        dry_run: bool,
        /// Message recorded with the new version.
        #[arg(short = 'm', long)]
        message: Option<String>,
    },
    /// Show what applying a file would change.
    Diff {
        /// The YAML file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Fleet status.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Validate { file } => validate(file, cli.output),
        _ => {
            eprintln!(
                "isame-ctl: this command needs the control plane's REST API at {}, which is not part of this release yet",
                cli.server
            );
            ExitCode::FAILURE
        }
    }
}

fn validate(file: &PathBuf, output: Output) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("isame-ctl: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match isame_proto::Config::from_yaml(&text) {
        Ok(_) => {
            match output {
                Output::Json => println!("{}", serde_json::json!({"valid": true, "errors": []})),
                _ => println!("{}: valid", file.display()),
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            match output {
                Output::Json => {
                    println!("{}", serde_json::json!({"valid": false, "errors": errors}))
                }
                _ => {
                    eprintln!("{}: {} problem(s)", file.display(), errors.len());
                    for e in errors.iter() {
                        eprintln!("  {e}");
                    }
                }
            }
            ExitCode::FAILURE
        }
    }
}
