//! `apply` and `diff`: a whole config file sent to `PUT /config`, for real
//! or as a dry run.

use super::{outcome, Ctx};
use crate::changes;
use crate::cli::{Format, WaitArgs, WriteArgs};
use crate::client::{Body, Write};
use anyhow::{Context, Result};
use std::io::Read;
use std::path::Path;
use ureq::http::Method;

/// The file's text; `-` is standard input.
pub fn read(file: &Path) -> Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the config from standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// How a file is named in messages.
pub fn display_name(file: &Path) -> String {
    if file == Path::new("-") {
        "<stdin>".into()
    } else {
        file.display().to_string()
    }
}

/// `apply -f FILE [--dry-run] [-m MSG] [--if-version N] [--wait [--timeout D]]`.
pub fn apply(
    ctx: &Ctx,
    file: &Path,
    args: &WriteArgs,
    if_version: Option<u64>,
    wait: &WaitArgs,
) -> Result<()> {
    let text = read(file)?;
    let write = Write {
        dry_run: args.dry_run,
        message: args.message.clone(),
        if_version,
    };
    let (_, answer) = ctx
        .client
        .write(Method::PUT, "/config", Some(Body::yaml(text)), &write)?;
    let follow = wait.wait && !args.dry_run;
    // With --wait, JSON and YAML output is the rollout's alone: one document.
    if !follow || ctx.format == Format::Table {
        outcome(ctx, &answer)?;
    }
    match answer["version"].as_u64() {
        Some(v) if follow && v > 0 => super::rollout::follow(ctx, v, Some(wait.timeout)),
        _ => Ok(()),
    }
}

/// `diff -f FILE`: what `apply` would change.
pub fn diff(ctx: &Ctx, file: &Path) -> Result<()> {
    let text = read(file)?;
    let write = Write {
        dry_run: true,
        ..Write::default()
    };
    let (_, answer) = ctx
        .client
        .write(Method::PUT, "/config", Some(Body::yaml(text)), &write)?;
    ctx.show(&answer, || {
        let list = answer["changes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let against = match answer["version"].as_u64().unwrap_or(0) {
            0 => "an empty control plane (nothing applied yet)".to_owned(),
            v => format!("version {v}"),
        };
        let summary = if list.is_empty() {
            format!("no differences from {against}")
        } else {
            format!("{} against {against}", changes::count(list.len()))
        };
        format!(
            "{}{}\n",
            changes::render(list, ctx.paint, ""),
            ctx.paint.bold(&summary)
        )
    })
}
