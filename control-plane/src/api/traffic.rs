//! `/traffic`: requests and errors per second for each upstream across the
//! fleet, summed from the latest traffic report of every connected node.
//!
//! A node reports the counters of one period (`StatsReport`, every
//! `--report-interval`); the control plane keeps only the latest report per
//! node. A rate here is that report's count divided by its period, summed
//! over the nodes whose report is recent. A client that wants a history
//! (the dashboard's sparklines) samples this endpoint.

use super::error::ApiError;
use super::openapi::Resource;
use super::AppState;
use crate::store::NodeRecord;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

/// A report older than this many of its periods is no longer counted: the
/// node stopped reporting although its stream is still open.
const STALE_AFTER_PERIODS: u32 = 3;
/// ...but never sooner than this, so that short periods survive a slow write.
const MIN_STALE_AFTER: Duration = Duration::from_secs(5);

/// Requests and errors per second for each upstream across the fleet.
#[utoipa::path(get, path = "/traffic", tag = "nodes",
    responses((status = 200, description = "`{version, at, nodes: {connected, reporting}, upstreams: [{name, requests_per_second, errors_per_second, mean_ms, nodes, configured}]}`: every upstream of the newest config, in its order, then any other upstream a node still reports", body = Resource)))]
pub async fn traffic(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let cur = state.configs.current();
    let nodes = state.configs.store().nodes().await?;
    let configured: Vec<&str> = cur
        .config
        .iter()
        .flat_map(|c| c.upstreams.iter().map(|u| u.name.as_str()))
        .collect();
    let now = SystemTime::now();
    let mut out = aggregate(&configured, &nodes, now);
    out["version"] = json!(cur.version);
    out["at"] = json!(humantime::format_rfc3339_millis(now).to_string());
    Ok(Json(out))
}

#[derive(Default)]
struct Sum {
    requests_per_second: f64,
    errors_per_second: f64,
    requests: f64,
    duration_ms: f64,
    nodes: u32,
}

/// The latest report of a node, if it is recent: its period in seconds and
/// its upstreams.
fn fresh_report(node: &NodeRecord, now: SystemTime) -> Option<(f64, &Vec<Value>)> {
    let t = &node.traffic;
    let period_ms = t["period_ms"].as_u64().filter(|p| *p > 0)?;
    let at = humantime::parse_rfc3339(t["at"].as_str()?).ok()?;
    let period = Duration::from_millis(period_ms);
    let limit = (period * STALE_AFTER_PERIODS).max(MIN_STALE_AFTER);
    // A report from the future (clock steps) counts as new.
    if now.duration_since(at).unwrap_or_default() > limit {
        return None;
    }
    Some((period.as_secs_f64(), t["upstreams"].as_array()?))
}

