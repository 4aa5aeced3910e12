//! The two bodies of an HTTP/2 exchange with a backend: the client's body
//! going up ([`Upload`], with its stall limit) and the backend's coming
//! down ([`H2Body`], with its stall limit and a gRPC call's deadline).

use super::pool::StreamSlot;
use crate::body::ReqBody;
use crate::clock;
use crate::grpc::{self, Statuses};
use crate::upstream::UpstreamError;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::time::Sleep;

/// A timer re-armed only when it fires early (the deadline it guards moves
/// with every frame; resetting it per frame would cost more than a wake-up).
#[derive(Default)]
struct Timer(Option<Pin<Box<Sleep>>>);

impl Timer {
    /// Ready once `at` (clock nanoseconds) has passed.
    fn poll_at(&mut self, cx: &mut Context<'_>, at: u64) -> Poll<()> {
        if clock::now_nanos() >= at {
            return Poll::Ready(());
        }
        let when = clock::instant_at(at);
        let sleep = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(when)));
        if sleep.deadline() != when {
            sleep.as_mut().reset(when);
        }
        sleep.as_mut().poll(cx)
    }
}

/// What the sender learns of the upload: when it ended, whether the
/// client made it fail, and (for a gRPC call that may be retried) a copy of
/// what was sent.
#[derive(Default)]
pub struct UploadState {
    ended_at: AtomicU64,
    fault: Mutex<Option<UpstreamError>>,
    tee: Mutex<Option<Tee>>,
}

/// A copy of the body as it went up, while it stays within `limit` bytes
/// and has no trailers.
struct Tee {
    data: BytesMut,
    limit: u64,
}

impl UploadState {
    /// State that keeps a copy of a body of up to `limit` bytes.
    pub fn teeing(limit: u64) -> Self {
        Self {
            tee: Mutex::new(Some(Tee {
                data: BytesMut::new(),
                limit,
            })),
            ..Self::default()
        }
    }

    /// The whole body as sent, when it ended and was kept.
    pub fn sent_body(&self) -> Option<Bytes> {
        self.ended_at()?;
        let tee = self.tee.lock().unwrap_or_else(PoisonError::into_inner);
        tee.as_ref().map(|t| t.data.clone().freeze())
    }

    fn copy(&self, frame: &Frame<Bytes>) {
        let mut tee = self.tee.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(t) = tee.as_mut() else {
            return;
        };
        match frame.data_ref() {
            Some(d) if (t.data.len() + d.len()) as u64 <= t.limit => t.data.extend_from_slice(d),
            // Too large, or trailers: a resend could not be the same.
            _ => *tee = None,
        }
    }

    /// When the client's body ended (clock nanoseconds), if it has.
    pub fn ended_at(&self) -> Option<u64> {
        Some(self.ended_at.load(Relaxed)).filter(|&t| t > 0)
    }

    /// The client's failure, if it made the exchange fail.
    pub fn take_fault(&self) -> Option<UpstreamError> {
        self.fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn end(&self) {
        self.ended_at.store(clock::now_nanos().max(1), Relaxed);
    }

    fn fail(&self, e: UpstreamError) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
    }
}

/// The client's body on its way to an HTTP/2 backend. A pause longer than
/// `stall` fails it (the stream is reset; the client gets 408).
pub struct Upload {
    inner: ReqBody,
    stall: u64,
    last: u64,
    timer: Timer,
    state: Arc<UploadState>,
    teeing: bool,
}

impl Upload {
    /// Wraps `inner`; `stall` in nanoseconds (0: no limit).
    pub fn new(inner: ReqBody, stall: u64, state: Arc<UploadState>) -> Self {
        if inner.is_end_stream() {
            state.end();
        }
        let teeing = matches!(inner, ReqBody::Stream(_))
            && state
                .tee
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some();
        Self {
            inner,
            stall,
            last: clock::now_nanos(),
            timer: Timer::default(),
            state,
            teeing,
        }
    }

