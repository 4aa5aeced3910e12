//! Isame's shared contract: the protobuf messages that travel between the
//! control plane and data planes, and the declarative config model (YAML/JSON
//! schema, validation, conversion to and from protobuf). No I/O lives here.
#![forbid(unsafe_code)]

#[cfg(feature = "certs")]
pub mod certs;
pub mod config;
pub mod convert;

/// Generated protobuf and gRPC code for `isame.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("isame.v1");
}

pub use config::{Config, ConfigError, ConfigErrors};
