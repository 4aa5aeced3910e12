//! `/rollout-policy` (the stages and gates every new version goes through,
//! versioned and audited) and `/rollouts` (one per version: where it is,
//! who serves what, its gates' figures, and the operator's actions).

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{self, ApiPath, ApiQuery, Document, OptionalDocument};
use super::history::{rfc3339, PageParams};
use super::openapi::{ErrorBody, Resource, ValidationErrorBody};
use super::AppState;
use crate::rollout::actions::{self, Action, ActionError, Actor};
use crate::rollout::model::{PolicyRecord, RolloutRecord};
use crate::rollout::policy;
use crate::store::NewAudit;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

fn policy_view(p: Option<&PolicyRecord>) -> Value {
    match p {
        None => json!({"revision": 0, "policy": null}),
        Some(p) => json!({
            "revision": p.revision,
            "policy": p.policy,
            "created_at": rfc3339(p.created_at),
            "author": p.author,
        }),
    }
}

/// The rollout policy (`policy: null`: every change goes to every node at once).
#[utoipa::path(get, path = "/rollout-policy", tag = "rollouts",
    responses((status = 200, description = "`{revision, policy, created_at, author}`", body = Resource)))]
pub async fn get_policy(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let p = state.configs.store().rollout_policy().await?;
    Ok(Json(policy_view(p.as_ref())))
}

/// The `If-Match` revision of a policy write.
fn expected_revision(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    use crate::configs::Precondition;
    Ok(match extract::if_match(headers)? {
        None | Some(Precondition::Any) => None,
        Some(Precondition::Version(v)) => Some(v),
        Some(Precondition::Never) => Some(u64::MAX),
    })
}

async fn store_policy(
    state: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    policy: Option<Value>,
    action: &str,
) -> Result<Json<Value>, ApiError> {
    let message = extract::message(headers, None)?;
    let audit = NewAudit {
        actor: who.name.clone(),
        remote_addr: who.remote_addr.clone(),
        action: action.into(),
        target: "rollout-policy".into(),
        message,
        changes: Vec::new(),
    };
    let rec = state
        .configs
        .store()
        .put_rollout_policy(policy, expected_revision(headers)?, audit)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(newest) => ApiError::Conflict(format!(
                "the rollout policy changed: revision {newest} is the newest"
            )),
            e => e.into(),
        })?;
    tracing::info!(revision = rec.revision, action, "rollout policy stored");
    Ok(Json(policy_view(Some(&rec))))
}

/// Sets the rollout policy: the next committed version follows it (a
/// rollout already running keeps the policy it started with).
#[utoipa::path(put, path = "/rollout-policy", tag = "rollouts",
    params(("If-Match" = Option<String>, Header, description = "Only if this revision is the newest")),
    request_body(description = "The policy, JSON or YAML (docs/rollouts.md)", content((Resource = "application/json"))),
    responses(
        (status = 200, description = "Stored: `{revision, policy}` in canonical form", body = Resource),
        (status = 409, description = "Stale If-Match", body = ErrorBody),
        (status = 422, description = "Invalid policy: every problem with its path", body = ValidationErrorBody)))]
pub async fn put_policy(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Document(doc): Document,
) -> Result<Json<Value>, ApiError> {
    let p = policy::parse(&doc).map_err(ApiError::Invalid)?;
    store_policy(
        &state,
        &who,
        &headers,
        Some(p.to_json()),
        "rollout_policy.set",
    )
    .await
}

/// Removes the rollout policy: changes go to every node at once again.
#[utoipa::path(delete, path = "/rollout-policy", tag = "rollouts",
    params(("If-Match" = Option<String>, Header, description = "Only if this revision is the newest")),
    responses((status = 200, description = "`{revision, policy: null}`", body = Resource),
        (status = 409, description = "Stale If-Match", body = ErrorBody)))]
pub async fn delete_policy(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    store_policy(&state, &who, &headers, None, "rollout_policy.remove").await
}

/// Every revision of the rollout policy, newest first.
#[utoipa::path(get, path = "/rollout-policy/history", tag = "rollouts", params(PageParams),
    responses((status = 200, description = "`{revisions: [{revision, policy, created_at, author}]}`", body = Resource)))]
pub async fn policy_history(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let list = state
        .configs
        .store()
        .rollout_policies(params.page()?)
        .await?;
    Ok(Json(json!({
        "revisions": list.iter().map(|p| policy_view(Some(p))).collect::<Vec<_>>(),
    })))
}

/// A rollout as the API shows it; `latest` adds who serves what now.
pub(crate) fn rollout_view(r: &RolloutRecord, state: Option<&AppState>) -> Value {
    let stages: Vec<Value> = r
        .progress
        .stages
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "status": s.status,
                "members": s.members,
                "started_at": rfc3339(s.started_at),
                "bake_from": rfc3339(s.bake_from),
                "finished_at": s.finished_at.map(rfc3339),
                "figures": s.figures,
            })
        })
        .collect();
    let timeline: Vec<Value> = r
        .progress
        .timeline
        .iter()
        .map(|e| json!({"at": rfc3339(e.at), "kind": e.kind, "message": e.message}))
        .collect();
    let mut v = json!({
        "version": r.version,
        "base": r.base,
        "state": r.state.as_str(),
        "stable": r.stable(),
        "policy": r.policy,
        "stage": r.progress.stages.last().map(|s| s.name.clone()),
        "stages": stages,
        "timeline": timeline,
        "failure": r.progress.failure,
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
        "revision": r.revision,
    });
    if let Some(state) = state {
        let plan = state.configs.plan();
        if plan
            .rollout
            .as_ref()
            .is_some_and(|p| p.version == r.version)
        {
            let mut on_new: Vec<&String> = plan.members.iter().collect();
            on_new.sort();
            v["on_new_version"] = json!(on_new);
            v["newest"] = plan.newest.version.into();
        }
    }
    v
}

