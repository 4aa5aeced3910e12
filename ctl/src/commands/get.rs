//! `get` (lists) and `describe` (one upstream, route or node in detail).

use super::Ctx;
use crate::cli::{Describe, Listing};
use crate::client::segment;
use crate::output::{fields, inline, when, yes_no, Table};
use anyhow::Result;
use serde_json::Value;

/// The items of a list answer, e.g. `answer["upstreams"]`.
fn items<'a>(answer: &'a Value, key: &str) -> &'a [Value] {
    answer[key].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// A string field, or `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        other => inline(other),
    }
}

/// `get upstreams|routes|nodes|versions`.
pub fn list(ctx: &Ctx, what: Listing) -> Result<()> {
    let (path, key) = match what {
        Listing::Upstreams => ("/upstreams", "upstreams"),
        Listing::Routes => ("/routes", "routes"),
        Listing::Nodes => ("/nodes", "nodes"),
        Listing::Versions => ("/versions", "versions"),
    };
    let answer = ctx.client.get(path)?;
    let rows = items(&answer, key);
    if rows.is_empty() && ctx.format == crate::cli::Format::Table {
        eprintln!("isame-ctl: no {key}");
        return Ok(());
    }
    ctx.show(&answer, || match what {
        Listing::Upstreams => upstreams(rows),
        Listing::Routes => routes(rows),
        Listing::Nodes => nodes(rows),
        Listing::Versions => versions(rows),
    })
}

fn upstreams(rows: &[Value]) -> String {
    let mut t = Table::new(&["NAME", "ALGORITHM", "BACKENDS", "DRAINING", "WEIGHTS"]);
    for u in rows {
        let backends = items(u, "backends");
        let draining = backends.iter().filter(|b| b["drain"] == true).count();
        let weights: Vec<String> = backends.iter().map(|b| inline(&b["weight"])).collect();
        t.row(vec![
            text(&u["name"]),
            text(&u["algorithm"]),
            backends.len().to_string(),
            draining.to_string(),
            weights.join(":"),
        ]);
    }
    t.render()
}

/// What a route matches, e.g. `api.example.com/v1 [x-env=prod]`.
fn route_match(r: &Value) -> (String, String, String) {
    let host = r["host"].as_str().unwrap_or("*").to_owned();
    let path = r["path_prefix"].as_str().unwrap_or("/").to_owned();
    let headers = match &r["headers"] {
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", inline(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(list) if !list.is_empty() => list
            .iter()
            .map(|h| format!("{}={}", inline(&h["name"]), inline(&h["value"])))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".into(),
    };
    (host, path, headers)
}

fn routes(rows: &[Value]) -> String {
    let mut t = Table::new(&["NAME", "HOST", "PATH", "HEADERS", "UPSTREAM"]);
    for r in rows {
        let (host, path, headers) = route_match(r);
        t.row(vec![text(&r["name"]), host, path, headers, route_target(r)]);
    }
    t.render()
}

fn nodes(rows: &[Value]) -> String {
    let mut t = Table::new(&[
        "ID",
        "HOSTNAME",
        "CONNECTED",
        "VERSION",
        "TARGET",
        "BEHIND",
        "LAST SEEN",
    ]);
    for n in rows {
        t.row(vec![
            text(&n["id"]),
            text(&n["hostname"]),
            yes_no(n["connected"] == true),
            text(&n["version"]),
            text(&n["target"]),
            yes_no(n["behind"] == true),
            when(n["last_seen"].as_str().unwrap_or("-")),
        ]);
    }
    t.render()
}

/// A version's message, or what it did when it has none.
pub fn message_of(v: &Value) -> String {
    match (v["message"].as_str(), v["rollback_of"].as_u64()) {
        (Some(m), _) if !m.is_empty() => m.replace('\n', " "),
        (_, Some(r)) => format!("(rollback to version {r})"),
        _ => "-".into(),
    }
}

fn versions(rows: &[Value]) -> String {
    let mut t = Table::new(&["VERSION", "CREATED", "AUTHOR", "CHANGES", "MESSAGE"]);
    for v in rows {
        t.row(vec![
            text(&v["version"]),
            text(&v["created_at"]),
            text(&v["author"]),
            text(&v["change_count"]),
            message_of(v),
        ]);
    }
    t.render()
}

/// `describe upstream|route|node`.
pub fn describe(ctx: &Ctx, what: &Describe) -> Result<()> {
    match what {
        Describe::Upstream { name } => upstream(ctx, name),
        Describe::Route { name } => {
            let r = ctx.client.get(&format!("/routes/{}", segment(name)))?;
            ctx.show(&r, || {
                let (host, path, headers) = route_match(&r);
                fields(&[
                    ("Name", text(&r["name"])),
                    ("Host", host),
                    ("Path prefix", path),
                    ("Headers", headers),
                    ("Upstream", route_target(&r)),
                    ("Rate limit", text(&r["rate_limit"])),
                ])
            })
        }
        Describe::Node { id } => {
            let n = ctx.client.get(&format!("/nodes/{}", segment(id)))?;
            ctx.show(&n, || node(&n))
        }
    }
}

