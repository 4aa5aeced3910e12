//! One client connection, from accept to close: the TLS handshake, the
//! choice of protocol, and what the connection holds between requests.
//!
//! HTTP/2 (ALPN `h2`, or the prior-knowledge preface on a plain port) is
//! served by one hyper HTTP/2 connection for the connection's life.
//!
//! HTTP/1.1 is served by a hyper connection object per burst of requests.
//! Once a keep-alive connection has been idle between requests for
//! [`PARK_AFTER`], its object is ended (`graceful_shutdown`, which closes an
//! idle hyper connection without writing anything; the socket's shutdown
//! is held back, see [`Rewind`]) and taken apart (`into_parts`): the socket
//! and whatever hyper had read past the last request come back, and the
//! connection is
//! *parked*, holding only its socket and a few words of state (no read or
//! write buffer, no request future) until the client sends again, when a
//! new object takes over with those bytes put back in front. The client
//! sees nothing of it: no header changes and no extra round trip. A
//! connection is parked only when the last request was HTTP/1.1 without
//! `Connection: close`, its body was read to the end and no answer closed
//! the connection; otherwise hyper keeps it (and closes it when it must).
//! This is what makes an idle keep-alive connection cost about a kilobyte
//! instead of the 30-odd KiB of hyper's buffers (`bench/idle_memory.sh`).

use crate::clock;
use crate::conn_timeouts::{ConnState, TimedIo, Timeouts};
use crate::handler::{self, ConnCtx};
use crate::proxy_protocol::{Inbound, Outcome};
use crate::rewind::Rewind;
use crate::snapshot::Shared;
use crate::tunnel;
use bytes::{Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::debug;

pub use crate::conn_timeouts::PARK_AFTER;

/// The first bytes an HTTP/2 client with prior knowledge sends.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP server settings connections are served with (one set per
/// config generation and worker).
pub struct Builders {
    /// HTTP/1.1.
    pub http1: http1::Builder,
    /// HTTP/2.
    pub http2: http2::Builder<TokioExecutor>,
}

/// What a connection is served with.
pub struct Serving {
    /// The proxy's state.
    pub shared: Arc<Shared>,
    /// HTTP settings.
    pub builders: Arc<Builders>,
    /// Client timeouts.
    pub timeouts: Timeouts,
    /// The TLS settings, for a connection to the HTTPS port.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Turns true when the proxy shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// PROXY protocol on the listeners, when set.
    pub proxy: Option<Arc<Inbound>>,
    /// Keep the address the client connected to (some upstream sends
    /// PROXY headers).
    pub keep_local: bool,
}

/// Serves the connection `stream` from `peer` until it closes.
pub async fn serve(stream: TcpStream, peer: SocketAddr, mut s: Serving) {
    let state = ConnState::new();
    let mut local = if s.keep_local {
        stream.local_addr().ok()
    } else {
        None
    };
    // The header-read deadline also bounds the PROXY header and the TLS
    // handshake.
    let mut io = TimedIo::new(stream, state.clone(), s.timeouts);
    let mut client = peer;
    let mut early = Bytes::new();
    if let Some(pp) = s.proxy.take() {
        match until_shutdown(&mut s.shutdown, pp.read(&mut io, peer.ip())).await {
            None => return,
            Some(Outcome::Ended(e)) => {
                debug!(peer = %peer, error = %e, "client connection ended before its PROXY header");
                return;
            }
            Some(Outcome::Refused(r)) => {
                s.shared
                    .metrics
                    .proxy_protocol_refused
                    .with_label_values(&[r.reason()])
                    .inc();
                debug!(peer = %peer, error = %r, "client connection refused");
                return;
            }
            Some(Outcome::Accepted(a)) => {
                if let Some((from, to)) = a.addresses {
                    client = from;
                    local = Some(to);
                }
                early = a.rest;
            }
        }
    }
    let proto = if s.tls.is_some() { "https" } else { "http" };
    let cx = Arc::new(ConnCtx::new(
        s.shared.clone(),
        client,
        local,
        proto,
        state.clone(),
    ));
    let conn_cx = cx.clone();
    // hyper keeps the request future in a box of its own per connection
    // object (reused by each request of a burst, freed when parked).
    let svc = service_fn(move |req| handler::handle(req, cx.clone()));
    // The task of a plain HTTP/1.1 connection is sized for that path only
    // (it is what most idle connections are): TLS and HTTP/2, whose states
    // are larger, are boxed.
    match s.tls.take() {
        None => match until_shutdown(&mut s.shutdown, sniff(&mut io, early)).await {
            None => {}
            Some(Err(e)) => {
                debug!(peer = %client, error = %e, "client connection ended before a request")
            }
            Some(Ok((true, prefix))) => {
                Box::pin(http2(Rewind::new(prefix, io), svc, &state, &mut s)).await
            }
            Some(Ok((false, prefix))) => http1(io, prefix, svc, &conn_cx, &mut s).await,
        },
        Some(acceptor) => {
            let io = Rewind::new(early, io);
            Box::pin(tls(io, acceptor, svc, &conn_cx, &mut s, client)).await
        }
    }
}

/// Completes the TLS handshake, then serves the protocol ALPN chose.
async fn tls<S: Handler>(
    io: Rewind<TimedIo<TcpStream>>,
    acceptor: tokio_rustls::TlsAcceptor,
    svc: S,
    cx: &Arc<ConnCtx>,
    s: &mut Serving,
    peer: SocketAddr,
) {
    let state = &cx.state;
    match until_shutdown(&mut s.shutdown, acceptor.accept(io)).await {
        None => {}
        Some(Err(e)) => debug!(peer = %peer, error = %e, "TLS handshake failed"),
        // Boxed: the stream's state moves into the task of its protocol.
        Some(Ok(tls)) => match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => http2(Box::new(tls), svc, state, s).await,
            Some(_) => http1(Box::new(tls), Bytes::new(), svc, cx, s).await,
            // No ALPN: the first bytes tell, as on the plain port.
            None => {
                let mut tls = Box::new(tls);
                match until_shutdown(&mut s.shutdown, sniff(&mut tls, Bytes::new())).await {
                    None => {}
                    Some(Err(e)) => {
                        debug!(peer = %peer, error = %e, "client connection ended before a request")
                    }
                    Some(Ok((true, prefix))) => {
                        http2(Rewind::new(prefix, tls), svc, state, s).await
                    }
                    Some(Ok((false, prefix))) => http1(tls, prefix, svc, cx, s).await,
                }
            }
        },
    }
}

