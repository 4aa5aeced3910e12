//! Request mirroring: a copy of some of a route's requests goes to a shadow
//! upstream, fire-and-forget.
//!
//! The copy runs in a task of its own, so the client's response neither
//! waits for it nor depends on it, and a client that leaves does not cut
//! it off. It is bounded three ways: by `percent` (exactly that many of
//! every 100 requests), by `max_body_bytes` (larger bodies and bodies of
//! unknown length are not copied: a copy must not hold back the primary's
//! stream), and by `max_in_flight` copies per route and node (more are
//! dropped, not queued). The shadow's backends are chosen, checked and
//! counted like any upstream's (its breaker, outlier detection and request
//! metrics see the copies); a copy is tried once, never retried, and cut
//! off after the shadow's `connect_timeout` plus `response_timeout`, its
//! response body included. The body of a copied request is held once in
//! memory and shared by both sides.

use crate::affinity::{self, Affinity};
use crate::body::ReqBody;
use crate::clock;
use crate::conn_timeouts::ConnState;
use crate::dispatch::{self, Outgoing};
use crate::error::ProxyError;
use crate::finish::Finish;
use crate::forwarding::Rewrite;
use crate::retry::Policy;
use crate::snapshot::{Shared, Snapshot, UpstreamRt};
use crate::upstream::{Origin, UpstreamError};
use http::request::Parts;
use http::Request;
use http_body::Body;
use http_body_util::BodyExt;
use isame_proto::config::{Mirror, RouteRetry};
use prometheus::{IntCounter, IntCounterVec};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// What became of one request the mirror looked at, in the order of
/// [`RESULTS`].
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// The shadow answered (whatever the status).
    Answered,
    /// The shadow gave no (complete) answer in time.
    Failed,
    /// `max_in_flight` copies were already on their way.
    Dropped,
    /// The body was too large or of unknown length.
    Skipped,
}

/// The `result` label of `isame_lb_mirror_requests_total`.
pub const RESULTS: [&str; 4] = ["answered", "failed", "dropped", "skipped"];

/// A route's mirror, compiled.
#[derive(Debug)]
pub struct MirrorRt {
    /// The index of the shadow upstream.
    upstream: usize,
    percent: u64,
    max_body: u64,
    /// Requests the route has seen, for the share.
    seen: Arc<AtomicU64>,
    /// `max_in_flight`.
    cap: usize,
    slots: Arc<Semaphore>,
    /// The shadow's policy with a single try.
    policy: Policy,
    /// By [`Outcome`].
    counts: [IntCounter; 4],
}

impl MirrorRt {
    /// Compiles `m` for route `route`, whose shadow is `shadow` (index and
    /// upstream); `before` is the route's mirror in the snapshot this one
    /// replaces, whose in-flight slots and count carry over while
    /// `max_in_flight` stays.
    pub fn new(
        m: &Mirror,
        route: &str,
        shadow: (usize, &UpstreamRt),
        before: Option<&MirrorRt>,
        metric: &IntCounterVec,
    ) -> Self {
        let cap = m.max_in_flight.max(1) as usize;
        let before = before.filter(|b| b.cap == cap);
        Self {
            upstream: shadow.0,
            percent: u64::from(m.percent.min(100)),
            max_body: u64::from(m.max_body_bytes),
            seen: before.map_or_else(Arc::default, |b| b.seen.clone()),
            cap,
            slots: before.map_or_else(|| Arc::new(Semaphore::new(cap)), |b| b.slots.clone()),
            policy: shadow.1.retry.for_route(&RouteRetry {
                max_attempts: Some(1),
                ..RouteRetry::default()
            }),
            counts: RESULTS.map(|r| metric.with_label_values(&[route, r])),
        }
    }

    /// True for the requests of the copied share: with `percent` p,
    /// request n is copied when `(n mod 100) × p mod 100 < p`, which holds
    /// for exactly p of every 100 consecutive requests, evenly spread.
    fn sampled(&self) -> bool {
        if self.percent == 0 {
            return false;
        }
        let n = self.seen.fetch_add(1, Relaxed) % 100;
        n * self.percent % 100 < self.percent
    }

    fn count(&self, o: Outcome) {
        self.counts[o as usize].inc();
    }
}

/// What a copy needs of the request besides its head and body.
pub struct Source<'a> {
    /// The snapshot the request runs on.
    pub snap: &'a Arc<Snapshot>,
    /// The route, by index.
    pub route: usize,
    /// The proxy's shared state (metrics).
    pub shared: &'a Arc<Shared>,
    /// The client's address.
    pub client: IpAddr,
    /// The client connection, for a shadow that sends PROXY headers.
    pub origin: Origin,
    /// Longest pause allowed in the client's body.
    pub client_stall: Duration,
    /// The gRPC call the request is, if it is one.
    pub grpc: Option<crate::grpc::Call>,
}

