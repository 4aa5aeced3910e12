//! A backend as the request path sees it: where to connect, its weight, and
//! the state that outlives a config reload.

use crate::breaker::Breaker;
use crate::health::HealthState;
use http::uri::Authority;
use prometheus::IntGauge;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering::Relaxed};
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
    /// What passive outlier detection found.
    pub outlier: crate::outlier::OutlierState,
    /// When the backend joined its upstream or became healthy again
    /// (clock nanoseconds; 0: with the upstream from its start), where
    /// slow start ramps from (see [`crate::ramp`]).
    pub ramp_from: std::sync::atomic::AtomicU64,
    /// Set once the backend left the config (see [`crate::series`]).
    retired: AtomicBool,
    /// When the backend left the rotation (removed or set to drain), the
    /// time its requests in flight and tunnels are cut (clock nanoseconds;
    /// 0: it is in rotation).
    pub cut_at: std::sync::atomic::AtomicU64,
    /// Wakes the tunnels of the backend when `cut_at` changes.
    pub cut_changed: tokio::sync::Notify,
    /// What ALPN chose at the last connection to a [`Wire::Auto`] backend.
    negotiated: AtomicU8,
}

/// What ALPN chose for a [`Wire::Auto`] backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// No connection told yet (or the last one failed).
    Unknown,
    /// HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
}

impl BackendState {
    /// Fresh state with a new id.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            uid: NEXT_UID.fetch_add(1, Relaxed),
            in_flight: AtomicUsize::new(0),
            health: HealthState::default(),
            breaker: Breaker::default(),
            outlier: crate::outlier::OutlierState::default(),
            ramp_from: std::sync::atomic::AtomicU64::new(0),
            retired: AtomicBool::new(false),
            cut_at: std::sync::atomic::AtomicU64::new(0),
            cut_changed: tokio::sync::Notify::new(),
            negotiated: AtomicU8::new(0),
        })
    }

    /// Cuts the backend's requests in flight and tunnels at `at`, unless an
    /// earlier cut is already set.
    pub fn cut_from(&self, at: u64) {
        let at = at.max(1);
        if self.cut_at.load(Relaxed) == 0 {
            self.cut_at.store(at, Relaxed);
            self.cut_changed.notify_waiters();
        }
    }

    /// The backend is in rotation again: nothing is cut.
    pub fn uncut(&self) {
        if self.cut_at.swap(0, Relaxed) != 0 {
            self.cut_changed.notify_waiters();
        }
    }

    /// True when the backend's requests and tunnels are due to be cut at `now`.
    pub fn cut_due(&self, now: u64) -> bool {
        let at = self.cut_at.load(Relaxed);
        at != 0 && now >= at
    }

    /// What ALPN chose last.
    pub fn negotiated(&self) -> Negotiated {
        match self.negotiated.load(Relaxed) {
            1 => Negotiated::Http1,
            2 => Negotiated::Http2,
            _ => Negotiated::Unknown,
        }
    }

    /// Records what ALPN chose (or `Unknown` after a failed connection).
    pub fn set_negotiated(&self, n: Negotiated) {
        let v = match n {
            Negotiated::Unknown => 0,
            Negotiated::Http1 => 1,
            Negotiated::Http2 => 2,
        };
        self.negotiated.store(v, Relaxed);
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
    /// `h2c://`: HTTP/2 with prior knowledge, whatever the upstream says.
    pub h2c: bool,
    /// `host:port` for logs.
    pub authority: Authority,
    /// The socket address when the host is an IP literal (no DNS needed).
    pub addr: Option<SocketAddr>,
}

/// The HTTP version a backend is spoken to in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge without TLS, ALPN `h2` with it).
    Http2,
    /// TLS with ALPN offering both; the backend chooses.
    Auto,
}

impl Wire {
    /// How `target` is spoken to in an upstream with `protocol`.
    pub fn of(target: &Target, protocol: isame_proto::config::UpstreamProtocol) -> Self {
        use isame_proto::config::UpstreamProtocol as P;
        if target.h2c {
            return Wire::Http2;
        }
        match (protocol, target.tls) {
            (P::Http1, _) | (P::Auto, false) => Wire::Http1,
            (P::Http2, _) => Wire::Http2,
            (P::Auto, true) => Wire::Auto,
        }
    }
}

/// One backend of a compiled upstream: a backend of the config, or one
/// address of a backend given by host name (an endpoint).
#[derive(Debug)]
pub struct Backend {
    /// The URL as configured, or for an endpoint `scheme://address:port`
    /// (the `backend` metric label, and what places it on a hash ring).
    pub url: String,
    /// For an endpoint, the configured URL whose name resolved to it.
    pub source: Option<Arc<str>>,
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
    /// `isame_lb_outlier_ejected{upstream,backend}`.
    pub ejected_gauge: IntGauge,
    /// How to open TLS, for an `https://` backend.
    pub tls: Option<crate::upstream::TlsTarget>,
    /// The HTTP version it is spoken to in.
    pub wire: Wire,
}

impl Backend {
    /// What places the backend on a consistent hash ring: its URL as
    /// written, without a trailing `/` (so that every data plane, and every
    /// reload, places it alike).
    pub fn ring_id(&self) -> &str {
        self.url.strip_suffix('/').unwrap_or(&self.url)
    }
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
        let (tls, h2c) = match url.scheme() {
            "http" => (false, false),
            "https" => (true, false),
            "h2c" => (false, true),
            _ => return Err(bad()),
        };
        let port = isame_proto::config::backend_port(&url).ok_or_else(bad)?;
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
            h2c,
            authority,
            addr,
        })
    }

    /// This host-name target at one of the name's addresses: connections go
    /// to `ip`, while TLS still names the host.
    pub fn at(&self, ip: IpAddr) -> Target {
        Target {
            addr: Some(SocketAddr::new(ip, self.port)),
            ..self.clone()
        }
    }
}

#[cfg(test)]
impl Backend {
    /// A backend at `url` with fresh state and unregistered gauges.
    pub(crate) fn for_test(url: &str, weight: u32) -> Arc<Backend> {
        Arc::new(Backend {
            target: Target::parse(url).expect("target"),
            url: url.to_owned(),
            source: None,
            weight,
            drain: false,
            state: BackendState::new(),
            healthy_gauge: IntGauge::new("h", "h").expect("gauge"),
            circuit_gauge: IntGauge::new("c", "c").expect("gauge"),
            ejected_gauge: IntGauge::new("e", "e").expect("gauge"),
            tls: None,
            wire: Wire::Http1,
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
        let t = Target::parse("h2c://127.0.0.1:50051").expect("target");
        assert!(t.h2c && !t.tls);
        assert_eq!(t.addr, Some("127.0.0.1:50051".parse().expect("addr")));
        let t = Target::parse("h2c://grpc.internal").expect("target");
        assert_eq!(t.authority.as_str(), "grpc.internal:80");
        let t = Target::parse("h2c://[::1]:9000").expect("target");
        assert_eq!(t.authority.as_str(), "[::1]:9000");
    }
}