/// Sums the recent reports of connected nodes, per upstream.
fn aggregate(configured: &[&str], nodes: &[NodeRecord], now: SystemTime) -> Value {
    let mut sums: HashMap<String, Sum> = HashMap::new();
    let connected = nodes.iter().filter(|n| n.connected).count();
    let mut reporting = 0;
    for node in nodes.iter().filter(|n| n.connected) {
        let Some((seconds, upstreams)) = fresh_report(node, now) else {
            continue;
        };
        reporting += 1;
        for u in upstreams {
            let Some(name) = u["upstream"].as_str() else {
                continue;
            };
            let requests = u["requests"].as_u64().unwrap_or(0) as f64;
            let errors = u["errors"].as_u64().unwrap_or(0) as f64;
            let mean_ms = u["mean_ms"].as_f64().unwrap_or(0.0);
            let sum = sums.entry(name.to_owned()).or_default();
            sum.requests_per_second += requests / seconds;
            sum.errors_per_second += errors / seconds;
            sum.requests += requests;
            sum.duration_ms += mean_ms * requests;
            sum.nodes += 1;
        }
    }
    // Upstreams no longer configured that a node reports come after the
    // configured ones, by name.
    let known: HashSet<&str> = configured.iter().copied().collect();
    let mut others: Vec<String> = sums
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .cloned()
        .collect();
    others.sort();
    let order = configured.iter().map(|s| (*s).to_owned()).chain(others);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let upstreams: Vec<Value> = order
        .map(|name| {
            let s = sums.remove(&name).unwrap_or_default();
            let mean_ms = if s.requests > 0.0 {
                s.duration_ms / s.requests
            } else {
                0.0
            };
            json!({
                "name": name,
                "requests_per_second": round(s.requests_per_second),
                "errors_per_second": round(s.errors_per_second),
                "mean_ms": round(mean_ms),
                "nodes": s.nodes,
                "configured": known.contains(name.as_str()),
            })
        })
        .collect();
    json!({
        "nodes": {"connected": connected, "reporting": reporting},
        "upstreams": upstreams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn node(id: &str, connected: bool, at: SystemTime, period_ms: u64, ups: Value) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            hostname: "h".into(),
            labels: json!({}),
            build: "test".into(),
            connected,
            replica: None,
            first_seen: 0,
            last_seen: 0,
            version: Some(1),
            last_nack: None,
            health: json!([]),
            traffic: json!({
                "period_ms": period_ms,
                "at": humantime::format_rfc3339_millis(at).to_string(),
                "upstreams": ups,
            }),
        }
    }

    #[test]
    fn rates_are_summed_over_recent_reports_of_connected_nodes() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let nodes = [
            // 100 requests in 2 s, 10 errors, 20 ms mean.
            node(
                "a",
                true,
                now - Duration::from_secs(1),
                2000,
                json!([{"upstream": "web", "requests": 100, "errors": 10, "mean_ms": 20.0},
                       {"upstream": "old", "requests": 5, "errors": 0, "mean_ms": 1.0}]),
            ),
            // 50 requests in 1 s, 40 ms mean.
            node(
                "b",
                true,
                now,
                1000,
                json!([{"upstream": "web", "requests": 50, "errors": 0, "mean_ms": 40.0}]),
            ),
            // Disconnected: not counted.
            node(
                "c",
                false,
                now,
                1000,
                json!([{"upstream": "web", "requests": 1000, "errors": 1000, "mean_ms": 1.0}]),
            ),
            // Stale: 3 periods of 5 s have passed.
            node(
                "d",
                true,
                now - Duration::from_secs(16),
                5000,
                json!([{"upstream": "web", "requests": 1000, "errors": 1000, "mean_ms": 1.0}]),
            ),
        ];
        let out = aggregate(&["api", "web"], &nodes, now);
        assert_eq!(out["nodes"], json!({"connected": 3, "reporting": 2}));
        let ups = out["upstreams"].as_array().expect("list");
        let names: Vec<&str> = ups.iter().map(|u| u["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["api", "web", "old"]);
        assert_eq!(ups[0]["requests_per_second"], 0.0);
        assert_eq!(ups[0]["nodes"], 0);
        assert_eq!(ups[1]["requests_per_second"], 100.0);
        assert_eq!(ups[1]["errors_per_second"], 5.0);
        // (100 × 20 + 50 × 40) / 150
        assert_eq!(ups[1]["mean_ms"], 26.667);
        assert_eq!(ups[1]["nodes"], 2);
        assert_eq!(ups[1]["configured"], true);
        assert_eq!(ups[2]["requests_per_second"], 2.5);
        assert_eq!(ups[2]["configured"], false);
    }

    #[test]
    fn nodes_without_reports_count_as_not_reporting() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut n = node("a", true, now, 1000, json!([]));
        n.traffic = json!({});
        let mut zero = node("b", true, now, 0, json!([]));
        zero.traffic["period_ms"] = json!(0);
        let out = aggregate(&["web"], &[n, zero], now);
        assert_eq!(out["nodes"], json!({"connected": 2, "reporting": 0}));
        assert_eq!(out["upstreams"][0]["requests_per_second"], 0.0);
    }
}