/// Sends a copy of the request to the route's shadow when it is in the
/// copied share; returns the body for the primary (read into memory when
/// it was copied). Fails only when reading the client's body fails, as
/// the primary's try would have.
pub async fn copy(
    m: &MirrorRt,
    c: &Source<'_>,
    parts: &Parts,
    rewrite: &Rewrite,
    body: ReqBody,
) -> Result<ReqBody, ProxyError> {
    if !m.sampled() {
        return Ok(body);
    }
    let data = if body.is_end_stream() {
        None
    } else {
        match body.size_hint().exact() {
            Some(n) if n <= m.max_body => Some(()),
            _ => {
                m.count(Outcome::Skipped);
                return Ok(body);
            }
        }
    };
    let Ok(slot) = m.slots.clone().try_acquire_owned() else {
        m.count(Outcome::Dropped);
        return Ok(body);
    };
    let body = match data {
        None => body,
        Some(()) => match tokio::time::timeout(c.client_stall, body.collect()).await {
            Ok(Ok(collected)) => ReqBody::Full(Some(collected.to_bytes())),
            Ok(Err(e)) => return Err(ProxyError::Upstream(UpstreamError::ClientBody(e))),
            Err(_) => return Err(ProxyError::Upstream(UpstreamError::ClientStalled)),
        },
    };
    let copied = match &body {
        ReqBody::Full(b) => ReqBody::Full(b.clone()),
        _ => ReqBody::Full(None),
    };
    let shadow = &c.snap.upstreams[m.upstream];
    let mut rewrite = rewrite.clone();
    if shadow.send_proxy_protocol.is_some() {
        rewrite.set_origin(c.origin);
    }
    let head = head_of(parts);
    let affinity = if shadow.hash_on.is_some() {
        affinity::of(shadow.hash_on.as_ref(), None, &head, c.client)
    } else {
        Affinity::default()
    };
    let task = Task {
        snap: c.snap.clone(),
        route: c.route,
        shared: c.shared.clone(),
        head,
        rewrite,
        affinity,
        client_stall: c.client_stall,
        grpc: c.grpc,
    };
    tokio::spawn(async move {
        let outcome = task.run(copied).await;
        if let Some(m) = task.snap.mirrors[task.route].as_ref() {
            m.count(outcome);
        }
        drop(slot);
    });
    Ok(body)
}

/// A copy of the request head (`Parts` itself cannot be cloned: its
/// extensions are not).
fn head_of(parts: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

/// One copy on its way, owning what it needs.
struct Task {
    snap: Arc<Snapshot>,
    route: usize,
    shared: Arc<Shared>,
    head: Parts,
    rewrite: Rewrite,
    affinity: Affinity,
    client_stall: Duration,
    grpc: Option<crate::grpc::Call>,
}

impl Task {
    async fn run(&self, body: ReqBody) -> Outcome {
        let Some(m) = self.snap.mirrors[self.route].as_ref() else {
            return Outcome::Failed;
        };
        let shadow = &self.snap.upstreams[m.upstream];
        let limit = shadow
            .connect_timeout
            .saturating_add(shadow.response_timeout);
        let start = clock::now_nanos();
        // A request of its own: the shadow's in-flight counts, duration
        // and traffic see it; the client's connection does not.
        let conn = ConnState::new();
        conn.request_started(false, false, false);
        let mut finish = Finish::new(conn, start);
        finish.set_upstream(self.snap.clone(), m.upstream);
        let out = Outgoing {
            parts: &self.head,
            rewrite: &self.rewrite,
            start,
            client_stall: self.client_stall,
            grpc: self.grpc,
            retry: &m.policy,
        };
        let exchange = async {
            let d = dispatch::dispatch(
                shadow,
                &out,
                &self.affinity,
                body,
                &mut finish,
                &self.shared.metrics,
            )
            .await
            .ok()?;
            finish.status(d.head.status);
            let mut body = d.body;
            // Read to its end so that the connection can serve again.
            while let Some(frame) = body.frame().await {
                frame.ok()?;
            }
            Some(())
        };
        let done = tokio::time::timeout(limit, exchange).await;
        match done {
            Ok(Some(())) => Outcome::Answered,
            _ => {
                finish.cut_off();
                Outcome::Failed
            }
        }
    }
}
