//! Choosing a backend and sending the request to it; sending it again on
//! another backend when that is safe (see [`crate::retry`]).

use crate::affinity::Affinity;
use crate::backend::Backend;
use crate::body::ReqBody;
use crate::breaker::{Outcome, Permit, Transition};
use crate::error::ProxyError;
use crate::finish::Finish;
use crate::metrics::{self, Metrics};
use crate::outlier::Answer;
use crate::retry::{Failure, Policy};
use crate::snapshot::UpstreamRt;
use crate::upstream::{self, Head, ResponseBody, UpstreamError};
use crate::{clock, grpc, ramp};
use http::Method;
use http_body::Body;
use http_body_util::BodyExt;
use smallvec::SmallVec;
use std::time::Duration;
use tracing::{info, warn};

/// A response on its way to the client.
pub struct Dispatched {
    /// Its response head.
    pub head: Head,
    /// Its response body.
    pub body: ResponseBody,
    /// The backend that answered, by index.
    pub backend: usize,
}

pub use crate::upstream::Outgoing;

/// Sends the request to the upstream's backends until one answers in a way
/// that is final, the retry policy says stop, or no backend is left.
pub async fn dispatch(
    up: &UpstreamRt,
    out: &Outgoing<'_>,
    affinity: &Affinity,
    body: ReqBody,
    finish: &mut Finish,
    metrics: &Metrics,
) -> Result<Dispatched, ProxyError> {
    let Outgoing {
        parts,
        start,
        client_stall,
        retry: policy,
        ..
    } = *out;
    // Asked only when a try failed: the success path pays nothing for it.
    let method_ok = || policy.method_ok(&parts.method);
    let mut body = keep_for_resending(policy, &parts.method, body, client_stall).await?;
    // Decided before the first try: a streamed body is gone once sent.
    let replayable = body.replayable();
    let retries_on = policy.enabled;
    if retries_on {
        policy.budget.note_request(start);
    }
    // Inline: a request that needs more than four tries is already rare.
    let mut tried: SmallVec<[usize; 4]> = SmallVec::new();
    let mut rng = None;
    let mut attempt = 1;
    let mut now = start;
    loop {
        let Some((bi, permit)) = choose(up, affinity, &tried, now) else {
            finish.use_backend(None);
            return Err(ProxyError::NoBackend);
        };
        tried.push(bi);
        finish.use_backend(Some(bi));
        let backend = &up.backends[bi];
        // Held across the await: if the client goes away and this future is
        // dropped, the permit's drop gives a half-open probe slot back.
        let sent = upstream::send(out, &mut body, backend, up, now).await;
        let status = match &sent {
            Ok((head, _)) => head.status,
            Err(e) => ProxyError::status_of(e),
        };
        metrics::count_request(metrics, backend, &up.name, &parts.method, status);
        // A trailers-only gRPC answer says in its head how the call ended.
        let unavailable = |head: &Head| {
            out.grpc.is_some() && grpc::status_of(&head.headers) == Some(grpc::UNAVAILABLE)
        };
        let outcome = match &sent {
            Ok((head, _)) if head.status.is_server_error() || unavailable(head) => Outcome::Failure,
            Ok(_) => Outcome::Success,
            // A stalled or vanished client says nothing about the backend,
            // nor does a gRPC call to one that cannot carry it.
            Err(e) if e.client_fault() || matches!(e, UpstreamError::NeedsHttp2) => {
                Outcome::Neutral
            }
            Err(_) => Outcome::Failure,
        };
        let failed = outcome == Outcome::Failure;
        // Success needs no time stamp: the clock is read only on failure.
        let done = if failed { clock::now_nanos() } else { now };
        record(up, backend, permit, outcome, done);
        if up.outlier.settings.enabled {
            let answer = match outcome {
                Outcome::Neutral => None,
                Outcome::Success => Some(Answer::Good),
                // 500, 501, 505…: the backend answered; anything else (no
                // answer, 502–504, gRPC's UNAVAILABLE) is a gateway error.
                Outcome::Failure
                    if sent.is_ok()
                        && status.is_server_error()
                        && !matches!(status.as_u16(), 502..=504) =>
                {
                    Some(Answer::ServerError)
                }
                Outcome::Failure => Some(Answer::GatewayError),
            };
            if let Some(a) = answer {
                up.outlier.record(&up.name, &up.backends, bi, a, done);
            }
        }

        let retry = retries_on
            && attempt < policy.max_attempts
            && match &sent {
                Err(e) if e.request_not_sent() => policy.retries(Failure::NotSent, || true, true),
                // A stalled or vanished client, or a backend that cannot
                // carry the call: another try would fare no better.
                Err(e) if e.client_fault() || matches!(e, UpstreamError::NeedsHttp2) => false,
                Err(UpstreamError::Timeout) => {
                    policy.retries(Failure::Timeout, method_ok, replayable)
                }
                Err(_) => policy.retries(Failure::Reset, method_ok, replayable),
                // No condition names a status below 400, and only a gRPC
                // answer can say UNAVAILABLE with one: the common answer
                // decides here.
                Ok((head, _)) if head.status.as_u16() < 400 && out.grpc.is_none() => false,
                // A gRPC body is kept as it streams: whether all of it was
                // is known only now.
                Ok((head, _)) if unavailable(head) => {
                    policy.retries(Failure::GrpcUnavailable, method_ok, body.replayable())
                }
                Ok((head, _)) => {
                    policy.retries(Failure::Status(head.status), method_ok, replayable)
                }
            }
            && policy
                .budget
                .try_retry(if failed { done } else { clock::now_nanos() });
        if !retry {
            return match sent {
                Ok((head, body)) => Ok(Dispatched {
                    head,
                    body,
                    backend: bi,
                }),
                Err(e) => Err(ProxyError::Upstream(e)),
            };
        }
        // The failed answer (and its connection) is dropped here; nothing of
        // it reached the client.
        drop(sent);
        up.retries.inc();
        let wait = policy.backoff(attempt, rng.get_or_insert_with(fastrand::Rng::new));
        tokio::time::sleep(wait).await;
        attempt += 1;
        now = clock::now_nanos();
    }
}

