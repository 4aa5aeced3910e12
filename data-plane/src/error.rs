//! The proxy's own errors: where each came from, what status and short JSON
//! body the client gets, and the metric label it is counted under. Details go
//! to the log, never to the client.

use http::StatusCode;
use std::io;

/// Why the proxy answered a request itself instead of relaying a backend's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Routes are configured and none matched.
    #[error("no route matches the request")]
    NoRoute,
    /// The upstream has no backend that may take the request.
    #[error("no backend available")]
    NoBackend,
    /// Opening a connection to the backend failed.
    #[error("connecting to backend failed: {0}")]
    Connect(#[source] io::Error),
    /// Opening a connection to the backend took longer than `connect_timeout`.
    #[error("connecting to backend timed out")]
    ConnectTimeout,
    /// The HTTP exchange with the backend failed.
    #[error("backend request failed: {0}")]
    Upstream(#[source] hyper::Error),
    /// The backend's response headers took longer than `response_timeout`.
    #[error("backend response timed out")]
    ResponseTimeout,
    /// The request head exceeds `server.max_header_bytes`.
    #[error("request head exceeds max_header_bytes")]
    HeadTooLarge,
    /// A method the proxy does not relay (CONNECT).
    #[error("method not supported by the proxy")]
    MethodNotAllowed,
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout | ProxyError::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The JSON body the client gets: short and free of internal detail.
    pub fn body(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => r#"{"error":"no route","status":404}"#,
            ProxyError::NoBackend => r#"{"error":"no backend available","status":503}"#,
            ProxyError::Connect(_) | ProxyError::Upstream(_) => {
                r#"{"error":"backend failed","status":502}"#
            }
            ProxyError::ConnectTimeout | ProxyError::ResponseTimeout => {
                r#"{"error":"backend timed out","status":504}"#
            }
            ProxyError::HeadTooLarge => {
                r#"{"error":"request header fields too large","status":431}"#
            }
            ProxyError::MethodNotAllowed => r#"{"error":"method not allowed","status":405}"#,
        }
    }

    /// Label for `isame_lb_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::NoBackend => "no_backend",
            ProxyError::Connect(_) | ProxyError::Upstream(_) => "backend_error",
            ProxyError::ConnectTimeout | ProxyError::ResponseTimeout => "backend_timeout",
            ProxyError::HeadTooLarge | ProxyError::MethodNotAllowed => "bad_request",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_with_matching_status() {
        let all = [
            ProxyError::NoRoute,
            ProxyError::NoBackend,
            ProxyError::Connect(io::Error::other("refused")),
            ProxyError::ConnectTimeout,
            ProxyError::ResponseTimeout,
            ProxyError::HeadTooLarge,
            ProxyError::MethodNotAllowed,
        ];
        for e in all {
            let v: serde_json::Value = serde_json::from_str(e.body()).expect("json");
            assert_eq!(v["status"], e.status().as_u16(), "{e}");
            assert!(!e.body().contains("refused"), "no internal detail leaks");
        }
    }
}