fn upstream(ctx: &Ctx, name: &str) -> Result<()> {
    let u = ctx.client.get(&format!("/upstreams/{}", segment(name)))?;
    if ctx.format != crate::cli::Format::Table {
        return ctx.show(&u, String::new);
    }
    let fleet = ctx.client.get("/fleet")?;
    let routes = ctx.client.get("/routes")?;
    let used_by: Vec<String> = items(&routes, "routes")
        .iter()
        .filter(|r| {
            r["upstream"].as_str() == Some(name)
                || items(r, "split")
                    .iter()
                    .any(|s| s["upstream"].as_str() == Some(name))
        })
        .map(|r| text(&r["name"]))
        .collect();
    let health = items(&fleet, "upstreams")
        .iter()
        .find(|f| f["name"].as_str() == Some(name))
        .map(|f| items(f, "backends").to_vec())
        .unwrap_or_default();
    let overridden = |key: &str| match &u[key] {
        Value::Null => "global settings".to_owned(),
        v => inline(v),
    };
    let mut out = fields(&[
        ("Name", text(&u["name"])),
        ("Algorithm", algorithm(&u)),
        ("Sticky", text(&u["sticky"])),
        ("Connect timeout", text(&u["connect_timeout"])),
        ("Response timeout", text(&u["response_timeout"])),
        ("Rate limit", text(&u["rate_limit"])),
        ("Health checks", overridden("health")),
        ("Circuit breaker", overridden("circuit_breaker")),
        ("Retry", overridden("retry")),
        ("TLS", text(&u["tls"])),
        (
            "Used by routes",
            if used_by.is_empty() {
                "-".into()
            } else {
                used_by.join(", ")
            },
        ),
    ]);
    out.push('\n');
    let mut t = Table::new(&["BACKEND", "WEIGHT", "DRAINING", "HEALTHY"]);
    for b in items(&u, "backends") {
        let h = health.iter().find(|h| h["url"] == b["url"]);
        t.row(vec![
            text(&b["url"]),
            text(&b["weight"]),
            yes_no(b["drain"] == true),
            h.map(healthy_on).unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&t.render());
    crate::output::emit(&out)
}

/// `on 2 of 3 nodes` from a fleet backend entry.
pub fn healthy_on(b: &Value) -> String {
    let healthy = b["healthy_nodes"].as_u64().unwrap_or(0);
    let reporting = b["reporting_nodes"].as_u64().unwrap_or(0);
    if reporting == 0 {
        "no reports".into()
    } else {
        format!("on {healthy} of {reporting} nodes")
    }
}

fn node(n: &Value) -> String {
    let labels = match &n["labels"] {
        Value::Object(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", inline(v)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".into(),
    };
    let mut out = fields(&[
        ("Id", text(&n["id"])),
        ("Hostname", text(&n["hostname"])),
        ("Labels", labels),
        ("Build", text(&n["build"])),
        ("Connected", yes_no(n["connected"] == true)),
        ("Version served", text(&n["version"])),
        ("Behind", yes_no(n["behind"] == true)),
        ("First seen", text(&n["first_seen"])),
        ("Last seen", when(n["last_seen"].as_str().unwrap_or("-"))),
    ]);
    if let Some(nack) = n["last_nack"].as_object() {
        out.push_str(&format!(
            "\nLast refused version {}:\n",
            text(&nack.get("version").cloned().unwrap_or(Value::Null))
        ));
        for e in nack
            .get("errors")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            out.push_str(&format!(
                "  {}: {}\n",
                text(&e["path"]),
                text(&e["message"])
            ));
        }
    }
    let health = items(n, "health");
    if !health.is_empty() {
        out.push('\n');
        let mut t = Table::new(&["UPSTREAM", "BACKEND", "HEALTHY", "CIRCUIT"]);
        for h in health {
            t.row(vec![
                text(&h["upstream"]),
                text(&h["backend"]),
                yes_no(h["healthy"] == true),
                text(&h["circuit"]),
            ]);
        }
        out.push_str(&t.render());
    }
    let traffic = items(&n["traffic"], "upstreams");
    if !traffic.is_empty() {
        out.push('\n');
        let mut t = Table::new(&["UPSTREAM", "REQUESTS", "ERRORS", "MEAN MS"]);
        for u in traffic {
            t.row(vec![
                text(&u["upstream"]),
                text(&u["requests"]),
                text(&u["errors"]),
                text(&u["mean_ms"]),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

/// An upstream's algorithm, with what a consistent hash is keyed on and its
/// fallback.
fn algorithm(u: &Value) -> String {
    let name = text(&u["algorithm"]);
    if name != "consistent_hash" {
        return name;
    }
    let on = u["hash_on"].as_str().unwrap_or("client_ip");
    let fallback = u["hash_fallback"]
        .as_str()
        .unwrap_or("weighted_round_robin");
    format!("{name} on {on} (without it: {fallback})")
}

/// Where a route sends requests: its upstream, or its split as
/// `v1=90, v2=10`.
fn route_target(r: &Value) -> String {
    let split = items(r, "split");
    if split.is_empty() {
        return text(&r["upstream"]);
    }
    split
        .iter()
        .map(|s| format!("{}={}", text(&s["upstream"]), text(&s["weight"])))
        .collect::<Vec<_>>()
        .join(", ")
}
