//! Passive outlier detection: a backend whose answers go bad is ejected
//! from its upstream's rotation for `base_ejection_time × ejections` (at
//! most `max_ejection_time`), without waiting for health checks, and comes
//! back by itself when the time is up.
//!
//! The request path notes each answer in a few atomics of the backend's
//! state; crossing a threshold takes the upstream's ejection lock, which
//! also enforces `max_ejection_percent`. A sweep on the control thread every
//! `interval` judges the success-rate rule, lowers the ejection count of
//! backends that stayed back for an interval, and publishes returns.

use crate::backend::Backend;
use crate::clock;
use crate::snapshot::Shared;
use isame_proto::config::OutlierDetection;
use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::{debug, info, warn};

/// How a backend's answer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Anything but a 5xx or a gateway error.
    Good,
    /// A 5xx other than 502, 503 and 504.
    ServerError,
    /// No connection, a reset, a timeout, or a 502, 503 or 504.
    GatewayError,
}

/// Why a backend was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `consecutive_5xx` 5xx answers in a row.
    Consecutive5xx = 1,
    /// `consecutive_gateway_errors` gateway errors in a row.
    ConsecutiveGatewayErrors = 2,
    /// Its success rate over an interval fell below the floor.
    SuccessRate = 3,
}

/// Every reason, for removing a departed backend's series.
pub const REASONS: [Reason; 3] = [
    Reason::Consecutive5xx,
    Reason::ConsecutiveGatewayErrors,
    Reason::SuccessRate,
];

impl Reason {
    /// The `reason` label and `/status` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Consecutive5xx => "consecutive_5xx",
            Reason::ConsecutiveGatewayErrors => "consecutive_gateway_errors",
            Reason::SuccessRate => "success_rate",
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Reason::Consecutive5xx),
            2 => Some(Reason::ConsecutiveGatewayErrors),
            3 => Some(Reason::SuccessRate),
            _ => None,
        }
    }
}

/// An upstream's outlier detection, compiled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// Whether backends are ejected at all.
    pub enabled: bool,
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    /// Time between sweeps.
    pub interval: Duration,
    base: u64,
    max: u64,
    max_percent: u32,
    /// (minimum success percent, request volume).
    success_rate: Option<(u32, u32)>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Settings {
    /// From an upstream's section; none: detection off.
    pub fn from_config(o: Option<&OutlierDetection>) -> Self {
        let Some(o) = o.filter(|o| o.enabled) else {
            return Self::default();
        };
        Self {
            enabled: true,
            consecutive_5xx: o.consecutive_5xx,
            consecutive_gateway: o.consecutive_gateway_errors,
            interval: o.interval.max(Duration::from_millis(1)),
            base: nanos(o.base_ejection_time),
            max: nanos(o.max_ejection_time),
            max_percent: o.max_ejection_percent,
            success_rate: o
                .success_rate
                .as_ref()
                .map(|s| (s.minimum_percent, s.request_volume)),
        }
    }

    /// Most backends of `n` that may be ejected at once.
    fn cap(&self, n: usize) -> usize {
        if self.max_percent == 0 {
            return 0;
        }
        (n * self.max_percent as usize / 100).max(1)
    }

    /// How long the `k`th recent ejection lasts.
    fn ejection_nanos(&self, k: u32) -> u64 {
        self.base.saturating_mul(u64::from(k.max(1))).min(self.max)
    }
}

/// What outlier detection knows about one backend; carried across reloads
/// with the rest of its state.
#[derive(Debug, Default)]
pub struct OutlierState {
    run_5xx: AtomicU32,
    run_gateway: AtomicU32,
    /// Clock nanoseconds the current or last ejection ends at (0: never ejected).
    ejected_until: AtomicU64,
    /// Recent ejections: the multiplier of the next one.
    ejections: AtomicU32,
    /// Answers since the last sweep.
    good: AtomicU32,
    bad: AtomicU32,
    reason: AtomicU8,
    /// Ejections in all (for `/status`).
    total: AtomicU32,
}

