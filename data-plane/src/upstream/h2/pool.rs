//! HTTP/2 connections to backends, per worker thread.
//!
//! One connection carries up to [`MAX_STREAMS`] requests at once; a worker
//! opens another to the same backend only when all of its connections are
//! that busy. While one request opens a connection, the others that need
//! one wait for it instead of opening their own (a burst of requests to a
//! cold backend makes one connection, not one per request); if opening
//! fails, they fail with the same error at once.
//!
//! Each connection is driven by a task of its own on the worker's runtime;
//! the pool keeps its sending handle. A connection carrying no stream for
//! its upstream's `keepalive_timeout` is dropped, which closes it (GOAWAY).

use super::body::Upload;
use crate::backend::{Backend, Negotiated, Wire};
use crate::clock;
use crate::snapshot::UpstreamRt;
use crate::upstream::conn::open;
use crate::upstream::{Stream, UpstreamError};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Most requests one connection carries at once (servers commonly allow
/// 100 to 250 concurrent streams).
pub const MAX_STREAMS: u32 = 100;

/// How often an idle connection's liveness is checked with a PING, and how
/// long the answer may take before the connection is dropped.
const PING_EVERY: Duration = Duration::from_secs(20);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The sending side of a pooled connection.
pub type Sender = SendRequest<Upload>;

struct Entry {
    send: Sender,
    streams: Arc<AtomicU32>,
    /// When the connection was first seen carrying nothing (0: busy).
    idle_since: u64,
    keepalive: u64,
}

#[derive(Default)]
struct Slot {
    conns: Vec<Entry>,
    /// Set while a request opens a connection; the others wait on it.
    opening: Option<Arc<Notify>>,
    /// The last failure to open one: when, and what.
    failure: Option<(u64, Failure)>,
}

/// A failure to open a connection, as the requests that waited for it
/// get it.
#[derive(Clone)]
enum Failure {
    Timeout,
    Io(io::ErrorKind, String),
}

impl Failure {
    fn of(e: &UpstreamError) -> Option<Self> {
        match e {
            UpstreamError::ConnectTimeout => Some(Failure::Timeout),
            UpstreamError::Connect(io) => Some(Failure::Io(io.kind(), io.to_string())),
            _ => None,
        }
    }

    fn error(self) -> UpstreamError {
        match self {
            Failure::Timeout => UpstreamError::ConnectTimeout,
            Failure::Io(kind, msg) => UpstreamError::Connect(io::Error::new(kind, msg)),
        }
    }
}

thread_local! {
    static POOL: RefCell<FxHashMap<u32, Slot>> = RefCell::default();
}

/// One stream's place on a connection, given back when dropped.
#[derive(Debug)]
pub struct StreamSlot(Arc<AtomicU32>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A connection with room for one request.
pub struct Lease {
    /// Where to send it.
    pub send: Sender,
    /// Its stream's place.
    pub slot: StreamSlot,
}

/// What a new TLS connection to a [`Wire::Auto`] backend turned out to be.
pub enum Opened {
    /// HTTP/2.
    Http2(Stream),
    /// HTTP/1.1 (ALPN chose it, or chose nothing).
    Http1(Stream),
}

/// What a checkout found.
pub enum Checkout {
    /// An HTTP/2 connection with room.
    Http2(Lease),
    /// The backend chose HTTP/1.1; here is the connection it made.
    Http1(Stream),
}

fn lease(e: &Entry) -> Lease {
    e.streams.fetch_add(1, Relaxed);
    Lease {
        send: e.send.clone(),
        slot: StreamSlot(e.streams.clone()),
    }
}

/// A live pooled connection to `uid` with room, the busiest first (so
/// that streams gather on few connections and the rest can go idle).
fn pick(uid: u32) -> Option<Lease> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let slot = p.get_mut(&uid)?;
        slot.conns.retain(|e| !e.send.is_closed());
        slot.conns
            .iter()
            .filter(|e| e.streams.load(Relaxed) < MAX_STREAMS)
            .max_by_key(|e| e.streams.load(Relaxed))
            .map(lease)
    })
}

/// Clears the opening mark of a slot and wakes its waiters, however the
/// opening ends (the request that opened may be dropped halfway).
struct Opening {
    uid: u32,
    notify: Arc<Notify>,
}

impl Opening {
    fn start(uid: u32) -> Self {
        let notify = Arc::new(Notify::new());
        POOL.with(|p| p.borrow_mut().entry(uid).or_default().opening = Some(notify.clone()));
        Self { uid, notify }
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        POOL.with(|p| {
            if let Some(s) = p.borrow_mut().get_mut(&self.uid) {
                if s.opening
                    .as_ref()
                    .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
                {
                    s.opening = None;
                }
            }
        });
        self.notify.notify_waiters();
    }
}

