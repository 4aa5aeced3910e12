//! Errors of the exchange with a backend, classified by how far the request
//! got: the retry rules depend on whether the backend may have seen it.

use std::io;

/// What went wrong talking to a backend.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be opened.
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    /// Opening the connection took longer than `connect_timeout`.
    #[error("connect timed out")]
    ConnectTimeout,
    /// Writing the request failed. `sent` tells whether any byte went out.
    #[error("sending the request failed: {source}")]
    Send {
        /// Whether any byte of the request was written.
        sent: bool,
        /// The I/O error.
        source: io::Error,
    },
    /// The connection closed or failed before a complete response head.
    /// `reused` tells whether it was a pooled keep-alive connection.
    #[error("connection closed before the response ({source})")]
    NoResponse {
        /// Whether the connection had served earlier requests.
        reused: bool,
        /// The I/O error, or `UnexpectedEof`.
        source: io::Error,
    },
    /// No response head within `response_timeout`, or the body stalled that long.
    #[error("backend response timed out")]
    Timeout,
    /// The backend sent something that is not valid HTTP/1.1.
    #[error("invalid response from backend: {0}")]
    Protocol(String),
    /// The connection failed while the response body was streaming.
    #[error("response body interrupted: {0}")]
    Body(#[source] io::Error),
    /// The client's request body failed (the client went away or sent garbage).
    #[error("client request body failed: {0}")]
    ClientBody(#[source] hyper::Error),
    /// The client stopped sending its request body for longer than `read_timeout`.
    #[error("client stopped sending the request body")]
    ClientStalled,
    /// A gRPC call reached a backend that speaks HTTP/1.1 only; it was not sent.
    #[error("gRPC needs an HTTP/2 backend; this one speaks HTTP/1.1")]
    NeedsHttp2,
    /// The backend left the rotation and its `drain_timeout` passed while
    /// the response was still streaming.
    #[error("the backend was drained and its drain_timeout passed")]
    Drained,
    /// The connection failed after part of the response had arrived.
    #[error("connection failed in the middle of the response: {0}")]
    Incomplete(#[source] io::Error),
}

impl UpstreamError {
    /// True when the client, not the backend, made the exchange fail: such
    /// failures say nothing about the backend's health.
    pub fn client_fault(&self) -> bool {
        matches!(
            self,
            UpstreamError::ClientBody(_) | UpstreamError::ClientStalled
        )
    }

    /// True when the backend cannot have seen any of the request.
    pub fn request_not_sent(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_)
                | UpstreamError::ConnectTimeout
                | UpstreamError::Send { sent: false, .. }
        )
    }
}
