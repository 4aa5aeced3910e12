//! `GET /config` and `PUT /config`: the whole config, declaratively.

use super::auth::Principal;
use super::error::ApiError;
use super::extract::{wants_yaml, ApiQuery, Document};
use super::openapi::{ApplyResult, ErrorBody, Resource, ValidationErrorBody};
use super::writes::{answer, change_request, rebuild, WriteParams};
use super::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The newest config, with defaults written out.
#[utoipa::path(
    get, path = "/config", tag = "config",
    responses(
        (status = 200, description = "The newest config (YAML with `Accept: application/yaml`); `ETag` is its version",
            content((Resource = "application/json"), (String = "application/yaml"))),
        (status = 304, description = "`If-None-Match` names the newest version"),
        (status = 404, description = "Nothing applied yet", body = ErrorBody),
    )
)]
pub async fn get_config(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cur = state.configs.current();
    let Some(config) = cur.config.as_ref() else {
        return Err(ApiError::NotFound("no config has been applied yet".into()));
    };
    let etag = format!("\"{}\"", cur.version);
    let etag_value =
        HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(format!("etag: {e}")))?;
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    if wants_yaml(&headers) {
        let yaml = config
            .to_yaml()
            .map_err(|e| ApiError::Internal(format!("config to YAML: {e}")))?;
        return Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/yaml"),
                ),
                (header::ETAG, etag_value),
            ],
            yaml,
        )
            .into_response());
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag_value),
        ],
        cur.json.clone(),
    )
        .into_response())
}

/// Replaces the whole config. Nothing is written when the config is invalid,
/// identical to the newest one, a dry run, or `If-Match` is stale.
#[utoipa::path(
    put, path = "/config", tag = "config",
    params(WriteParams,
        ("If-Match" = Option<String>, Header, description = "Only apply if this version (`\"3\"`) is the newest"),
        ("X-Isame-Message" = Option<String>, Header, description = "Why; kept with the version")),
    request_body(description = "The whole config", content((Resource = "application/yaml"), (Resource = "application/json"))),
    responses(
        (status = 200, description = "Applied (or nothing to change, or a dry run)", body = ApplyResult),
        (status = 400, description = "Malformed YAML/JSON", body = ErrorBody),
        (status = 412, description = "`If-Match` is not the newest version", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Invalid config: every problem with its path", body = ValidationErrorBody),
    )
)]
pub async fn put_config(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<WriteParams>,
    Document(doc): Document,
) -> Result<Response, ApiError> {
    let req = change_request(&who, &headers, &params, "config.apply", "config")?;
    let outcome = state.configs.change(req, |_| rebuild(&doc)).await?;
    Ok(answer(outcome, StatusCode::OK))
}