/// The request handler of one connection, as hyper calls it.
trait Handler:
    hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<crate::body::ProxyBody>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Unpin
    + Send
    + 'static
{
}

impl<S> Handler for S where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::ProxyBody>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Unpin
        + Send
        + 'static
{
}

/// Runs `fut` unless the proxy shuts down first.
async fn until_shutdown<F: std::future::Future>(
    shutdown: &mut watch::Receiver<bool>,
    fut: F,
) -> Option<F::Output> {
    if *shutdown.borrow() {
        return None;
    }
    tokio::select! {
        out = fut => Some(out),
        _ = shutdown.changed() => None,
    }
}

/// Reads until the first bytes (`early`, already read, then `io`'s) tell
/// HTTP/2's preface from anything else; returns whether it is HTTP/2 and
/// the bytes read.
async fn sniff<T: AsyncRead + Unpin>(io: &mut T, early: Bytes) -> std::io::Result<(bool, Bytes)> {
    if early.len() >= PREFACE.len() || !PREFACE.starts_with(&early) {
        return Ok((early.starts_with(PREFACE), early));
    }
    let mut buf = [0u8; PREFACE.len()];
    let mut n = early.len();
    buf[..n].copy_from_slice(&early);
    loop {
        let m = io.read(&mut buf[n..]).await?;
        if m == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        n += m;
        if buf[..n] != PREFACE[..n] {
            return Ok((false, Bytes::copy_from_slice(&buf[..n])));
        }
        if n == PREFACE.len() {
            return Ok((true, Bytes::from_static(PREFACE)));
        }
    }
}

/// Serves HTTP/2 on `io` until the client or the proxy ends it.
async fn http2<T, S>(io: T, svc: S, state: &ConnState, s: &mut Serving)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Handler,
{
    state.set_multiplexed();
    let mut conn = Box::pin(s.builders.http2.serve_connection(TokioIo::new(io), svc));
    // An idle HTTP/2 connection is never parked and its timer ticks only as
    // often as its timeouts need, so the shutdown signal is waited on here
    // (hyper then sends GOAWAY at once).
    let mut draining = *s.shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let ended = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = s.shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = ended {
        debug!(error = %e, "HTTP/2 client connection ended with an error");
    }
}

