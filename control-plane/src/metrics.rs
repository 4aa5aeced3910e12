//! The control plane's Prometheus metrics (`isame_cp_*`, names in CONTRACT.md).

use crate::fleet::Summary;
use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// `isame_cp_nacks_total`: versions refused by a data plane.
    pub nacks: IntCounter,
    /// `isame_cp_jobs_lease_held`: 1 on the replica that runs the jobs
    /// that must run once.
    pub lease_held: IntGauge,
    /// `isame_cp_upstream_requests_total{upstream}`: requests the fleet
    /// served, from the nodes' traffic reports.
    pub upstream_requests: IntCounterVec,
    /// `isame_cp_upstream_errors_total{upstream}`: 5xx answers the fleet gave.
    pub upstream_errors: IntCounterVec,
    /// `isame_cp_upstream_request_seconds_total{upstream}`: summed request
    /// durations (divided by requests: the fleet's mean latency).
    pub upstream_seconds: CounterVec,
    /// `isame_cp_rollouts_total{result}`: rollouts that ended, by how
    /// (`completed`, `rolled_back`, `aborted`, `promoted`, `superseded`).
    pub rollouts: IntCounterVec,
    /// `isame_cp_rollout_stage`: the stage the active rollout is in (1 for
    /// the first; 0 when none is active).
    pub rollout_stage: IntGauge,
    /// `isame_cp_rollout_nodes{side}`: nodes of the active rollout on the
    /// new version (`new`) and kept on the base (`base`).
    pub rollout_nodes: IntGaugeVec,
    /// `isame_cp_pushes_total{kind}`: configs sent to data planes, as a
    /// whole snapshot (`full`) or as the change from the last one (`delta`).
    pub pushes: IntCounterVec,
    /// `isame_cp_push_bytes_total{kind}`: their encoded size.
    pub push_bytes: IntCounterVec,
    /// `isame_cp_resyncs_total`: deltas a node could not apply and was
    /// sent the whole snapshot for instead.
    pub resyncs: IntCounter,
    /// Gauges set from the node ledger when metrics are read.
    fleet: FleetGauges,
    /// Held from setting the fleet gauges to rendering them, so that two
    /// scrapes at once never see them half set.
    scrape: std::sync::Mutex<()>,
}

