//! The proxy's own errors: where each came from, what status and short JSON
//! body the client gets, and the metric label it is counted under. Details go
//! to the log, never to the client.

use crate::upstream::UpstreamError;
use http::StatusCode;

/// Why the proxy answered a request itself instead of relaying a backend's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Routes are configured and none matched.
    #[error("no route matches the request")]
    NoRoute,
    /// The upstream has no backend that may take the request.
    #[error("no backend available")]
    NoBackend,
    /// The exchange with the backend failed.
    #[error("backend: {0}")]
    Upstream(#[from] UpstreamError),
    /// The request head exceeds `server.max_header_bytes`.
    #[error("request head exceeds max_header_bytes")]
    HeadTooLarge,
    /// A method the proxy does not relay (CONNECT).
    #[error("method not supported by the proxy")]
    MethodNotAllowed,
    /// A request that is not valid HTTP in a way hyper lets through.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A request using something the proxy cannot relay faithfully.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// The client is over a rate limit.
    #[error("rate limited")]
    RateLimited {
        /// Requests allowed per window.
        limit: u32,
        /// How long until a request can pass.
        retry_after: std::time::Duration,
    },
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(e) => Self::status_of(e),
            ProxyError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The status a client gets for a failed exchange with a backend.
    pub fn status_of(e: &UpstreamError) -> StatusCode {
        match e {
            UpstreamError::ConnectTimeout | UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::ClientBody(_) => StatusCode::BAD_REQUEST,
            UpstreamError::ClientStalled => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The JSON body the client gets: short and free of internal detail.
    pub fn body(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => r#"{"error":"no route","status":404}"#,
            ProxyError::NoBackend => r#"{"error":"no backend available","status":503}"#,
            ProxyError::Upstream(UpstreamError::ConnectTimeout | UpstreamError::Timeout) => {
                r#"{"error":"backend timed out","status":504}"#
            }
            ProxyError::Upstream(UpstreamError::ClientBody(_)) => {
                r#"{"error":"bad request body","status":400}"#
            }
            ProxyError::Upstream(UpstreamError::ClientStalled) => {
                r#"{"error":"request body timed out","status":408}"#
            }
            ProxyError::Upstream(_) => r#"{"error":"backend failed","status":502}"#,
            ProxyError::HeadTooLarge => {
                r#"{"error":"request header fields too large","status":431}"#
            }
            ProxyError::MethodNotAllowed => r#"{"error":"method not allowed","status":405}"#,
            ProxyError::BadRequest(_) => r#"{"error":"bad request","status":400}"#,
            ProxyError::NotImplemented(_) => r#"{"error":"not implemented","status":501}"#,
            ProxyError::RateLimited { .. } => r#"{"error":"rate limited","status":429}"#,
        }
    }

    /// The `error` field of [`Self::body`], for answers that are not JSON
    /// (a gRPC call's `grpc-message`).
    pub fn summary(&self) -> &'static str {
        self.body()
            .strip_prefix(r#"{"error":""#)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("proxy error")
    }

    /// True when the client connection should close after this answer: the
    /// request was malformed or ambiguous, so what follows it on the
    /// connection cannot be trusted either.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::NotImplemented(_)
                | ProxyError::HeadTooLarge
                | ProxyError::MethodNotAllowed
                | ProxyError::Upstream(UpstreamError::ClientBody(_) | UpstreamError::ClientStalled)
        )
    }

    /// Label for `isame_lb_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::NoBackend => "no_backend",
            ProxyError::Upstream(UpstreamError::ConnectTimeout | UpstreamError::Timeout) => {
                "backend_timeout"
            }
            ProxyError::Upstream(UpstreamError::ClientBody(_) | UpstreamError::ClientStalled)
            | ProxyError::HeadTooLarge
            | ProxyError::MethodNotAllowed
            | ProxyError::BadRequest(_)
            | ProxyError::NotImplemented(_) => "bad_request",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::Upstream(_) => "backend_error",
        }
    }
}

/// Every value of [`ProxyError::kind`] (the `kind` label of
/// `isame_lb_errors_total`).
pub const KINDS: [&str; 6] = [
    "no_route",
    "no_backend",
    "backend_timeout",
    "bad_request",
    "rate_limited",
    "backend_error",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_with_matching_status() {
        let all = [
            ProxyError::NoRoute,
            ProxyError::NoBackend,
            ProxyError::Upstream(UpstreamError::Connect(std::io::Error::other("refused"))),
            ProxyError::Upstream(UpstreamError::ConnectTimeout),
            ProxyError::Upstream(UpstreamError::Timeout),
            ProxyError::Upstream(UpstreamError::Protocol("refused".into())),
            ProxyError::HeadTooLarge,
            ProxyError::MethodNotAllowed,
            ProxyError::BadRequest("two hosts"),
            ProxyError::NotImplemented("gzip"),
            ProxyError::Upstream(UpstreamError::ClientStalled),
            ProxyError::RateLimited {
                limit: 1,
                retry_after: std::time::Duration::from_secs(1),
            },
        ];
        for e in all {
            assert!(KINDS.contains(&e.kind()), "{} is listed", e.kind());
            let v: serde_json::Value = serde_json::from_str(e.body()).expect("json");
            assert_eq!(v["status"], e.status().as_u16(), "{e}");
            assert!(!e.body().contains("refused"), "no internal detail leaks");
            assert_eq!(v["error"], e.summary(), "{e}");
        }
    }
}
