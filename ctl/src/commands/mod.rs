//! The commands, one module per area, and what they share: the context
//! (client, output format, colour) and how a write's outcome is shown.

mod apply;
mod backend;
mod get;
mod history;
mod resources;
mod rollout;
mod route;
mod status;
mod validate;

use crate::changes;
use crate::cli::{Cli, Command, Format};
use crate::client::Client;
use crate::output::{self, Paint};
use crate::settings;
use anyhow::Result;
use clap::CommandFactory;
use serde_json::Value;

/// A failure already explained on stderr: exit 1 without another message.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Reported {}

/// A failure already explained, that exits with its own code.
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// What every command that talks to the control plane has.
pub struct Ctx {
    /// The API.
    pub client: Client,
    /// How to print.
    pub format: Format,
    /// Colours.
    pub paint: Paint,
}

impl Ctx {
    /// Prints the server's data as JSON or YAML, or `table()` for people.
    pub fn show(&self, data: &Value, table: impl FnOnce() -> String) -> Result<()> {
        match self.format {
            Format::Table => output::emit(&table()),
            f => output::emit(&output::data(f, data)?),
        }
    }
}

/// Runs the command the line asks for.
pub fn run(cli: Cli) -> Result<()> {
    // Settings are read only by commands that talk to the server, so a
    // broken config file cannot stop `validate` or `completion`.
    let ctx = || -> Result<Ctx> {
        let settings = settings::resolve(
            cli.server.as_deref(),
            cli.token.as_deref(),
            cli.config.as_deref(),
        )?;
        Ok(Ctx {
            client: Client::new(&settings)?,
            format: cli.output,
            paint: Paint::new(cli.color),
        })
    };
    match &cli.command {
        Command::Validate { file } => validate::run(&file.file, cli.output),
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "isame-ctl", &mut script);
            output::emit(&String::from_utf8_lossy(&script))
        }
        Command::Apply {
            file,
            write,
            if_version,
            wait,
        } => apply::apply(&ctx()?, &file.file, write, *if_version, wait),
        Command::Diff { file } => apply::diff(&ctx()?, &file.file),
        Command::Get { what } => get::list(&ctx()?, *what),
        Command::Describe { what } => get::describe(&ctx()?, what),
        Command::Delete { what } => resources::delete(&ctx()?, what),
        Command::Backend { action } => backend::run(&ctx()?, action),
        Command::Route { action } => route::run(&ctx()?, action),
        Command::History { limit } => history::history(&ctx()?, *limit),
        Command::Rollback { version, write } => history::rollback(&ctx()?, *version, write),
        Command::Status => status::status(&ctx()?),
        Command::Rollout { what } => rollout::run(&ctx()?, what),
    }
}

/// Shows the outcome of a write (`{version, created, dry_run, changes}`):
/// the change list and a summary line, or the server's answer as data.
pub fn outcome(ctx: &Ctx, answer: &Value) -> Result<()> {
    ctx.show(answer, || {
        let list = answer["changes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let version = answer["version"].as_u64().unwrap_or(0);
        let n = changes::count(list.len());
        let summary = if answer["dry_run"] == true {
            format!("{n}; dry run, nothing applied")
        } else if answer["created"] == true {
            format!("{n}; applied as version {version}")
        } else {
            format!("{n}; version {version} stays the newest")
        };
        format!(
            "{}{}\n",
            changes::render(list, ctx.paint, ""),
            ctx.paint.bold(&summary)
        )
    })
}
