//! A backend as the request path sees it: where to connect, its weight, and
//! the state that outlives a config reload.

use crate::breaker::Breaker;
use crate::health::HealthState;
use http::uri::Authority;
use prometheus::IntGauge;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Process-wide source of backend ids; ids key per-thread caches, so they are
/// never reused, even across proxies running in one process.
static NEXT_UID: AtomicU32 = AtomicU32::new(1);

/// State of one backend that survives reloads while the backend is unchanged.
#[derive(Debug)]
pub struct BackendState {
    /// Unique id of this backend (keys the connection pool and metric caches).
    pub uid: u32,
    /// Requests sent to this backend whose responses have not finished.
    pub in_flight: AtomicUsize,
    /// What active health checks found.
    pub health: HealthState,
    /// The circuit breaker.
    pub breaker: Breaker,
    /// Set once the backend left the config (see [`crate::series`]).
    retired: AtomicBool,
}

impl BackendState {
    /// Fresh state with a new id.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            uid: NEXT_UID.fetch_add(1, Relaxed),
            in_flight: AtomicUsize::new(0),
            health: HealthState::default(),
            breaker: Breaker::default(),
            retired: AtomicBool::new(false),
        })
    }

    /// Marks the backend as gone from the config.
    pub fn retire(&self) {
        self.retired.store(true, Relaxed);
    }

    /// True once the backend left the config.
    pub fn retired(&self) -> bool {
        self.retired.load(Relaxed)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }
}

/// Where and how to reach a backend.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the backend speaks TLS (`https://`).
    pub tls: bool,
    /// `host:port` for logs.
    pub authority: Authority,
    /// The socket address when the host is an IP literal (no DNS needed).
    pub addr: Option<SocketAddr>,
}

/// One backend of a compiled upstream.
#[derive(Debug)]
pub struct Backend {
    /// The URL as configured (the `backend` metric label).
    pub url: String,
    /// Where to connect.
    pub target: Target,
    /// Weight for `weighted_round_robin`.
    pub weight: u32,
    /// Draining: no new requests; those in flight finish.
    pub drain: bool,
    /// State carried across reloads.
    pub state: Arc<BackendState>,
    /// `isame_lb_upstream_healthy{upstream,backend}`.
    pub healthy_gauge: IntGauge,
    /// `isame_lb_circuit_open{upstream,backend}`.
    pub circuit_gauge: IntGauge,
    /// How to open TLS, for an `https://` backend.
    pub tls: Option<crate::upstream::TlsTarget>,
}

/// Why a backend URL could not be compiled (validation normally catches these first).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not a URL.
    #[error("invalid backend URL {0:?}")]
    Invalid(String),
}

impl Target {
    /// Parses `scheme://host[:port]`.
    pub fn parse(raw: &str) -> Result<Self, TargetError> {
        let bad = || TargetError::Invalid(raw.to_owned());
        let url = url::Url::parse(raw).map_err(|_| bad())?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(bad()),
        };
        let port = url.port_or_known_default().ok_or_else(bad)?;
        let host = match url.host().ok_or_else(bad)? {
            url::Host::Domain(d) => d.to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let addr = host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        let authority = match addr {
            Some(SocketAddr::V6(a)) => format!("[{}]:{port}", a.ip()),
            _ => format!("{host}:{port}"),
        }
        .parse()
        .map_err(|_| bad())?;
        Ok(Self {
            host,
            port,
            tls,
            authority,
            addr,
        })
    }
}

#[cfg(test)]
impl Backend {
    /// A backend at `url` with fresh state and unregistered gauges.
    pub(crate) fn for_test(url: &str, weight: u32) -> Arc<Backend> {
        Arc::new(Backend {
            target: Target::parse(url).expect("target"),
            url: url.to_owned(),
            weight,
            drain: false,
            state: BackendState::new(),
            healthy_gauge: IntGauge::new("h", "h").expect("gauge"),
            circuit_gauge: IntGauge::new("c", "c").expect("gauge"),
            tls: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("http://127.0.0.1:3000").expect("target");
        assert_eq!(t.addr, Some("127.0.0.1:3000".parse().expect("addr")));
        assert!(!t.tls);
        let t = Target::parse("https://api.internal").expect("target");
        assert_eq!((t.port, t.tls, t.addr), (443, true, None));
        assert_eq!(t.authority.as_str(), "api.internal:443");
        let t = Target::parse("http://[::1]:8080/").expect("target");
        assert_eq!(t.authority.as_str(), "[::1]:8080");
        assert!(Target::parse("ftp://x").is_err());
    }
}
