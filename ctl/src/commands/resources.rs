//! `delete upstream|route NAME`.

use super::{outcome, Ctx};
use crate::cli::{Delete, WriteArgs};
use crate::client::{segment, Write};
use anyhow::Result;
use ureq::http::Method;

/// The options of a write from its flags.
pub fn write_of(args: &WriteArgs) -> Write {
    Write {
        dry_run: args.dry_run,
        message: args.message.clone(),
        if_version: None,
    }
}

/// Removes an upstream or a route.
pub fn delete(ctx: &Ctx, what: &Delete) -> Result<()> {
    let (path, write) = match what {
        Delete::Upstream { name, write } => (format!("/upstreams/{}", segment(name)), write),
        Delete::Route { name, write } => (format!("/routes/{}", segment(name)), write),
    };
    let (_, answer) = ctx
        .client
        .write(Method::DELETE, &path, None, &write_of(write))?;
    outcome(ctx, &answer)
}
