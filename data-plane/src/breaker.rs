//! Per-backend circuit breaker: closed → open after `failure_threshold`
//! consecutive failures → half-open after `timeout`, letting
//! `half_open_requests` probe requests through → closed on a success, open
//! again on a failure.
//!
//! A request holds a [`Permit`] from [`Breaker::acquire`] until its outcome
//! is known. A half-open probe's slot belongs to its permit: recording the
//! outcome or dropping the permit (the client went away mid-request, the
//! request future was dropped) gives it back, so no path can lock a backend
//! out. Outcomes count only in the state they were let through in: every
//! transition starts a new epoch, and a straggler from an older epoch (a
//! request sent before the circuit opened) changes nothing.
//!
//! State lives in atomics shared by every worker: phase, epoch and probes
//! in use share one word, so each transition is one compare-and-swap. Every
//! function takes the current time, so the state machine is tested without
//! sleeping.

use std::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed},
};
use std::time::Duration;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

/// Bits of the state word: probes in use (low 30), phase (2), epoch (high 32).
const PROBE_BITS: u32 = 30;
const PROBE_MASK: u64 = (1 << PROBE_BITS) - 1;

fn phase(w: u64) -> u64 {
    (w >> PROBE_BITS) & 3
}

fn probes(w: u64) -> u64 {
    w & PROBE_MASK
}

fn epoch(w: u64) -> u32 {
    (w >> 32) as u32
}

/// The word for `phase` in a new epoch after `w`'s, with `probes` taken.
fn next(w: u64, phase: u64, probes: u64) -> u64 {
    (u64::from(epoch(w).wrapping_add(1)) << 32) | (phase << PROBE_BITS) | probes
}

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
            half_open_requests: c.half_open_requests.clamp(1, PROBE_MASK as u32),
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

/// How a request let through ended, as far as the backend is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered (not with a 5xx).
    Success,
    /// The backend failed: no connection, no or a broken answer, a 5xx, a timeout.
    Failure,
    /// Says nothing about the backend (the client stalled or went away).
    Neutral,
}

/// One backend's breaker.
#[derive(Debug, Default)]
pub struct Breaker {
    /// Epoch, phase and probes in use (see the bit layout above).
    word: AtomicU64,
    failures: AtomicU32,
    opened_at: AtomicU64,
}

/// The right to send one request, held until its outcome is recorded or
/// the permit is dropped.
#[must_use = "a permit is held until the request's outcome is known"]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    settings: &'a Settings,
    /// The epoch the request was let through in.
    epoch: u32,
    /// True when it holds one of the half-open probe slots.
    probe: bool,
}

impl Breaker {
    /// True when a request may be sent now (no side effect: see [`Breaker::acquire`]).
    pub fn may_try(&self, s: &Settings, now: u64) -> bool {
        if !s.enabled {
            return true;
        }
        // Acquire: a transition to OPEN publishes its `opened_at`.
        let w = self.word.load(Acquire);
        match phase(w) {
            CLOSED => true,
            OPEN => now.saturating_sub(self.opened_at.load(Relaxed)) >= s.open_for,
            _ => probes(w) < u64::from(s.half_open_requests),
        }
    }

    /// Takes the right to send one request; `None` when the breaker refuses.
    /// An open circuit whose time is up turns half-open here, and the
    /// request that turned it is its first probe.
    pub fn acquire<'a>(&'a self, s: &'a Settings, now: u64) -> Option<Permit<'a>> {
        let permit = |epoch, probe| Permit {
            breaker: self,
            settings: s,
            epoch,
            probe,
        };
        if !s.enabled {
            return Some(permit(0, false));
        }
        loop {
            let w = self.word.load(Acquire);
            let (want, probe) = match phase(w) {
                CLOSED => return Some(permit(epoch(w), false)),
                OPEN => {
                    if now.saturating_sub(self.opened_at.load(Relaxed)) < s.open_for {
                        return None;
                    }
                    (next(w, HALF_OPEN, 1), true)
                }
                _ => {
                    if probes(w) >= u64::from(s.half_open_requests) {
                        return None;
                    }
                    (w + 1, true)
                }
            };
            if self
                .word
                .compare_exchange_weak(w, want, AcqRel, Relaxed)
                .is_ok()
            {
                return Some(permit(epoch(want), probe));
            }
        }
    }

