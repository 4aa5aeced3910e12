//! `status`: the fleet at a glance, from `GET /fleet` and `GET /nodes`.

use super::get::healthy_on;
use super::Ctx;
use crate::output::{fields, inline, when, yes_no, Table};
use anyhow::Result;
use serde_json::{json, Value};

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Prints the newest version, every node, refused versions and backend
/// health across the connected nodes.
pub fn status(ctx: &Ctx) -> Result<()> {
    let fleet = ctx.client.get("/fleet")?;
    let nodes = ctx.client.get("/nodes")?;
    let data = json!({"fleet": fleet, "nodes": nodes});
    ctx.show(&data, || render(ctx, &fleet, &nodes))
}

fn render(ctx: &Ctx, fleet: &Value, nodes: &Value) -> String {
    let p = ctx.paint;
    let newest = fleet["version"].as_u64().unwrap_or(0);
    let counts = &fleet["nodes"];
    let behind: Vec<String> = list(&counts["behind"]).iter().map(inline).collect();
    let nacked = list(&counts["nacked"]);
    let node_line = format!(
        "{} known, {} connected",
        counts["total"].as_u64().unwrap_or(0),
        counts["connected"].as_u64().unwrap_or(0)
    );
    let behind_line = if behind.is_empty() {
        "none".to_owned()
    } else {
        p.yellow(&format!("{} ({})", behind.len(), behind.join(", ")))
    };
    let mut out = fields(&[
        (
            "Newest version",
            if newest == 0 {
                "none (nothing applied yet)".into()
            } else {
                newest.to_string()
            },
        ),
        ("Nodes", node_line),
        ("Behind the newest version", behind_line),
        (
            "Refused versions",
            if nacked.is_empty() {
                "none".into()
            } else {
                p.red(&nacked.len().to_string())
            },
        ),
    ]);

    let node_rows = list(&nodes["nodes"]);
    out.push('\n');
    if node_rows.is_empty() {
        out.push_str("No data plane has subscribed yet.\n");
    } else {
        let mut t = Table::new(&[
            "NODE",
            "CONNECTED",
            "VERSION",
            "TARGET",
            "BEHIND",
            "LAST SEEN",
        ]);
        for n in node_rows {
            t.row(vec![
                inline(&n["id"]),
                yes_no(n["connected"] == true),
                inline(&n["version"]),
                inline(&n["target"]),
                yes_no(n["behind"] == true),
                when(n["last_seen"].as_str().unwrap_or("-")),
            ]);
        }
        out.push_str(&t.render());
    }

    if !nacked.is_empty() {
        out.push('\n');
        out.push_str(&p.bold("Refused versions (NACK):"));
        out.push('\n');
        for n in nacked {
            out.push_str(&p.red(&format!(
                "  {} refused version {}:",
                inline(&n["id"]),
                inline(&n["version"])
            )));
            out.push('\n');
            for e in list(&n["errors"]) {
                let path = e["path"].as_str().unwrap_or("");
                let message = inline(&e["message"]);
                if path.is_empty() {
                    out.push_str(&format!("    {message}\n"));
                } else {
                    out.push_str(&format!("    {path}: {message}\n"));
                }
            }
        }
    }

    let mut t = Table::new(&["UPSTREAM", "BACKEND", "HEALTHY"]);
    for u in list(&fleet["upstreams"]) {
        for b in list(&u["backends"]) {
            t.row(vec![inline(&u["name"]), inline(&b["url"]), healthy_on(b)]);
        }
    }
    if !t.is_empty() {
        out.push('\n');
        out.push_str(&p.bold("Backend health across connected nodes:"));
        out.push('\n');
        out.push_str(&t.render());
    }
    out
}
