//! Operational endpoints outside the API prefix: liveness, readiness and
//! Prometheus metrics. They need no token.

use super::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

/// Liveness: the process answers.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.configs.store().ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not ready", "reason": "database unreachable"})),
            )
        }
    }
}

/// Prometheus text format. The fleet gauges are refreshed from the node
/// ledger first; when the database does not answer they keep their last
/// values.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let cur = state.configs.current();
    let nodes = match state.configs.store().nodes().await {
        Ok(nodes) => Some(nodes),
        Err(e) => {
            tracing::warn!(error = %e, "fleet metrics not refreshed");
            None
        }
    };
    let plan = state.configs.plan();
    let target = |id: &str| plan.target_for(id).version;
    let fleet = nodes
        .as_ref()
        .map(|n| crate::fleet::summarize(n, &cur, &target));
    let page = state.metrics.render_with_fleet(fleet.as_ref());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        page,
    )
}
