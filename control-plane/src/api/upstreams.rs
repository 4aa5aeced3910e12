//! `/upstreams` and their backends: each write edits the newest config and
//! goes through the same validation and versioning as `PUT /config`.

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, Document};
use super::named_lists::{self, UPSTREAMS};
use super::openapi::{ApplyResult, ErrorBody, Resource, ValidationErrorBody};
use super::writes::{
    answer, change_request, document, invalid, items, position, rebuild, WriteParams,
};
use super::AppState;
use crate::configs::ChangeError;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};

fn missing(name: &str) -> ChangeError {
    UPSTREAMS.missing(name)
}

/// Every upstream of the newest config.
#[utoipa::path(get, path = "/upstreams", tag = "upstreams",
    responses((status = 200, description = "`{version, upstreams: [...]}`", body = Resource)))]
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let cur = state.configs.current();
    let upstreams = cur.config.as_ref().map(|c| &c.upstreams);
    Json(json!({"version": cur.version, "upstreams": upstreams.cloned().unwrap_or_default()}))
}

/// Adds an upstream.
#[utoipa::path(post, path = "/upstreams", tag = "upstreams",
    params(WriteParams),
    request_body(description = "The upstream", content((Resource = "application/json"), (Resource = "application/yaml"))),
    responses(
        (status = 201, description = "Created", body = ApplyResult),
        (status = 200, description = "Dry run, or nothing to change", body = ApplyResult),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 409, description = "An upstream with this name exists", body = ErrorBody),
        (status = 422, description = "Invalid", body = ValidationErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<WriteParams>,
    Document(body): Document,
) -> Result<Response, ApiError> {
    named_lists::create(
        &named_lists::UPSTREAMS,
        &state,
        &who,
        &headers,
        &params,
        body,
    )
    .await
}

/// One upstream.
#[utoipa::path(get, path = "/upstreams/{name}", tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name: 1 to 128 letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, description = "The upstream", body = Resource),
        (status = 404, description = "No such upstream", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let cur = state.configs.current();
    let u = cur
        .config
        .as_ref()
        .and_then(|c| c.upstreams.iter().find(|u| u.name == name))
        .ok_or_else(|| missing(&name))?;
    serde_json::to_value(u)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Creates or replaces an upstream.
#[utoipa::path(put, path = "/upstreams/{name}", tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name: 1 to 128 letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"), WriteParams),
    request_body(description = "The upstream", content((Resource = "application/json"), (Resource = "application/yaml"))),
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
        &named_lists::UPSTREAMS,
        &state,
        &who,
        &headers,
        &name,
        &params,
        body,
    )
    .await
}

/// Removes an upstream (refused while a route sends traffic to it).
#[utoipa::path(delete, path = "/upstreams/{name}", tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name: 1 to 128 letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"), WriteParams),
    responses(
        (status = 200, description = "Removed", body = ApplyResult),
        (status = 404, description = "No such upstream", body = ErrorBody),
        (status = 422, description = "Still referenced, or the last upstream", body = ValidationErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<WriteParams>,
) -> Result<Response, ApiError> {
    named_lists::remove(
        &named_lists::UPSTREAMS,
        &state,
        &who,
        &headers,
        &name,
        &params,
    )
    .await
}

/// The backends list of upstream `name` in `doc`.
fn backends_of<'a>(doc: &'a mut Value, name: &str) -> Result<&'a mut Vec<Value>, ChangeError> {
    let ups = items(doc, "upstreams")?;
    let i = position(ups, name).ok_or_else(|| missing(name))?;
    items(&mut ups[i], "backends")
}

/// The URL of a backend entry (a mapping with `url`, or the URL itself).
fn url_of(b: &Value) -> Option<&str> {
    b.as_str().or_else(|| b.get("url").and_then(Value::as_str))
}

/// Whether backend URL `url` is the one named `id`: the URL itself, or its
/// `host:port` when that is unambiguous.
fn is_backend(url: &str, id: &str) -> bool {
    let trim = |s: &str| s.trim_end_matches('/').to_owned();
    trim(url) == trim(id)
        || url
            .split_once("://")
            .is_some_and(|(_, rest)| trim(rest) == trim(id))
}

fn backend_index(backends: &[Value], upstream: &str, id: &str) -> Result<usize, ChangeError> {
    let hits: Vec<usize> = backends
        .iter()
        .enumerate()
        .filter(|(_, b)| url_of(b).is_some_and(|u| is_backend(u, id)))
        .map(|(i, _)| i)
        .collect();
    match hits.as_slice() {
        [i] => Ok(*i),
        [] => Err(ChangeError::NotFound(format!(
            "upstream {upstream:?} has no backend {id:?}"
        ))),
        _ => Err(ChangeError::BadRequest(format!(
            "{id:?} names several backends of {upstream:?}; use the full URL"
        ))),
    }
}

