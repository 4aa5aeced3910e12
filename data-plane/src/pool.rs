//! Keep-alive connections to backends, one pool per worker thread.
//!
//! Each worker owns its idle connections outright (a thread-local map keyed
//! by backend id), so checking a connection out or in takes no lock and no
//! atomic. A backend that is unchanged across a reload keeps its id, and so
//! its warm connections.

use crate::backend::Backend;
use crate::snapshot::UpstreamRt;
use crate::upstream::{Conn, UpstreamError};
use rustc_hash::FxHashMap;
use std::cell::RefCell;

/// Most idle connections kept per backend per worker.
pub const MAX_IDLE_PER_BACKEND: usize = 256;

struct Idle {
    conn: Box<Conn>,
    since: u64,
}

thread_local! {
    static IDLE: RefCell<FxHashMap<u32, Vec<Idle>>> = RefCell::default();
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

/// Returns a connection whose response finished at `now`, for the next
/// request (unless its upstream keeps no idle connections).
pub fn checkin(conn: Box<Conn>, now: u64) {
    if conn.keepalive == 0 {
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
}

/// A connection to the backend: a live pooled one if any, else a new one.
pub async fn checkout(
    backend: &Backend,
    upstream: &UpstreamRt,
    now: u64,
) -> Result<Box<Conn>, UpstreamError> {
    let uid = backend.state.uid;
    let mut conn = match take_idle(uid, now) {
        Some(c) => c,
        // Boxed: opening a connection (a TLS handshake's state among it) is
        // rare under keep-alive, and inline it would make every request's
        // future, which is allocated per request, that much larger.
        None => {
            Box::pin(Conn::connect(
                uid,
                &backend.target,
                backend.tls.as_ref(),
                upstream.connect_timeout,
                upstream.response_timeout,
            ))
            .await?
        }
    };
    conn.keepalive = upstream.keepalive_nanos;
    Ok(conn)
}
