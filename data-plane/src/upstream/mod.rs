//! The client side of the proxy: sends a request to a backend and hands
//! back the response head and a body that streams from the backend.
//!
//! HTTP/1.1 (the default) runs inside the request's own task over a pooled
//! keep-alive connection: no connection task, no channels between the
//! request and the socket, one `writev`/`write` and one `read` for a small
//! exchange. What it accepts from backends is strict (see `decode`):
//! anything ambiguous is a 502, never a guess. HTTP/2 backends (`h2c://`,
//! `protocol: http2|auto`) go through hyper's HTTP/2 client over a few
//! multiplexed connections per worker (see [`h2`]).

mod body;
mod chunked;
mod conn;
mod decode;
mod encode;
mod error;
pub mod h2;
mod response;
mod stream;
mod upload;

pub use conn::{Conn, Origin};
pub use decode::Head;
pub use encode::BodyFraming;
pub use error::UpstreamError;
pub use response::ResponseBody;
pub use stream::{client_config, server_name, ClientTls, Stream, TlsTarget};

use crate::backend::{Backend, Negotiated, Wire};
use crate::body::ReqBody;
use crate::forwarding::Rewrite;
use crate::snapshot::UpstreamRt;
use crate::{clock, pool};
use conn::ReadError;
use http::request::Parts;
use http::Method;
use http_body::Body;
use isame_proto::config::ProxyVersion;
use std::io::IoSlice;
use std::time::Duration;
use upload::{Sent, Upload};

/// How many times a request that never reached a backend is sent again on
/// another connection (stale keep-alive connections).
const STALE_RETRIES: usize = 3;

/// What is sent, the same on every try.
pub struct Outgoing<'a> {
    /// The request head as the client sent it.
    pub parts: &'a Parts,
    /// How its headers change for the backend.
    pub rewrite: &'a Rewrite,
    /// When the request arrived (clock nanoseconds).
    pub start: u64,
    /// Longest pause allowed in the client's body.
    pub client_stall: Duration,
    /// The gRPC call the request is, if it is one.
    pub grpc: Option<crate::grpc::Call>,
    /// The retry policy for it: the upstream's, or its route's version.
    pub retry: &'a crate::retry::Policy,
}

/// Sends the request to `backend` and waits for the response head.
///
/// `start` is when this try began (clock nanoseconds). The response head
/// must come within the upstream's `response_timeout` (or the retry
/// policy's shorter `per_try_timeout`) of the request being sent; a client that pauses its body for `client_stall` gets 408. A
/// pooled connection that turns out to be dead before the backend saw the
/// request is replaced transparently; that is always safe and not a retry.
pub async fn send(
    out: &Outgoing<'_>,
    body: &mut ReqBody,
    backend: &Backend,
    upstream: &UpstreamRt,
    start: u64,
) -> Result<(Head, ResponseBody), UpstreamError> {
    let h2 = match backend.wire {
        Wire::Http1 => false,
        Wire::Http2 => true,
        Wire::Auto => backend.state.negotiated() != Negotiated::Http1,
    };
    if h2 {
        // Boxed: the HTTP/2 exchange's state would make every request's
        // future, HTTP/1.1 ones among them, that much larger.
        match Box::pin(h2::send(out, body, backend, upstream, start)).await? {
            h2::Sent::Response(head, body) => return Ok((head, body)),
            h2::Sent::Http1(mut conn) => {
                conn.keepalive = upstream.keepalive_nanos;
                pool::checkin(conn, start);
            }
        }
    }
    if out.grpc.is_some() {
        return Err(UpstreamError::NeedsHttp2);
    }
    send_http1(out, body, backend, upstream, start).await
}

