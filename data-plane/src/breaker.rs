//! Per-backend circuit breaker: closed → open after `failure_threshold`
//! consecutive failures → half-open after `timeout`, letting
//! `half_open_requests` probe requests through → closed on a success, open
//! again on a failure.
//!
//! State lives in atomics shared by every worker. Every function takes the
//! current time, so the state machine is tested without sleeping.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The settings of one upstream's breakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Whether breakers act at all.
    pub enabled: bool,
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open.
    pub open_for: u64,
    /// Probe requests allowed while half-open.
    pub half_open_requests: u32,
}

impl Settings {
    /// From the config's section.
    pub fn from_config(c: &isame_proto::config::CircuitBreaker) -> Self {
        Self {
            enabled: c.enabled,
            failure_threshold: c.failure_threshold.max(1),
            open_for: u64::try_from(c.timeout.as_nanos()).unwrap_or(u64::MAX),
            half_open_requests: c.half_open_requests.max(1),
        }
    }

    /// How long the circuit stays open.
    pub fn open_duration(&self) -> Duration {
        Duration::from_nanos(self.open_for)
    }
}

/// What a state change means, for the caller to log and publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The circuit opened.
    Opened,
    /// The circuit closed again.
    Closed,
}

/// One backend's breaker.
#[derive(Debug, Default)]
pub struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    opened_at: AtomicU64,
    probes: AtomicU32,
}

impl Breaker {
    /// True when a request may be sent now (no side effect: see [`Breaker::acquire`]).
    pub fn may_try(&self, s: &Settings, now: u64) -> bool {
        if !s.enabled {
            return true;
        }
        match self.state.load(Relaxed) {
            CLOSED => true,
            OPEN => now.saturating_sub(self.opened_at.load(Relaxed)) >= s.open_for,
            _ => self.probes.load(Relaxed) < s.half_open_requests,
        }
    }

    /// Takes the right to send one request; false when the breaker refuses.
    /// An open circuit whose time is up turns half-open here.
    pub fn acquire(&self, s: &Settings, now: u64) -> bool {
        if !s.enabled {
            return true;
        }
        loop {
            match self.state.load(Relaxed) {
                CLOSED => return true,
                OPEN => {
                    if now.saturating_sub(self.opened_at.load(Relaxed)) < s.open_for {
                        return false;
                    }
                    if self
                        .state
                        .compare_exchange(OPEN, HALF_OPEN, Relaxed, Relaxed)
                        .is_ok()
                    {
                        self.probes.store(0, Relaxed);
                    }
                }
                _ => {
                    let taken = self.probes.fetch_add(1, Relaxed);
                    if taken < s.half_open_requests {
                        return true;
                    }
                    self.probes.fetch_sub(1, Relaxed);
                    return false;
                }
            }
        }
    }

    /// Records how a request that [`Breaker::acquire`] let through ended.
    pub fn record(&self, s: &Settings, success: bool, now: u64) -> Option<Transition> {
        if !s.enabled {
            return None;
        }
        let state = self.state.load(Relaxed);
        if state == HALF_OPEN {
            self.probes.fetch_sub(1, Relaxed);
        }
        if success {
            self.failures.store(0, Relaxed);
            if state != CLOSED
                && self
                    .state
                    .compare_exchange(state, CLOSED, Relaxed, Relaxed)
                    .is_ok()
            {
                return Some(Transition::Closed);
            }
            return None;
        }
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        let trip = match state {
            CLOSED => failures >= s.failure_threshold,
            HALF_OPEN => true,
            // Already open: a straggler's failure changes nothing.
            _ => false,
        };
        if trip {
            self.opened_at.store(now, Relaxed);
            if self
                .state
                .compare_exchange(state, OPEN, Relaxed, Relaxed)
                .is_ok()
            {
                return Some(Transition::Opened);
            }
        }
        None
    }

    /// True unless the circuit is closed.
    pub fn is_open(&self) -> bool {
        self.state.load(Relaxed) != CLOSED
    }

    /// `closed`, `open` or `half_open`, for `/status`.
    pub fn state_name(&self) -> &'static str {
        match self.state.load(Relaxed) {
            CLOSED => "closed",
            OPEN => "open",
            _ => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings = Settings {
        enabled: true,
        failure_threshold: 3,
        open_for: 1_000,
        half_open_requests: 1,
    };

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = Breaker::default();
        assert_eq!(b.record(&S, false, 0), None);
        assert_eq!(b.record(&S, false, 0), None);
        assert_eq!(b.record(&S, true, 0), None, "a success resets the count");
        assert_eq!(b.record(&S, false, 0), None);
        assert_eq!(b.record(&S, false, 0), None);
        assert_eq!(b.record(&S, false, 10), Some(Transition::Opened));
        assert!(!b.may_try(&S, 500) && !b.acquire(&S, 500));
        assert!(b.is_open());
    }

    #[test]
    fn half_open_lets_one_probe_through_then_closes_or_reopens() {
        let b = Breaker::default();
        for _ in 0..3 {
            b.record(&S, false, 0);
        }
        assert!(b.may_try(&S, 1_000));
        assert!(b.acquire(&S, 1_000), "the probe");
        assert_eq!(b.state_name(), "half_open");
        assert!(!b.acquire(&S, 1_001), "only one probe at a time");
        assert_eq!(
            b.record(&S, false, 1_500),
            Some(Transition::Opened),
            "a failed probe reopens"
        );
        assert!(!b.acquire(&S, 2_000), "open for the full timeout again");
        assert!(b.acquire(&S, 2_500));
        assert_eq!(b.record(&S, true, 2_600), Some(Transition::Closed));
        assert!(
            b.acquire(&S, 2_601) && b.acquire(&S, 2_601),
            "closed: no limit"
        );
    }

    #[test]
    fn disabled_breaker_never_refuses() {
        let off = Settings {
            enabled: false,
            ..S
        };
        let b = Breaker::default();
        for _ in 0..10 {
            assert_eq!(b.record(&off, false, 0), None);
        }
        assert!(b.acquire(&off, 0));
    }
}
