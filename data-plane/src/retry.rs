//! When and how a failed request is sent again.
//!
//! Safety first: a request that never reached a backend (the connection
//! failed before a byte was written) may go again whatever its method
//! (`connect_failure`); one that reached a backend goes again only on the
//! policy's other conditions (`retry_on`), only for its
//! `retriable_methods` (idempotent ones unless a route opts others in), and
//! only when its body was kept (small bodies are, up to `max_body_bytes`;
//! a gRPC call's body is kept as it streams). Nothing is retried once
//! response bytes went to the client.
//!
//! A retry budget keeps retries from multiplying an outage: over the last
//! ten seconds an upstream may retry `budget_percent` of its requests plus
//! `budget_min_per_second` per second. Waits between tries grow
//! exponentially with full jitter.

use http::{Method, StatusCode};
use isame_proto::config::{Retry, RetryOn, RouteRetry};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Seconds of history the budget looks at.
const WINDOW: u64 = 10;

/// Why a try failed, as far as the retry conditions tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection, or nothing of the request written.
    NotSent,
    /// The connection closed or broke before a response head.
    Reset,
    /// No response head in time.
    Timeout,
    /// A gRPC answer of `UNAVAILABLE` before any message.
    GrpcUnavailable,
    /// The backend's answer.
    Status(StatusCode),
}

const CONNECT_FAILURE: u8 = 1;
const RESET: u8 = 1 << 1;
const TIMEOUT: u8 = 1 << 2;
const GATEWAY_ERROR: u8 = 1 << 3;
const ANY_5XX: u8 = 1 << 4;
const GRPC_UNAVAILABLE: u8 = 1 << 5;

/// An upstream's compiled retry policy, or a route's version of it.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Whether retries happen at all: switched on, with more than one try.
    pub enabled: bool,
    /// The config's `enabled`.
    switched_on: bool,
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// Bodies up to this size are kept so they can be sent again.
    pub max_body_bytes: u64,
    initial: Duration,
    max: Duration,
    /// The conditions of `retry_on` but status codes, as bits.
    on: u8,
    /// Status codes of `retry_on`.
    statuses: Arc<[u16]>,
    /// `retriable_methods`.
    methods: Methods,
    /// `per_try_timeout` in nanoseconds; 0: none.
    per_try: u64,
    /// Shared by every worker and every route's version of the policy;
    /// carried across reloads per upstream.
    pub budget: Arc<Budget>,
}

impl Policy {
    /// From the config's section and the budget to use.
    pub fn new(r: &Retry, budget: Arc<Budget>) -> Self {
        let mut p = Self {
            enabled: false,
            switched_on: r.enabled,
            max_attempts: r.max_attempts.max(1),
            max_body_bytes: u64::from(r.max_body_bytes),
            initial: r.initial_backoff,
            max: r.max_backoff,
            on: 0,
            statuses: Arc::from([]),
            methods: Methods::of(&r.retriable_methods),
            per_try: nanos(r.per_try_timeout),
            budget,
        };
        p.set_conditions(&r.retry_on);
        p.enabled = p.switched_on && p.max_attempts > 1;
        p
    }

    /// This policy as a route changes it.
    pub fn for_route(&self, r: &RouteRetry) -> Self {
        let mut p = self.clone();
        if let Some(n) = r.max_attempts {
            p.max_attempts = n.max(1);
            p.enabled = p.switched_on && p.max_attempts > 1;
        }
        if let Some(on) = &r.retry_on {
            p.set_conditions(on);
        }
        if let Some(d) = r.per_try_timeout {
            p.per_try = nanos(d);
        }
        if let Some(m) = &r.retriable_methods {
            p.methods = Methods::of(m);
        }
        p
    }

