//! Test support for Isame: real HTTP backends on port 0 whose behaviour a test
//! can steer, and small HTTP clients for talking to a proxy over real sockets.

pub mod backend;
pub mod blackhole;
pub mod client;
pub mod dns;
pub mod grpc;
pub mod otlp;
pub mod postgres;
pub mod raw;
pub mod tls;

pub use backend::{Backend, Mode};
pub use blackhole::Blackhole;
pub use client::{Client, Reply};
pub use dns::{DnsMode, DnsServer};
pub use grpc::GrpcBackend;
pub use raw::RawBackend;