/// Rollouts, newest first (one per committed version).
#[utoipa::path(get, path = "/rollouts", tag = "rollouts", params(PageParams),
    responses((status = 200, description = "`{rollouts: [...]}`", body = Resource)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let list = state.configs.store().rollouts(params.page()?).await?;
    Ok(Json(json!({
        "rollouts": list.iter().map(|r| rollout_view(r, None)).collect::<Vec<_>>(),
    })))
}

/// The newest rollout: the one that decides what every node serves.
#[utoipa::path(get, path = "/rollouts/latest", tag = "rollouts",
    responses((status = 200, description = "The rollout", body = Resource),
        (status = 404, description = "No version was committed since rollouts exist", body = ErrorBody)))]
pub async fn latest(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let r = state
        .configs
        .store()
        .latest_rollout()
        .await?
        .ok_or_else(|| ApiError::NotFound("no rollout yet".into()))?;
    Ok(Json(rollout_view(&r, Some(&state))))
}

/// The rollout of version `v`.
#[utoipa::path(get, path = "/rollouts/{v}", tag = "rollouts",
    params(("v" = u64, Path, description = "The version it rolls out")),
    responses((status = 200, description = "The rollout", body = Resource),
        (status = 404, description = "No rollout for that version", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(v): ApiPath<u64>,
) -> Result<Json<Value>, ApiError> {
    let r = state
        .configs
        .store()
        .rollout(v)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no rollout for version {v}")))?;
    Ok(Json(rollout_view(&r, Some(&state))))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    message: Option<String>,
    /// For promote: every remaining stage at once.
    #[serde(default)]
    all: bool,
}

async fn act(
    state: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    v: u64,
    body: Option<Value>,
    action: impl FnOnce(bool) -> Action,
) -> Result<Json<Value>, ApiError> {
    let body: ActionBody = match body {
        None => ActionBody::default(),
        Some(b) => {
            serde_json::from_value(b).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?
        }
    };
    let actor = Actor {
        name: who.name.clone(),
        remote_addr: who.remote_addr.clone(),
        message: extract::message(headers, body.message.as_deref())?,
    };
    let r = actions::act(
        &state.configs,
        &state.metrics,
        Some(v),
        action(body.all),
        &actor,
    )
    .await
    .map_err(|e| match e {
        ActionError::NotFound(v) => ApiError::NotFound(format!("no rollout for version {v}")),
        ActionError::Conflict(m) => ApiError::Conflict(m),
        ActionError::Store(e) => e.into(),
    })?;
    Ok(Json(rollout_view(&r, Some(state))))
}

/// Pauses the rollout: no stage is promoted until resumed (gates still
/// roll back).
#[utoipa::path(post, path = "/rollouts/{v}/pause", tag = "rollouts",
    params(("v" = u64, Path, description = "The version it rolls out")),
    request_body(description = "Optional `{message}`", content((Resource = "application/json"))),
    responses((status = 200, description = "The rollout", body = Resource),
        (status = 404, description = "No such rollout", body = ErrorBody),
        (status = 409, description = "Not running, or not the newest rollout", body = ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath(v): ApiPath<u64>,
    OptionalDocument(body): OptionalDocument,
) -> Result<Json<Value>, ApiError> {
    act(&state, &who, &headers, v, body, |_| Action::Pause).await
}

/// Resumes a paused rollout; the current stage bakes again from now.
#[utoipa::path(post, path = "/rollouts/{v}/resume", tag = "rollouts",
    params(("v" = u64, Path, description = "The version it rolls out")),
    request_body(description = "Optional `{message}`", content((Resource = "application/json"))),
    responses((status = 200, description = "The rollout", body = Resource),
        (status = 404, description = "No such rollout", body = ErrorBody),
        (status = 409, description = "Not paused, or not the newest rollout", body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath(v): ApiPath<u64>,
    OptionalDocument(body): OptionalDocument,
) -> Result<Json<Value>, ApiError> {
    act(&state, &who, &headers, v, body, |_| Action::Resume).await
}

/// Promotes: the current stage passes and the next starts; with
/// `{"all": true}`, or for a rollout that was rolled back or aborted, every
/// node takes the version at once.
#[utoipa::path(post, path = "/rollouts/{v}/promote", tag = "rollouts",
    params(("v" = u64, Path, description = "The version it rolls out")),
    request_body(description = "Optional `{message, all}`", content((Resource = "application/json"))),
    responses((status = 200, description = "The rollout", body = Resource),
        (status = 404, description = "No such rollout", body = ErrorBody),
        (status = 409, description = "Completed already, or not the newest rollout", body = ErrorBody)))]
pub async fn promote(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath(v): ApiPath<u64>,
    OptionalDocument(body): OptionalDocument,
) -> Result<Json<Value>, ApiError> {
    act(&state, &who, &headers, v, body, |all| Action::Promote {
        all,
    })
    .await
}

/// Aborts: every node goes back to the base version.
#[utoipa::path(post, path = "/rollouts/{v}/abort", tag = "rollouts",
    params(("v" = u64, Path, description = "The version it rolls out")),
    request_body(description = "Optional `{message}`", content((Resource = "application/json"))),
    responses((status = 200, description = "The rollout", body = Resource),
        (status = 404, description = "No such rollout", body = ErrorBody),
        (status = 409, description = "Not active, or not the newest rollout", body = ErrorBody)))]
pub async fn abort(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath(v): ApiPath<u64>,
    OptionalDocument(body): OptionalDocument,
) -> Result<Json<Value>, ApiError> {
    act(&state, &who, &headers, v, body, |_| Action::Abort).await
}
