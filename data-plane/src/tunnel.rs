//! Upgraded connections (a WebSocket, or any protocol a backend's `101
//! Switching Protocols` switched to), relayed as bytes between client and
//! backend until either side closes.
//!
//! The request's handler leaves a [`Tunnel`] on the client connection when
//! it answers `101`; once hyper has written that answer, the connection's
//! driver takes its socket back and calls [`relay`]. Bytes either side sent
//! right after the handshake (already read into a buffer) go first. Each
//! direction moves through one buffer that is refilled only when written
//! out, so a slow reader slows its writer (backpressure) instead of growing
//! memory. A side's end of stream is passed on as a half-close; the tunnel
//! ends when both directions have, when either fails, or after the
//! upstream's `tunnel_idle_timeout` without a byte in either direction.
//!
//! The request's [`Finish`] lives as long as the tunnel: the backend's
//! in-flight count (least connections) includes it, the connection is not
//! idle for the client timeouts (the write-stall timeout still applies to
//! a client that stops reading), and the access-log line and span are
//! written when the tunnel ends, with its whole duration.

use crate::clock;
use crate::finish::Finish;
use crate::rewind::Rewind;
use crate::snapshot::UpstreamRt;
use crate::upstream::{Conn, Stream};
use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::debug;

/// Buffer of each direction.
const BUF: usize = 16 * 1024;
/// Longest wait for a side's close once the tunnel went idle.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A backend connection that switched protocols, waiting for its client
/// side.
pub struct Tunnel {
    backend: Stream,
    /// What the backend sent after its `101`, already read.
    backend_early: Bytes,
    finish: Finish,
    idle: Duration,
    active: IntGauge,
    /// Bytes to the backend, then to the client.
    bytes: [IntCounter; 2],
}

impl Tunnel {
    /// The tunnel of `up` over `conn`, ending the request `finish` when it closes.
    pub fn new(conn: Conn, finish: Finish, up: &UpstreamRt) -> Self {
        let (backend, early) = conn.into_parts();
        Self {
            backend,
            backend_early: early.freeze(),
            finish,
            idle: up.tunnel_idle_timeout,
            active: up.tunnels_active.clone(),
            bytes: up.tunnel_bytes.clone(),
        }
    }
}

/// Why a tunnel ended.
enum Ended {
    /// Both sides closed.
    Closed,
    /// No byte moved for the idle timeout.
    Idle,
    /// The backend left the rotation and its drain timeout passed.
    Drained,
    /// A side failed.
    Failed(io::Error),
}

/// Relays `client` (whose bytes already read are `client_early`) and the
/// tunnel's backend until the tunnel ends.
pub async fn relay<C>(client: C, client_early: Bytes, t: Tunnel)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Tunnel {
        backend,
        backend_early,
        mut finish,
        idle,
        active,
        bytes: [to_backend, to_client],
    } = t;
    let _active = Active::new(active);
    let state = finish.backend_state().cloned();
    let last = AtomicU64::new(clock::now_nanos());
    let mut client = Counted::new(Rewind::new(client_early, client), &to_backend, &last);
    let mut backend = Counted::new(Rewind::new(backend_early, backend), &to_client, &last);
    let idle_nanos = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
    let ended = {
        let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut backend, BUF, BUF);
        tokio::pin!(copy);
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        // A tunnel never outlives its backend's drain deadline.
        // Armed before `cut_at` is read, so that no change is missed.
        let mut armed = arm(state.as_deref());
        let cut_at = || state.as_ref().map_or(0, |s| s.cut_at.load(Relaxed));
        let mut cut = cut_at();
        if cut != 0 {
            timer.as_mut().reset(clock::instant_at(
                cut.min(clock::now_nanos().saturating_add(idle_nanos)),
            ));
        }
        loop {
            tokio::select! {
                r = &mut copy => break r.map_or_else(Ended::Failed, |_| Ended::Closed),
                () = moved(&mut armed) => {
                    armed = arm(state.as_deref());
                    cut = cut_at();
                    let idle_due = last.load(Relaxed).saturating_add(idle_nanos);
                    let due = if cut == 0 { idle_due } else { cut.min(idle_due) };
                    timer.as_mut().reset(clock::instant_at(due));
                }
                () = &mut timer => {
                    let now = clock::now_nanos();
                    if cut != 0 && now >= cut {
                        break Ended::Drained;
                    }
                    let since = last.load(Relaxed);
                    let due = since.saturating_add(idle_nanos);
                    if now >= due {
                        break Ended::Idle;
                    }
                    timer.as_mut().reset(clock::instant_at(if cut == 0 { due } else { cut.min(due) }));
                }
            }
        }
    };
    if matches!(ended, Ended::Idle | Ended::Drained) {
        // Close both properly (a FIN, a TLS close_notify), without waiting
        // on a peer that stopped reading.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            let _ = tokio::join!(client.shutdown(), backend.shutdown());
        })
        .await;
    }
    let (to_backend, to_client) = (client.count, backend.count);
    match &ended {
        Ended::Closed => debug!(to_backend, to_client, "tunnel closed"),
        Ended::Idle => debug!(to_backend, to_client, idle = ?idle, "idle tunnel closed"),
        Ended::Drained => debug!(
            to_backend,
            to_client, "tunnel of a drained backend closed at its drain_timeout"
        ),
        Ended::Failed(e) => debug!(to_backend, to_client, error = %e, "tunnel failed"),
    }
    if let Some(o) = finish.observation() {
        o.tunneled(to_backend, to_client);
    }
    drop(finish);
}

type Armed<'a> = Option<std::pin::Pin<Box<tokio::sync::futures::Notified<'a>>>>;

/// A wait for the backend's drain deadline to be set or cleared, already
/// registered with its `Notify`.
fn arm(state: Option<&crate::backend::BackendState>) -> Armed<'_> {
    state.map(|s| {
        let mut n = Box::pin(s.cut_changed.notified());
        n.as_mut().enable();
        n
    })
}

/// Resolves when the armed wait does (never without a backend).
async fn moved(armed: &mut Armed<'_>) {
    match armed {
        Some(n) => n.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Counts a tunnel in `isame_lb_tunnels_active` while it lives.
struct Active(IntGauge);

impl Active {
    fn new(g: IntGauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A side of the tunnel: counts what is read from it and when.
struct Counted<'a, T> {
    inner: T,
    counter: &'a IntCounter,
    last: &'a AtomicU64,
    count: u64,
}

impl<'a, T> Counted<'a, T> {
    fn new(inner: T, counter: &'a IntCounter, last: &'a AtomicU64) -> Self {
        Self {
            inner,
            counter,
            last,
            count: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            this.count += n;
            this.counter.inc_by(n);
            this.last.store(clock::now_nanos(), Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
