//! Versions, diffs between them, rollback, and the audit log.

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{self, ApiPath, ApiQuery, OptionalDocument};
use super::openapi::{ApplyResult, ErrorBody, Resource, ValidationErrorBody};
use super::writes::{answer, WriteParams};
use super::AppState;
use crate::configs::{ChangeError, ChangeRequest};
use crate::store::{Page, VersionRecord};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use isame_proto::config::diff_from;
use isame_proto::Config;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};

/// `?limit=&before=` on newest-first lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// At most this many items (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only items older than this version or id.
    #[param(minimum = 1)]
    before: Option<i64>,
}

impl PageParams {
    pub(crate) fn page(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::BadRequest("limit must be 1 to 1000".into()));
        }
        if self.before.is_some_and(|b| b < 1) {
            return Err(ApiError::BadRequest("before must be 1 or more".into()));
        }
        Ok(Page {
            limit,
            before: self.before,
        })
    }
}

/// RFC 3339 time of unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

fn summary(v: &VersionRecord) -> Value {
    json!({
        "version": v.version,
        "created_at": rfc3339(v.created_at),
        "author": v.author,
        "message": v.message,
        "hash": v.hash,
        "rollback_of": v.rollback_of,
        "change_count": v.changes.len(),
    })
}

/// Every version, newest first.
#[utoipa::path(get, path = "/versions", tag = "versions", params(PageParams),
    responses((status = 200, description = "`{versions: [{version, created_at, author, message, hash, rollback_of, change_count}]}`", body = Resource),
        (status = 400, description = "Bad paging parameters", body = ErrorBody)))]
pub async fn versions(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let list = state.configs.store().versions(params.page()?).await?;
    Ok(Json(
        json!({"versions": list.iter().map(summary).collect::<Vec<_>>()}),
    ))
}

async fn load(state: &AppState, v: u64) -> Result<VersionRecord, ApiError> {
    state
        .configs
        .store()
        .version(v)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("version {v} not found")))
}

fn config_of(v: &VersionRecord) -> Result<Value, ApiError> {
    serde_json::from_str(&v.config)
        .map_err(|e| ApiError::Internal(format!("version {}: {e}", v.version)))
}

/// One version: who made it, why, what changed, and the full config.
#[utoipa::path(get, path = "/versions/{v}", tag = "versions",
    params(("v" = u64, Path, description = "Version number")),
    responses((status = 200, description = "The version with `changes` and `config`", body = Resource),
        (status = 404, description = "No such version", body = ErrorBody)))]
pub async fn version(
    State(state): State<AppState>,
    ApiPath(v): ApiPath<u64>,
) -> Result<Json<Value>, ApiError> {
    let rec = load(&state, v).await?;
    let mut out = summary(&rec);
    out["changes"] =
        serde_json::to_value(&rec.changes).map_err(|e| ApiError::Internal(e.to_string()))?;
    out["config"] = config_of(&rec)?;
    Ok(Json(out))
}

/// `?against=` of a diff.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiffParams {
    /// The version to compare with (default: the one before).
    against: Option<u64>,
}

fn parsed(rec: &VersionRecord) -> Result<Config, ApiError> {
    Config::from_json(&rec.config)
        .map_err(|e| ApiError::Internal(format!("version {} does not load: {e}", rec.version)))
}

/// What changed from version `against` to version `v`.
#[utoipa::path(get, path = "/versions/{v}/diff", tag = "versions",
    params(("v" = u64, Path, description = "Version number"), DiffParams),
    responses((status = 200, description = "`{from, to, changes}`", body = Resource),
        (status = 404, description = "No such version", body = ErrorBody)))]
pub async fn diff(
    State(state): State<AppState>,
    ApiPath(v): ApiPath<u64>,
    ApiQuery(params): ApiQuery<DiffParams>,
) -> Result<Json<Value>, ApiError> {
    let to = load(&state, v).await?;
    let against = params.against.unwrap_or(v.saturating_sub(1));
    let from = if against == 0 {
        None
    } else {
        Some(parsed(&load(&state, against).await?)?)
    };
    let changes = diff_from(from.as_ref(), &parsed(&to)?);
    Ok(Json(json!({"from": against, "to": v, "changes": changes})))
}

/// Optional body of a rollback.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default)]
    message: Option<String>,
}

/// Makes a new version whose content is version `v`'s.
#[utoipa::path(post, path = "/versions/{v}/rollback", tag = "versions",
    params(("v" = u64, Path, description = "The version to restore"), WriteParams,
        ("If-Match" = Option<String>, Header, description = "Only if this version is the newest")),
    request_body(description = "Optional `{message}`", content((Resource = "application/json"))),
    responses(
        (status = 201, description = "A new version restores it", body = ApplyResult),
        (status = 200, description = "Already the newest content, or a dry run", body = ApplyResult),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 412, description = "Stale If-Match", body = ErrorBody),
        (status = 422, description = "That version no longer passes validation", body = ValidationErrorBody)))]
pub async fn rollback(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath(v): ApiPath<u64>,
    ApiQuery(params): ApiQuery<WriteParams>,
    OptionalDocument(body): OptionalDocument,
) -> Result<Response, ApiError> {
    let body: RollbackBody = match body {
        None => RollbackBody::default(),
        Some(b) => serde_json::from_value(b)
            .map_err(|e| ApiError::BadRequest(format!("rollback body: {e}")))?,
    };
    let rec = load(&state, v).await?;
    let target = Config::from_json(&rec.config).map_err(ApiError::Invalid)?;
    let default_message = format!("rollback to version {v}");
    let message = extract::message(
        &headers,
        Some(
            params
                .message
                .as_deref()
                .or(body.message.as_deref())
                .unwrap_or(&default_message),
        ),
    )?;
    let req = ChangeRequest {
        actor: who.name.clone(),
        remote_addr: who.remote_addr.clone(),
        action: "version.rollback",
        target: v.to_string(),
        message,
        precondition: extract::if_match(&headers)?,
        dry_run: params.dry_run,
        rollback_of: Some(v),
    };
    let outcome = state
        .configs
        .change(req, |_| Ok::<_, ChangeError>(target))
        .await?;
    Ok(answer(outcome, StatusCode::CREATED))
}

/// The audit log, newest first: who changed what, when, from where.
#[utoipa::path(get, path = "/audit", tag = "audit", params(PageParams),
    responses((status = 200, description = "`{entries: [{id, at, actor, remote_addr, action, target, version, message, changes}]}`", body = Resource),
        (status = 400, description = "Bad paging parameters", body = ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let entries = state.configs.store().audit_log(params.page()?).await?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id,
                "at": rfc3339(e.at),
                "actor": e.actor,
                "remote_addr": e.remote_addr,
                "action": e.action,
                "target": e.target,
                "version": e.version,
                "message": e.message,
                "changes": e.changes,
            })
        })
        .collect();
    Ok(Json(json!({"entries": entries})))
}
