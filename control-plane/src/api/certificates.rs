//! `/certificates`: the certificate store. A certificate and its key are
//! uploaded once; reads show the certificate and what it says about itself,
//! never the key.

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, Document};
use super::history::rfc3339;
use super::openapi::{ErrorBody, ValidationErrorBody};
use super::writes::{change_request, invalid, WriteParams};
use super::AppState;
use crate::cert_store::{self, PutOutcome, Upload};
use crate::configs::ChangeError;
use crate::store::CertificateMeta;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use isame_proto::config::ConfigError;
use isame_proto::ConfigErrors;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// A stored certificate (never its key).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CertificateBody {
    /// Its name, as `tls.certificate` refers to it.
    name: String,
    /// Content id of the chain and key; changes when replaced.
    id: String,
    /// SHA-256 of the leaf certificate (DER), hex.
    fingerprint_sha256: String,
    /// The leaf's subject.
    subject: String,
    /// The leaf's issuer.
    issuer: String,
    /// DNS names and addresses it covers.
    names: Vec<String>,
    /// Start of validity (RFC 3339).
    not_before: String,
    /// End of validity (RFC 3339).
    not_after: String,
    /// Where the newest config names it.
    in_use: Vec<String>,
    /// The PEM chain (one certificate only).
    cert_pem: Option<String>,
}

/// A certificate to store.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CertificateUpload {
    /// PEM chain, leaf first.
    cert_pem: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); stored, sent to data
    /// planes with the snapshots that name it, never returned.
    key_pem: String,
}

/// The result of an upload.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CertificatePutResult {
    /// The stored certificate.
    certificate: CertificateBody,
    /// Whether the name is new.
    created: bool,
    /// Whether anything changed.
    changed: bool,
    /// The config version created because the config names it.
    version: Option<u64>,
    /// Whether this was a dry run.
    dry_run: bool,
}

fn body_of(meta: &CertificateMeta, in_use: Vec<String>) -> Value {
    json!({
        "name": meta.name,
        "id": meta.id,
        "fingerprint_sha256": meta.fingerprint_sha256,
        "subject": meta.subject,
        "issuer": meta.issuer,
        "names": meta.names,
        "not_before": rfc3339(meta.not_before.saturating_mul(1000)),
        "not_after": rfc3339(meta.not_after.saturating_mul(1000)),
        "created_at": rfc3339(meta.created_at),
        "updated_at": rfc3339(meta.updated_at),
        "updated_by": meta.updated_by,
        "in_use": in_use,
    })
}

/// Every stored certificate.
#[utoipa::path(get, path = "/certificates", tag = "certificates",
    responses((status = 200, description = "`{certificates: [...]}`", body = [CertificateBody])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let all = state.configs.store().certificates().await?;
    let items: Vec<Value> = all
        .iter()
        .map(|m| body_of(m, cert_store::uses(&state.configs, &m.name)))
        .collect();
    Ok(Json(json!({ "certificates": items })))
}

/// One stored certificate, with its PEM chain.
#[utoipa::path(get, path = "/certificates/{name}", tag = "certificates",
    params(("name" = String, Path, description = "Certificate name: 1 to 128 letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, description = "The certificate", body = CertificateBody),
        (status = 404, description = "No such certificate", body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (meta, cert_pem) = state
        .configs
        .store()
        .certificate(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("certificate {name:?} not found")))?;
    let mut body = body_of(&meta, cert_store::uses(&state.configs, &name));
    body["cert_pem"] = Value::String(cert_pem);
    Ok(Json(body))
}

/// Reads `{cert_pem, key_pem}`; every problem at its field.
fn upload_of(body: Value) -> Result<Upload, ChangeError> {
    let Value::Object(mut obj) = body else {
        return Err(invalid("", "expected a mapping with cert_pem and key_pem"));
    };
    let mut problems = Vec::new();
    let mut field = |key: &str| match obj.remove(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            problems.push(ConfigError::new(key, "required: PEM text"));
            None
        }
        Some(_) => {
            problems.push(ConfigError::new(key, "must be a string of PEM text"));
            None
        }
    };
    let cert_pem = field("cert_pem");
    let key_pem = field("key_pem");
    for key in obj.keys() {
        problems.push(ConfigError::new(
            key.as_str(),
            "unknown field (expected cert_pem and key_pem)",
        ));
    }
    match (cert_pem, key_pem) {
        (Some(cert_pem), Some(key_pem)) if problems.is_empty() => Ok(Upload { cert_pem, key_pem }),
        _ => Err(ChangeError::Invalid(ConfigErrors(problems))),
    }
}

/// Stores a certificate and its key under `name` (creating or replacing).
/// Replacing one the config names creates a config version.
#[utoipa::path(put, path = "/certificates/{name}", tag = "certificates",
    params(("name" = String, Path, description = "Certificate name: 1 to 128 letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"), WriteParams),
    request_body(description = "`{cert_pem, key_pem}`",
        content((CertificateUpload = "application/json"), (CertificateUpload = "application/yaml"))),
    responses(
        (status = 201, description = "Stored under a new name", body = CertificatePutResult),
        (status = 200, description = "Replaced, unchanged, or a dry run", body = CertificatePutResult),
        (status = 422, description = "Not PEM, key does not match, expired or not yet valid", body = ValidationErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<WriteParams>,
    Document(body): Document,
) -> Result<Response, ApiError> {
    let upload = upload_of(body)?;
    let req = change_request(&who, &headers, &params, "certificate.put", &name)?;
    let outcome: PutOutcome = cert_store::put(&state.configs, req, &name, upload).await?;
    let status = if outcome.created && !outcome.dry_run {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({
        "certificate": body_of(&outcome.certificate, cert_store::uses(&state.configs, &name)),
        "created": outcome.created,
        "changed": outcome.changed,
        "version": outcome.version,
        "dry_run": outcome.dry_run,
    });
    Ok((status, Json(body)).into_response())
}

/// Removes a certificate (refused while the config names it).
#[utoipa::path(delete, path = "/certificates/{name}", tag = "certificates",
    params(("name" = String, Path, description = "Certificate name: 1 to 128 letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`", pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"), WriteParams),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such certificate", body = ErrorBody),
        (status = 409, description = "The config still names it", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<WriteParams>,
) -> Result<StatusCode, ApiError> {
    let req = change_request(&who, &headers, &params, "certificate.delete", &name)?;
    if params.dry_run {
        return Err(ApiError::BadRequest(
            "dry_run is not supported when removing a certificate".into(),
        ));
    }
    cert_store::delete(&state.configs, req, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