/// A connection to `backend` with room for one more request: pooled, the
/// one another request is opening, or a new one.
pub async fn checkout(backend: &Backend, up: &UpstreamRt) -> Result<Checkout, UpstreamError> {
    let uid = backend.state.uid;
    // Without keep-alive a connection serves the request it was opened for.
    let pooled = up.keepalive_nanos > 0;
    for _ in 0..3 {
        if !pooled {
            break;
        }
        if let Some(l) = pick(uid) {
            return Ok(Checkout::Http2(l));
        }
        let waiting = POOL.with(|p| p.borrow().get(&uid).and_then(|s| s.opening.clone()));
        let Some(notify) = waiting else {
            break;
        };
        let since = clock::now_nanos();
        // Registered on its first poll, which comes before anything else
        // runs on this thread: the wake-up cannot be missed.
        let _ = tokio::time::timeout(up.connect_timeout, notify.notified()).await;
        let failed = POOL.with(|p| {
            p.borrow().get(&uid).and_then(|s| {
                s.failure
                    .as_ref()
                    .filter(|(at, _)| *at >= since)
                    .map(|(_, f)| f.clone())
            })
        });
        if let Some(f) = failed {
            return Err(f.error());
        }
    }
    let opening = pooled.then(|| Opening::start(uid));
    let opened: Result<Result<Sender, Stream>, UpstreamError> = async {
        match connect(backend, up.connect_timeout).await? {
            Opened::Http2(s) => Ok(Ok(handshake(s, up.connect_timeout).await?)),
            Opened::Http1(s) => Ok(Err(s)),
        }
    }
    .await;
    let send = match opened {
        Ok(Ok(send)) => send,
        Ok(Err(stream)) => return Ok(Checkout::Http1(stream)),
        Err(e) => {
            if let (Some(f), true) = (Failure::of(&e), pooled) {
                let failure = (clock::now_nanos(), f);
                POOL.with(|p| p.borrow_mut().entry(uid).or_default().failure = Some(failure));
            }
            return Err(e);
        }
    };
    let entry = Entry {
        send,
        streams: Arc::new(AtomicU32::new(0)),
        idle_since: 0,
        keepalive: up.keepalive_nanos,
    };
    let l = lease(&entry);
    if pooled {
        POOL.with(|p| p.borrow_mut().entry(uid).or_default().conns.push(entry));
    }
    drop(opening);
    Ok(Checkout::Http2(l))
}

/// Opens TCP (and TLS, offering `h2`) to `backend` within `timeout`. A
/// [`Wire::Auto`] backend's choice is recorded on it; any other backend
/// that does not choose `h2` fails.
pub async fn connect(backend: &Backend, timeout: Duration) -> Result<Opened, UpstreamError> {
    let opened = tokio::time::timeout(timeout, async {
        let tcp = open(&backend.target).await?;
        match &backend.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(t) => {
                t.connect_with(t.h2.as_ref().unwrap_or(&t.config), tcp)
                    .await
            }
        }
    })
    .await
    .map_err(|_| UpstreamError::ConnectTimeout)
    .and_then(|r| r.map_err(UpstreamError::Connect));
    let auto = backend.wire == Wire::Auto;
    let stream = match opened {
        Ok(s) => s,
        Err(e) => {
            if auto {
                backend.state.set_negotiated(Negotiated::Unknown);
            }
            return Err(e);
        }
    };
    if backend.tls.is_none() || stream.negotiated_h2() {
        if auto {
            backend.state.set_negotiated(Negotiated::Http2);
        }
        return Ok(Opened::Http2(stream));
    }
    if auto {
        backend.state.set_negotiated(Negotiated::Http1);
        return Ok(Opened::Http1(stream));
    }
    Err(UpstreamError::Connect(io::Error::new(
        io::ErrorKind::Unsupported,
        "the backend did not negotiate HTTP/2 (ALPN h2)",
    )))
}

/// The HTTP/2 handshake over `stream`; the connection's task is spawned
/// on this worker.
pub async fn handshake<B>(
    stream: Stream,
    timeout: Duration,
) -> Result<SendRequest<B>, UpstreamError>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_EVERY)
        .keep_alive_timeout(PING_TIMEOUT)
        // Idle pooled connections too: a backend that vanished is noticed
        // before a request is given to its connection.
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(stream));
    let (send, conn) = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(|e| UpstreamError::Connect(io::Error::other(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP/2 backend connection ended");
        }
    });
    Ok(send)
}

/// Drops this worker's connections that are closed, idle past their
/// keep-alive, or to backends for which `keep` is false.
pub fn sweep(keep: &impl Fn(u32) -> bool, now: u64) {
    POOL.with(|p| {
        p.borrow_mut().retain(|uid, slot| {
            if !keep(*uid) {
                return false;
            }
            slot.conns.retain_mut(|e| {
                if e.send.is_closed() {
                    return false;
                }
                if e.streams.load(Relaxed) > 0 {
                    e.idle_since = 0;
                    return true;
                }
                if e.idle_since == 0 {
                    e.idle_since = now;
                }
                now.saturating_sub(e.idle_since) < e.keepalive
            });
            !slot.conns.is_empty() || slot.opening.is_some()
        });
    });
}