    /// Gives back a probe slot of `epoch`, if that half-open period is still on.
    fn release(&self, epoch_of: u32) {
        let mut w = self.word.load(Relaxed);
        while phase(w) == HALF_OPEN && epoch(w) == epoch_of && probes(w) > 0 {
            match self.word.compare_exchange_weak(w, w - 1, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(now) => w = now,
            }
        }
    }

    /// Moves from the epoch of word `w` (and its phase) to `to` in a new
    /// epoch; false when another request changed the state first. Probes
    /// taken or given back meanwhile do not stop it.
    fn transition(&self, mut w: u64, to: u64) -> bool {
        let (from_epoch, from_phase) = (epoch(w), phase(w));
        loop {
            // Release: `opened_at`, stored before, is seen with the new phase.
            match self
                .word
                .compare_exchange_weak(w, next(w, to, 0), AcqRel, Acquire)
            {
                Ok(_) => return true,
                Err(now) if epoch(now) == from_epoch && phase(now) == from_phase => w = now,
                Err(_) => return false,
            }
        }
    }

    /// True unless the circuit is closed.
    pub fn is_open(&self) -> bool {
        phase(self.word.load(Relaxed)) != CLOSED
    }

    /// `closed`, `open` or `half_open`, for `/status`.
    pub fn state_name(&self) -> &'static str {
        match phase(self.word.load(Relaxed)) {
            CLOSED => "closed",
            OPEN => "open",
            _ => "half_open",
        }
    }

    /// Half-open probe slots in use.
    pub fn probes_in_use(&self) -> u64 {
        let w = self.word.load(Relaxed);
        if phase(w) == HALF_OPEN {
            probes(w)
        } else {
            0
        }
    }
}

