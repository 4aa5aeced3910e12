//! Every error the REST API answers with: a status and a short JSON body.
//! Internal detail goes to the log, never to the client.

use crate::configs::ChangeError;
use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use isame_proto::ConfigErrors;
use serde_json::json;

/// An error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or unknown token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 403: the token may not do this.
    #[error("this token may only read")]
    Forbidden,
    /// 403: a data plane's token used on the REST API.
    #[error("a node token only subscribes to config; use an admin or viewer token")]
    NodeToken,
    /// 404: no such thing.
    #[error("{0}")]
    NotFound(String),
    /// 405: the endpoint exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: it exists already.
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` is stale.
    #[error("the config changed: version {current} is the newest")]
    PreconditionFailed {
        /// The newest version.
        current: u64,
    },
    /// 413: body over the limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// 413: a YAML body that its aliases would expand beyond the limits.
    #[error("{0}")]
    DocumentTooLarge(String),
    /// 415: a body type the API does not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: the resulting config is invalid.
    #[error("invalid config")]
    Invalid(ConfigErrors),
    /// 503: the database does not answer.
    #[error("the database is unavailable")]
    Unavailable,
    /// 500: a fault on this side; the detail is logged.
    #[error("internal error")]
    Internal(String),
}

/// Whether a database error means the database cannot be reached (or is
/// shutting down or starting) rather than that it refused this operation.
fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL: class 08 (connection exception) and 57P0x (the
        // server is shutting down, restarting or not yet accepting).
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(ref db) if unavailable(db) => {
                tracing::error!(error = %e, "database unavailable");
                ApiError::Unavailable
            }
            StoreError::DuplicateToken(_) => ApiError::Conflict(e.to_string()),
            StoreError::Conflict(v) => ApiError::PreconditionFailed { current: v },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Invalid(errors) => ApiError::Invalid(errors),
            ChangeError::Stale { current } => ApiError::PreconditionFailed { current },
            ChangeError::NotFound(m) => ApiError::NotFound(m),
            ChangeError::Exists(m) => ApiError::Conflict(m),
            ChangeError::BadRequest(m) => ApiError::BadRequest(m),
            ChangeError::Store(s) => s.into(),
        }
    }
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::NodeToken => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge { .. } | ApiError::DocumentTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Invalid(errors) => json!({"error": "invalid config", "errors": errors}),
            ApiError::PreconditionFailed { current } => {
                json!({"error": self.to_string(), "current_version": current})
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                json!({"error": "internal error"})
            }
            other => json!({"error": other.to_string()}),
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"isame\""),
            );
        }
        response
    }
}
