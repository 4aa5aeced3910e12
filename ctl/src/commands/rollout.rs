//! `rollout …`: the staged rollout of a version (status, live or once;
//! pause, resume, promote, abort), the rollout policy, and `apply --wait`,
//! which follows a rollout to its end so that a CI pipeline gets a verdict.
//!
//! Exit codes of `apply --wait` and `rollout status --wait`: 0 when the
//! version reached every node, [`ROLLED_BACK`] when it was rolled back,
//! aborted or superseded, [`TIMED_OUT`] when it was still going at the
//! timeout.

use super::{apply, Ctx, Exit};
use crate::cli::{MessageArg, Policy, Rollout};
use crate::client::{Body, ServerError, Write};
use crate::output::{fields, inline, when, Table};
use anyhow::Result;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use ureq::http::Method;

/// Exit code: the rollout did not reach the fleet.
pub const ROLLED_BACK: u8 = 3;
/// Exit code: the rollout was still going when the wait timed out.
pub const TIMED_OUT: u8 = 4;

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Runs a `rollout` subcommand.
pub fn run(ctx: &Ctx, what: &Rollout) -> Result<()> {
    match what {
        Rollout::Status { version, watch } => status(ctx, *version, *watch),
        Rollout::List { limit } => {
            let data = ctx.client.get(&format!("/rollouts?limit={limit}"))?;
            ctx.show(&data, || render_list(&data))
        }
        Rollout::Pause { version, write } => act(ctx, *version, "pause", write, false),
        Rollout::Resume { version, write } => act(ctx, *version, "resume", write, false),
        Rollout::Abort { version, write } => act(ctx, *version, "abort", write, false),
        Rollout::Promote {
            version,
            all,
            write,
        } => act(ctx, *version, "promote", write, *all),
        Rollout::Policy { action } => policy(ctx, action),
    }
}

/// The rollout of `version`, or the newest.
fn fetch(ctx: &Ctx, version: Option<u64>) -> Result<Value> {
    match version {
        Some(v) => ctx.client.get(&format!("/rollouts/{v}")),
        None => ctx.client.get("/rollouts/latest"),
    }
}

fn status(ctx: &Ctx, version: Option<u64>, watch: bool) -> Result<()> {
    if !watch {
        let r = fetch(ctx, version)?;
        let nodes = ctx.client.get("/nodes")?;
        return ctx.show(&r, || render(ctx, &r, &nodes));
    }
    let r = fetch(ctx, version)?;
    let v = r["version"].as_u64().unwrap_or(0);
    follow(ctx, v, None)
}

fn act(ctx: &Ctx, version: Option<u64>, action: &str, write: &MessageArg, all: bool) -> Result<()> {
    let v = match version {
        Some(v) => v,
        None => fetch(ctx, None)?["version"].as_u64().unwrap_or(0),
    };
    let body = if all {
        Some(Body::json(&serde_json::json!({"all": true})))
    } else {
        None
    };
    let w = Write {
        message: write.message.clone(),
        ..Write::default()
    };
    let (_, r) = ctx
        .client
        .write(Method::POST, &format!("/rollouts/{v}/{action}"), body, &w)?;
    let nodes = ctx.client.get("/nodes")?;
    ctx.show(&r, || render(ctx, &r, &nodes))
}

fn policy(ctx: &Ctx, action: &Policy) -> Result<()> {
    let data = match action {
        Policy::Show => ctx.client.get("/rollout-policy")?,
        Policy::Set { file, write } => {
            let text = apply::read(&file.file)?;
            let w = Write {
                message: write.message.clone(),
                ..Write::default()
            };
            ctx.client
                .write(Method::PUT, "/rollout-policy", Some(Body::yaml(text)), &w)?
                .1
        }
        Policy::Remove { write } => {
            let w = Write {
                message: write.message.clone(),
                ..Write::default()
            };
            ctx.client
                .write(Method::DELETE, "/rollout-policy", None, &w)?
                .1
        }
    };
    ctx.show(&data, || {
        let revision = data["revision"].as_u64().unwrap_or(0);
        match &data["policy"] {
            Value::Null => format!(
                "No rollout policy (revision {revision}): every change goes to every node at once.\n"
            ),
            p => {
                let mut out = format!("Rollout policy, revision {revision}:\n");
                let mut t = Table::new(&["STAGE", "SELECTOR", "PERCENT", "BAKE", "MIN REQUESTS", "LOW TRAFFIC"]);
                for s in list(&p["stages"]) {
                    t.row(vec![
                        inline(&s["name"]),
                        inline(&s["selector"]),
                        inline(&s["percent"]),
                        inline(&s["bake"]),
                        inline(&s["min_requests"]),
                        inline(&s["on_low_traffic"]),
                    ]);
                }
                out.push_str(&t.render_indented(2));
                out.push_str(&format!("  gates: {}\n", inline(&p["gates"])));
                out
            }
        }
    })
}

