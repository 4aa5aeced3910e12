//! `/nodes`: the ledger of data planes, what each runs and reports.

use super::error::ApiError;
use super::extract::ApiPath;
use super::history::rfc3339;
use super::openapi::{ErrorBody, Resource};
use super::AppState;
use crate::rollout::plan::Plan;
use crate::store::NodeRecord;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

fn view(n: &NodeRecord, plan: &Plan) -> Value {
    let target = plan.target_for(&n.id).version;
    json!({
        "id": n.id,
        "hostname": n.hostname,
        "labels": n.labels,
        "build": n.build,
        "connected": n.connected,
        "replica": n.replica,
        "first_seen": rfc3339(n.first_seen),
        "last_seen": rfc3339(n.last_seen),
        "version": n.version,
        "target": target,
        "behind": n.version != Some(target),
        "last_nack": n.last_nack,
        "health": n.health,
        "traffic": n.traffic,
    })
}

/// Every data plane that ever subscribed.
#[utoipa::path(get, path = "/nodes", tag = "nodes",
    responses((status = 200, description = "`{version, nodes: [...]}`", body = Resource)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let plan = state.configs.plan();
    let nodes = state.configs.store().nodes().await?;
    Ok(Json(json!({
        "version": plan.newest.version,
        "nodes": nodes.iter().map(|n| view(n, &plan)).collect::<Vec<_>>(),
    })))
}

/// One data plane.
#[utoipa::path(get, path = "/nodes/{id}", tag = "nodes",
    params(("id" = String, Path, description = "Node id: 1 to 128 letters, digits, `-`, `_`, `.` and `:`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$")),
    responses((status = 200, description = "The node", body = Resource),
        (status = 404, description = "No such node", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let plan = state.configs.plan();
    let node = state
        .configs
        .store()
        .node(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("node {id:?} not found")))?;
    Ok(Json(view(&node, &plan)))
}

/// The fleet at a glance: how many nodes run the newest version, which are
/// behind or refused a version, and for each backend of the newest config
/// how many connected nodes see it healthy.
#[utoipa::path(get, path = "/fleet", tag = "nodes",
    responses((status = 200, description = "`{version, nodes: {total, connected, behind, nacked}, upstreams: [{name, backends: [{url, healthy_nodes, unhealthy_nodes, ejected_nodes, dns_failing_nodes, endpoints, reporting_nodes}]}]}`", body = Resource)))]
pub async fn fleet(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let cur = state.configs.current();
    let nodes = state.configs.store().nodes().await?;
    let plan = state.configs.plan();
    let f = crate::fleet::summarize(&nodes, &cur, &|id| plan.target_for(id).version);
    let nacked: Vec<Value> = f
        .refused
        .iter()
        .map(|r| json!({"id": r.id, "version": r.version, "errors": r.errors}))
        .collect();
    // `f.backends` lists every backend in config order, upstream by upstream.
    let mut health = f.backends.iter();
    let upstreams: Vec<Value> = cur
        .config
        .iter()
        .flat_map(|c| c.upstreams.iter())
        .map(|u| {
            let backends: Vec<Value> = health
                .by_ref()
                .take(u.backends.len())
                .map(|b| {
                    json!({
                        "url": b.url,
                        "healthy_nodes": b.healthy,
                        "unhealthy_nodes": b.unhealthy,
                        "ejected_nodes": b.ejected,
                        "dns_failing_nodes": b.dns_failing,
                        "endpoints": b.endpoints,
                        "reporting_nodes": b.healthy + b.unhealthy,
                    })
                })
                .collect();
            json!({"name": u.name, "backends": backends})
        })
        .collect();
    Ok(Json(json!({
        "version": f.newest,
        "nodes": {
            "total": f.total,
            "connected": f.connected,
            "behind": f.behind,
            "nacked": nacked,
        },
        "upstreams": upstreams,
    })))
}
