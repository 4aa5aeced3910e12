//! Active health checks: every backend is probed on its upstream's
//! `health.interval` (spread out with jitter, never in lockstep) with a GET
//! of `health.path`; `unhealthy_threshold` failed probes in a row take it out
//! of rotation, `healthy_threshold` good ones bring it back. Checks run on
//! the control thread, apart from the request path; their verdict is one
//! atomic flag the balancers read.

use crate::backend::Backend;
use crate::snapshot::Snapshot;
use crate::upstream::{self, Probed};
use isame_proto::config::{parse_status_range, Health, HealthProtocol};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// What the probes found about one backend.
#[derive(Debug)]
pub struct HealthState {
    healthy: AtomicBool,
    checked: AtomicBool,
    successes: AtomicU32,
    failures: AtomicU32,
    last: Mutex<String>,
}

impl Default for HealthState {
    /// A new backend counts as healthy until probes say otherwise, so
    /// traffic flows from the start; the first probe comes within a second.
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            checked: AtomicBool::new(false),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            last: Mutex::new(String::new()),
        }
    }
}

impl HealthState {
    /// True while the backend may take traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// True once a probe has completed.
    pub fn checked(&self) -> bool {
        self.checked.load(Relaxed)
    }

    /// The last probe's outcome, for `/status`.
    pub fn last_result(&self) -> String {
        self.last.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Records a probe; returns the new verdict when it changed.
    pub fn record(&self, ok: bool, detail: String, s: &Settings) -> Option<bool> {
        self.checked.store(true, Relaxed);
        if let Ok(mut last) = self.last.lock() {
            *last = detail;
        }
        if ok {
            self.failures.store(0, Relaxed);
            let n = self.successes.fetch_add(1, Relaxed) + 1;
            if !self.is_healthy() && n >= s.healthy_threshold {
                self.healthy.store(true, Relaxed);
                return Some(true);
            }
        } else {
            self.successes.store(0, Relaxed);
            let n = self.failures.fetch_add(1, Relaxed) + 1;
            if self.is_healthy() && n >= s.unhealthy_threshold {
                self.healthy.store(false, Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// Forgets earlier verdicts (checks were switched off).
    pub fn reset(&self) {
        self.healthy.store(true, Relaxed);
        self.checked.store(false, Relaxed);
        self.successes.store(0, Relaxed);
        self.failures.store(0, Relaxed);
    }
}

/// The health-check settings of one upstream, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Whether checks run.
    pub enabled: bool,
    /// Time between probes of one backend.
    pub interval: Duration,
    /// Longest a probe may take.
    pub timeout: Duration,
    /// What is requested.
    pub path: String,
    /// For gRPC checks, the service asked about.
    pub grpc_service: Option<String>,
    /// Failures in a row that mark a backend unhealthy.
    pub unhealthy_threshold: u32,
    /// Successes in a row that mark it healthy again.
    pub healthy_threshold: u32,
    /// Statuses that count as healthy.
    pub expected: Vec<(u16, u16)>,
    /// The PROXY protocol header a probe's connection starts with (its
    /// upstream's `send_proxy_protocol`, without addresses).
    pub proxy_protocol: Option<isame_proto::config::ProxyVersion>,
}

impl Settings {
    /// From a validated config section.
    pub fn from_config(h: &Health) -> Self {
        Self {
            enabled: h.enabled,
            interval: h.interval,
            timeout: h.timeout,
            path: h.path.clone(),
            grpc_service: (h.protocol == HealthProtocol::Grpc).then(|| h.grpc_service.clone()),
            unhealthy_threshold: h.unhealthy_threshold.max(1),
            healthy_threshold: h.healthy_threshold.max(1),
            expected: h
                .expected_statuses
                .iter()
                .filter_map(|s| parse_status_range(s).ok())
                .collect(),
            proxy_protocol: None,
        }
    }

    fn expects(&self, status: u16) -> bool {
        self.expected
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// The probing tasks, one per backend, kept in step with the config.
#[derive(Default)]
pub struct Checkers {
    running: HashMap<u32, (Settings, JoinHandle<()>)>,
}

impl Checkers {
    /// Starts, restarts and stops probes so that exactly the backends of
    /// `snap` whose upstream has checks enabled are probed, with its
    /// settings. A backend that keeps its settings keeps its probe (and its
    /// state carries over anyway). Must run inside the control runtime.
    pub fn reconcile(&mut self, snap: &Snapshot) {
        let mut wanted: HashMap<u32, (Settings, Arc<Backend>, String)> = HashMap::new();
        for up in &snap.upstreams {
            for b in &up.backends {
                if up.health.enabled {
                    wanted.insert(b.state.uid, (up.health.clone(), b.clone(), up.name.clone()));
                } else if b.state.health.checked() || !b.state.health.is_healthy() {
                    // Checks were switched off: stale verdicts must not keep
                    // a backend out of rotation.
                    b.state.health.reset();
                    b.healthy_gauge.set(1);
                }
            }
        }
        self.running.retain(|uid, (settings, task)| {
            let keep = wanted.get(uid).is_some_and(|(s, _, _)| s == settings);
            if !keep {
                task.abort();
            }
            keep
        });
        for (uid, (settings, backend, upstream)) in wanted {
            if self.running.contains_key(&uid) {
                continue;
            }
            let task = tokio::spawn(probe_loop(backend, upstream, settings.clone()));
            self.running.insert(uid, (settings, task));
        }
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}

/// `interval` ± 10%, so probes of many backends do not fire together.
fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_secs_f64() * 0.1;
    Duration::from_secs_f64(
        (interval.as_secs_f64() + spread * (2.0 * fastrand::f64() - 1.0)).max(0.001),
    )
}

async fn probe_loop(backend: Arc<Backend>, upstream: String, s: Settings) {
    // The first probe comes soon, at a random point of the first second.
    let first = s
        .interval
        .min(Duration::from_secs(1))
        .mul_f64(fastrand::f64());
    tokio::time::sleep(first).await;
    loop {
        let kind = match &s.grpc_service {
            Some(service) => upstream::ProbeKind::Grpc(service),
            None => upstream::ProbeKind::Http(&s.path),
        };
        let (ok, detail) = match upstream::probe(&backend, kind, s.timeout, s.proxy_protocol).await
        {
            Ok(Probed::Status(status)) if s.expects(status) => (true, format!("HTTP {status}")),
            Ok(Probed::Status(status)) => {
                (false, format!("HTTP {status} is not an expected status"))
            }
            Ok(Probed::Grpc(Ok(()))) => (true, "gRPC SERVING".to_owned()),
            Ok(Probed::Grpc(Err(e))) => (false, e.to_string()),
            Err(e) => (false, e.to_string()),
        };
        if let Some(healthy) = backend.state.health.record(ok, detail.clone(), &s) {
            backend.healthy_gauge.set(i64::from(healthy));
            if healthy {
                // Slow start ramps from here.
                backend
                    .state
                    .ramp_from
                    .store(crate::clock::now_nanos(), Relaxed);
                info!(upstream, backend = %backend.url, "backend is healthy again");
            } else {
                warn!(upstream, backend = %backend.url, last_probe = %detail, "backend is unhealthy; taking it out of rotation");
            }
        }
        tokio::time::sleep(jittered(s.interval)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::from_config(&Health {
            unhealthy_threshold: 2,
            healthy_threshold: 3,
            ..Health::default()
        })
    }

    #[test]
    fn thresholds_decide_transitions() {
        let s = settings();
        let h = HealthState::default();
        assert_eq!(h.record(false, "down".into(), &s), None);
        assert_eq!(h.record(false, "down".into(), &s), Some(false));
        assert!(!h.is_healthy());
        assert_eq!(h.record(true, "ok".into(), &s), None);
        assert_eq!(
            h.record(false, "down".into(), &s),
            None,
            "a failure restarts the count of successes"
        );
        for _ in 0..2 {
            assert_eq!(h.record(true, "ok".into(), &s), None);
        }
        assert_eq!(h.record(true, "ok".into(), &s), Some(true));
        assert_eq!(h.last_result(), "ok");
    }

    #[test]
    fn expected_statuses_default_to_2xx_and_3xx() {
        let s = settings();
        assert!(s.expects(200) && s.expects(204) && s.expects(302));
        assert!(!s.expects(404) && !s.expects(500));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let j = jittered(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(9) && j <= Duration::from_secs(11),
                "{j:?}"
            );
        }
    }
}
