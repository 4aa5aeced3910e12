//! The protocols of the config: what backends are spoken to in
//! (`upstreams[].protocol`), what a health probe asks (`health.protocol`)
//! and the PROXY protocol version sent to backends.

use isame_config_derive::Config;
use serde::Serialize;

/// A PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Config)]
#[serde(rename_all = "snake_case")]
#[config(what = "PROXY protocol version")]
pub enum ProxyVersion {
    /// The text header (`PROXY TCP4 …`).
    #[config(default)]
    V1,
    /// The binary header.
    V2,
}

/// The HTTP version an upstream's backends are spoken to in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Config)]
#[serde(rename_all = "snake_case")]
#[config(what = "backend protocol")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (`h2c://` backends speak HTTP/2 whatever this says).
    #[config(default)]
    Http1,
    /// With prior knowledge to `http://` backends, negotiated (ALPN `h2`,
    /// required) with `https://` ones.
    Http2,
    /// For `https://` backends ALPN decides between HTTP/2 and HTTP/1.1 at
    /// the first connection (again after a connection fails); `http://`
    /// backends speak HTTP/1.1.
    Auto,
}

impl UpstreamProtocol {
    pub(super) fn is_default(&self) -> bool {
        *self == Self::Http1
    }
}

/// What a health probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Config)]
#[serde(rename_all = "snake_case")]
#[config(what = "health check protocol")]
pub enum HealthProtocol {
    /// `GET path`; the status decides.
    #[config(default)]
    Http,
    /// The standard gRPC health service (`grpc.health.v1.Health/Check`
    /// for `grpc_service`); `SERVING` is healthy. Needs HTTP/2 backends.
    Grpc,
}

impl HealthProtocol {
    pub(super) fn is_default(&self) -> bool {
        super::inherit::skips(*self == Self::Http)
    }
}