/// Serves HTTP/1.1 on `io` (whose first bytes, already read, are
/// `leftover`), parking it between bursts of requests, and relays it once
/// a request switched protocols.
async fn http1<T, S>(mut io: T, mut leftover: Bytes, svc: S, cx: &Arc<ConnCtx>, h: &mut Serving)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Handler,
{
    let state = &cx.state;
    let park_after = u64::try_from(PARK_AFTER.as_nanos()).unwrap_or(u64::MAX);
    loop {
        if leftover.is_empty() {
            // Parked: the next request's first byte wakes the connection.
            // The idle timeout still applies (inside `TimedIo`).
            let parked = Parked::new(&h.shared.metrics.parked_connections, state);
            let mut byte = [0u8; 1];
            match until_shutdown(&mut h.shutdown, io.read(&mut byte)).await {
                Some(Ok(1)) => leftover = Bytes::copy_from_slice(&byte),
                // The client closed, or the proxy shuts down: close properly
                // (a TLS close_notify, a FIN), as hyper would have.
                Some(Ok(_)) | None => {
                    drop(parked);
                    let _ = io.shutdown().await;
                    return;
                }
                Some(Err(e)) => {
                    debug!(error = %e, "parked client connection closed");
                    return;
                }
            }
            drop(parked);
        }
        // The start of a request: it must complete within the header-read
        // timeout, and the connection is not parked again before it has.
        state.head_pending();
        let io_again = Rewind::parkable(leftover, io, state.clone());
        let mut conn = Box::new(
            h.builders
                .http1
                .serve_connection(TokioIo::new(io_again), svc.clone()),
        );
        let mut parking = false;
        let mut draining = false;
        // Two flags are looked at each time hyper yields, both plain
        // atomics: the proxy shutting down (the connection object then ends
        // gracefully), and the connection's own timer (in `TimedIo`) having
        // found it idle long enough to park. The timer also wakes an idle
        // connection within a second of a shutdown. Nothing is polled here
        // per request besides hyper.
        let ended = std::future::poll_fn(|cx| loop {
            if !draining && h.shared.draining() {
                draining = true;
                Pin::new(&mut *conn).graceful_shutdown();
            }
            let r = Pin::new(&mut *conn).poll(cx);
            if r.is_ready()
                || parking
                || draining
                || !state.take_park_due()
                || !state.parkable(clock::now_nanos(), park_after)
            {
                return r;
            }
            parking = true;
            // The connection object ends; its socket does not (see `Rewind`).
            state.set_parking(true);
            Pin::new(&mut *conn).graceful_shutdown();
        })
        .await;
        state.set_parking(false);
        let parts = conn.into_parts();
        let (rewound, unread) = parts.io.into_inner().into_parts();
        io = rewound;
        // Copied out: an empty or short view would keep hyper's whole read
        // buffer alive while the connection is parked.
        leftover = join(&parts.read_buf, &unread);
        if ended.is_ok() {
            // hyper wrote a `101` and handed the socket back as it was.
            if let Some(t) = cx.take_tunnel() {
                // Boxed: the relay's state would otherwise be part of every
                // connection's task.
                Box::pin(tunnel::relay(io, leftover, *t)).await;
                return;
            }
        }
        let park = match &ended {
            Ok(()) => parking && !draining && state.parkable(clock::now_nanos(), 0),
            Err(e) => {
                debug!(error = %e, "client connection ended with an error");
                false
            }
        };
        if !park {
            // hyper has shut it down already, unless it was being parked or
            // failed; a second shutdown is harmless.
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// A connection parked: counted in `isame_lb_parked_connections`, and its
/// timer no longer ticks for a park to come (see [`ConnState::set_parked`]).
struct Parked<'a>(&'a prometheus::IntGauge, &'a ConnState);

impl<'a> Parked<'a> {
    fn new(gauge: &'a prometheus::IntGauge, state: &'a ConnState) -> Self {
        gauge.inc();
        state.set_parked(true);
        Self(gauge, state)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.1.set_parked(false);
        self.0.dec();
    }
}

/// `a` then `b`, in a buffer of their own.
fn join(a: &[u8], b: &[u8]) -> Bytes {
    if a.is_empty() && b.is_empty() {
        return Bytes::new();
    }
    let mut both = BytesMut::with_capacity(a.len() + b.len());
    both.extend_from_slice(a);
    both.extend_from_slice(b);
    both.freeze()
}