    fn set_conditions(&mut self, on: &[RetryOn]) {
        self.on = 0;
        let mut statuses = Vec::new();
        for c in on {
            self.on |= match c {
                RetryOn::ConnectFailure => CONNECT_FAILURE,
                RetryOn::Reset => RESET,
                RetryOn::Timeout => TIMEOUT,
                RetryOn::GatewayError => GATEWAY_ERROR,
                RetryOn::Status5xx => ANY_5XX,
                RetryOn::GrpcUnavailable => GRPC_UNAVAILABLE,
                RetryOn::Status(code) => {
                    statuses.push(*code);
                    0
                }
            };
        }
        self.statuses = statuses.into();
    }

    /// True when a failure of this kind goes again, given that the method
    /// may be sent twice (`method_ok`) and the body can be (`replayable`).
    /// A request that was not sent goes again whatever its method.
    pub fn retries(
        &self,
        failure: Failure,
        method_ok: impl FnOnce() -> bool,
        replayable: bool,
    ) -> bool {
        let again = match failure {
            Failure::NotSent => return self.on & CONNECT_FAILURE != 0,
            Failure::Reset => self.on & RESET != 0,
            Failure::Timeout => self.on & TIMEOUT != 0,
            Failure::GrpcUnavailable => self.on & GRPC_UNAVAILABLE != 0,
            Failure::Status(s) => {
                (s.is_server_error() && self.on & ANY_5XX != 0)
                    || (matches!(s.as_u16(), 502..=504) && self.on & GATEWAY_ERROR != 0)
                    || self.statuses.contains(&s.as_u16())
            }
        };
        again && replayable && method_ok()
    }

    /// True when requests of method `m` may go again once a backend may
    /// have seen them.
    pub fn method_ok(&self, m: &Method) -> bool {
        self.methods.allows(m)
    }

    /// True when a request of method `m` could go again after reaching a
    /// backend, so that its body is worth keeping.
    pub fn may_replay(&self, m: &Method) -> bool {
        self.enabled
            && (self.on & !CONNECT_FAILURE != 0 || !self.statuses.is_empty())
            && self.method_ok(m)
    }

    /// True when a gRPC call's body should be kept as it streams: its
    /// `UNAVAILABLE` goes again.
    pub fn replays_grpc(&self) -> bool {
        self.enabled && self.on & GRPC_UNAVAILABLE != 0 && self.method_ok(&Method::POST)
    }

