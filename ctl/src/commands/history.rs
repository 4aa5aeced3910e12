//! `history` (versions with their changes, newest first) and `rollback`.

use super::resources::write_of;
use super::{outcome, Ctx};
use crate::changes;
use crate::cli::WriteArgs;
use anyhow::Result;
use serde_json::{json, Value};
use ureq::http::Method;

/// `history [--limit N]`: each version as the server describes it, with
/// its changes (the full config of each is left out).
pub fn history(ctx: &Ctx, limit: u32) -> Result<()> {
    let list = ctx.client.get(&format!("/versions?limit={limit}"))?;
    let mut versions = Vec::new();
    for summary in list["versions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let Some(v) = summary["version"].as_u64() else {
            continue;
        };
        let mut full = ctx.client.get(&format!("/versions/{v}"))?;
        if let Some(obj) = full.as_object_mut() {
            obj.remove("config");
        }
        versions.push(full);
    }
    if versions.is_empty() && ctx.format == crate::cli::Format::Table {
        eprintln!("isame-ctl: no versions yet");
        return Ok(());
    }
    let data = json!({"versions": versions});
    ctx.show(&data, || {
        let mut out = String::new();
        for (i, v) in versions.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&entry(ctx, v));
        }
        out
    })
}

/// One version: a heading line, its message, its changes.
fn entry(ctx: &Ctx, v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    let mut heading = format!(
        "version {}  {}  by {}",
        v["version"].as_u64().unwrap_or(0),
        s("created_at"),
        s("author")
    );
    if let Some(r) = v["rollback_of"].as_u64() {
        heading.push_str(&format!("  (rollback to version {r})"));
    }
    let mut out = ctx.paint.bold(&heading);
    out.push('\n');
    if let Some(m) = v["message"].as_str().filter(|m| !m.is_empty()) {
        for line in m.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    let list = v["changes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        out.push_str("    (no changes)\n");
    } else {
        out.push_str(&changes::render(list, ctx.paint, "    "));
    }
    out
}

/// `rollback VERSION`: a new version with that version's content.
pub fn rollback(ctx: &Ctx, version: u64, args: &WriteArgs) -> Result<()> {
    let (_, answer) = ctx.client.write(
        Method::POST,
        &format!("/versions/{version}/rollback"),
        None,
        &write_of(args),
    )?;
    outcome(ctx, &answer)
}
