//! What a request leaves behind besides metrics: one access-log line and,
//! when traces are exported, one span (method, route, upstream, backend,
//! status, retries, bytes) that continues the client's W3C `traceparent`
//! and is passed on to the backend.
//!
//! Both are process-wide switches set once at start ([`configure`]). With
//! both off, a request pays one atomic load and carries no extra state.

use crate::snapshot::Snapshot;
use http::{HeaderMap, Method, StatusCode};
use isame_telemetry::RequestSpan;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

const ACCESS_LOG: u8 = 1;
const TRACING: u8 = 2;

static SWITCHES: AtomicU8 = AtomicU8::new(0);

/// Turns the access log and per-request spans on or off for this process.
pub fn configure(access_log: bool, tracing: bool) {
    let bits = if access_log { ACCESS_LOG } else { 0 } | if tracing { TRACING } else { 0 };
    SWITCHES.store(bits, Ordering::Relaxed);
}

/// The span's name: the method (`GET`), without an allocation for the
/// standard ones.
fn span_name(method: &Method) -> std::borrow::Cow<'static, str> {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::TRACE,
        Method::CONNECT,
    ];
    const NAMES: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT",
    ];
    match STANDARD.iter().position(|m| m == method) {
        Some(i) => NAMES[i].into(),
        None => method.as_str().to_owned().into(),
    }
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
    /// For an upgraded connection: the bytes the client sent through it.
    tunneled_in: Option<u64>,
    trace_id: Option<String>,
    span: Option<RequestSpan>,
    /// Where the request was routed (also when a middleware answered it).
    routed: Option<(Arc<Snapshot>, usize)>,
}

/// Starts observing a request, when anything is switched on.
pub fn start<B>(req: &http::Request<B>, client: IpAddr) -> Option<Box<Observation>> {
    let on = SWITCHES.load(Ordering::Relaxed);
    if on == 0 {
        return None;
    }
    let (method, uri, headers) = (req.method(), req.uri(), req.headers());
    let logged = on & ACCESS_LOG != 0;
    // Kept for the access-log line only.
    let target = if logged {
        uri.path_and_query().map_or("/", |p| p.as_str()).to_owned()
    } else {
        String::new()
    };
    let span = if on & TRACING != 0 {
        RequestSpan::start(span_name(method), headers).map(|mut span| {
            if span.recording() {
                span.set("http.request.method", method.as_str().to_owned());
                span.set("url.path", uri.path().to_owned());
                span.set("client.address", client.to_string());
            }
            span
        })
    } else {
        None
    };
    // For the access log: the span's own id is read when the line is
    // written; without a span, the request's.
    let trace_id = if span.is_none() && logged {
        isame_telemetry::propagation::trace_id_of_header(headers).map(str::to_owned)
    } else {
        None
    };
    Some(Box::new(Observation {
        method: method.clone(),
        target,
        // Set once the host is validated (see [`Observation::host`]).
        host: String::new(),
        client,
        status: None,
        attempts: 0,
        bytes: 0,
        tunneled_in: None,
        trace_id,
        span,
        routed: None,
    }))
}

impl Observation {
    /// The request's validated host (`host[:port]`), for the access log.
    pub fn host(&mut self, host: &str) {
        if SWITCHES.load(Ordering::Relaxed) & ACCESS_LOG != 0 {
            host.clone_into(&mut self.host);
        }
    }

    /// The request was routed.
    pub fn routed(&mut self, route: Option<&str>, snap: &Arc<Snapshot>, upstream: usize) {
        if let Some(span) = self.span.as_mut().filter(|s| s.recording()) {
            if let Some(r) = route {
                span.set("isame.route", r.to_owned());
            }
            span.set("isame.upstream", snap.upstreams[upstream].name.clone());
        }
        self.routed = Some((snap.clone(), upstream));
    }

    /// Writes this request's trace context into the headers sent to the
    /// backend, so that the backend's spans are children of this one.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        if let Some(span) = &self.span {
            span.inject(headers);
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

    /// The request's connection was upgraded and carried these bytes:
    /// `to_client` is the response size in the log, and the span has both.
    pub fn tunneled(&mut self, to_backend: u64, to_client: u64) {
        self.bytes += to_client;
        self.tunneled_in = Some(to_backend);
    }

    /// The request ended after `nanos`: the log line is written and the
    /// span closed. `target` is where it went, if it was routed.
    pub fn end(mut self, nanos: u64, target: Option<(&Snapshot, usize, Option<usize>)>) {
        let routed = self.routed.take();
        let target = target.or(routed.as_ref().map(|(snap, u)| (&**snap, *u, None)));
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
        if self.trace_id.is_none() && SWITCHES.load(Ordering::Relaxed) & ACCESS_LOG != 0 {
            self.trace_id = self.span.as_ref().map(RequestSpan::trace_id);
        }
        if let Some(mut span) = self.span.take() {
            if span.recording() {
                span.set("isame.backend", backend.to_owned());
                span.set("isame.retries", i64::from(retries));
                span.set("http.response.status_code", i64::from(status));
                span.set(
                    "http.response.body.size",
                    i64::try_from(self.bytes).unwrap_or(i64::MAX),
                );
                if let Some(n) = self.tunneled_in {
                    span.set("isame.tunnel", true);
                    span.set(
                        "isame.tunnel.bytes_to_backend",
                        i64::try_from(n).unwrap_or(i64::MAX),
                    );
                }
                if status >= 500 {
                    span.fail("server error");
                }
            }
            span.end();
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
