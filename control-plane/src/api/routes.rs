//! `/routes`: each write edits the newest config and goes through the same
//! validation and versioning as `PUT /config`.

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, Document};
use super::openapi::{ApplyResult, ErrorBody, Resource, ValidationErrorBody};
use super::resources::{
    answer, change_request, document, items, name_of, named, position, rebuild, WriteParams,
};
use super::AppState;
use crate::configs::ChangeError;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};

fn missing(name: &str) -> ChangeError {
    ChangeError::NotFound(format!("route {name:?} not found"))
}

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
        (status = 200, description = "Dry run", body = ApplyResult),
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
    let name = name_of(&body, "route")?;
    let req = change_request(&who, &headers, &params, "route.create", &name)?;
    let outcome = state
        .configs
        .change(req, |cur| {
            let mut doc = document(cur)?;
            let routes = items(&mut doc, "routes")?;
            if position(routes, &name).is_some() {
                return Err(ChangeError::Exists(format!("route {name:?} exists")));
            }
            routes.push(body);
            rebuild(&doc)
        })
        .await?;
    Ok(answer(outcome, StatusCode::CREATED))
}

/// One route.
#[utoipa::path(get, path = "/routes/{name}", tag = "routes",
    params(("name" = String, Path, description = "Route name")),
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
        .ok_or_else(|| missing(&name))?;
    serde_json::to_value(r)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Creates (at the end of the match order) or replaces (in place) a route.
#[utoipa::path(put, path = "/routes/{name}", tag = "routes",
    params(("name" = String, Path, description = "Route name"), WriteParams),
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
    let body = named(body, &name, "route")?;
    let req = change_request(&who, &headers, &params, "route.put", &name)?;
    let mut created = false;
    let outcome = state
        .configs
        .change(req, |cur| {
            let mut doc = document(cur)?;
            let routes = items(&mut doc, "routes")?;
            match position(routes, &name) {
                Some(i) => routes[i] = body,
                None => {
                    created = true;
                    routes.push(body)
                }
            }
            rebuild(&doc)
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(answer(outcome, status))
}

/// Removes a route.
#[utoipa::path(delete, path = "/routes/{name}", tag = "routes",
    params(("name" = String, Path, description = "Route name"), WriteParams),
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
    let req = change_request(&who, &headers, &params, "route.delete", &name)?;
    let outcome = state
        .configs
        .change(req, |cur| {
            let mut doc = document(cur)?;
            let routes = items(&mut doc, "routes")?;
            let i = position(routes, &name).ok_or_else(|| missing(&name))?;
            routes.remove(i);
            rebuild(&doc)
        })
        .await?;
    Ok(answer(outcome, StatusCode::OK))
}
