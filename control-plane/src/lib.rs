//! The Isame control plane: a versioned config store with a REST API and an
//! admin web dashboard (and, with the distribution layer, gRPC streams to
//! data planes).
//!
//! [`app::ControlPlane::start`] runs everything on already chosen addresses;
//! `main.rs` only parses flags and waits for a signal.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod cert_store;
pub mod configs;
pub mod dashboard;
pub mod distribution;
pub mod fleet;
pub mod metrics;
pub mod replica;
pub mod rollout;
pub mod store;
pub mod tokens;
