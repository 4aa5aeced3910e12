//! Per-client sliding-window rate limits (`rate_limit` on upstreams and
//! routes).
//!
//! Each client IP gets a counter for the current fixed window and keeps the
//! previous window's count; the estimate for the sliding window weighs the
//! previous count by how much of it still overlaps: `previous × (1 −
//! elapsed/window) + current`. Two counters per client, exact at window
//! edges, no burst of twice the limit across them.
//!
//! A client is an IPv4 address, or an IPv6 network of `ipv6_prefix` bits
//! (default /64, the block one host is usually given): a client cannot
//! escape its limit by rotating addresses inside its own prefix.
//!
//! Memory is bounded: at most `MAX_CLIENTS` clients are tracked per limiter
//! (in shards, each with its own lock, so workers seldom wait on each
//! other). Each shard keeps its clients in order of last request; when it
//! is full, the client heard from least recently makes room, in constant
//! time. A client that keeps sending stays at the recent end, so spraying
//! requests from new addresses cannot reset its count before it has been
//! quiet for longer than a whole shard's worth of other clients took.

use hashlink::LruCache;
use rustc_hash::FxBuildHasher;
use std::net::{IpAddr, Ipv6Addr};
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

type Shard = LruCache<IpAddr, Entry, FxBuildHasher>;

/// One rate limit: `limit` requests per client per `window`.
#[derive(Debug)]
pub struct Limiter {
    /// Requests allowed per window.
    pub limit: u32,
    window: u64,
    ipv6_prefix: u8,
    shards: Vec<Mutex<Shard>>,
}

/// What a limiter is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Requests allowed per client per window.
    pub limit: u32,
    /// The window.
    pub window: Duration,
    /// Bits of an IPv6 address that name one client (1 to 128).
    pub ipv6_prefix: u8,
}

impl Settings {
    /// From a config section.
    pub fn from_config(rl: &isame_proto::config::RateLimit) -> Self {
        Self {
            limit: rl.requests_per_ip,
            window: rl.window_size,
            ipv6_prefix: rl.ipv6_prefix,
        }
    }
}

impl Limiter {
    /// A limiter with these settings.
    pub fn new(s: Settings) -> Self {
        Self::with_capacity(s, MAX_CLIENTS)
    }

    /// The same with a chosen cap on tracked clients.
    pub fn with_capacity(s: Settings, max_clients: usize) -> Self {
        let per_shard = max_clients.div_ceil(SHARDS).max(1);
        Self {
            limit: s.limit.max(1),
            window: u64::try_from(s.window.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            ipv6_prefix: s.ipv6_prefix.clamp(1, 128),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::with_hasher(per_shard, FxBuildHasher)))
                .collect(),
        }
    }

    /// True when this limiter has these settings (it may then carry over a reload).
    pub fn same_settings(&self, s: Settings) -> bool {
        self.limit == s.limit
            && u128::from(self.window) == s.window.as_nanos()
            && self.ipv6_prefix == s.ipv6_prefix
    }

    /// The client an address belongs to: itself for IPv4, its network of
    /// `ipv6_prefix` bits for IPv6.
    fn client(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                v6.to_ipv4_mapped().map_or(ip, IpAddr::V4)
            }
            IpAddr::V6(v6) => {
                let bits = u32::from(self.ipv6_prefix);
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<Shard> {
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
        let client = self.client(ip);
        // A poisoned lock only means a panic elsewhere mid-update; the
        // counters are still numbers.
        let mut shard = self
            .shard(&client)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(e) = shard.get_mut(&client) {
            return self.count(e, now);
        }
        let mut e = Entry {
            window: now / self.window,
            current: 0,
            previous: 0,
        };
        let decision = self.count(&mut e, now);
        // At capacity, the least recently heard-from client makes room.
        shard.insert(client, e);
        decision
    }

    /// Counts a request of the client `e` at `now` if the limit allows it.
    fn count(&self, e: &mut Entry, now: u64) -> Decision {
        let window = now / self.window;
        let into = now % self.window;
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

    fn settings(limit: u32, secs: u64) -> Settings {
        Settings {
            limit,
            window: Duration::from_secs(secs),
            ipv6_prefix: 64,
        }
    }

    fn lim(limit: u32, secs: u64) -> Limiter {
        Limiter::new(settings(limit, secs))
    }

    fn allowed(d: Decision) -> bool {
        matches!(d, Decision::Allow { .. })
    }

    #[test]
    fn allows_the_limit_then_denies_until_the_window_moves_on() {
        let l = lim(3, 10);
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
        let l = lim(10, 10);
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
        let l = Limiter::with_capacity(settings(5, 1), 64);
        for n in 0..10_000 {
            l.check(ip(n), 5 * SEC);
        }
        assert!(l.tracked() <= 64, "{}", l.tracked());
        for n in 0..10_000 {
            l.check(ip(n), 50 * SEC);
        }
        assert!(l.tracked() <= 64);
    }

    #[test]
    fn spraying_new_addresses_cannot_reset_an_active_clients_count() {
        let l = Limiter::with_capacity(settings(5, 60), 64 * SHARDS);
        let t = 100 * SEC;
        let heavy = ip(7);
        for _ in 0..5 {
            assert!(allowed(l.check(heavy, t)));
        }
        // Ten times more new addresses than the limiter holds, while the
        // heavy client keeps trying: it stays limited throughout.
        for n in 0..(640 * SHARDS as u32) {
            assert!(allowed(l.check(ip(1_000_000 + n), t)), "a new client");
            if n % 100 == 0 {
                assert!(!allowed(l.check(heavy, t)), "reset after {n} new addresses");
            }
        }
        assert!(l.tracked() <= 64 * SHARDS);
    }

    #[test]
    fn the_least_recently_seen_client_makes_room() {
        // One shard's worth: find three addresses that share a shard.
        let l = Limiter::with_capacity(settings(1, 60), 2 * SHARDS);
        let same: Vec<IpAddr> = (0..)
            .map(ip)
            .filter(|a| std::ptr::eq(l.shard(a), l.shard(&ip(0))))
            .take(3)
            .collect();
        let t = 100 * SEC;
        assert!(allowed(l.check(same[0], t)));
        assert!(allowed(l.check(same[1], t)));
        assert!(
            !allowed(l.check(same[0], t)),
            "same[0] is limited and now the most recent"
        );
        assert!(allowed(l.check(same[2], t)), "evicts same[1], the oldest");
        assert!(!allowed(l.check(same[0], t)), "same[0] kept its count");
        assert!(allowed(l.check(same[1], t)), "same[1] starts over");
    }

    #[test]
    fn ipv6_clients_are_their_prefix() {
        let l = lim(2, 60);
        let t = 100 * SEC;
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:1234:5:6".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert!(allowed(l.check(a, t)));
        assert!(allowed(l.check(b, t)));
        assert!(!allowed(l.check(a, t)), "one /64, one client");
        assert!(allowed(l.check(other, t)), "another /64");
        let exact = Limiter::new(Settings {
            ipv6_prefix: 128,
            ..settings(1, 60)
        });
        assert!(allowed(exact.check(a, t)));
        assert!(
            allowed(exact.check(b, t)),
            "/128: every address is a client"
        );
        let v4 = Limiter::new(Settings {
            ipv6_prefix: 1,
            ..settings(1, 60)
        });
        assert!(allowed(v4.check(ip(1), t)));
        assert!(
            allowed(v4.check(ip(2), t)),
            "IPv4 addresses are never grouped"
        );
    }
}