impl OutlierState {
    /// True while the backend is ejected.
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Relaxed) > now
    }

    /// When the last ejection ended or ends (clock nanoseconds; 0: never).
    pub fn ejection_end(&self) -> u64 {
        self.ejected_until.load(Relaxed)
    }

    /// How much longer the backend stays out, while ejected.
    pub fn ejected_for(&self, now: u64) -> Option<Duration> {
        let until = self.ejected_until.load(Relaxed);
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// Why it was last ejected.
    pub fn last_reason(&self) -> Option<Reason> {
        Reason::from_u8(self.reason.load(Relaxed))
    }

    /// Times it was ejected since it joined.
    pub fn total_ejections(&self) -> u32 {
        self.total.load(Relaxed)
    }

    /// Counts an answer; returns the rule it broke, if any.
    fn note(&self, a: Answer, s: &Settings) -> Option<Reason> {
        if s.success_rate.is_some() {
            let n = if a == Answer::Good {
                &self.good
            } else {
                &self.bad
            };
            n.fetch_add(1, Relaxed);
        }
        match a {
            Answer::Good => {
                // Loads first: a healthy backend's answers write nothing
                // shared (no cache line bouncing between workers).
                if self.run_5xx.load(Relaxed) != 0 {
                    self.run_5xx.store(0, Relaxed);
                }
                if self.run_gateway.load(Relaxed) != 0 {
                    self.run_gateway.store(0, Relaxed);
                }
                None
            }
            Answer::ServerError | Answer::GatewayError => {
                let fives = self.run_5xx.fetch_add(1, Relaxed) + 1;
                let gateway = if a == Answer::GatewayError {
                    self.run_gateway.fetch_add(1, Relaxed) + 1
                } else {
                    self.run_gateway.store(0, Relaxed);
                    0
                };
                if s.consecutive_gateway > 0 && gateway >= s.consecutive_gateway {
                    Some(Reason::ConsecutiveGatewayErrors)
                } else if s.consecutive_5xx > 0 && fives >= s.consecutive_5xx {
                    Some(Reason::Consecutive5xx)
                } else {
                    None
                }
            }
        }
    }

    /// Ejects the backend now; returns for how long.
    fn eject(&self, reason: Reason, s: &Settings, now: u64) -> Duration {
        let k = self.ejections.fetch_add(1, Relaxed) + 1;
        let d = s.ejection_nanos(k);
        self.ejected_until.store(now.saturating_add(d), Relaxed);
        self.reason.store(reason as u8, Relaxed);
        self.total.fetch_add(1, Relaxed);
        self.run_5xx.store(0, Relaxed);
        self.run_gateway.store(0, Relaxed);
        Duration::from_nanos(d)
    }
}

/// The outlier detection of one upstream: its settings, the lock that
/// keeps ejections under the cap, and its metric.
#[derive(Debug)]
pub struct Detector {
    /// Its settings.
    pub settings: Settings,
    lock: Mutex<()>,
    ejections: IntCounterVec,
}

impl Detector {
    /// A detector counting into `isame_lb_outlier_ejections_total`.
    pub fn new(settings: Settings, ejections: IntCounterVec) -> Self {
        Self {
            settings,
            lock: Mutex::new(()),
            ejections,
        }
    }

    /// Notes backend `i`'s answer, ejecting it when it broke a rule and the
    /// cap allows.
    pub fn record(&self, upstream: &str, backends: &[Arc<Backend>], i: usize, a: Answer, now: u64) {
        if !self.settings.enabled {
            return;
        }
        let Some(b) = backends.get(i) else { return };
        if let Some(reason) = b.state.outlier.note(a, &self.settings) {
            // A failure is the moment to read the clock: `now` may be when
            // the request began.
            self.try_eject(upstream, backends, i, reason, now.max(clock::now_nanos()));
        }
    }

    /// Ejects backend `i` unless it is out already or the cap is reached.
    fn try_eject(
        &self,
        upstream: &str,
        backends: &[Arc<Backend>],
        i: usize,
        reason: Reason,
        now: u64,
    ) -> bool {
        let _held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let b = &backends[i];
        if b.state.outlier.is_ejected(now) {
            return false;
        }
        let out = backends
            .iter()
            .filter(|b| b.state.outlier.is_ejected(now))
            .count();
        if out >= self.settings.cap(backends.len()) {
            // Every further failure asks again: not worth a warning each.
            debug!(
                upstream,
                backend = %b.url,
                reason = reason.as_str(),
                ejected = out,
                "outlier not ejected: max_ejection_percent reached"
            );
            return false;
        }
        let d = b.state.outlier.eject(reason, &self.settings, now);
        b.ejected_gauge.set(1);
        self.ejections
            .with_label_values(&[upstream, &b.url, reason.as_str()])
            .inc();
        warn!(
            upstream,
            backend = %b.url,
            reason = reason.as_str(),
            for_ = ?d,
            "backend ejected as an outlier"
        );
        true
    }

