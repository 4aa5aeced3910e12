//! The REST API (`/api/v1`), the operational endpoints (`/healthz`,
//! `/readyz`, `/metrics`) and the generated OpenAPI document.

pub mod auth;
mod certificates;
mod config;
pub mod error;
mod extract;
mod history;
mod named_lists;
mod nodes;
mod openapi;
mod ops;
mod rollouts;
mod routes;
mod traffic;
mod upstreams;
mod whoami;
mod writes;

pub use history::rfc3339;

use crate::configs::Configs;
use crate::metrics::Metrics;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use error::ApiError;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The current config and its writers.
    pub configs: Arc<Configs>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

/// Default largest request body: room for configs with many thousands of upstreams.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

/// The `/api/v1` routes with their OpenAPI description.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(config::get_config, config::put_config))
        .routes(routes!(upstreams::list, upstreams::create))
        .routes(routes!(
            upstreams::get_one,
            upstreams::put,
            upstreams::delete
        ))
        .routes(routes!(upstreams::add_backend))
        .routes(routes!(upstreams::patch_backend, upstreams::delete_backend))
        .routes(routes!(routes::list, routes::create))
        .routes(routes!(routes::get_one, routes::put, routes::delete))
        .routes(routes!(history::versions))
        .routes(routes!(history::version))
        .routes(routes!(history::diff))
        .routes(routes!(history::rollback))
        .routes(routes!(history::audit))
        .routes(routes!(nodes::list))
        .routes(routes!(nodes::get_one))
        .routes(routes!(nodes::fleet))
        .routes(routes!(traffic::traffic))
        .routes(routes!(
            rollouts::get_policy,
            rollouts::put_policy,
            rollouts::delete_policy
        ))
        .routes(routes!(rollouts::policy_history))
        .routes(routes!(rollouts::list))
        .routes(routes!(rollouts::latest))
        .routes(routes!(rollouts::get_one))
        .routes(routes!(rollouts::pause))
        .routes(routes!(rollouts::resume))
        .routes(routes!(rollouts::promote))
        .routes(routes!(rollouts::abort))
        .routes(routes!(whoami::whoami))
        .routes(routes!(certificates::list))
        .routes(routes!(
            certificates::get_one,
            certificates::put,
            certificates::delete
        ))
}

/// The OpenAPI document of the whole API, as `/api/v1/openapi.json` serves it.
pub fn openapi_document() -> serde_json::Value {
    let (_, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest("/api/v1", api())
        .split_for_parts();
    openapi::complete_operations(&mut doc);
    openapi::with_config_schema(&doc)
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let (api, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .nest(
            "/api/v1",
            api().route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::authenticate,
            )),
        )
        .split_for_parts();
    openapi::complete_operations(&mut doc);
    let doc = Arc::new(openapi::with_config_schema(&doc));
    api.route(
        "/api/v1/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .route("/api/v1/schema", get(openapi::schema))
    .route("/healthz", get(ops::healthz))
    .route("/readyz", get(ops::readyz))
    .route("/metrics", get(ops::metrics))
    .merge(crate::dashboard::router())
    .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
    .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
    .layer(middleware::from_fn_with_state(state.clone(), observe))
    .layer(CatchPanicLayer::custom(|_| {
        ApiError::Internal("a handler panicked".into()).into_response()
    }))
    .with_state(state)
}

/// Runs every request in its own span and counts it in
/// `isame_cp_api_requests_total`.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Only standard methods become label values, so clients cannot create
    // unbounded series.
    let method = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!(
        "api_request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        method,
        route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    isame_telemetry::propagation::continue_trace(&span, req.headers());
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    span.in_scope(|| tracing::debug!(status, "answered"));
    state
        .metrics
        .api_requests
        .with_label_values(&[method, &route, response.status().as_str()])
        .inc();
    response
}
