//! The control plane's Prometheus metrics (`isame_cp_*`, names in CONTRACT.md).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Every metric the control plane exports.
pub struct Metrics {
    registry: Registry,
    /// `isame_cp_config_version`: the newest committed version.
    pub config_version: IntGauge,
    /// `isame_cp_connected_nodes`: data planes with an open stream.
    pub connected_nodes: IntGauge,
    /// `isame_cp_push_seconds`: from a commit to a node's ACK.
    pub push_seconds: Histogram,
    /// `isame_cp_api_requests_total{method,route,status}`.
    pub api_requests: IntCounterVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let config_version = IntGauge::new(
            "isame_cp_config_version",
            "Newest committed config version.",
        )?;
        let connected_nodes = IntGauge::new(
            "isame_cp_connected_nodes",
            "Data planes with an open config stream.",
        )?;
        let push_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "isame_cp_push_seconds",
                "Time from a config commit to a data plane's ACK.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let api_requests = IntCounterVec::new(
            Opts::new(
                "isame_cp_api_requests_total",
                "REST API requests by method, route template and status.",
            ),
            &["method", "route", "status"],
        )?;
        registry.register(Box::new(config_version.clone()))?;
        registry.register(Box::new(connected_nodes.clone()))?;
        registry.register(Box::new(push_seconds.clone()))?;
        registry.register(Box::new(api_requests.clone()))?;
        Ok(Self {
            registry,
            config_version,
            connected_nodes,
            push_seconds,
            api_requests,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