/// Follows the rollout of `version` until it ends (or `timeout` passes),
/// printing each timeline entry as it comes; the exit code says how it
/// ended.
pub fn follow(ctx: &Ctx, version: u64, timeout: Option<Duration>) -> Result<()> {
    let started = SystemTime::now();
    let mut printed = 0usize;
    loop {
        let r = match ctx.client.get(&format!("/rollouts/{version}")) {
            Ok(r) => r,
            Err(e)
                if e.downcast_ref::<ServerError>()
                    .is_some_and(|s| s.status == 404) =>
            {
                // A version committed before rollouts existed went
                // everywhere at once.
                eprintln!("version {version} has no rollout: it went to every node at once");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let timeline = list(&r["timeline"]);
        for e in timeline.iter().skip(printed) {
            eprintln!(
                "{}  {:<14} {}",
                when(e["at"].as_str().unwrap_or("")),
                inline(&e["kind"]),
                inline(&e["message"])
            );
        }
        printed = printed.max(timeline.len());
        match r["state"].as_str().unwrap_or("") {
            "completed" | "promoted" => {
                return ctx.show(&r, || {
                    format!(
                        "version {version} reached every node ({})\n",
                        inline(&r["state"])
                    )
                });
            }
            "rolled_back" | "aborted" | "superseded" => {
                ctx.show(&r, || verdict(&r))?;
                return Err(Exit(ROLLED_BACK).into());
            }
            _ => {}
        }
        if timeout.is_some_and(|t| started.elapsed().unwrap_or_default() >= t) {
            eprintln!(
                "timed out: the rollout of version {version} is still {} (stage {})",
                inline(&r["state"]),
                inline(&r["stage"])
            );
            return Err(Exit(TIMED_OUT).into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What a rollout that did not reach the fleet says of itself.
fn verdict(r: &Value) -> String {
    let v = inline(&r["version"]);
    let f = &r["failure"];
    let mut out = match r["state"].as_str() {
        Some("rolled_back") => format!(
            "version {v} was rolled back: gate {} failed in stage {}\n  {}\n  nodes: {}\n",
            inline(&f["gate"]),
            inline(&f["stage"]),
            inline(&f["message"]),
            inline(&f["nodes"])
        ),
        Some("superseded") => {
            format!("version {v} was superseded by a newer version before it reached every node\n")
        }
        _ => format!(
            "version {v} was aborted: every node is back on version {}\n",
            inline(&r["base"])
        ),
    };
    if let Some(fig) = f["figures"].as_object() {
        for side in ["candidate", "baseline"] {
            if let Some(s) = fig.get(side) {
                out.push_str(&format!("  {side}: {}\n", figures(s)));
            }
        }
    }
    out
}

/// `400 req, 3.00% 5xx, p99 42.0 ms`.
fn figures(s: &Value) -> String {
    if !s.is_object() {
        return "-".into();
    }
    let p99 = s["p99_ms"]
        .as_f64()
        .map_or("-".to_owned(), |p| format!("{p:.1} ms"));
    format!(
        "{} req, {:.2}% 5xx, p99 {p99}",
        s["requests"].as_u64().unwrap_or(0),
        s["rate_5xx"].as_f64().unwrap_or(0.0) * 100.0
    )
}

fn render(ctx: &Ctx, r: &Value, nodes: &Value) -> String {
    let p = ctx.paint;
    let state = r["state"].as_str().unwrap_or("");
    let shown = match state {
        "completed" | "promoted" => p.green(state),
        "rolled_back" | "aborted" => p.red(state),
        "paused" => p.yellow(state),
        _ => state.to_owned(),
    };
    let mut by_version: BTreeMap<String, usize> = BTreeMap::new();
    for n in list(&nodes["nodes"])
        .iter()
        .filter(|n| n["connected"] == true)
    {
        *by_version.entry(inline(&n["version"])).or_default() += 1;
    }
    let spread = if by_version.is_empty() {
        "no node connected".to_owned()
    } else {
        by_version
            .iter()
            .map(|(v, n)| format!("{n} on version {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let stages: Vec<String> = list(&r["policy"]["stages"])
        .iter()
        .map(|s| inline(&s["name"]))
        .collect();
    let mut out = fields(&[
        ("Rollout of version", inline(&r["version"])),
        ("State", shown),
        ("Base (kept by others)", inline(&r["base"])),
        (
            "Stages",
            if stages.is_empty() {
                "none: every node at once".into()
            } else {
                stages.join(" → ")
            },
        ),
        ("Nodes", spread),
    ]);
    let mut t = Table::new(&[
        "STAGE",
        "STATUS",
        "NODES",
        "STARTED",
        "NEW VERSION",
        "BASELINE",
    ]);
    for s in list(&r["stages"]) {
        t.row(vec![
            inline(&s["name"]),
            inline(&s["status"]),
            inline(&s["members"]),
            when(s["started_at"].as_str().unwrap_or("-")),
            figures(&s["figures"]["candidate"]),
            figures(&s["figures"]["baseline"]),
        ]);
    }
    if !t.is_empty() {
        out.push('\n');
        out.push_str(&t.render());
    }
    if r["failure"].is_object() {
        out.push('\n');
        out.push_str(&p.red(&verdict(r)));
    }
    out.push('\n');
    out.push_str(&p.bold("Timeline:"));
    out.push('\n');
    for e in list(&r["timeline"]) {
        out.push_str(&format!(
            "  {}  {:<14} {}\n",
            when(e["at"].as_str().unwrap_or("")),
            inline(&e["kind"]),
            inline(&e["message"])
        ));
    }
    out
}

fn render_list(data: &Value) -> String {
    let mut t = Table::new(&[
        "VERSION",
        "STATE",
        "BASE",
        "STAGE",
        "CREATED",
        "FAILED GATE",
    ]);
    for r in list(&data["rollouts"]) {
        t.row(vec![
            inline(&r["version"]),
            inline(&r["state"]),
            inline(&r["base"]),
            inline(&r["stage"]),
            when(r["created_at"].as_str().unwrap_or("-")),
            inline(&r["failure"]["gate"]),
        ]);
    }
    if t.is_empty() {
        return "No rollout yet.\n".into();
    }
    t.render()
}
