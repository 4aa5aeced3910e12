//! Client connection timeouts, enforced inside the connection's I/O so the
//! request path pays nothing for them:
//!
//! - **header read** (`server.read_timeout`): from the first byte of a request
//!   (or from accept) until its headers are complete;
//! - **idle** (`server.idle_timeout`): a keep-alive connection with no request
//!   in flight;
//! - **write stall** (`server.write_timeout`): a write to the client that makes
//!   no progress.
//!
//! One timer per connection is re-armed only when it fires (at most once per
//! shortest timeout), never per request. Each state change happens at least
//! one shortest-timeout after the last check, so a deadline is never missed:
//! the next check always comes at or before it.

use crate::clock;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long an HTTP/1.1 connection stays idle between requests before it
/// is parked (see [`crate::connection`]). Connections busy with a stream of
/// requests are never parked.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

const READING_HEAD: u8 = 0;
const ACTIVE: u8 = 1;
const IDLE: u8 = 2;

/// The three client timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Longest time to receive a request's headers.
    pub header_read: Duration,
    /// Longest idle time between requests.
    pub idle: Duration,
    /// Longest time a write may stall.
    pub write_stall: Duration,
}

impl Timeouts {
    fn granularity(&self) -> u64 {
        nanos(self.header_read.min(self.idle).min(self.write_stall)).max(1_000_000)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a connection is doing, shared by its I/O and its requests.
#[derive(Debug)]
pub struct ConnState {
    phase: AtomicU8,
    since: AtomicU64,
    active: AtomicU32,
    multiplexed: AtomicBool,
    /// The last request may be followed by another on this connection: it
    /// was HTTP/1.1 without `Connection: close`, and no answer closed it.
    keep_alive: AtomicBool,
    /// The last request's body has not been read to its end.
    body_pending: AtomicBool,
    /// The connection has been idle for [`PARK_AFTER`] and may be parked.
    park_due: AtomicBool,
    /// The connection is being parked: its socket must stay open.
    parking: AtomicBool,
    /// The connection is parked (waiting for its client's next byte).
    parked: AtomicBool,
}

impl ConnState {
    /// A new connection, waiting for its first request's headers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            phase: AtomicU8::new(READING_HEAD),
            since: AtomicU64::new(clock::now_nanos()),
            active: AtomicU32::new(0),
            multiplexed: AtomicBool::new(false),
            keep_alive: AtomicBool::new(false),
            body_pending: AtomicBool::new(false),
            park_due: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            parked: AtomicBool::new(false),
        })
    }

    /// A request's headers arrived. `multiplexed` is true for HTTP/2, where
    /// bytes between requests (pings, settings) do not start a request.
    /// `keep_alive` says whether the request lets the connection carry
    /// another after it; `has_body`, whether it has a body to read.
    pub fn request_started(&self, multiplexed: bool, keep_alive: bool, has_body: bool) {
        if multiplexed {
            self.multiplexed.store(true, Relaxed);
        }
        self.keep_alive.store(keep_alive, Relaxed);
        self.body_pending.store(has_body, Relaxed);
        self.active.fetch_add(1, Relaxed);
        self.phase.store(ACTIVE, Relaxed);
    }

    /// Part of a request head is already read (it was put back in front of
    /// the stream): the header-read timeout runs from now.
    pub fn head_pending(&self) {
        if self.phase.load(Relaxed) == IDLE {
            self.since.store(clock::now_nanos(), Relaxed);
            self.phase.store(READING_HEAD, Relaxed);
        }
    }

    /// The request's body was read to its end.
    pub fn body_read(&self) {
        self.body_pending.store(false, Relaxed);
    }

    /// The answer closes the connection (`Connection: close`).
    pub fn closes(&self) {
        self.keep_alive.store(false, Relaxed);
    }

    /// True when the connection has been idle between two requests for at
    /// least `after` nanoseconds at `now`, and may carry another request: it
    /// can be put away until the client sends again (see
    /// [`crate::connection`]).
    pub fn parkable(&self, now: u64, after: u64) -> bool {
        self.phase.load(Relaxed) == IDLE
            && self.active.load(Relaxed) == 0
            && self.keep_alive.load(Relaxed)
            && !self.body_pending.load(Relaxed)
            && !self.multiplexed.load(Relaxed)
            && now.saturating_sub(self.since.load(Relaxed)) >= after
    }

    /// When the connection may be parked (clock nanoseconds), if it is
    /// idle and may carry another request.
    fn park_at(&self) -> Option<u64> {
        (!self.parked.load(Relaxed) && self.parkable(u64::MAX, 0))
            .then(|| self.since.load(Relaxed).saturating_add(nanos(PARK_AFTER)))
    }

    /// Marks the connection as being parked (its socket then survives the
    /// shutdown of its HTTP connection object), or no longer.
    pub fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Relaxed);
    }

    /// Marks the connection as parked, or no longer.
    pub fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Relaxed);
    }

    /// Marks the connection as HTTP/2 (never parked).
    pub fn set_multiplexed(&self) {
        self.multiplexed.store(true, Relaxed);
    }

    /// True while the connection may be parked later: it is not HTTP/2 and
    /// not parked. Its timer then ticks at least every [`PARK_AFTER`], to
    /// notice in time when it went idle; the timers of HTTP/2 and parked
    /// connections tick only as often as their timeouts need.
    fn may_park(&self) -> bool {
        !self.multiplexed.load(Relaxed) && !self.parked.load(Relaxed)
    }

    /// True while the connection is being parked.
    pub fn parking(&self) -> bool {
        self.parking.load(Relaxed)
    }

    /// True (once) when the connection's I/O found it idle for
    /// [`PARK_AFTER`]: the connection's driver may now park it.
    pub fn take_park_due(&self) -> bool {
        self.park_due.load(Relaxed) && self.park_due.swap(false, Relaxed)
    }

    /// A response finished (or was abandoned) at `now` (from [`clock::now_nanos`]).
    pub fn request_finished(&self, now: u64) {
        if self.active.fetch_sub(1, Relaxed) == 1 {
            self.since.store(now, Relaxed);
            self.phase.store(IDLE, Relaxed);
        }
    }

    fn data_arrived(&self) {
        if self.phase.load(Relaxed) == IDLE && !self.multiplexed.load(Relaxed) {
            self.since.store(clock::now_nanos(), Relaxed);
            self.phase.store(READING_HEAD, Relaxed);
        }
    }
}

