//! Prometheus metrics of the data plane, named as in CONTRACT.md.
//!
//! The request path never formats label values or takes a lock: per-upstream
//! handles are resolved when a snapshot is compiled, and per-backend
//! `{method,status}` counters are cached per worker thread, so recording a
//! request costs a hash lookup and a few atomic adds.

use crate::backend::Backend;
use crate::series::Series;
use crate::traffic::Traffic;
use http::{Method, StatusCode};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::sync::Arc;

/// Latency buckets in seconds, from 250µs to 30s.
const BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

/// The `direction` labels of `isame_lb_tunnel_bytes_total`: bytes the
/// client sent to the backend, and the backend's to the client.
pub const TUNNEL_DIRECTIONS: [&str; 2] = ["to_backend", "to_client"];

/// Every data-plane metric, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `isame_lb_requests_total{upstream,backend,method,status}`.
    pub requests: IntCounterVec,
    /// `isame_lb_request_duration_seconds{upstream}`.
    pub duration: HistogramVec,
    /// `isame_lb_upstream_healthy{upstream,backend}`.
    pub upstream_healthy: IntGaugeVec,
    /// `isame_lb_active_connections`.
    pub active_connections: IntGauge,
    /// `isame_lb_parked_connections`: idle HTTP/1.1 connections holding no
    /// buffers (see [`crate::connection`]).
    pub parked_connections: IntGauge,
    /// `isame_lb_config_version`.
    pub config_version: IntGauge,
    /// `isame_lb_config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    /// `isame_lb_retries_total{upstream}`.
    pub retries: IntCounterVec,
    /// `isame_lb_rate_limited_total{upstream}`.
    pub rate_limited: IntCounterVec,
    /// `isame_lb_circuit_open{upstream,backend}`.
    pub circuit_open: IntGaugeVec,
    /// `isame_lb_errors_total{upstream,kind}`: requests answered by the proxy itself.
    pub errors: IntCounterVec,
    /// `isame_lb_tunnels_active{upstream}`: upgraded connections (WebSockets)
    /// being relayed.
    pub tunnels_active: IntGaugeVec,
    /// `isame_lb_tunnel_bytes_total{upstream,direction}`.
    pub tunnel_bytes: IntCounterVec,
    /// `isame_lb_proxy_protocol_refused_total{reason}`: client connections
    /// closed over their PROXY protocol header (or its absence).
    pub proxy_protocol_refused: IntCounterVec,
    /// `isame_lb_grpc_responses_total{upstream,grpc_status}`.
    pub grpc_responses: IntCounterVec,
    /// `isame_lb_mirror_requests_total{route,result}`.
    pub mirror_requests: IntCounterVec,
    /// `isame_lb_dns_lookups_total{name,result}`.
    pub dns_lookups: IntCounterVec,
    /// `isame_lb_dns_addresses{name}`.
    pub dns_addresses: IntGaugeVec,
    /// `isame_lb_outlier_ejections_total{upstream,backend,reason}`.
    pub outlier_ejections: IntCounterVec,
    /// `isame_lb_outlier_ejected{upstream,backend}`: 1 while a backend is
    /// ejected (back to 0 within a second of its return).
    pub outlier_ejected: IntGaugeVec,
    /// Per-upstream traffic for the control plane's reports.
    pub traffic: Arc<Traffic>,
    /// Series of backends and upstreams that left the config.
    pub series: Arc<Series>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "isame_lb_requests_total",
                "Requests proxied, by upstream, backend, method and status.",
            ),
            &["upstream", "backend", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "isame_lb_request_duration_seconds",
                "Time from receiving a request to the end of its response.",
            )
            .buckets(BUCKETS.to_vec()),
            &["upstream"],
        )?;
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "isame_lb_upstream_healthy",
                "1 when a backend is considered healthy, 0 when not.",
            ),
            &["upstream", "backend"],
        )?;
        let active_connections = IntGauge::new(
            "isame_lb_active_connections",
            "Client connections currently open.",
        )?;
        let parked_connections = IntGauge::new(
            "isame_lb_parked_connections",
            "Idle HTTP/1.1 client connections parked between requests (holding no buffers).",
        )?;
        let config_version = IntGauge::new(
            "isame_lb_config_version",
            "Version of the config being served (standalone: reload generation).",
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "isame_lb_config_reloads_total",
                "Config reloads, by result.",
            ),
            &["result"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new("isame_lb_retries_total", "Requests retried on another try."),
            &["upstream"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new("isame_lb_rate_limited_total", "Requests refused with 429."),
            &["upstream"],
        )?;
        let circuit_open = IntGaugeVec::new(
            Opts::new(
                "isame_lb_circuit_open",
                "1 while a backend's circuit breaker is open.",
            ),
            &["upstream", "backend"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "isame_lb_errors_total",
                "Requests the proxy answered itself, by kind (no_route, no_backend, backend_error, backend_timeout).",
            ),
            &["upstream", "kind"],
        )?;
        let tunnels_active = IntGaugeVec::new(
            Opts::new(
                "isame_lb_tunnels_active",
                "Upgraded connections (WebSockets) being relayed, by upstream.",
            ),
            &["upstream"],
        )?;
        let tunnel_bytes = IntCounterVec::new(
            Opts::new(
                "isame_lb_tunnel_bytes_total",
                "Bytes relayed over upgraded connections, by upstream and direction (to_backend, to_client).",
            ),
            &["upstream", "direction"],
        )?;
        let proxy_protocol_refused = IntCounterVec::new(
            Opts::new(
                "isame_lb_proxy_protocol_refused_total",
                "Client connections closed over their PROXY protocol header, by reason (untrusted, missing, malformed).",
            ),
            &["reason"],
        )?;
        let grpc_responses = IntCounterVec::new(
            Opts::new(
                "isame_lb_grpc_responses_total",
                "gRPC calls answered, by upstream and grpc-status (0-16, other, or none when the call ended without one).",
            ),
            &["upstream", "grpc_status"],
        )?;
        registry.register(Box::new(grpc_responses.clone()))?;
        let mirror_requests = IntCounterVec::new(
            Opts::new(
                "isame_lb_mirror_requests_total",
                "Requests a route's mirror looked at, by result: answered or failed by the shadow upstream, dropped (max_in_flight reached) or skipped (body too large or of unknown length).",
            ),
            &["route", "result"],
        )?;
        registry.register(Box::new(mirror_requests.clone()))?;
        let dns_lookups = IntCounterVec::new(
            Opts::new(
                "isame_lb_dns_lookups_total",
                "Lookups of backend host names, by name and result (ok, failed); a failed lookup keeps the last good addresses.",
            ),
            &["name", "result"],
        )?;
        let dns_addresses = IntGaugeVec::new(
            Opts::new(
                "isame_lb_dns_addresses",
                "Addresses (endpoints) a backend host name resolved to at its last good lookup.",
            ),
            &["name"],
        )?;
        registry.register(Box::new(dns_lookups.clone()))?;
        registry.register(Box::new(dns_addresses.clone()))?;
        let outlier_ejections = IntCounterVec::new(
            Opts::new(
                "isame_lb_outlier_ejections_total",
                "Backends ejected by outlier detection, by reason (consecutive_5xx, consecutive_gateway_errors, success_rate).",
            ),
            &["upstream", "backend", "reason"],
        )?;
        let outlier_ejected = IntGaugeVec::new(
            Opts::new(
                "isame_lb_outlier_ejected",
                "1 while outlier detection keeps a backend out of rotation.",
            ),
            &["upstream", "backend"],
        )?;
        registry.register(Box::new(outlier_ejections.clone()))?;
        registry.register(Box::new(outlier_ejected.clone()))?;
        registry.register(Box::new(proxy_protocol_refused.clone()))?;
        for reason in crate::proxy_protocol::REFUSED_REASONS {
            proxy_protocol_refused.with_label_values(&[reason]);
        }
        registry.register(Box::new(tunnels_active.clone()))?;
        registry.register(Box::new(tunnel_bytes.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_healthy.clone()))?;
        registry.register(Box::new(active_connections.clone()))?;
        registry.register(Box::new(parked_connections.clone()))?;
        registry.register(Box::new(config_version.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(circuit_open.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        for result in ["success", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        Ok(Self {
            registry,
            requests,
            duration,
            upstream_healthy,
            active_connections,
            parked_connections,
            config_version,
            config_reloads,
            retries,
            rate_limited,
            circuit_open,
            errors,
            tunnels_active,
            tunnel_bytes,
            proxy_protocol_refused,
            grpc_responses,
            mirror_requests,
            dns_lookups,
            dns_addresses,
            outlier_ejections,
            outlier_ejected,
            traffic: Arc::default(),
            series: Arc::default(),
        })
    }

    /// The Prometheus text exposition of every metric. Counts as a scrape:
    /// series of what left the config before it go on the next one.
    pub fn render(&self) -> Vec<u8> {
        self.series.scraped();
        let mut out = Vec::with_capacity(8192);
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail on I/O; a failure would mean a broken metric.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// The duration histogram of one upstream.
    pub fn upstream_duration(&self, upstream: &str) -> Histogram {
        self.duration.with_label_values(&[upstream])
    }
}

/// Index of a method in the per-thread counter cache; uncommon methods share `OTHER`
/// so a client cannot create unbounded label values.
fn method_label(m: &Method) -> (u8, &'static str) {
    match *m {
        Method::GET => (0, "GET"),
        Method::POST => (1, "POST"),
        Method::PUT => (2, "PUT"),
        Method::DELETE => (3, "DELETE"),
        Method::HEAD => (4, "HEAD"),
        Method::OPTIONS => (5, "OPTIONS"),
        Method::PATCH => (6, "PATCH"),
        Method::CONNECT => (7, "CONNECT"),
        Method::TRACE => (8, "TRACE"),
        _ => (9, "OTHER"),
    }
}

thread_local! {
    static REQUEST_COUNTERS: RefCell<FxHashMap<u64, IntCounter>> = RefCell::default();
}

/// Counts one request of `backend` of `upstream`.
pub fn count_request(
    metrics: &Metrics,
    backend: &Backend,
    upstream: &str,
    method: &Method,
    status: StatusCode,
) {
    let (m, m_label) = method_label(method);
    let uid = backend.state.uid;
    let key = u64::from(uid) << 32 | u64::from(m) << 16 | u64::from(status.as_u16());
    REQUEST_COUNTERS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(c) = cache.get(&key) {
            c.inc();
            return;
        }
        if backend.state.retired() {
            // Left the config while this request ran: its series may be
            // gone already and must not come back.
            return;
        }
        let c =
            metrics
                .requests
                .with_label_values(&[upstream, &backend.url, m_label, status.as_str()]);
        metrics
            .series
            .note(uid, upstream, &backend.url, m_label, status.as_u16());
        c.inc();
        cache.insert(key, c);
    });
}

/// Drops this worker's cached counters of backends for which `live` is false.
pub fn sweep_cache(live: impl Fn(u32) -> bool) {
    REQUEST_COUNTERS.with(|cache| {
        cache.borrow_mut().retain(|key, _| live((key >> 32) as u32));
    });
}

/// Counters this worker has cached.
#[cfg(test)]
fn cached_counters() -> usize {
    REQUEST_COUNTERS.with(|cache| cache.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_contract_names() {
        let m = Metrics::new().expect("metrics");
        let a = Backend::for_test("http://a:1", 1);
        count_request(&m, &a, "web", &Method::GET, StatusCode::OK);
        count_request(&m, &a, "web", &Method::GET, StatusCode::OK);
        count_request(
            &m,
            &a,
            "web",
            &Method::from_bytes(b"BREW").expect("method"),
            StatusCode::OK,
        );
        m.upstream_duration("web").observe(0.01);
        m.active_connections.set(3);
        m.upstream_healthy
            .with_label_values(&["web", "http://a:1"])
            .set(1);
        m.circuit_open
            .with_label_values(&["web", "http://a:1"])
            .set(0);
        m.retries.with_label_values(&["web"]);
        m.rate_limited.with_label_values(&["web"]);
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(text.contains(r#"isame_lb_requests_total{backend="http://a:1",method="GET",status="200",upstream="web"} 2"#), "{text}");
        assert!(text.contains(r#"method="OTHER""#), "{text}");
        for name in [
            "isame_lb_request_duration_seconds_bucket",
            "isame_lb_upstream_healthy",
            "isame_lb_active_connections 3",
            "isame_lb_config_version",
            "isame_lb_config_reloads_total{result=\"error\"} 0",
            "isame_lb_retries_total",
            "isame_lb_rate_limited_total",
            "isame_lb_circuit_open",
        ] {
            assert!(text.contains(name), "missing {name} in {text}");
        }
    }

    #[test]
    fn a_departed_backend_never_brings_its_series_back() {
        let m = Metrics::new().expect("metrics");
        let gone = Backend::for_test("http://gone:1", 1);
        gone.state.retire();
        count_request(&m, &gone, "web", &Method::GET, StatusCode::OK);
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(!text.contains("http://gone:1"), "{text}");
        assert_eq!(m.series.sizes().0, 0);
    }

    #[test]
    fn worker_caches_drop_departed_backends() {
        let m = Metrics::new().expect("metrics");
        let (a, b) = (
            Backend::for_test("http://a:1", 1),
            Backend::for_test("http://b:1", 1),
        );
        for s in [200, 404, 500] {
            let s = StatusCode::from_u16(s).expect("status");
            count_request(&m, &a, "web", &Method::GET, s);
            count_request(&m, &b, "web", &Method::GET, s);
        }
        assert_eq!(cached_counters(), 6);
        sweep_cache(|uid| uid == a.state.uid);
        assert_eq!(cached_counters(), 3);
    }
}
