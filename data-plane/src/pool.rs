//! Keep-alive connections to backends, one pool per worker thread.
//!
//! Each worker owns its idle connections outright (a thread-local map keyed
//! by backend id), so checking a connection out or in takes no lock and no
//! atomic. A backend that is unchanged across a reload keeps its id, and so
//! its warm connections.
//!
//! A connection that began with a PROXY protocol header speaks for one
//! client connection: it is kept apart, keyed by that client connection,
//! and closed when the client connection closes.

use crate::backend::Backend;
use crate::snapshot::UpstreamRt;
use crate::upstream::{Conn, Origin, UpstreamError};
use isame_proto::config::ProxyVersion;
use rustc_hash::FxHashMap;
use std::cell::RefCell;

/// Most idle connections kept per backend per worker.
pub const MAX_IDLE_PER_BACKEND: usize = 256;

struct Idle {
    conn: Box<Conn>,
    since: u64,
}

/// Most idle connections kept per client connection (one per backend it
/// used, in the common case).
const MAX_IDLE_PER_ORIGIN: usize = 8;

thread_local! {
    static IDLE: RefCell<FxHashMap<u32, Vec<Idle>>> = RefCell::default();
    /// Connections that began with a PROXY header, by the client
    /// connection they speak for.
    static PRIVATE: RefCell<FxHashMap<Origin, Vec<Idle>>> = RefCell::default();
}

/// Past its upstream's `keepalive_timeout`.
fn expired(c: &Idle, now: u64) -> bool {
    now.saturating_sub(c.since) >= c.conn.keepalive
}

/// A live idle connection to backend `uid`, most recently used first.
fn take_idle(uid: u32, now: u64) -> Option<Box<Conn>> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&uid)?;
        while let Some(mut c) = list.pop() {
            if !expired(&c, now) && !c.conn.is_stale() {
                return Some(c.conn);
            }
        }
        None
    })
}

/// A live idle connection to backend `uid` that speaks for `origin`.
fn take_private(uid: u32, origin: &Origin, now: u64) -> Option<Box<Conn>> {
    PRIVATE.with(|private| {
        let mut private = private.borrow_mut();
        let list = private.get_mut(origin)?;
        while let Some(i) = list.iter().rposition(|c| c.conn.uid == uid) {
            let mut c = list.remove(i);
            if !expired(&c, now) && !c.conn.is_stale() {
                return Some(c.conn);
            }
        }
        None
    })
}

/// Closes the idle connections that speak for `origin`, a client
/// connection that closed.
pub fn forget(origin: &Origin) {
    PRIVATE.with(|private| private.borrow_mut().remove(origin));
}

/// Returns a connection whose response finished at `now`, for the next
/// request (unless its upstream keeps no idle connections).
pub fn checkin(conn: Box<Conn>, now: u64) {
    if conn.keepalive == 0 {
        return;
    }
    if let Some(origin) = conn.origin {
        PRIVATE.with(|private| {
            let mut private = private.borrow_mut();
            let list = private.entry(origin).or_default();
            if list.len() >= MAX_IDLE_PER_ORIGIN {
                list.remove(0);
            }
            list.push(Idle { conn, since: now });
        });
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(conn.uid).or_default();
        if list.len() >= MAX_IDLE_PER_BACKEND {
            list.remove(0);
        }
        list.push(Idle { conn, since: now });
    });
}

/// Closes this worker's connections that expired or belong to backends for
/// which `keep` is false.
pub fn sweep(keep: impl Fn(u32) -> bool, now: u64) {
    crate::upstream::h2::sweep(&keep, now);
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.retain(|uid, list| {
            if !keep(*uid) {
                return false;
            }
            list.retain_mut(|c| !expired(c, now) && !c.conn.is_stale());
            !list.is_empty()
        });
    });
    PRIVATE.with(|private| {
        private.borrow_mut().retain(|_, list| {
            list.retain_mut(|c| keep(c.conn.uid) && !expired(c, now) && !c.conn.is_stale());
            !list.is_empty()
        });
    });
}

/// A connection to the backend: a live pooled one if any, else a new one.
/// With `origin` (the upstream sends PROXY headers), one that speaks for
/// that client connection.
pub async fn checkout(
    backend: &Backend,
    upstream: &UpstreamRt,
    now: u64,
    origin: Option<Origin>,
) -> Result<Box<Conn>, UpstreamError> {
    let uid = backend.state.uid;
    let private = upstream.send_proxy_protocol.zip(origin);
    let pooled = match &private {
        Some((_, o)) => take_private(uid, o, now),
        None => take_idle(uid, now),
    };
    let mut conn = match pooled {
        Some(c) => c,
        // Boxed: opening a connection (a TLS handshake's state among it) is
        // rare under keep-alive, and inline it would make every request's
        // future, which is allocated per request, that much larger.
        None => Box::pin(open(backend, upstream, private)).await?,
    };
    conn.keepalive = upstream.keepalive_nanos;
    Ok(conn)
}

/// A new connection to `backend`, starting with the PROXY header of
/// `private` when there is one.
async fn open(
    backend: &Backend,
    upstream: &UpstreamRt,
    private: Option<(ProxyVersion, Origin)>,
) -> Result<Box<Conn>, UpstreamError> {
    let preamble = private.map(|(v, o)| crate::proxy_protocol::header(v, Some(o)));
    let opened = Conn::connect(
        backend.state.uid,
        &backend.target,
        backend.tls.as_ref(),
        upstream.connect_timeout,
        upstream.response_timeout,
        preamble.as_deref(),
    )
    .await;
    if opened.is_err() && backend.wire == crate::backend::Wire::Auto {
        // ALPN asks again at the next connection: the backend may have
        // changed.
        backend
            .state
            .set_negotiated(crate::backend::Negotiated::Unknown);
    }
    let mut conn = opened?;
    conn.origin = private.map(|(_, o)| o);
    Ok(conn)
}