/// [`send`] over HTTP/1.1.
async fn send_http1(
    out: &Outgoing<'_>,
    body: &mut ReqBody,
    backend: &Backend,
    upstream: &UpstreamRt,
    start: u64,
) -> Result<(Head, ResponseBody), UpstreamError> {
    let (parts, rewrite) = (out.parts, out.rewrite);
    let head_request = parts.method == Method::HEAD;
    let framing = request_framing(body);
    // An exchange that never produced a response byte may be replayed on a
    // fresh connection when nothing else can have happened: an idempotent
    // method without a body.
    let replayable = framing == BodyFraming::Empty && is_idempotent(&parts.method);
    let response = nanos(upstream.response_timeout);
    let waits = Waits {
        head: out.retry.head_wait(response),
        response,
        client: nanos(out.client_stall),
    };
    let mut attempt = 0;
    loop {
        let mut conn = pool::checkout(backend, upstream, start, rewrite.origin()).await?;
        let reused = conn.served > 0;
        match exchange(
            &mut conn,
            parts,
            rewrite,
            framing,
            body,
            head_request,
            start,
            waits,
        )
        .await
        {
            Ok((head, reusable)) => {
                let keep_alive = head.keep_alive && reusable;
                let body = body::Http1Body::new(conn, head.framing, keep_alive, waits.response);
                return Ok((head, ResponseBody::Http1(body)));
            }
            Err(e) => {
                let stale = reused
                    && (e.request_not_sent()
                        || (replayable && matches!(e, UpstreamError::NoResponse { .. })));
                attempt += 1;
                if !stale || attempt > STALE_RETRIES {
                    return Err(e);
                }
                tracing::debug!(backend = %backend.url, error = %e, "stale keep-alive connection; sending again");
            }
        }
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// GET, HEAD, OPTIONS, PUT, DELETE and TRACE (RFC 9110 §9.2.2).
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn request_framing(body: &ReqBody) -> BodyFraming {
    if body.is_end_stream() {
        return BodyFraming::Empty;
    }
    match body.size_hint().exact() {
        Some(0) => BodyFraming::Empty,
        Some(n) => BodyFraming::Length(n),
        None => BodyFraming::Chunked,
    }
}

/// How long an exchange may wait, in clock nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Waits {
    /// For the response head once the request is sent.
    head: u64,
    /// Between reads of the response body or writes of the request body.
    response: u64,
    /// Between two parts of the client's request body.
    client: u64,
}

/// One request/response exchange on `conn`. Returns the head and whether
/// the connection can carry another request once the body is read.
#[allow(clippy::too_many_arguments)]
async fn exchange(
    conn: &mut Conn,
    parts: &Parts,
    rewrite: &Rewrite,
    framing: BodyFraming,
    body: &mut ReqBody,
    head_request: bool,
    start: u64,
    waits: Waits,
) -> Result<(Head, bool), UpstreamError> {
    let reused = conn.served > 0;
    let mut head_buf = std::mem::take(&mut conn.write_buf);
    head_buf.clear();
    encode::head(&mut head_buf, parts, framing, rewrite);
    let wrote = match body {
        ReqBody::Full(Some(data)) if framing != BodyFraming::Empty => {
            let data = data.clone();
            conn.write_all_vectored(&mut [IoSlice::new(&head_buf), IoSlice::new(&data)])
                .await
        }
        _ => conn.write_tracked(&head_buf).await,
    };
    conn.write_buf = head_buf;
    if let Err((sent, source)) = wrote {
        return Err(UpstreamError::Send { sent, source });
    }
    // The response head is due `head` after the request was sent:
    // after its arrival for a request without a streamed body, after the
    // last byte of the body otherwise.
    let mut deadline = start.saturating_add(waits.head);
    let mut reusable = true;
    if matches!(body, ReqBody::Stream(_)) && framing != BodyFraming::Empty {
        let sent = Upload::new(conn, body, framing, waits.client, waits.response)
            .run()
            .await?;
        reusable = sent == Sent::Complete;
        deadline = clock::now_nanos().saturating_add(waits.head);
    }
    let mut received = !conn.read_buf.is_empty();
    loop {
        if let Some(head) = decode::parse_with(
            &mut conn.read_buf,
            head_request,
            rewrite.upgrade(),
            &mut conn.spans,
        )? {
            return Ok((head, reusable));
        }
        let failed = match conn.read_more(deadline).await {
            Ok(0) => std::io::ErrorKind::UnexpectedEof.into(),
            Ok(_) => {
                received = true;
                continue;
            }
            Err(ReadError::Timeout) => return Err(UpstreamError::Timeout),
            Err(ReadError::Io(e)) => e,
        };
        // Once any response byte arrived, the backend handled the request:
        // never a candidate for sending again.
        return Err(if received {
            UpstreamError::Incomplete(failed)
        } else {
            UpstreamError::NoResponse {
                reused,
                source: failed,
            }
        });
    }
}

/// What a health probe asks.
#[derive(Debug, Clone, Copy)]
pub enum ProbeKind<'a> {
    /// `GET` of this path.
    Http(&'a str),
    /// `grpc.health.v1.Health/Check` for this service.
    Grpc(&'a str),
}

/// What a health probe found.
#[derive(Debug)]
pub enum Probed {
    /// The HTTP status of an HTTP probe.
    Status(u16),
    /// The verdict of a gRPC probe.
    Grpc(Result<(), crate::grpc::HealthError>),
}

/// One health probe over a fresh connection (not pooled): HTTP/2 to
/// HTTP/2 backends, else HTTP/1.1 (with a PROXY protocol header without
/// addresses when its upstream sends them). The whole probe must fit in
/// `timeout`.
pub async fn probe(
    backend: &Backend,
    kind: ProbeKind<'_>,
    timeout: Duration,
    proxy_protocol: Option<ProxyVersion>,
) -> Result<Probed, UpstreamError> {
    let exchange = async {
        if backend.wire != Wire::Http1 {
            match h2::probe(backend, probe_request(kind), timeout).await? {
                h2::ProbeConn::Answer(a) => {
                    return Ok(match kind {
                        ProbeKind::Http(_) => Probed::Status(a.status),
                        ProbeKind::Grpc(_) if a.status != 200 => {
                            Probed::Grpc(Err(crate::grpc::HealthError::Http(a.status)))
                        }
                        ProbeKind::Grpc(_) => {
                            Probed::Grpc(crate::grpc::health_verdict(&a.body, &a.status_fields))
                        }
                    });
                }
                h2::ProbeConn::Http1(conn) => return probe_http1(conn, backend, kind).await,
            }
        }
        let preamble = proxy_protocol.map(|v| crate::proxy_protocol::header(v, None));
        let conn = Conn::connect(
            0,
            &backend.target,
            backend.tls.as_ref(),
            timeout,
            timeout,
            preamble.as_deref(),
        )
        .await?;
        probe_http1(conn, backend, kind).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| UpstreamError::Timeout)?
}

/// The request of an HTTP/2 probe.
fn probe_request(kind: ProbeKind<'_>) -> h2::ProbeRequest {
    match kind {
        ProbeKind::Http(path) => h2::ProbeRequest {
            method: Method::GET,
            path: path.to_owned(),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
        },
        ProbeKind::Grpc(service) => {
            let mut headers = http::HeaderMap::with_capacity(2);
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
            h2::ProbeRequest {
                method: Method::POST,
                path: crate::grpc::HEALTH_CHECK_PATH.to_owned(),
                headers,
                body: crate::grpc::frame(&crate::grpc::HealthCheckRequest {
                    service: service.to_owned(),
                }),
            }
        }
    }
}

/// An HTTP/1.1 probe on `conn`: `GET path`, the response status.
async fn probe_http1(
    mut conn: Box<Conn>,
    backend: &Backend,
    kind: ProbeKind<'_>,
) -> Result<Probed, UpstreamError> {
    let path = match kind {
        ProbeKind::Http(path) => path,
        ProbeKind::Grpc(_) => return Ok(Probed::Grpc(Err(crate::grpc::HealthError::Http1Only))),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\nuser-agent: isame-lb health check\r\nconnection: close\r\n\r\n",
        backend.target.authority
    );
    conn.write_tracked(request.as_bytes())
        .await
        .map_err(|(sent, source)| UpstreamError::Send { sent, source })?;
    loop {
        if let Some(head) = decode::parse_with(&mut conn.read_buf, false, None, &mut conn.spans)? {
            return Ok(Probed::Status(head.status.as_u16()));
        }
        match conn.read_more(0).await {
            Ok(0) => {
                return Err(UpstreamError::NoResponse {
                    reused: false,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                })
            }
            Ok(_) => {}
            Err(ReadError::Timeout) => return Err(UpstreamError::Timeout),
            Err(ReadError::Io(source)) => {
                return Err(UpstreamError::NoResponse {
                    reused: false,
                    source,
                })
            }
        }
    }
}
