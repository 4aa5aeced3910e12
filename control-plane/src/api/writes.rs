//! Helpers shared by the write endpoints: turning a request into a
//! [`ChangeRequest`], editing the config as a document, and answering with
//! the outcome.

use super::auth::Principal;
use super::error::ApiError;
use super::extract;
use crate::configs::{ChangeError, ChangeRequest, Outcome};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use isame_proto::{Config, ConfigErrors};
use serde::Deserialize;
use serde_json::Value;

/// Query parameters of every write.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WriteParams {
    /// Compute and return the changes without writing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// Why: kept with the version and in the audit log (the
    /// `X-Isame-Message` header says the same and wins).
    #[serde(default)]
    pub message: Option<String>,
}

/// A change request from the caller, the headers and the query.
pub fn change_request(
    who: &Principal,
    headers: &HeaderMap,
    params: &WriteParams,
    action: &'static str,
    target: impl Into<String>,
) -> Result<ChangeRequest, ApiError> {
    Ok(ChangeRequest {
        actor: who.name.clone(),
        remote_addr: who.remote_addr.clone(),
        action,
        target: target.into(),
        message: extract::message(headers, params.message.as_deref())?,
        precondition: extract::if_match(headers)?,
        dry_run: params.dry_run,
        rollback_of: None,
    })
}

/// The config as an editable document (`None`: nothing applied yet).
pub fn document(current: Option<&Config>) -> Result<Value, ChangeError> {
    match current {
        Some(c) => serde_json::to_value(c).map_err(|e| {
            ChangeError::Store(crate::store::StoreError::Corrupt(format!(
                "config not serializable: {e}"
            )))
        }),
        None => Err(ChangeError::NotFound(
            "no config has been applied yet; PUT /api/v1/config first".into(),
        )),
    }
}

/// Reads an edited document back, with every validation rule.
pub fn rebuild(doc: &Value) -> Result<Config, ChangeError> {
    Config::from_value(doc).map_err(ChangeError::Invalid)
}

/// A mutable list field of a document (created when absent).
pub fn items<'a>(doc: &'a mut Value, key: &str) -> Result<&'a mut Vec<Value>, ChangeError> {
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| ChangeError::BadRequest("the config is not a mapping".into()))?;
    let v = obj.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if v.is_null() {
        *v = Value::Array(Vec::new());
    }
    v.as_array_mut()
        .ok_or_else(|| ChangeError::BadRequest(format!("`{key}` is not a list")))
}

/// Position of the element whose `name` is `name`.
pub fn position(items: &[Value], name: &str) -> Option<usize> {
    items
        .iter()
        .position(|v| v.get("name").and_then(Value::as_str) == Some(name))
}

/// A validation problem of a request body, at `path` within it.
pub fn invalid(path: &str, message: impl Into<String>) -> ChangeError {
    ChangeError::Invalid(ConfigErrors::one(path, message))
}

/// Makes `body` a mapping named `name`: fills in a missing name, refuses a
/// different one.
pub fn named(mut body: Value, name: &str, what: &str) -> Result<Value, ChangeError> {
    let obj = body
        .as_object_mut()
        .ok_or_else(|| invalid("", format!("the {what} must be a mapping")))?;
    match obj.get("name") {
        None | Some(Value::Null) => {
            obj.insert("name".into(), Value::String(name.into()));
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(invalid(
                "name",
                format!(
                    "{other} differs from {name:?} in the URL; renaming is a delete and a create"
                ),
            ))
        }
    }
    Ok(body)
}

/// The `name` field of a body that must have one.
pub fn name_of(body: &Value, what: &str) -> Result<String, ChangeError> {
    if !body.is_object() {
        return Err(invalid("", format!("the {what} must be a mapping")));
    }
    match body.get("name") {
        Some(Value::String(n)) if !n.is_empty() => Ok(n.clone()),
        _ => Err(invalid("name", format!("required: the {what}'s name"))),
    }
}

/// The answer to a write: the outcome as JSON with the version as `ETag`;
/// `created` is the status when a new resource was made.
pub fn answer(outcome: Outcome, created: StatusCode) -> Response {
    let status = if outcome.created && !outcome.dry_run {
        created
    } else {
        StatusCode::OK
    };
    let etag = HeaderValue::from_str(&format!("\"{}\"", outcome.version));
    let mut response = (status, Json(outcome)).into_response();
    if let Ok(tag) = etag {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}
