//! Request extractors whose failures are [`ApiError`]s (JSON, right status)
//! rather than axum's plain-text rejections.

use super::error::ApiError;
use super::AppState;
use crate::configs::Precondition;
use axum::body::Body;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use isame_proto::config::yaml::YamlError;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A request body read as a YAML or JSON document (by `Content-Type`).
#[derive(Debug)]
pub struct Document(pub Value);

/// Body formats the API reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
}

fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Yaml);
    };
    let ct = ct
        .to_str()
        .map_err(|_| ApiError::BadRequest("Content-Type is not readable text".into()))?;
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Format::Json),
        e if e.ends_with("+json") => Ok(Format::Json),
        // YAML is a superset of JSON, so bodies sent without a precise type
        // (curl's default form type, text/plain) are read as YAML.
        "application/yaml"
        | "application/x-yaml"
        | "text/yaml"
        | "text/x-yaml"
        | "text/plain"
        | "application/x-www-form-urlencoded"
        | "" => Ok(Format::Yaml),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {other} is not supported; send application/json or application/yaml"
        ))),
    }
}

/// Reads the whole body, at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(_) => Err(ApiError::BadRequest(
            "the request body could not be read".into(),
        )),
    }
}

/// Parses `bytes` as a document of the given format.
fn parse(bytes: &[u8], format: Format) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ApiError::BadRequest(format!("request body is not UTF-8: {e}")))?;
    match format {
        Format::Json => isame_proto::config::json::parse(text)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}"))),
        Format::Yaml => {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            isame_proto::config::yaml::parse(text).map_err(|e| match e {
                YamlError::Syntax(msg) => ApiError::BadRequest(format!("malformed YAML: {msg}")),
                YamlError::TooLarge(msg) => ApiError::DocumentTooLarge(msg),
                YamlError::Content(errors) => ApiError::Invalid(errors),
            })
        }
    }
}

impl<S> FromRequest<S> for Document
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = AppState::from_ref(state).max_body_bytes;
        let format = format_of(req.headers())?;
        if let Some(len) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > limit as u64 {
                return Err(ApiError::PayloadTooLarge { limit });
            }
        }
        let bytes = read_body(req.into_body(), limit).await?;
        parse(&bytes, format).map(Document)
    }
}

/// A body that may be empty: an empty body is `None`.
#[derive(Debug)]
pub struct OptionalDocument(pub Option<Value>);

impl<S> FromRequest<S> for OptionalDocument
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Document(v) = Document::from_request(req, state).await?;
        Ok(OptionalDocument(if v.is_null() { None } else { Some(v) }))
    }
}

/// Path parameters; a value that does not parse is a 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Query parameters; unknown or malformed ones are a 400.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// The `If-Match` precondition, if any.
pub fn if_match(headers: &HeaderMap) -> Result<Option<Precondition>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::BadRequest("If-Match is not readable text".into()))?
        .trim();
    if text == "*" {
        return Ok(Some(Precondition::Any));
    }
    let (weak, tag) = match text.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    tag.trim_matches('"')
        .parse::<u64>()
        .map(|v| {
            Some(if weak {
                Precondition::Never
            } else {
                Precondition::Version(v)
            })
        })
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "If-Match must be a version ETag like \"3\" or *, not {text:?}"
            ))
        })
}

/// Longest change message kept.
const MAX_MESSAGE: usize = 1000;

/// The change message from `X-Isame-Message` (percent-encoded UTF-8, so
/// any text fits in a header), or `fallback`.
pub fn message(headers: &HeaderMap, fallback: Option<&str>) -> Result<String, ApiError> {
    let text = match headers.get("x-isame-message") {
        Some(v) => {
            let raw = v.to_str().map_err(|_| {
                ApiError::BadRequest(
                    "X-Isame-Message must be ASCII; percent-encode other characters".into(),
                )
            })?;
            percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| {
                    ApiError::BadRequest("X-Isame-Message does not decode to UTF-8".into())
                })?
                .into_owned()
        }
        None => fallback.unwrap_or_default().to_string(),
    };
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::BadRequest(
            "the change message must not contain control characters".into(),
        ));
    }
    if text.chars().count() > MAX_MESSAGE {
        return Err(ApiError::BadRequest(format!(
            "the change message is longer than {MAX_MESSAGE} characters"
        )));
    }
    Ok(text)
}

/// True when the client asked for YAML.
pub fn wants_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',').any(|part| {
                let t = part.split(';').next().unwrap_or("").trim();
                matches!(t, "application/yaml" | "application/x-yaml" | "text/yaml")
            })
        })
}