    /// Publishes the return of backends whose ejection ended.
    pub fn publish_returns(&self, upstream: &str, backends: &[Arc<Backend>], now: u64) {
        for b in backends {
            if b.ejected_gauge.get() != 0 && !b.state.outlier.is_ejected(now) {
                b.ejected_gauge.set(0);
                info!(upstream, backend = %b.url, "ejected backend is back in rotation");
            }
        }
    }

    /// One sweep, every `interval`: judges success rates, lowers the
    /// ejection count of backends back for an interval, and publishes
    /// returns.
    pub fn sweep(&self, upstream: &str, backends: &[Arc<Backend>], now: u64) {
        if !self.settings.enabled {
            return;
        }
        let interval = nanos(self.settings.interval);
        for (i, b) in backends.iter().enumerate() {
            let o = &b.state.outlier;
            let good = o.good.swap(0, Relaxed);
            let bad = o.bad.swap(0, Relaxed);
            let until = o.ejected_until.load(Relaxed);
            if until > now {
                continue;
            }
            if until != 0 && now - until >= interval && o.ejections.load(Relaxed) > 0 {
                o.ejections.fetch_sub(1, Relaxed);
            }
            if let Some((minimum, volume)) = self.settings.success_rate {
                let total = u64::from(good) + u64::from(bad);
                if total >= u64::from(volume) && u64::from(good) * 100 < u64::from(minimum) * total
                {
                    self.try_eject(upstream, backends, i, Reason::SuccessRate, now);
                }
            }
        }
    }
}

