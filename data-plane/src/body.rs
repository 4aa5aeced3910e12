//! Bodies on both sides of the proxy. Both stream: nothing is buffered.
//!
//! [`ProxyBody`] is what the client receives. It carries a [`Finish`] that
//! runs exactly once when the response ends (or is abandoned): it records the
//! request's duration, releases the backend's in-flight slot and marks the
//! client connection idle. (The backend connection returns to its pool from
//! [`ResponseBody`] itself, only when the response was read to its end.)

use crate::clock;
use crate::conn_timeouts::ConnState;
use crate::observe::Observation;
use crate::snapshot::Snapshot;
use crate::upstream::{ResponseBody, UpstreamError};
use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The client's request body, as read from its connection: tells the
/// connection once it was read to its end (an HTTP/1.1 connection is only
/// put away between requests when nothing of the last one is left unread).
pub struct ClientBody {
    inner: Incoming,
    conn: Arc<ConnState>,
}

impl ClientBody {
    /// The body of a request on the connection `conn`.
    pub fn new(inner: Incoming, conn: Arc<ConnState>) -> Self {
        Self { inner, conn }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.conn.body_read();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body of a request sent to a backend.
pub enum ReqBody {
    /// The client's body, streamed through.
    Stream(ClientBody),
    /// A body held in memory (empty when `None`).
    Full(Option<Bytes>),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ReqBody::Stream(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Stream(b) => b.is_end_stream(),
            ReqBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Stream(b) => b.size_hint(),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

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

    /// Records which upstream serves the request.
    pub fn set_upstream(&mut self, snapshot: Arc<Snapshot>, upstream: usize) {
        self.target = Some((snapshot, upstream, None));
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
            up.duration.observe(elapsed as f64 / 1e9);
            // A client that left before an answer is a request, not an error.
            let failed = self.cut_off || self.status.is_some_and(|s| s.is_server_error());
            up.traffic.record(elapsed, failed);
            if let Some(b) = b {
                up.backends[b].state.in_flight.fetch_sub(1, Relaxed);
            }
        }
        self.conn.request_finished(now);
    }
}

/// The body of a response sent to a client.
pub struct ProxyBody {
    inner: Inner,
    finish: Option<Finish>,
}

enum Inner {
    Upstream(ResponseBody),
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// Streams a backend's response body.
    pub fn upstream(body: ResponseBody, finish: Finish) -> Self {
        let mut b = Self {
            inner: Inner::Upstream(body),
            finish: Some(finish),
        };
        b.finish_if_ended();
        b
    }

    /// A body the proxy wrote itself.
    pub fn full(data: impl Into<Bytes>, finish: Option<Finish>) -> Self {
        Self {
            inner: Inner::Full(Some(data.into())),
            finish,
        }
    }

    fn ended(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(d) => d.is_none(),
        }
    }

    fn finish_if_ended(&mut self) {
        if self.ended() {
            drop(self.finish.take());
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Full(d) => Poll::Ready(d.take().map(|d| Ok(Frame::data(d)))),
        };
        match &polled {
            Poll::Ready(None) => {
                drop(this.finish.take());
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut f) = this.finish.take() {
                    f.cut_off = true;
                }
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(o)) = (
                    frame.data_ref(),
                    this.finish.as_mut().and_then(Finish::observation),
                ) {
                    o.sent(data.len());
                }
                this.finish_if_ended()
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
