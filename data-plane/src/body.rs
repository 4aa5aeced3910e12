//! Bodies on both sides of the proxy. Both stream: nothing is buffered.
//!
//! [`ProxyBody`] is what the client receives. It carries the request's
//! [`Finish`], which runs when the response ends or is abandoned. (The
//! backend connection returns to its pool from [`ResponseBody`] itself,
//! only when the response was read to its end.)

use crate::conn_timeouts::ConnState;
use crate::finish::Finish;
use crate::upstream::{ResponseBody, UpstreamError};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
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
    /// The client's body, taken by an earlier try that streamed it: it
    /// cannot be sent again.
    Gone,
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
            ReqBody::Gone => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Stream(b) => b.is_end_stream(),
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Gone => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Stream(b) => b.size_hint(),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
            ReqBody::Gone => SizeHint::with_exact(0),
        }
    }
}

/// The body of a response sent to a client.
pub struct ProxyBody {
    inner: Inner,
    finish: Option<Finish>,
    /// The backend's body made the client wait at least once: from then on
    /// each frame checks whether the backend's drain deadline passed (a
    /// body that never waits is over before any deadline matters).
    waited: bool,
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
            waited: false,
        };
        b.finish_if_ended();
        b
    }

    /// A body the proxy wrote itself.
    pub fn full(data: impl Into<Bytes>, finish: Option<Finish>) -> Self {
        Self {
            inner: Inner::Full(Some(data.into())),
            finish,
            waited: false,
        }
    }

    fn ended(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(d) => d.is_none(),
        }
    }

    /// True when the backend left the rotation and its `drain_timeout`
    /// passed: the rest of the response is cut. Out of line: asked only
    /// of bodies that waited, it keeps the common frame's path short.
    #[inline(never)]
    fn drain_passed(&self) -> bool {
        self.finish
            .as_ref()
            .and_then(Finish::backend_state)
            .is_some_and(|s| {
                s.cut_at.load(std::sync::atomic::Ordering::Relaxed) != 0
                    && s.cut_due(crate::clock::now_nanos())
            })
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
                    f.cut_off();
                }
            }
            Poll::Ready(Some(Ok(_))) if this.waited && this.drain_passed() => {
                if let Some(mut f) = this.finish.take() {
                    f.cut_off();
                }
                return Poll::Ready(Some(Err(UpstreamError::Drained)));
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
            Poll::Pending => this.waited = true,
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