    /// The client's body back, when the request was never sent.
    pub fn into_inner(self) -> ReqBody {
        self.inner
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.last = clock::now_nanos();
                if this.teeing {
                    this.state.copy(&frame);
                }
                if this.inner.is_end_stream() {
                    this.state.end();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.state.end();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.state.fail(UpstreamError::ClientBody(e));
                Poll::Ready(Some(Err(UpstreamError::Protocol(
                    "client request body failed".into(),
                ))))
            }
            Poll::Pending if this.stall == 0 => Poll::Pending,
            Poll::Pending => match this.timer.poll_at(cx, this.last.saturating_add(this.stall)) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    this.state.fail(UpstreamError::ClientStalled);
                    Poll::Ready(Some(Err(UpstreamError::ClientStalled)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How the response of one stream is watched.
pub struct Watch {
    /// Longest pause between frames, in nanoseconds (0: none).
    pub stall: u64,
    /// A gRPC call's deadline (clock nanoseconds; 0: none). When it passes
    /// the stream is reset and the client gets `DEADLINE_EXCEEDED`.
    pub deadline: u64,
    /// Where a gRPC call's status is counted.
    pub grpc: Option<Arc<Statuses>>,
}

/// A response body streamed from one HTTP/2 stream.
pub struct H2Body {
    inner: Option<Incoming>,
    slot: Option<StreamSlot>,
    watch: Watch,
    last: u64,
    timer: Timer,
    /// The gRPC status was counted (from the head or the trailers).
    counted: bool,
}

impl H2Body {
    /// The body of a response whose head was `status_in_head` (a
    /// trailers-only gRPC answer carries its status there).
    pub fn new(
        inner: Incoming,
        slot: StreamSlot,
        watch: Watch,
        status_in_head: Option<&http::HeaderValue>,
    ) -> Self {
        let mut counted = false;
        if let (Some(g), Some(s)) = (&watch.grpc, status_in_head) {
            g.count(Some(s));
            counted = true;
        }
        let mut body = Self {
            inner: Some(inner),
            slot: Some(slot),
            watch,
            last: clock::now_nanos(),
            timer: Timer::default(),
            counted,
        };
        if body.inner.as_ref().is_some_and(Body::is_end_stream) {
            body.end(None);
        }
        body
    }

    /// Ends the stream; counts the gRPC status if it was not yet.
    fn end(&mut self, status: Option<&http::HeaderValue>) {
        self.inner = None;
        self.slot = None;
        if let (Some(g), false) = (&self.watch.grpc, self.counted) {
            g.count(status);
            self.counted = true;
        }
    }

    /// The frame the client gets when a gRPC deadline passes.
    fn deadline_trailers() -> Frame<Bytes> {
        let mut t = grpc::answer_headers(grpc::DEADLINE_EXCEEDED, "deadline exceeded");
        t.remove(http::header::CONTENT_TYPE);
        Frame::trailers(t)
    }
}

impl Drop for H2Body {
    fn drop(&mut self) {
        // A call the client abandoned has no status.
        self.end(None);
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.last = clock::now_nanos();
                if let Some(t) = frame.trailers_ref() {
                    let status = t.get(&grpc::GRPC_STATUS).cloned();
                    this.end(status.as_ref());
                } else if this.inner.as_ref().is_some_and(Body::is_end_stream) {
                    this.end(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.end(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.end(None);
                Poll::Ready(Some(Err(UpstreamError::Body(io::Error::other(e)))))
            }
            Poll::Pending => {
                let stall_at = match this.watch.stall {
                    0 => u64::MAX,
                    s => this.last.saturating_add(s),
                };
                let deadline = match this.watch.deadline {
                    0 => u64::MAX,
                    d => d,
                };
                let at = stall_at.min(deadline);
                if at == u64::MAX || this.timer.poll_at(cx, at).is_pending() {
                    return Poll::Pending;
                }
                if clock::now_nanos() >= deadline {
                    let status = http::HeaderValue::from(grpc::DEADLINE_EXCEEDED);
                    this.end(Some(&status));
                    return Poll::Ready(Some(Ok(Self::deadline_trailers())));
                }
                this.end(None);
                Poll::Ready(Some(Err(UpstreamError::Timeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