/// Wraps a client stream and fails its reads or writes once a timeout passes.
pub struct TimedIo<T> {
    inner: T,
    state: Arc<ConnState>,
    timeouts: Timeouts,
    timer: Pin<Box<Sleep>>,
    /// The waker the timer was last polled with: while it stays the same and
    /// the timer has not fired, polling the timer again would only repeat
    /// the registration.
    registered: Option<Waker>,
    write_blocked_since: u64,
}

impl<T> TimedIo<T> {
    /// Wraps `inner`; the header-read clock starts now.
    pub fn new(inner: T, state: Arc<ConnState>, timeouts: Timeouts) -> Self {
        // A new connection may be parked after its first request: its
        // timer ticks at the parking pace from the start.
        let first = clock::now_nanos() + timeouts.granularity().min(nanos(PARK_AFTER));
        Self {
            inner,
            state,
            timeouts,
            timer: Box::pin(tokio::time::sleep_until(clock::instant_at(first))),
            registered: None,
            write_blocked_since: 0,
        }
    }

    /// The deadline that applies now, with what it is for.
    fn deadline(&self) -> Option<(u64, &'static str)> {
        let mut best: Option<(u64, &'static str)> = None;
        let mut consider = |at: u64, what| {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, what));
            }
        };
        if self.write_blocked_since != 0 {
            consider(
                self.write_blocked_since
                    .saturating_add(nanos(self.timeouts.write_stall)),
                "write to client stalled",
            );
        }
        let since = self.state.since.load(Relaxed);
        match self.state.phase.load(Relaxed) {
            READING_HEAD => consider(
                since.saturating_add(nanos(self.timeouts.header_read)),
                "request headers not received in time",
            ),
            IDLE => consider(
                since.saturating_add(nanos(self.timeouts.idle)),
                "idle keep-alive connection",
            ),
            _ => {}
        }
        best
    }

    /// Ready with an error once a deadline has passed; otherwise keeps the timer armed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
            && !self.timer.is_elapsed()
        {
            return Poll::Pending;
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                self.registered = Some(cx.waker().clone());
                return Poll::Pending;
            }
            self.registered = None;
            let now = clock::now_nanos();
            let mut step = self.timeouts.granularity();
            if self.state.may_park() {
                step = step.min(nanos(PARK_AFTER));
            }
            let mut next = now.saturating_add(step);
            if let Some((at, what)) = self.deadline() {
                if at <= now {
                    return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what));
                }
                next = next.min(at);
            }
            // Parking is no failure: it is flagged for the connection's
            // driver, which looks once this poll returns.
            if let Some(at) = self.state.park_at() {
                if at <= now {
                    self.state.park_due.store(true, Relaxed);
                } else {
                    next = next.min(at);
                }
            }
            self.timer.as_mut().reset(clock::instant_at(next));
        }
    }

    fn on_write<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.write_blocked_since = 0;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.write_blocked_since == 0 {
                    self.write_blocked_since = clock::now_nanos();
                }
                self.poll_deadline(cx).map(Err)
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.state.data_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.on_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.on_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        write_stall: Duration::from_secs(15),
    };

    #[tokio::test(start_paused = true)]
    async fn silent_client_times_out_on_header_read() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = TimedIo::new(server, ConnState::new(), T);
        let start = tokio::time::Instant::now();
        let mut buf = [0u8; 8];
        let err = io.read(&mut buf).await.expect_err("must time out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_lasts_idle_timeout_then_closes() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = ConnState::new();
        let mut io = TimedIo::new(server, state.clone(), T);
        client.write_all(b"GET").await.expect("write");
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.expect("data"), 3);
        state.request_started(false, true, false);
        // Waiting for a backend: no timeout applies however long it takes.
        let read = tokio::time::timeout(Duration::from_secs(300), io.read(&mut buf)).await;
        assert!(read.is_err(), "no deadline while a request is active");
        state.request_finished(clock::now_nanos());
        let idle_from = tokio::time::Instant::now();
        let err = io.read(&mut buf).await.expect_err("idle timeout");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = idle_from.elapsed();
        assert!(
            waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_headers_after_idle_get_the_shorter_header_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = ConnState::new();
        let mut io = TimedIo::new(server, state.clone(), T);
        state.request_started(false, true, false);
        state.request_finished(clock::now_nanos());
        tokio::time::sleep(Duration::from_secs(30)).await;
        client.write_all(b"GE").await.expect("write");
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.expect("first bytes"), 2);
        let head_from = tokio::time::Instant::now();
        let err = io.read(&mut buf).await.expect_err("header timeout");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = head_from.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_write_times_out() {
        let (_client, server) = tokio::io::duplex(16);
        let state = ConnState::new();
        state.request_started(false, true, false);
        let mut io = TimedIo::new(server, state, T);
        let start = tokio::time::Instant::now();
        let err = io.write_all(&[0u8; 1024]).await.expect_err("stall");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(15) && waited < Duration::from_secs(16),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_pings_do_not_restart_header_clock() {
        let (mut client, server) = tokio::io::duplex(64);
        let state = ConnState::new();
        let mut io = TimedIo::new(server, state.clone(), T);
        state.request_started(true, true, false);
        state.request_finished(clock::now_nanos());
        client.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.expect("ping bytes"), 4);
        let err = io.read(&mut buf).await.expect_err("idle timeout");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "idle keep-alive connection");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_flagged_for_parking_once() {
        let (_client, server) = tokio::io::duplex(64);
        let state = ConnState::new();
        let mut io = TimedIo::new(server, state.clone(), T);
        state.request_started(false, true, false);
        state.request_finished(clock::now_nanos());
        let mut buf = [0u8; 8];
        // Nothing arrives: the read waits, and the timer flags the park.
        let read = tokio::time::timeout(PARK_AFTER * 2, io.read(&mut buf)).await;
        assert!(read.is_err(), "no error, no data");
        assert!(state.take_park_due(), "flagged after {PARK_AFTER:?} idle");
        assert!(!state.take_park_due(), "taken once");
        // Parked: no longer flagged, however long it waits (until the
        // idle timeout).
        state.set_parked(true);
        let read = tokio::time::timeout(Duration::from_secs(30), io.read(&mut buf)).await;
        assert!(read.is_err());
        assert!(!state.take_park_due());
    }

    #[tokio::test(start_paused = true)]
    async fn connections_that_must_close_or_hold_a_body_are_not_flagged() {
        for (keep_alive, body) in [(false, false), (true, true)] {
            let (_client, server) = tokio::io::duplex(64);
            let state = ConnState::new();
            let mut io = TimedIo::new(server, state.clone(), T);
            state.request_started(false, keep_alive, body);
            state.request_finished(clock::now_nanos());
            let mut buf = [0u8; 8];
            let _ = tokio::time::timeout(PARK_AFTER * 3, io.read(&mut buf)).await;
            assert!(
                !state.take_park_due(),
                "keep-alive {keep_alive}, body {body}"
            );
        }
    }
}
