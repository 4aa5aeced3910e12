//! Accepting client connections. Each worker is one OS thread running a
//! single-threaded tokio runtime that accepts from the shared listening
//! socket and serves its connections start to finish, so a request never
//! hops threads and the worker's connection pool needs no locks.

use crate::connection::{self, Builders, Serving};
use crate::pool;
use crate::snapshot::{Shared, Snapshot};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

/// How often a worker closes idle backend connections that expired or whose
/// backend left the config.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The sockets workers accept from.
pub struct Listeners {
    /// Plain HTTP.
    pub plain: std::net::TcpListener,
    /// HTTPS, when TLS is enabled.
    pub tls: Option<std::net::TcpListener>,
}

/// Starts `n` workers accepting from `listeners`. They stop accepting when
/// `shutdown` turns true and exit once their connections drained or the
/// config's `shutdown_timeout` passed.
pub fn spawn_workers(
    n: usize,
    listeners: &Listeners,
    shared: &Arc<Shared>,
    shutdown: &watch::Receiver<bool>,
) -> io::Result<Vec<JoinHandle<()>>> {
    listeners.plain.set_nonblocking(true)?;
    if let Some(tls) = &listeners.tls {
        tls.set_nonblocking(true)?;
    }
    let mut handles = Vec::with_capacity(n);
    for id in 0..n {
        let plain = listeners.plain.try_clone()?;
        let tls = listeners.tls.as_ref().map(|l| l.try_clone()).transpose()?;
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = std::thread::Builder::new()
            .name(format!("isame-worker-{id}"))
            .spawn(move || {
                rt.block_on(async move {
                    let registered = TcpListener::from_std(plain)
                        .and_then(|p| Ok((p, tls.map(TcpListener::from_std).transpose()?)));
                    match registered {
                        Ok((plain, tls)) => {
                            accept_loop(plain, tls, shared, shutdown)
                                .instrument(tracing::info_span!("worker", id))
                                .await
                        }
                        Err(e) => warn!(error = %e, "worker could not register the listeners"),
                    }
                });
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Accepts from `tls` when there is one; never ready otherwise.
async fn accept_tls(tls: &Option<TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match tls {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn accept_loop(
    plain: TcpListener,
    tls: Option<TcpListener>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = TaskTracker::new();
    let sweeper = tokio::spawn(sweep_pools(shared.clone()));
    let log_flusher = tokio::spawn(crate::access_log::flush_every());
    let mut builders: Option<(u64, Arc<Builders>)> = None;
    loop {
        let (accepted, secure) = tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
                continue;
            }
            a = plain.accept() => (a, false),
            a = accept_tls(&tls) => (a, true),
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let snap = shared.snapshot();
        let b = match &builders {
            Some((generation, b)) if *generation == snap.generation => b.clone(),
            _ => {
                let b = Arc::new(http_builders(&snap));
                builders = Some((snap.generation, b.clone()));
                b
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "set_nodelay failed");
        }
        // The certificates in force when the connection arrived serve it.
        let acceptor = match (secure, &snap.tls) {
            (false, _) => None,
            (true, Some(config)) => Some(tokio_rustls::TlsAcceptor::from(config.clone())),
            // TLS was switched off by a reload; the socket stays until restart.
            (true, None) => continue,
        };
        if let Some(pp) = &snap.proxy_protocol {
            if let Err(r) = pp.admits(peer.ip()) {
                shared
                    .metrics
                    .proxy_protocol_refused
                    .with_label_values(&[r.reason()])
                    .inc();
                debug!(peer = %peer, error = %r, "client connection refused");
                continue;
            }
        }
        let serving = Serving {
            shared: shared.clone(),
            builders: b,
            timeouts: snap.timeouts,
            tls: acceptor,
            shutdown: shutdown.clone(),
            proxy: snap.proxy_protocol.clone(),
            keep_local: snap.sends_proxy_protocol,
        };
        let active = OpenConnection::new(&shared.metrics.active_connections);
        connections.spawn(async move {
            connection::serve(stream, peer, serving).await;
            drop(active);
        });
    }
    drop(plain);
    drop(tls);
    connections.close();
    let open = connections.len();
    let grace = shared.snapshot().config.server.shutdown_timeout;
    if open > 0 {
        info!(connections = open, grace = ?grace, "draining connections");
    }
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        warn!("shutdown grace period over; closing the remaining connections");
    }
    sweeper.abort();
    log_flusher.abort();
    crate::access_log::flush();
}

/// The HTTP/1.1 and HTTP/2 server settings of a snapshot.
fn http_builders(snap: &Snapshot) -> Builders {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // Header-read and idle timeouts are enforced by `TimedIo`.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(snap.head_buffer());
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(snap.max_header_bytes).unwrap_or(u32::MAX));
    Builders { http1, http2 }
}

/// Counts a client connection in `isame_lb_active_connections` for as long as
/// it lives, whatever ends it.
struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn sweep_pools(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let snap = shared.snapshot();
        let live: HashSet<u32> = snap
            .upstreams
            .iter()
            .flat_map(|u| u.backends.iter().map(|b| b.state.uid))
            .collect();
        pool::sweep(|uid| live.contains(&uid), crate::clock::now_nanos());
        crate::metrics::sweep_cache(|uid| live.contains(&uid));
    }
}
