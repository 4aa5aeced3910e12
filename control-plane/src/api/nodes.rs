//! `/nodes`: the ledger of data planes, what each runs and reports.

use super::error::ApiError;
use super::extract::ApiPath;
use super::history::rfc3339;
use super::openapi::{ErrorBody, Resource};
use super::AppState;
use crate::store::NodeRecord;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

fn view(n: &NodeRecord, newest: u64) -> Value {
    json!({
        "id": n.id,
        "hostname": n.hostname,
        "labels": n.labels,
        "build": n.build,
        "connected": n.connected,
        "first_seen": rfc3339(n.first_seen),
        "last_seen": rfc3339(n.last_seen),
        "version": n.version,
        "behind": n.version.is_none_or(|v| v < newest),
        "last_nack": n.last_nack,
        "health": n.health,
        "traffic": n.traffic,
    })
}

/// Every data plane that ever subscribed.
#[utoipa::path(get, path = "/nodes", tag = "nodes",
    responses((status = 200, description = "`{version, nodes: [...]}`", body = Resource)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let newest = state.configs.current().version;
    let nodes = state.configs.store().nodes().await?;
    Ok(Json(json!({
        "version": newest,
        "nodes": nodes.iter().map(|n| view(n, newest)).collect::<Vec<_>>(),
    })))
}

/// One data plane.
#[utoipa::path(get, path = "/nodes/{id}", tag = "nodes",
    params(("id" = String, Path, description = "Node id")),
    responses((status = 200, description = "The node", body = Resource),
        (status = 404, description = "No such node", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let newest = state.configs.current().version;
    let node = state
        .configs
        .store()
        .node(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("node {id:?} not found")))?;
    Ok(Json(view(&node, newest)))
}

/// The fleet at a glance: how many nodes run the newest version, which are
/// behind or refused a version, and for each backend of the newest config
/// how many connected nodes see it healthy.
#[utoipa::path(get, path = "/fleet", tag = "nodes",
    responses((status = 200, description = "`{version, nodes: {total, connected, behind, nacked}, upstreams: [{name, backends: [{url, healthy_nodes, unhealthy_nodes, reporting_nodes}]}]}`", body = Resource)))]
pub async fn fleet(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let cur = state.configs.current();
    let nodes = state.configs.store().nodes().await?;
    let connected: Vec<&NodeRecord> = nodes.iter().filter(|n| n.connected).collect();
    let behind: Vec<&str> = connected
        .iter()
        .filter(|n| n.version.is_none_or(|v| v < cur.version))
        .map(|n| n.id.as_str())
        .collect();
    let nacked: Vec<Value> = connected
        .iter()
        .filter_map(|n| {
            let nack = n.last_nack.as_ref()?;
            // A NACK of a version older than the one the node now runs is history.
            let v = nack["version"].as_u64()?;
            (n.version.is_none_or(|ok| ok < v))
                .then(|| json!({"id": n.id, "version": v, "errors": nack["errors"]}))
        })
        .collect();
    let mut seen: std::collections::HashMap<(&str, &str), (u32, u32)> = Default::default();
    for n in &connected {
        for b in n.health.as_array().into_iter().flatten() {
            let (Some(u), Some(url)) = (b["upstream"].as_str(), b["backend"].as_str()) else {
                continue;
            };
            let e = seen.entry((u, url)).or_default();
            if b["healthy"].as_bool() == Some(true) {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
    }
    let upstreams: Vec<Value> = cur
        .config
        .iter()
        .flat_map(|c| c.upstreams.iter())
        .map(|u| {
            let backends: Vec<Value> = u
                .backends
                .iter()
                .map(|b| {
                    let (healthy, unhealthy) = seen
                        .get(&(u.name.as_str(), b.url.as_str()))
                        .copied()
                        .unwrap_or_default();
                    json!({
                        "url": b.url,
                        "healthy_nodes": healthy,
                        "unhealthy_nodes": unhealthy,
                        "reporting_nodes": healthy + unhealthy,
                    })
                })
                .collect();
            json!({"name": u.name, "backends": backends})
        })
        .collect();
    Ok(Json(json!({
        "version": cur.version,
        "nodes": {
            "total": nodes.len(),
            "connected": connected.len(),
            "behind": behind,
            "nacked": nacked,
        },
        "upstreams": upstreams,
    })))
}
