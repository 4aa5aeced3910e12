//! `isame-ctl`: the operator's and CI pipeline's tool for the Isame control
//! plane. Exit codes: 0 success, 1 failure (invalid config, refused by the
//! server, server unreachable), 2 usage error; `--wait` adds 3 (the
//! rollout was rolled back, aborted or superseded) and 4 (timed out).
#![forbid(unsafe_code)]

mod changes;
mod cli;
mod client;
mod commands;
mod output;
mod settings;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<commands::Reported>().is_some() => ExitCode::FAILURE,
        Err(e) if e.downcast_ref::<commands::Exit>().is_some() => {
            ExitCode::from(e.downcast_ref::<commands::Exit>().map_or(1, |x| x.0))
        }
        // A reader that went away (`isame-ctl history | head`) is not a failure.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("isame-ctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
