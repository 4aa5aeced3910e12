//! The Isame data plane (`isame-lb`): an HTTP/1.1 and HTTP/2 load balancer.
//!
//! A request passes the modules in this order: [`listener`] accepts it and
//! [`conn_timeouts`] guards the connection; [`handler`] routes it
//! ([`route`]), plans its forwarding headers ([`forwarding`],
//! [`client_ip`]), runs the route's [`middleware`], picks a backend
//! ([`balancer`]), forwards it over a pooled connection ([`upstream`],
//! [`pool`]) and streams the response back ([`body`]); [`finish`] records
//! it ([`metrics`]) when it ends. [`snapshot`] holds the compiled config
//! all of them read; [`reload`] swaps it; [`admin`] reports on it;
//! [`server`] runs it all.
#![forbid(unsafe_code)]

pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod affinity;
pub(crate) mod backend;
pub(crate) mod balancer;
pub(crate) mod body;
pub(crate) mod breaker;
pub mod cli;
pub(crate) mod client_ip;
pub(crate) mod clock;
pub(crate) mod conn_timeouts;
pub(crate) mod connection;
pub(crate) mod dispatch;
pub(crate) mod dns;
pub(crate) mod error;
pub(crate) mod finish;
pub(crate) mod forwarding;
pub(crate) mod grpc;
pub(crate) mod handler;
pub(crate) mod health;
pub(crate) mod host;
pub(crate) mod listener;
pub(crate) mod metrics;
pub(crate) mod middleware;
pub(crate) mod mirror;
pub(crate) mod observe;
pub(crate) mod outlier;
pub(crate) mod pool;
pub(crate) mod proxy_protocol;
pub(crate) mod ramp;
pub(crate) mod ratelimit;
pub(crate) mod reload;
pub(crate) mod report;
pub(crate) mod retry;
pub(crate) mod rewind;
pub(crate) mod ring;
pub(crate) mod route;
pub(crate) mod series;
pub mod server;
pub(crate) mod snapshot;
pub mod subscription;
pub(crate) mod tls;
pub(crate) mod traffic;
pub(crate) mod tunnel;
pub(crate) mod upgrade;
pub(crate) mod upstream;

pub use reload::{load_file, ReloadError};

/// Checks a config as a reload would (it compiles: regular expressions,
/// certificates, backends), without serving it.
pub fn check(config: isame_proto::Config) -> Result<(), ReloadError> {
    let metrics = metrics::Metrics::new()
        .map_err(|e| ReloadError::Invalid(isame_proto::ConfigErrors::one("", e.to_string())))?;
    snapshot::Snapshot::compile(config, None, 1, &metrics, &dns::Dns::default())?;
    Ok(())
}

/// Where access-log lines go and what requests record: `access_log` turns
/// the access log on, `tracing` request spans.
pub fn configure_logs(
    format: isame_telemetry::LogFormat,
    writer: isame_telemetry::LineWriter,
    access_log: bool,
    tracing: bool,
) {
    access_log::install(format, writer);
    observe::configure(access_log, tracing);
}
