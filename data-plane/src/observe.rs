//! What a request leaves behind besides metrics: one access-log line and,
//! when traces are exported, one span (method, route, upstream, backend,
//! status, retries, bytes) that continues the client's W3C `traceparent`
//! and is passed on to the backend.
//!
//! Both are process-wide switches set once at start ([`configure`]). With
//! both off, a request pays one atomic load and carries no extra state.

use crate::snapshot::Snapshot;
use http::{HeaderMap, Method, StatusCode, Uri};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use tracing::field::Empty;

const ACCESS_LOG: u8 = 1;
const TRACING: u8 = 2;

static SWITCHES: AtomicU8 = AtomicU8::new(0);

/// Turns the access log and per-request spans on or off for this process.
pub fn configure(access_log: bool, tracing: bool) {
    let bits = if access_log { ACCESS_LOG } else { 0 } | if tracing { TRACING } else { 0 };
    SWITCHES.store(bits, Ordering::Relaxed);
}

/// One request being observed.
pub struct Observation {
    method: Method,
    target: String,
    host: String,
    client: IpAddr,
    status: Option<StatusCode>,
    attempts: u32,
    bytes: u64,
    trace_id: Option<String>,
    span: Option<tracing::Span>,
}

/// Starts observing a request, when anything is switched on.
pub fn start(
    method: &Method,
    uri: &Uri,
    host: Option<&str>,
    headers: &HeaderMap,
    client: IpAddr,
) -> Option<Box<Observation>> {
    let on = SWITCHES.load(Ordering::Relaxed);
    if on == 0 {
        return None;
    }
    let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let span = (on & TRACING != 0).then(|| {
        let span = tracing::info_span!(
            target: "isame::proxy",
            "proxy_request",
            otel.name = %format_args!("{method}"),
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = %method,
            url.path = uri.path(),
            client.address = %client,
            isame.route = Empty,
            isame.upstream = Empty,
            isame.backend = Empty,
            isame.retries = Empty,
            http.response.status_code = Empty,
            http.response.body.size = Empty,
        );
        isame_telemetry::propagation::continue_trace(&span, headers);
        span
    });
    let trace_id = match &span {
        Some(s) => isame_telemetry::propagation::trace_id(s),
        None => isame_telemetry::propagation::trace_id_of_header(headers).map(str::to_owned),
    };
    Some(Box::new(Observation {
        method: method.clone(),
        target,
        host: host.unwrap_or("").to_owned(),
        client,
        status: None,
        attempts: 0,
        bytes: 0,
        trace_id,
        span,
    }))
}

impl Observation {
    /// The request was routed.
    pub fn routed(&self, route: Option<&str>, upstream: &str) {
        if let Some(span) = &self.span {
            if let Some(r) = route {
                span.record("isame.route", r);
            }
            span.record("isame.upstream", upstream);
        }
    }

    /// Writes this request's trace context into the headers sent to the
    /// backend, so that the backend's spans are children of this one.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        if let Some(span) = &self.span {
            isame_telemetry::propagation::inject(span, headers);
        }
    }

    /// One more attempt on a backend.
    pub fn attempt(&mut self) {
        self.attempts += 1;
    }

    /// The status the client gets.
    pub fn status(&mut self, status: StatusCode) {
        self.status = Some(status);
    }

    /// Response body bytes sent.
    pub fn sent(&mut self, n: usize) {
        self.bytes += n as u64;
    }

    /// The request ended after `nanos`: the log line is written and the
    /// span closed. `target` is where it went, if it was routed.
    pub fn end(self, nanos: u64, target: Option<(&Snapshot, usize, Option<usize>)>) {
        let (upstream, backend) = match target {
            Some((snap, u, b)) => {
                let up = &snap.upstreams[u];
                (
                    up.name.as_str(),
                    b.map_or("", |b| up.backends[b].url.as_str()),
                )
            }
            None => ("", ""),
        };
        let retries = self.attempts.saturating_sub(1);
        // 499 in the log, like nginx, for a client that left before an answer.
        let status = self.status.map_or(499, |s| s.as_u16());
        if let Some(span) = &self.span {
            span.record("isame.backend", backend);
            span.record("isame.retries", retries);
            span.record("http.response.status_code", status);
            span.record("http.response.body.size", self.bytes);
            if status >= 500 {
                span.record("otel.status_code", "error");
            }
        }
        if SWITCHES.load(Ordering::Relaxed) & ACCESS_LOG != 0 {
            crate::access_log::write(&crate::access_log::Entry {
                client: self.client,
                method: self.method.as_str(),
                host: &self.host,
                target: &self.target,
                status,
                upstream,
                backend,
                retries,
                bytes: self.bytes,
                nanos,
                trace_id: self.trace_id.as_deref().unwrap_or(""),
            });
        }
    }
}
