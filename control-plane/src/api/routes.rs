//! `/routes`: each write edits the newest config and goes through the same
//! validation and versioning as `PUT /config`.

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, Document};
use super::named_lists::{self, ROUTES};
use super::openapi::{ApplyResult, ErrorBody, Resource, ValidationErrorBody};
use super::writes::WriteParams;
use super::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};

/// Every route of the newest config, in match order.
#[utoipa::path(get, path = "/routes", tag = "routes",
    responses((status = 200, description = "`{version, routes: [...]}`", body = Resource)))]
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let cur = state.configs.current();
    let routes = cur.config.as_ref().map(|c| c.routes.clone());
    Json(json!({"version": cur.version, "routes": routes.unwrap_or_default()}))
}

/// Adds a route at the end of the match order.
#[utoipa::path(post, path = "/routes", tag = "routes",
    params(WriteParams),
    request_body(description = "The route", content((Resource = "application/json"), (Resource = "application/yaml"))),
    responses(
        (status = 201, description = "Created", body = ApplyResult),
        (status = 200, description = "Dry run, or nothing to change", body = ApplyResult),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 409, description = "A route with this name exists", body = ErrorBody),
        (status = 422, description = "Invalid", body = ValidationErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<WriteParams>,
    Document(body): Document,
) -> Result<Response, ApiError> {
    named_lists::create(&named_lists::ROUTES, &state, &who, &headers, &params, body).await
}

/// One route.
#[utoipa::path(get, path = "/routes/{name}", tag = "routes",
    params(("name" = String, Path, description = "Route name: 1 to 128 letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, description = "The route", body = Resource),
        (status = 404, description = "No such route", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let cur = state.configs.current();
    let r = cur
        .config
        .as_ref()
        .and_then(|c| c.routes.iter().find(|r| r.name == name))
        .ok_or_else(|| ROUTES.missing(&name))?;
    serde_json::to_value(r)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Creates (at the end of the match order) or replaces (in place) a route.
#[utoipa::path(put, path = "/routes/{name}", tag = "routes",
    params(("name" = String, Path, description = "Route name: 1 to 128 letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"), WriteParams),
    request_body(description = "The route", content((Resource = "application/json"), (Resource = "application/yaml"))),
    responses(
        (status = 200, description = "Replaced", body = ApplyResult),
        (status = 201, description = "Created", body = ApplyResult),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 422, description = "Invalid", body = ValidationErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<WriteParams>,
    Document(body): Document,
) -> Result<Response, ApiError> {
    named_lists::replace(
        &named_lists::ROUTES,
        &state,
        &who,
        &headers,
        &name,
        &params,
        body,
    )
    .await
}

/// Removes a route.
#[utoipa::path(delete, path = "/routes/{name}", tag = "routes",
    params(("name" = String, Path, description = "Route name: 1 to 128 letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"), WriteParams),
    responses(
        (status = 200, description = "Removed", body = ApplyResult),
        (status = 404, description = "No such route", body = ErrorBody),
        (status = 422, description = "Invalid", body = ValidationErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<WriteParams>,
) -> Result<Response, ApiError> {
    named_lists::remove(&named_lists::ROUTES, &state, &who, &headers, &name, &params).await
}
