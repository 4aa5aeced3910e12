//! Keep-alive connections to backends, one pool per worker thread.
//!
//! Each worker owns its idle connections outright (a thread-local map keyed
//! by backend id), so checking a connection out or in takes no lock and no
//! atomic. A backend that is unchanged across a reload keeps its id, and so
//! its warm connections.

use crate::backend::Target;
use crate::body::ReqBody;
use crate::clock;
use crate::error::ProxyError;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::io;
use std::time::Duration;
use tokio::net::TcpStream;
use tracing::debug;

/// How long a connection may sit idle in the pool before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most idle connections kept per backend per worker.
pub const MAX_IDLE_PER_BACKEND: usize = 256;

/// A connection to a backend, ready for one request.
pub struct Pooled {
    uid: u32,
    /// The request sender of the connection.
    pub tx: http1::SendRequest<ReqBody>,
    /// True when the connection came from the pool (it may have gone stale).
    pub reused: bool,
}

struct Idle {
    tx: http1::SendRequest<ReqBody>,
    since: u64,
}

thread_local! {
    static IDLE: RefCell<FxHashMap<u32, Vec<Idle>>> = RefCell::default();
}

fn expired(since: u64, now: u64) -> bool {
    now.saturating_sub(since) >= IDLE_TIMEOUT.as_nanos() as u64
}

/// An idle connection to backend `uid`, most recently used first.
fn take_idle(uid: u32) -> Option<Pooled> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&uid)?;
        let now = clock::now_nanos();
        while let Some(c) = list.pop() {
            if !c.tx.is_closed() && !expired(c.since, now) {
                return Some(Pooled {
                    uid,
                    tx: c.tx,
                    reused: true,
                });
            }
        }
        None
    })
}

/// Returns a connection whose response finished, for the next request.
pub fn checkin(p: Pooled) {
    if p.tx.is_closed() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(p.uid).or_default();
        if list.len() >= MAX_IDLE_PER_BACKEND {
            list.remove(0);
        }
        list.push(Idle {
            tx: p.tx,
            since: clock::now_nanos(),
        });
    });
}

/// Closes this worker's connections that are closed, expired, or belong to
/// backends for which `keep` is false.
pub fn sweep(keep: impl Fn(u32) -> bool) {
    let now = clock::now_nanos();
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.retain(|uid, list| {
            if !keep(*uid) {
                return false;
            }
            list.retain(|c| !c.tx.is_closed() && !expired(c.since, now));
            !list.is_empty()
        });
    });
}

/// Idle connections this worker holds for backend `uid`.
pub fn idle_count(uid: u32) -> usize {
    IDLE.with(|idle| idle.borrow().get(&uid).map_or(0, Vec::len))
}

/// A connection to the backend: a pooled one if any, else a new one.
pub async fn checkout(
    uid: u32,
    target: &Target,
    connect_timeout: Duration,
) -> Result<Pooled, ProxyError> {
    if let Some(p) = take_idle(uid) {
        return Ok(p);
    }
    connect(uid, target, connect_timeout).await
}

/// Opens a new connection to the backend.
pub async fn connect(
    uid: u32,
    target: &Target,
    connect_timeout: Duration,
) -> Result<Pooled, ProxyError> {
    let stream = tokio::time::timeout(connect_timeout, open(target))
        .await
        .map_err(|_| ProxyError::ConnectTimeout)?
        .map_err(ProxyError::Connect)?;
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ProxyError::Upstream)?;
    let authority = target.authority.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(backend = %authority, error = %e, "backend connection ended with an error");
        }
    });
    Ok(Pooled {
        uid,
        tx,
        reused: false,
    })
}

async fn open(target: &Target) -> io::Result<TcpStream> {
    let stream = match target.addr {
        Some(addr) => TcpStream::connect(addr).await?,
        None => {
            let mut last =
                io::Error::new(io::ErrorKind::NotFound, "host name resolved to no address");
            let mut found = None;
            for addr in tokio::net::lookup_host((target.host.as_str(), target.port)).await? {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        found = Some(s);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            found.ok_or(last)?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}