    /// How long a try waits for its response head, in nanoseconds: the
    /// shorter of `per_try_timeout` and `response` (`response_timeout`).
    pub fn head_wait(&self, response: u64) -> u64 {
        if self.per_try == 0 {
            response
        } else {
            self.per_try.min(response)
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

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A set of methods: the standard ones as bits, others by name.
#[derive(Debug, Clone)]
struct Methods {
    bits: u16,
    others: Arc<[Method]>,
}

impl Methods {
    fn of(names: &[String]) -> Self {
        let mut bits = 0;
        let mut others = Vec::new();
        for name in names {
            let Ok(m) = Method::from_bytes(name.as_bytes()) else {
                continue;
            };
            match bit(&m) {
                Some(b) => bits |= b,
                None => others.push(m),
            }
        }
        Self {
            bits,
            others: others.into(),
        }
    }

    fn allows(&self, m: &Method) -> bool {
        match bit(m) {
            Some(b) => self.bits & b != 0,
            None => self.others.contains(m),
        }
    }
}

fn bit(m: &Method) -> Option<u16> {
    Some(match *m {
        Method::GET => 1,
        Method::HEAD => 1 << 1,
        Method::OPTIONS => 1 << 2,
        Method::PUT => 1 << 3,
        Method::DELETE => 1 << 4,
        Method::TRACE => 1 << 5,
        Method::POST => 1 << 6,
        Method::PATCH => 1 << 7,
        Method::CONNECT => 1 << 8,
        _ => return None,
    })
}

/// A route's versions of the policies of the upstreams it sends to.
#[derive(Debug, Default)]
pub struct RoutePolicies(Vec<(usize, Policy)>);

impl RoutePolicies {
    /// Compiles `r` over the policy of each upstream in `targets`.
    pub fn new<'a>(r: &RouteRetry, targets: impl Iterator<Item = (usize, &'a Policy)>) -> Self {
        Self(targets.map(|(i, p)| (i, p.for_route(r))).collect())
    }

    /// The policy for requests this route sends to upstream `ui`.
    pub fn get(&self, ui: usize) -> Option<&Policy> {
        self.0.iter().find(|(i, _)| *i == ui).map(|(_, p)| p)
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

    fn policy(yaml: &str) -> Policy {
        let c = isame_proto::config::Config::from_yaml(&format!(
            "upstreams:\n  - name: web\n    backends: [\"http://127.0.0.1:1\"]\nretry:\n{yaml}"
        ))
        .expect("valid");
        Policy::new(&c.retry, Arc::new(Budget::new(20, 10)))
    }

    #[test]
    fn conditions_decide_what_goes_again() {
        let d = policy("  enabled: true\n");
        let s = |n| Failure::Status(StatusCode::from_u16(n).expect("status"));
        // Today's defaults.
        assert!(
            d.retries(Failure::NotSent, || false, false),
            "nothing was sent"
        );
        assert!(d.retries(Failure::Reset, || true, true));
        assert!(d.retries(Failure::Timeout, || true, true));
        assert!(d.retries(s(502), || true, true) && d.retries(s(504), || true, true));
        assert!(!d.retries(s(500), || true, true) && !d.retries(s(429), || true, true));
        // Sent requests need an allowed method and a kept body.
        assert!(!d.retries(s(503), || false, true) && !d.retries(s(503), || true, false));
        assert!(d.method_ok(&Method::PUT) && !d.method_ok(&Method::POST));
        assert!(d.may_replay(&Method::GET) && !d.may_replay(&Method::POST));
        assert!(!d.replays_grpc(), "gRPC calls are POSTs");

        let p = policy("  retry_on: [5xx, 429]\n  per_try_timeout: 1s\n");
        assert!(
            !p.retries(Failure::NotSent, || true, true),
            "connect_failure left out"
        );
        assert!(p.retries(s(500), || true, true) && p.retries(s(429), || true, true));
        assert!(!p.retries(s(409), || true, true) && !p.retries(Failure::Timeout, || true, true));
        assert_eq!(p.head_wait(5_000_000_000), 1_000_000_000);
        assert_eq!(
            p.head_wait(500_000_000),
            500_000_000,
            "response_timeout bounds it"
        );
        assert_eq!(d.head_wait(500_000_000), 500_000_000);

        let only_connect = policy("  retry_on: [connect_failure]\n");
        assert!(
            !only_connect.may_replay(&Method::GET),
            "no body is kept for nothing"
        );
    }

    #[test]
    fn a_route_changes_only_what_it_names() {
        let up = policy("  max_attempts: 4\n  retry_on: [gateway_error]\n");
        let r = RouteRetry {
            retriable_methods: Some(vec!["POST".into(), "PURGE".into()]),
            ..RouteRetry::default()
        };
        let p = up.for_route(&r);
        assert_eq!(p.max_attempts, 4);
        assert!(p.method_ok(&Method::POST) && !p.method_ok(&Method::GET));
        assert!(p.method_ok(&Method::from_bytes(b"PURGE").expect("method")));
        assert!(
            !p.replays_grpc(),
            "grpc_unavailable is not among the upstream's conditions"
        );
        assert!(
            Arc::ptr_eq(&p.budget, &up.budget),
            "one budget per upstream"
        );
        let once = up.for_route(&RouteRetry {
            max_attempts: Some(1),
            ..RouteRetry::default()
        });
        assert!(!once.enabled);
        // Switched off upstream stays off whatever the route's tries.
        let off = policy("  enabled: false\n").for_route(&RouteRetry {
            max_attempts: Some(3),
            ..RouteRetry::default()
        });
        assert!(!off.enabled);
    }

    #[test]
    fn backoff_grows_exponentially_and_stays_capped() {
        let r = Retry {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
            ..Retry::default()
        };
        let p = Policy::new(&r, Arc::new(Budget::new(20, 10)));
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