/// A backend for the next try, with its breaker's permit. The first try
/// goes to the backend the sticky cookie names while it is eligible, else
/// asks the balancer (with the request's hash key), whose pick of a
/// backend in slow start may be turned down (see [`crate::ramp`]). A retry
/// goes to the next eligible backend after the last one tried that has not
/// been tried yet (else any eligible one), and leaves the balancer's
/// rotation as it was.
fn choose<'a>(
    up: &'a UpstreamRt,
    affinity: &Affinity,
    tried: &[usize],
    now: u64,
) -> Option<(usize, Permit<'a>)> {
    let mut refused: Vec<usize> = Vec::new();
    // The first backend slow start turned away, for when no other is left.
    let mut ramping: Option<usize> = None;
    let n = up.backends.len();
    // Each turn returns, or rules one backend out (at most twice).
    for _ in 0..=2 * n {
        let usable = |i: usize| up.eligible(i, now) && !refused.contains(&i);
        let found = match tried.last() {
            None => match affinity.sticky.filter(|&i| usable(i)) {
                Some(i) => Some(i),
                None => up.balancer.pick(&up.backends, affinity.hash, usable),
            },
            Some(&last) => {
                let after = (1..=n).map(|k| (last + k) % n);
                after
                    .clone()
                    .find(|&i| usable(i) && !tried.contains(&i))
                    .or_else(|| after.clone().find(|&i| usable(i)))
            }
        };
        let (pick, forced) = match found {
            Some(p) => (p, false),
            None => (ramping.take()?, true),
        };
        if up.slow_start != 0 && !forced && tried.is_empty() && affinity.sticky != Some(pick) {
            let state = &up.backends[pick].state;
            if let Some(p) = ramp::progress(state, up.slow_start, now) {
                if !ramp::admits(p, affinity.hash, state.uid) {
                    ramping.get_or_insert(pick);
                    refused.push(pick);
                    continue;
                }
            }
        }
        if let Some(permit) = up.backends[pick].state.breaker.acquire(&up.breaker, now) {
            return Some((pick, permit));
        }
        // Its half-open probe slots went to another request meanwhile.
        refused.push(pick);
    }
    None
}

/// Feeds one outcome to the backend's breaker, publishing a state change.
fn record(up: &UpstreamRt, b: &Backend, permit: Permit<'_>, outcome: Outcome, now: u64) {
    match permit.record(outcome, now) {
        Some(Transition::Opened) => {
            b.circuit_gauge.set(1);
            warn!(
                upstream = %up.name,
                backend = %b.url,
                open_for = ?up.breaker.open_duration(),
                "circuit opened after consecutive failures"
            );
        }
        Some(Transition::Closed) => {
            b.circuit_gauge.set(0);
            info!(upstream = %up.name, backend = %b.url, "circuit closed");
        }
        None => {}
    }
}

/// Reads a small request body into memory when a retry might need to send
/// it again; other bodies stream.
async fn keep_for_resending(
    policy: &Policy,
    method: &Method,
    body: ReqBody,
    client_stall: Duration,
) -> Result<ReqBody, ProxyError> {
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|n| n > 0 && n <= policy.max_body_bytes);
    if !(small && !body.is_end_stream() && policy.may_replay(method)) {
        return Ok(body);
    }
    match tokio::time::timeout(client_stall, body.collect()).await {
        Ok(Ok(collected)) => Ok(ReqBody::Full(Some(collected.to_bytes()))),
        Ok(Err(e)) => Err(ProxyError::Upstream(UpstreamError::ClientBody(e))),
        Err(_) => Err(ProxyError::Upstream(UpstreamError::ClientStalled)),
    }
}

impl ReqBody {
    /// True when the body can be sent again: empty, or held in memory. Only
    /// meaningful before the first try (a sent stream reports itself ended).
    pub fn replayable(&self) -> bool {
        match self {
            ReqBody::Full(_) => true,
            ReqBody::Stream(b) => b.is_end_stream(),
            ReqBody::Gone => false,
        }
    }
}
