//! Per-client sliding-window rate limits (`rate_limit` on upstreams and
//! routes).
//!
//! Each client IP gets a counter for the current fixed window and keeps the
//! previous window's count; the estimate for the sliding window weighs the
//! previous count by how much of it still overlaps: `previous × (1 −
//! elapsed/window) + current`. Two counters per client, exact at window
//! edges, no burst of twice the limit across them.
//!
//! Memory is bounded: at most `MAX_CLIENTS` clients are tracked per limiter
//! (in shards, each with its own lock, so workers seldom wait on each
//! other); when a shard is full, clients whose windows no longer count are
//! dropped first, then arbitrary ones.

use rustc_hash::FxHashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Most clients tracked by one limiter.
pub const MAX_CLIENTS: usize = 100_000;
const SHARDS: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Index of the window `current` counts (time / window).
    window: u64,
    current: u32,
    previous: u32,
}

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; `remaining` requests are left in the window.
    Allow {
        /// Requests left.
        remaining: u32,
    },
    /// Over the limit; try again after `retry_after`.
    Deny {
        /// How long until a request can pass.
        retry_after: Duration,
    },
}

/// One rate limit: `limit` requests per client per `window`.
#[derive(Debug)]
pub struct Limiter {
    /// Requests allowed per window.
    pub limit: u32,
    window: u64,
    shards: Vec<Mutex<FxHashMap<IpAddr, Entry>>>,
    per_shard: usize,
}

impl Limiter {
    /// A limiter of `limit` requests per `window` per client.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_capacity(limit, window, MAX_CLIENTS)
    }

    /// The same with a chosen cap on tracked clients.
    pub fn with_capacity(limit: u32, window: Duration, max_clients: usize) -> Self {
        Self {
            limit: limit.max(1),
            window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX).max(1),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: max_clients.div_ceil(SHARDS).max(1),
        }
    }

    /// True when this limiter has these settings (it may then carry over a reload).
    pub fn same_settings(&self, limit: u32, window: Duration) -> bool {
        self.limit == limit && u128::from(self.window) == window.as_nanos()
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<FxHashMap<IpAddr, Entry>> {
        let h = match ip {
            IpAddr::V4(v4) => u64::from(u32::from(*v4)),
            IpAddr::V6(v6) => {
                let n = u128::from(*v6);
                (n as u64) ^ ((n >> 64) as u64)
            }
        };
        // Spread consecutive addresses over shards.
        let mixed = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59;
        &self.shards[mixed as usize % SHARDS]
    }

    /// Counts a request from `ip` at `now` (clock nanoseconds) if the limit allows it.
    pub fn check(&self, ip: IpAddr, now: u64) -> Decision {
        let window = now / self.window;
        let into = now % self.window;
        // A poisoned lock only means a panic elsewhere mid-update; the
        // counters are still numbers.
        let mut shard = self.shard(&ip).lock().unwrap_or_else(|e| e.into_inner());
        if !shard.contains_key(&ip) && shard.len() >= self.per_shard {
            shard.retain(|_, e| e.window + 1 >= window);
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        let e = shard.entry(ip).or_insert(Entry {
            window,
            current: 0,
            previous: 0,
        });
        if e.window != window {
            e.previous = if e.window + 1 == window { e.current } else { 0 };
            e.current = 0;
            e.window = window;
        }
        let overlap = 1.0 - into as f64 / self.window as f64;
        let estimate = f64::from(e.previous) * overlap + f64::from(e.current);
        if estimate + 1.0 > f64::from(self.limit) {
            // Waiting out the current window always lets a request through
            // (its count then weighs at most `limit` × the overlap left).
            let left = self.window - into;
            return Decision::Deny {
                retry_after: Duration::from_nanos(left),
            };
        }
        e.current += 1;
        Decision::Allow {
            remaining: (f64::from(self.limit) - estimate - 1.0).max(0.0) as u32,
        }
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn allows_the_limit_then_denies_until_the_window_moves_on() {
        let l = Limiter::new(3, Duration::from_secs(10));
        let t = 100 * SEC;
        assert_eq!(l.check(ip(1), t), Decision::Allow { remaining: 2 });
        assert_eq!(l.check(ip(1), t), Decision::Allow { remaining: 1 });
        assert_eq!(l.check(ip(1), t), Decision::Allow { remaining: 0 });
        assert_eq!(
            l.check(ip(1), t + 4 * SEC),
            Decision::Deny {
                retry_after: Duration::from_secs(6)
            }
        );
        assert!(
            matches!(l.check(ip(2), t), Decision::Allow { .. }),
            "clients are counted apart"
        );
    }

    #[test]
    fn the_previous_window_still_weighs_in() {
        let l = Limiter::new(10, Duration::from_secs(10));
        // 10 requests at the very end of one window.
        for _ in 0..10 {
            assert!(matches!(l.check(ip(1), 19 * SEC), Decision::Allow { .. }));
        }
        // One second into the next window they still weigh 90%: one more passes.
        assert!(matches!(l.check(ip(1), 21 * SEC), Decision::Allow { .. }));
        assert!(matches!(l.check(ip(1), 21 * SEC), Decision::Deny { .. }));
        // Halfway through, half of them count.
        let allowed = (0..10)
            .filter(|_| matches!(l.check(ip(1), 25 * SEC), Decision::Allow { .. }))
            .count();
        assert_eq!(allowed, 4, "10 - 5 - 1 = 4 more");
        // Two windows later nothing is left of them.
        assert!(matches!(
            l.check(ip(1), 40 * SEC),
            Decision::Allow { remaining: 9 }
        ));
    }

    #[test]
    fn memory_stays_bounded() {
        let l = Limiter::with_capacity(5, Duration::from_secs(1), 64);
        for n in 0..10_000 {
            l.check(ip(n), 5 * SEC);
        }
        assert!(l.tracked() <= 64 + SHARDS, "{}", l.tracked());
        // Idle clients are the first to go.
        for n in 0..10_000 {
            l.check(ip(n), 50 * SEC);
        }
        assert!(l.tracked() <= 64 + SHARDS);
    }
}
