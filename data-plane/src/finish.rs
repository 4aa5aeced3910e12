//! What runs exactly once when a request ends, however it ends: its
//! duration and outcome are recorded, the backend's in-flight slot is
//! released and the client connection is marked idle.

use crate::clock;
use crate::conn_timeouts::ConnState;
use crate::observe::Observation;
use crate::snapshot::Snapshot;
use http::StatusCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Bookkeeping that runs exactly once, when the request ends: when its
/// response body ends or is dropped, or when the request is abandoned before
/// it had a response (the client went away). It runs on drop, so no path can
/// skip it and leak an in-flight slot.
pub struct Finish {
    conn: Arc<ConnState>,
    /// When the request arrived (clock nanoseconds).
    start: u64,
    /// The snapshot the request was served on, and the upstream/backend it used.
    target: Option<(Arc<Snapshot>, usize, Option<usize>)>,
    /// The access-log line and span, when either is on.
    observation: Option<Box<Observation>>,
    /// The status the client got, once it has one.
    status: Option<StatusCode>,
    /// The backend's body failed before its end (the client got a cut-off response).
    cut_off: bool,
    /// Duration and outcome were recorded already (when the connection
    /// switched protocols).
    recorded: bool,
}

impl Finish {
    /// Starts timing a request on a client connection.
    pub fn new(conn: Arc<ConnState>, start: u64) -> Self {
        Self {
            conn,
            start,
            target: None,
            observation: None,
            status: None,
            cut_off: false,
            recorded: false,
        }
    }

    /// The status the client gets.
    pub fn status(&mut self, status: StatusCode) {
        self.status = Some(status);
        if let Some(o) = self.observation.as_deref_mut() {
            o.status(status);
        }
    }

    /// Attaches the request's observation (see [`crate::observe`]).
    pub fn observe(&mut self, observation: Option<Box<Observation>>) {
        self.observation = observation;
    }

    /// The request's observation, when anything observes it.
    pub fn observation(&mut self) -> Option<&mut Observation> {
        self.observation.as_deref_mut()
    }

    /// The backend's body failed before its end: the client got a cut-off
    /// response, counted as an error.
    pub fn cut_off(&mut self) {
        self.cut_off = true;
    }

    /// The connection switched protocols now: the request's duration and
    /// outcome in the upstream's latency histogram and traffic report are
    /// those of the handshake, not of the hours a WebSocket may stay open.
    /// The backend's in-flight slot is held, and the access-log line and
    /// span written, until this is dropped at the tunnel's end.
    pub fn switched(&mut self) {
        if let Some((snap, u, _)) = &self.target {
            let up = &snap.upstreams[*u];
            let elapsed = clock::now_nanos().saturating_sub(self.start);
            up.duration.observe(elapsed as f64 / 1e9);
            up.traffic.record(elapsed, false);
            self.recorded = true;
        }
    }

    /// Records which upstream serves the request.
    pub fn set_upstream(&mut self, snapshot: Arc<Snapshot>, upstream: usize) {
        self.target = Some((snapshot, upstream, None));
    }

    /// The state of the backend the request went to.
    pub fn backend_state(&self) -> Option<&Arc<crate::backend::BackendState>> {
        let (snap, u, b) = self.target.as_ref()?;
        Some(&snap.upstreams[*u].backends[(*b)?].state)
    }

    /// Moves the request's in-flight slot to `backend` (none: releases it).
    pub fn use_backend(&mut self, backend: Option<usize>) {
        let Some((snap, u, current)) = self.target.as_mut() else {
            return;
        };
        let up = &snap.upstreams[*u];
        if let Some(b) = backend {
            up.backends[b].state.in_flight.fetch_add(1, Relaxed);
            if let Some(o) = self.observation.as_deref_mut() {
                o.attempt();
            }
        }
        if let Some(b) = current.take() {
            up.backends[b].state.in_flight.fetch_sub(1, Relaxed);
        }
        *current = backend;
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let now = clock::now_nanos();
        let elapsed = now.saturating_sub(self.start);
        if let Some(o) = self.observation.take() {
            o.end(
                elapsed,
                self.target.as_ref().map(|(snap, u, b)| (&**snap, *u, *b)),
            );
        }
        if let Some((snap, u, b)) = self.target.take() {
            let up = &snap.upstreams[u];
            if !self.recorded {
                up.duration.observe(elapsed as f64 / 1e9);
                // A client that left before an answer is a request, not an error.
                let failed = self.cut_off || self.status.is_some_and(|s| s.is_server_error());
                up.traffic.record(elapsed, failed);
            }
            if let Some(b) = b {
                up.backends[b].state.in_flight.fetch_sub(1, Relaxed);
            }
        }
        self.conn.request_finished(now);
    }
}