/// Adds a backend to an upstream.
#[utoipa::path(post, path = "/upstreams/{name}/backends", tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name: 1 to 128 letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"), WriteParams),
    request_body(description = "`{url, weight, drain}` or just the URL", content((Resource = "application/json"), (Resource = "application/yaml"))),
    responses(
        (status = 201, description = "Added", body = ApplyResult),
        (status = 200, description = "Dry run, or nothing to change", body = ApplyResult),
        (status = 404, description = "No such upstream", body = ErrorBody),
        (status = 409, description = "The upstream has this backend", body = ErrorBody),
        (status = 422, description = "Invalid", body = ValidationErrorBody)))]
pub async fn add_backend(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<WriteParams>,
    Document(body): Document,
) -> Result<Response, ApiError> {
    let url = url_of(&body)
        .ok_or_else(|| invalid("url", "required: the backend's URL"))?
        .to_owned();
    let req = change_request(
        &who,
        &headers,
        &params,
        "backend.add",
        format!("{name}/{url}"),
    )?;
    let outcome = state
        .configs
        .change(req, |cur| {
            let mut doc = document(cur)?;
            let backends = backends_of(&mut doc, &name)?;
            if backends
                .iter()
                .any(|b| url_of(b).is_some_and(|u| is_backend(u, &url)))
            {
                return Err(ChangeError::Exists(format!(
                    "upstream {name:?} already has backend {url:?}"
                )));
            }
            backends.push(body);
            rebuild(&doc)
        })
        .await?;
    Ok(answer(outcome, StatusCode::CREATED))
}

/// Changes a backend's `weight` or `drain` (a JSON merge patch of the backend).
#[utoipa::path(patch, path = "/upstreams/{name}/backends/{backend}", tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name: 1 to 128 letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"),
        ("backend" = String, Path, description = "Backend URL (percent-encoded) or its host:port"),
        WriteParams),
    request_body(description = "Fields to change, e.g. `{\"weight\": 5}` or `{\"drain\": true}`", content((Resource = "application/json"), (Resource = "application/yaml"))),
    responses(
        (status = 200, description = "Changed", body = ApplyResult),
        (status = 404, description = "No such upstream or backend", body = ErrorBody),
        (status = 422, description = "Invalid", body = ValidationErrorBody)))]
pub async fn patch_backend(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath((name, backend)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<WriteParams>,
    Document(patch): Document,
) -> Result<Response, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(invalid("", "the patch must be a mapping, e.g. {\"weight\": 5}").into());
    };
    if patch.contains_key("url") {
        return Err(invalid(
            "url",
            "a backend's url cannot change; add the new one and remove the old",
        )
        .into());
    }
    edit_backend(
        &state,
        &who,
        &headers,
        &params,
        &name,
        &backend,
        "backend.update",
        |backends, i| {
            let entry = &mut backends[i];
            if let Value::String(url) = entry {
                *entry = json!({"url": url});
            }
            if let Value::Object(fields) = entry {
                for (k, v) in patch {
                    if v.is_null() {
                        fields.remove(&k);
                    } else {
                        fields.insert(k, v);
                    }
                }
            }
        },
    )
    .await
}

/// Removes a backend (drain it first so that nothing in flight is cut off).
#[utoipa::path(delete, path = "/upstreams/{name}/backends/{backend}", tag = "upstreams",
    params(("name" = String, Path, description = "Upstream name: 1 to 128 letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"),
        ("backend" = String, Path, description = "Backend URL (percent-encoded) or its host:port"),
        WriteParams),
    responses(
        (status = 200, description = "Removed", body = ApplyResult),
        (status = 404, description = "No such upstream or backend", body = ErrorBody),
        (status = 422, description = "Invalid (e.g. the last backend)", body = ValidationErrorBody)))]
pub async fn delete_backend(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath((name, backend)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<WriteParams>,
) -> Result<Response, ApiError> {
    edit_backend(
        &state,
        &who,
        &headers,
        &params,
        &name,
        &backend,
        "backend.remove",
        |backends, i| {
            backends.remove(i);
        },
    )
    .await
}

/// Applies `edit` to backend `backend` (index `i` in its upstream's list)
/// as one change, audited as `action`.
#[allow(clippy::too_many_arguments)]
async fn edit_backend(
    state: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    params: &WriteParams,
    name: &str,
    backend: &str,
    action: &'static str,
    edit: impl FnOnce(&mut Vec<Value>, usize),
) -> Result<Response, ApiError> {
    let req = change_request(who, headers, params, action, format!("{name}/{backend}"))?;
    let outcome = state
        .configs
        .change(req, |cur| {
            let mut doc = document(cur)?;
            let backends = backends_of(&mut doc, name)?;
            let i = backend_index(backends, name, backend)?;
            edit(backends, i);
            rebuild(&doc)
        })
        .await?;
    Ok(answer(outcome, StatusCode::OK))
}