/// The fleet as of the last scrape.
struct FleetGauges {
    /// `isame_cp_nodes{version}`: connected nodes by the version they run
    /// (`none` before their first ACK).
    by_version: IntGaugeVec,
    /// `isame_cp_nodes_behind`: connected nodes not on the newest version.
    behind: IntGauge,
    /// `isame_cp_nodes_refusing`: connected nodes that NACKed a version newer
    /// than the one they run.
    refusing: IntGauge,
    /// `isame_cp_backend_healthy_nodes{upstream,backend}`.
    healthy: IntGaugeVec,
    /// `isame_cp_backend_reporting_nodes{upstream,backend}`.
    reporting: IntGaugeVec,
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
        let nacks = IntCounter::new(
            "isame_cp_nacks_total",
            "Config versions refused by a data plane (NACKs received).",
        )?;
        let lease_held = IntGauge::new(
            "isame_cp_jobs_lease_held",
            "1 when this replica holds the lease of the jobs that run on one replica at a time.",
        )?;
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "isame_cp_upstream_requests_total",
                "Requests the fleet served per upstream, from the data planes' reports.",
            ),
            &["upstream"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "isame_cp_upstream_errors_total",
                "5xx answers the fleet gave per upstream, from the data planes' reports.",
            ),
            &["upstream"],
        )?;
        let upstream_seconds = CounterVec::new(
            Opts::new(
                "isame_cp_upstream_request_seconds_total",
                "Summed request durations per upstream across the fleet (divide by requests for the mean).",
            ),
            &["upstream"],
        )?;
        let fleet = FleetGauges {
            by_version: IntGaugeVec::new(
                Opts::new(
                    "isame_cp_nodes",
                    "Connected data planes by the config version they run.",
                ),
                &["version"],
            )?,
            behind: IntGauge::new(
                "isame_cp_nodes_behind",
                "Connected data planes not running the newest version.",
            )?,
            refusing: IntGauge::new(
                "isame_cp_nodes_refusing",
                "Connected data planes that refused a version newer than the one they run.",
            )?,
            healthy: IntGaugeVec::new(
                Opts::new(
                    "isame_cp_backend_healthy_nodes",
                    "Connected data planes that see the backend healthy.",
                ),
                &["upstream", "backend"],
            )?,
            reporting: IntGaugeVec::new(
                Opts::new(
                    "isame_cp_backend_reporting_nodes",
                    "Connected data planes that report the backend's health.",
                ),
                &["upstream", "backend"],
            )?,
        };
        let rollouts = IntCounterVec::new(
            Opts::new(
                "isame_cp_rollouts_total",
                "Staged rollouts that ended, by result.",
            ),
            &["result"],
        )?;
        let rollout_stage = IntGauge::new(
            "isame_cp_rollout_stage",
            "Stage of the active rollout (1 for the first; 0 when none is active).",
        )?;
        let rollout_nodes = IntGaugeVec::new(
            Opts::new(
                "isame_cp_rollout_nodes",
                "Nodes of the active rollout on the new version (new) and on the base (base).",
            ),
            &["side"],
        )?;
        let pushes = IntCounterVec::new(
            Opts::new(
                "isame_cp_pushes_total",
                "Configs sent to data planes, whole (full) or as the change from the last one sent (delta).",
            ),
            &["kind"],
        )?;
        let push_bytes = IntCounterVec::new(
            Opts::new(
                "isame_cp_push_bytes_total",
                "Encoded bytes of the configs sent to data planes, by kind (full, delta).",
            ),
            &["kind"],
        )?;
        let resyncs = IntCounter::new(
            "isame_cp_resyncs_total",
            "Deltas a data plane could not apply, answered with the whole snapshot.",
        )?;
        for kind in ["full", "delta"] {
            pushes.with_label_values(&[kind]);
            push_bytes.with_label_values(&[kind]);
        }
        registry.register(Box::new(pushes.clone()))?;
        registry.register(Box::new(push_bytes.clone()))?;
        registry.register(Box::new(resyncs.clone()))?;
        registry.register(Box::new(rollouts.clone()))?;
        registry.register(Box::new(rollout_stage.clone()))?;
        registry.register(Box::new(rollout_nodes.clone()))?;
        registry.register(Box::new(nacks.clone()))?;
        registry.register(Box::new(lease_held.clone()))?;
        registry.register(Box::new(upstream_requests.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(upstream_seconds.clone()))?;
        registry.register(Box::new(fleet.by_version.clone()))?;
        registry.register(Box::new(fleet.behind.clone()))?;
        registry.register(Box::new(fleet.refusing.clone()))?;
        registry.register(Box::new(fleet.healthy.clone()))?;
        registry.register(Box::new(fleet.reporting.clone()))?;
        Ok(Self {
            registry,
            config_version,
            connected_nodes,
            push_seconds,
            api_requests,
            nacks,
            lease_held,
            rollouts,
            rollout_stage,
            rollout_nodes,
            pushes,
            push_bytes,
            resyncs,
            upstream_requests,
            upstream_errors,
            upstream_seconds,
            fleet,
            scrape: std::sync::Mutex::new(()),
        })
    }

    /// The text exposition format, with the fleet gauges set from `fleet`
    /// first (when the ledger could be read; else they keep their values).
    pub fn render_with_fleet(&self, fleet: Option<&Summary<'_>>) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = fleet {
            self.set_fleet(f);
        }
        self.render()
    }

    /// Sets the fleet gauges from a ledger summary.
    /// Series of versions and backends that are gone are removed.
    fn set_fleet(&self, f: &Summary<'_>) {
        let g = &self.fleet;
        g.by_version.reset();
        for (version, n) in &f.by_version {
            let label = version.map_or_else(|| "none".to_owned(), |v| v.to_string());
            g.by_version.with_label_values(&[&label]).set(*n as i64);
        }
        g.behind.set(f.behind.len() as i64);
        g.refusing.set(f.refused.len() as i64);
        g.healthy.reset();
        g.reporting.reset();
        for b in &f.backends {
            g.healthy
                .with_label_values(&[b.upstream, b.url])
                .set(i64::from(b.healthy));
            g.reporting
                .with_label_values(&[b.upstream, b.url])
                .set(i64::from(b.healthy + b.unhealthy));
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
