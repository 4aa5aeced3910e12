//! When and how a failed request is sent again.
//!
//! Safety first: a request that never reached a backend (the connection
//! failed before a byte was written) may always go again; one that reached
//! a backend goes again only for idempotent methods, only when its body was
//! kept (small bodies are, up to `max_body_bytes`), and only on 502/503/504
//! or a timeout. A gRPC call answered `grpc-status: 14` (UNAVAILABLE) before
//! any message is the exception: gRPC defines that status as safe to try
//! again, so the call goes again whatever its method, when its whole body
//! (up to `max_body_bytes`) was kept as it streamed. Nothing is retried
//! once response bytes went to the client.
//!
//! A retry budget keeps retries from multiplying an outage: over the last
//! ten seconds an upstream may retry `budget_percent` of its requests plus
//! `budget_min_per_second` per second. Waits between tries grow
//! exponentially with full jitter.

use isame_proto::config::Retry;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Seconds of history the budget looks at.
const WINDOW: u64 = 10;

/// One upstream's compiled retry policy.
#[derive(Debug)]
pub struct Policy {
    /// Whether retries happen at all.
    pub enabled: bool,
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// Bodies up to this size are kept so they can be sent again.
    pub max_body_bytes: u64,
    initial: Duration,
    max: Duration,
    /// Shared by every worker; carried across reloads per upstream.
    pub budget: std::sync::Arc<Budget>,
}

impl Policy {
    /// From the config's section and the budget to use.
    pub fn new(r: &Retry, budget: std::sync::Arc<Budget>) -> Self {
        Self {
            enabled: r.enabled && r.max_attempts > 1,
            max_attempts: r.max_attempts.max(1),
            max_body_bytes: u64::from(r.max_body_bytes),
            initial: r.initial_backoff,
            max: r.max_backoff,
            budget,
        }
    }

    /// The wait before retry number `n` (1 for the first retry): a uniform
    /// random time up to `min(max_backoff, initial_backoff × 2^(n-1))`.
    pub fn backoff(&self, n: u32, rng: &mut fastrand::Rng) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX));
        let cap = exp.min(self.max);
        cap.mul_f64(rng.f64())
    }
}

#[derive(Debug, Default)]
struct Slot {
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// Counts requests and retries over the last ten seconds.
#[derive(Debug)]
pub struct Budget {
    percent: u64,
    per_second: u64,
    slots: [Slot; WINDOW as usize],
}

impl Budget {
    /// A budget of `percent`% of requests plus `per_second` retries a second.
    pub fn new(percent: u32, per_second: u32) -> Self {
        Self {
            percent: u64::from(percent),
            per_second: u64::from(per_second),
            slots: Default::default(),
        }
    }

    /// True when the budget's settings are `percent` and `per_second`.
    pub fn matches(&self, percent: u32, per_second: u32) -> bool {
        self.percent == u64::from(percent) && self.per_second == u64::from(per_second)
    }

    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % WINDOW) as usize];
        if slot.second.swap(second, Relaxed) != second {
            // A slot from ten seconds ago starts over. Racing workers may
            // lose a count here; the budget is an estimate, not a ledger.
            slot.requests.store(0, Relaxed);
            slot.retries.store(0, Relaxed);
        }
        slot
    }

    /// Counts a request (at `now`, clock nanoseconds).
    pub fn note_request(&self, now: u64) {
        self.slot(now / 1_000_000_000)
            .requests
            .fetch_add(1, Relaxed);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_retry(&self, now: u64) -> bool {
        let second = now / 1_000_000_000;
        let (mut requests, mut retries) = (0u64, 0u64);
        for s in &self.slots {
            let at = s.second.load(Relaxed);
            if at + WINDOW > second && at <= second {
                requests += u64::from(s.requests.load(Relaxed));
                retries += u64::from(s.retries.load(Relaxed));
            }
        }
        let allowed = requests * self.percent / 100 + self.per_second * WINDOW;
        if retries >= allowed {
            return false;
        }
        self.slot(second).retries.fetch_add(1, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn budget_allows_the_floor_plus_a_share_of_requests() {
        let b = Budget::new(20, 1);
        let now = 100 * SEC;
        // No traffic: only the floor, 1 a second over 10 seconds.
        let floor = (0..50).filter(|_| b.try_retry(now)).count();
        assert_eq!(floor, 10);
        for _ in 0..100 {
            b.note_request(now);
        }
        // 20% of 100 requests more.
        let more = (0..50).filter(|_| b.try_retry(now)).count();
        assert_eq!(more, 20);
        // Ten seconds later the window is fresh again.
        let later = (0..50).filter(|_| b.try_retry(now + 11 * SEC)).count();
        assert_eq!(later, 10);
    }

    #[test]
    fn backoff_grows_exponentially_and_stays_capped() {
        let r = Retry {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
            ..Retry::default()
        };
        let p = Policy::new(&r, std::sync::Arc::new(Budget::new(20, 10)));
        let mut rng = fastrand::Rng::with_seed(7);
        for (n, cap) in [(1, 100), (2, 200), (3, 400), (4, 700), (20, 700), (64, 700)] {
            let waits: Vec<Duration> = (0..200).map(|_| p.backoff(n, &mut rng)).collect();
            let max = waits.iter().max().copied().unwrap_or_default();
            assert!(max <= Duration::from_millis(cap), "retry {n}: {max:?}");
            assert!(
                max > Duration::from_millis(cap) * 8 / 10,
                "retry {n} uses the whole range: {max:?}"
            );
            assert!(
                waits.iter().any(|w| *w < Duration::from_millis(cap) / 4),
                "full jitter reaches low waits"
            );
        }
    }
}