impl Permit<'_> {
    /// Records how the request ended; returns the state change it caused.
    pub fn record(self, outcome: Outcome, now: u64) -> Option<Transition> {
        let b = self.breaker;
        let s = self.settings;
        // Drop gives a probe slot back; a closing or reopening transition
        // below makes that a no-op by starting a new epoch first.
        let epoch_of = self.epoch;
        if !s.enabled || outcome == Outcome::Neutral {
            return None;
        }
        let w = b.word.load(Relaxed);
        if epoch(w) != epoch_of {
            // Let through before the last state change: it says nothing
            // about the state the breaker is in now.
            return None;
        }
        match (phase(w), outcome) {
            (CLOSED, Outcome::Success) => {
                if b.failures.load(Relaxed) != 0 {
                    b.failures.store(0, Relaxed);
                }
                None
            }
            (CLOSED, _) => {
                let failures = b.failures.fetch_add(1, Relaxed) + 1;
                if failures < s.failure_threshold {
                    return None;
                }
                b.opened_at.store(now, Relaxed);
                b.transition(w, OPEN).then_some(Transition::Opened)
            }
            (HALF_OPEN, Outcome::Success) => {
                if b.transition(w, CLOSED) {
                    b.failures.store(0, Relaxed);
                    Some(Transition::Closed)
                } else {
                    None
                }
            }
            (HALF_OPEN, _) => {
                b.opened_at.store(now, Relaxed);
                b.transition(w, OPEN).then_some(Transition::Opened)
            }
            // No permit is ever taken in an open epoch.
            _ => None,
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.release(self.epoch);
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

    fn fail(b: &Breaker, now: u64) -> Option<Transition> {
        b.acquire(&S, now)
            .expect("let through")
            .record(Outcome::Failure, now)
    }

    fn succeed(b: &Breaker, now: u64) -> Option<Transition> {
        b.acquire(&S, now)
            .expect("let through")
            .record(Outcome::Success, now)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = Breaker::default();
        assert_eq!(fail(&b, 0), None);
        assert_eq!(fail(&b, 0), None);
        assert_eq!(succeed(&b, 0), None, "a success resets the count");
        assert_eq!(fail(&b, 0), None);
        assert_eq!(fail(&b, 0), None);
        assert_eq!(fail(&b, 10), Some(Transition::Opened));
        assert!(!b.may_try(&S, 500) && b.acquire(&S, 500).is_none());
        assert!(b.is_open());
    }

    #[test]
    fn half_open_lets_one_probe_through_then_closes_or_reopens() {
        let b = Breaker::default();
        for _ in 0..3 {
            fail(&b, 0);
        }
        assert!(b.may_try(&S, 1_000));
        let probe = b.acquire(&S, 1_000).expect("the probe");
        assert_eq!(b.state_name(), "half_open");
        assert!(b.acquire(&S, 1_001).is_none(), "only one probe at a time");
        assert!(!b.may_try(&S, 1_001));
        assert_eq!(
            probe.record(Outcome::Failure, 1_500),
            Some(Transition::Opened),
            "a failed probe reopens"
        );
        assert!(
            b.acquire(&S, 2_000).is_none(),
            "open for the full timeout again"
        );
        let probe = b.acquire(&S, 2_500).expect("the next probe");
        assert_eq!(
            probe.record(Outcome::Success, 2_600),
            Some(Transition::Closed)
        );
        let (x, y) = (b.acquire(&S, 2_601), b.acquire(&S, 2_601));
        assert!(x.is_some() && y.is_some(), "closed: no limit");
    }

    #[test]
    fn a_dropped_probe_gives_its_slot_back() {
        let b = Breaker::default();
        for _ in 0..3 {
            fail(&b, 0);
        }
        let probe = b.acquire(&S, 1_000).expect("the probe");
        assert_eq!(b.probes_in_use(), 1);
        drop(probe);
        assert_eq!(b.probes_in_use(), 0);
        assert_eq!(b.state_name(), "half_open");
        assert_eq!(succeed(&b, 1_100), Some(Transition::Closed));
    }

    #[test]
    fn a_neutral_outcome_counts_as_neither() {
        let b = Breaker::default();
        fail(&b, 0);
        fail(&b, 0);
        let p = b.acquire(&S, 0).expect("closed");
        assert_eq!(p.record(Outcome::Neutral, 0), None);
        assert_eq!(
            fail(&b, 0),
            Some(Transition::Opened),
            "the count was not reset"
        );
        let probe = b.acquire(&S, 1_000).expect("the probe");
        assert_eq!(probe.record(Outcome::Neutral, 1_000), None);
        assert_eq!(
            b.state_name(),
            "half_open",
            "a client fault does not close it"
        );
        assert_eq!(b.probes_in_use(), 0, "but gives the slot back");
    }

    #[test]
    fn stragglers_from_an_earlier_state_change_nothing() {
        let b = Breaker::default();
        let slow = b.acquire(&S, 0).expect("closed");
        let slow_fail = b.acquire(&S, 0).expect("closed");
        for _ in 0..3 {
            fail(&b, 0);
        }
        assert_eq!(
            slow.record(Outcome::Success, 10),
            None,
            "sent before the circuit opened: does not close it"
        );
        assert!(b.is_open());
        let probe = b.acquire(&S, 1_000).expect("probe");
        assert_eq!(slow_fail.record(Outcome::Failure, 1_001), None);
        assert_eq!(b.state_name(), "half_open");
        // A probe of an old half-open period gives nothing back to a new one.
        assert_eq!(
            probe.record(Outcome::Failure, 1_002),
            Some(Transition::Opened)
        );
        let old_probe = b.acquire(&S, 2_100).expect("a new probe");
        assert_eq!(
            old_probe.record(Outcome::Failure, 2_100),
            Some(Transition::Opened)
        );
        let newest = b.acquire(&S, 3_200).expect("a newer probe");
        assert_eq!(b.probes_in_use(), 1);
        drop(newest);
        assert_eq!(b.probes_in_use(), 0);
    }

    #[test]
    fn probe_slots_never_leak_under_concurrency() {
        let s = Settings {
            half_open_requests: 3,
            ..S
        };
        let b = std::sync::Arc::new(Breaker::default());
        for _ in 0..3 {
            b.acquire(&s, 0)
                .expect("closed")
                .record(Outcome::Failure, 0);
        }
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        if let Some(p) = b.acquire(&s, 1_000) {
                            if (i + t) % 7 == 0 {
                                p.record(Outcome::Neutral, 1_000);
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(b.state_name(), "half_open");
        assert_eq!(b.probes_in_use(), 0);
        assert!(b.acquire(&s, 1_000).is_some());
    }

    #[test]
    fn disabled_breaker_never_refuses() {
        let off = Settings {
            enabled: false,
            ..S
        };
        let b = Breaker::default();
        for _ in 0..10 {
            let p = b.acquire(&off, 0).expect("always");
            assert_eq!(p.record(Outcome::Failure, 0), None);
        }
        assert!(b.acquire(&off, 0).is_some());
    }
}