/// Sweeps every upstream with outlier detection on the control thread,
/// each on its own `interval`, following the snapshot in force; publishes
/// returns within a second.
pub async fn sweep_loop(shared: Arc<Shared>) {
    let mut last: HashMap<String, u64> = HashMap::new();
    loop {
        let snap = shared.snapshot();
        let now = clock::now_nanos();
        let mut tick = Duration::from_secs(1);
        for u in snap.upstreams.iter().filter(|u| u.outlier.settings.enabled) {
            let s = &u.outlier.settings;
            tick = tick.min(s.interval);
            u.outlier.publish_returns(&u.name, &u.backends, now);
            match last.get_mut(&u.name) {
                // The first interval starts when detection is first seen.
                None => {
                    last.insert(u.name.clone(), now);
                }
                Some(t) if now.saturating_sub(*t) >= nanos(s.interval) => {
                    u.outlier.sweep(&u.name, &u.backends, now);
                    *t = now;
                }
                Some(_) => {}
            }
        }
        last.retain(|name, _| {
            snap.upstreams
                .iter()
                .any(|u| u.name == *name && u.outlier.settings.enabled)
        });
        drop(snap);
        tokio::time::sleep(tick.max(Duration::from_millis(10))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isame_proto::config::SuccessRate;

    fn settings(percent: u32, success_rate: Option<SuccessRate>) -> Settings {
        Settings::from_config(Some(&OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_errors: 2,
            max_ejection_percent: percent,
            success_rate,
            ..OutlierDetection::default()
        }))
    }

    fn detector(s: Settings) -> Detector {
        let v = IntCounterVec::new(
            prometheus::Opts::new("e", "e"),
            &["upstream", "backend", "reason"],
        )
        .expect("metric");
        Detector::new(s, v)
    }

    fn backends(n: usize) -> Vec<Arc<Backend>> {
        (0..n)
            .map(|i| Backend::for_test(&format!("http://10.0.0.{i}:80"), 1))
            .collect()
    }

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn consecutive_errors_eject_and_a_good_answer_resets_the_run() {
        let d = detector(settings(100, None));
        let bs = backends(2);
        let now = clock::now_nanos();
        d.record("u", &bs, 0, Answer::ServerError, now);
        d.record("u", &bs, 0, Answer::ServerError, now);
        d.record("u", &bs, 0, Answer::Good, now);
        d.record("u", &bs, 0, Answer::ServerError, now);
        assert!(!bs[0].state.outlier.is_ejected(now + 1));
        d.record("u", &bs, 0, Answer::ServerError, now);
        d.record("u", &bs, 0, Answer::ServerError, now);
        let o = &bs[0].state.outlier;
        assert!(o.is_ejected(now + 1));
        assert_eq!(o.last_reason(), Some(Reason::Consecutive5xx));
        // Two gateway errors are enough for the other backend.
        d.record("u", &bs, 1, Answer::GatewayError, now);
        d.record("u", &bs, 1, Answer::GatewayError, now);
        assert_eq!(
            bs[1].state.outlier.last_reason(),
            Some(Reason::ConsecutiveGatewayErrors)
        );
    }

    #[test]
    fn ejections_grow_with_repeats_up_to_the_maximum_and_end_by_themselves() {
        let s = settings(100, None);
        let o = OutlierState::default();
        let t0 = 1000 * SEC;
        assert_eq!(
            o.eject(Reason::Consecutive5xx, &s, t0),
            Duration::from_secs(30)
        );
        assert!(o.is_ejected(t0 + 29 * SEC) && !o.is_ejected(t0 + 30 * SEC));
        assert_eq!(
            o.eject(Reason::Consecutive5xx, &s, t0),
            Duration::from_secs(60)
        );
        for _ in 0..20 {
            o.eject(Reason::Consecutive5xx, &s, t0);
        }
        assert_eq!(o.ejected_for(t0), Some(Duration::from_secs(300)));
        assert_eq!(o.total_ejections(), 22);
    }

    #[test]
    fn the_cap_keeps_most_backends_in_rotation_but_always_allows_one() {
        let d = detector(settings(10, None));
        let bs = backends(4);
        let now = clock::now_nanos();
        for i in 0..4 {
            for _ in 0..2 {
                d.record("u", &bs, i, Answer::GatewayError, now);
            }
        }
        let out = bs
            .iter()
            .filter(|b| b.state.outlier.is_ejected(now + 1))
            .count();
        assert_eq!(out, 1, "10% of 4 rounds down, but one may always go");
        let off = detector(settings(0, None));
        for _ in 0..5 {
            off.record("u", &bs[1..], 0, Answer::GatewayError, now);
        }
        assert!(!bs[1].state.outlier.is_ejected(now + 1));
    }

    #[test]
    fn the_success_rate_rule_judges_each_interval() {
        let d = detector(settings(
            100,
            Some(SuccessRate {
                minimum_percent: 90,
                request_volume: 20,
            }),
        ));
        let bs = backends(2);
        let now = clock::now_nanos();
        // 85% good for backend 0 (never 2 errors in a row), 100% for 1.
        for k in 0..40 {
            let a = if k % 7 == 0 {
                Answer::ServerError
            } else {
                Answer::Good
            };
            d.record("u", &bs, 0, a, now);
            d.record("u", &bs, 1, Answer::Good, now);
        }
        assert!(!bs[0].state.outlier.is_ejected(now + 1));
        d.sweep("u", &bs, now + 1);
        assert_eq!(bs[0].state.outlier.last_reason(), Some(Reason::SuccessRate));
        assert!(!bs[1].state.outlier.is_ejected(now + 2));
        // Too few requests: not judged.
        d.record("u", &bs, 1, Answer::ServerError, now);
        d.sweep("u", &bs, now + 2);
        assert!(!bs[1].state.outlier.is_ejected(now + 3));
    }

    #[test]
    fn the_ejection_count_drops_after_an_interval_back() {
        let d = detector(settings(100, None));
        let bs = backends(1);
        let o = &bs[0].state.outlier;
        let t0 = 1000 * SEC;
        o.eject(Reason::Consecutive5xx, &d.settings, t0);
        o.eject(Reason::Consecutive5xx, &d.settings, t0);
        let back = o.ejection_end();
        d.sweep("u", &bs, back + SEC);
        assert_eq!(o.ejections.load(Relaxed), 2, "not yet an interval back");
        d.sweep("u", &bs, back + 11 * SEC);
        assert_eq!(o.ejections.load(Relaxed), 1);
    }
}
