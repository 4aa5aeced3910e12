//! The HTTP/2 client side of the proxy: `h2c://` backends, and `https://`
//! backends of upstreams whose `protocol` is `http2` or `auto`.
//!
//! Requests to one backend share a few multiplexed connections per worker
//! (see [`pool`]). The request goes as the client sent it, rewritten as for
//! HTTP/1.1 (forwarding headers, hop-by-hop headers dropped) except that
//! `TE: trailers` passes, so gRPC's trailers come back. Bodies stream both
//! ways with HTTP/2 flow control: a client that stops reading stops the
//! backend's stream, not the connection.

mod body;
mod pool;

pub use body::{H2Body, Upload};
pub use pool::sweep;

use super::conn::Conn;
use super::{Head, Outgoing, ResponseBody, UpstreamError};
use crate::backend::{Backend, Target};
use crate::body::ReqBody;
use crate::clock;
use crate::forwarding::{is_hop_by_hop, remove_connection_named};
use crate::grpc;
use crate::snapshot::UpstreamRt;
use body::{UploadState, Watch};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, HOST, TE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pool::Checkout;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// How many times a request a closing connection never sent goes again on
/// another connection.
const UNSENT_RETRIES: usize = 3;

/// What sending over HTTP/2 came to. (Returned once per try and taken
/// apart at once: boxing the response would cost an allocation for nothing.)
#[allow(clippy::large_enum_variant)]
pub enum Sent {
    /// The response head and its body.
    Response(Head, ResponseBody),
    /// The backend (`protocol: auto`) chose HTTP/1.1: the connection it
    /// made, for the HTTP/1.1 client.
    Http1(Box<Conn>),
}

/// Sends the request to `backend` over HTTP/2 and waits for the response
/// head: within `response_timeout` (or the retry policy's shorter
/// `per_try_timeout`) of the client's body ending, or by a gRPC call's
/// deadline.
pub async fn send(
    out: &Outgoing<'_>,
    body: &mut ReqBody,
    backend: &Backend,
    up: &UpstreamRt,
    now: u64,
) -> Result<Sent, UpstreamError> {
    let response = nanos(up.response_timeout);
    let head_wait = out.retry.head_wait(response);
    let deadline = out
        .grpc
        .and_then(|c| c.timeout)
        .map(|t| out.start.saturating_add(nanos(t)));
    let mut attempt = 0;
    loop {
        let lease = match pool::checkout(backend, up).await? {
            Checkout::Http2(l) => l,
            Checkout::Http1(stream) => {
                let conn = Conn::over(backend.state.uid, stream, up.response_timeout);
                return Ok(Sent::Http1(conn));
            }
        };
        let outgoing = match body {
            ReqBody::Full(d) => ReqBody::Full(d.clone()),
            ReqBody::Stream(_) => std::mem::replace(body, ReqBody::Gone),
            ReqBody::Gone => ReqBody::Gone,
        };
        // A gRPC call answered UNAVAILABLE may go again (see `dispatch`)
        // when its whole body was kept.
        let state = Arc::new(if out.grpc.is_some() && out.retry.replays_grpc() {
            UploadState::teeing(out.retry.max_body_bytes)
        } else {
            UploadState::default()
        });
        let upload = Upload::new(outgoing, nanos(out.client_stall), state.clone());
        let req = request(out, &backend.target, backend.tls.is_some(), upload);
        let mut send = lease.send;
        let fut = send.try_send_request(req);
        match wait_head(fut, &state, now, head_wait, deadline).await {
            Ok(resp) => {
                let (parts, incoming) = resp.into_parts();
                let mut headers = parts.headers;
                strip_hop_by_hop(&mut headers);
                let grpc_status = out
                    .grpc
                    .and_then(|_| headers.get(&grpc::GRPC_STATUS).cloned());
                if grpc_status.as_ref().is_some_and(|s| s.as_bytes() == b"14")
                    && matches!(body, ReqBody::Gone)
                {
                    if let Some(sent) = state.sent_body() {
                        *body = ReqBody::Full(Some(sent));
                    }
                }
                let watch = Watch {
                    stall: if out.grpc.is_some() {
                        nanos(up.tunnel_idle_timeout)
                    } else {
                        response
                    },
                    deadline: deadline.unwrap_or(0),
                    grpc: out.grpc.map(|_| up.grpc_statuses.clone()),
                };
                let framing = match http_body::Body::size_hint(&incoming).exact() {
                    Some(0) => super::decode::Framing::Empty,
                    Some(n) => super::decode::Framing::Length(n),
                    None => super::decode::Framing::Chunked,
                };
                let head = Head {
                    status: parts.status,
                    headers,
                    framing,
                    keep_alive: true,
                    upgrade: None,
                };
                let body = H2Body::new(incoming, lease.slot, watch, grpc_status.as_ref());
                return Ok(Sent::Response(head, ResponseBody::Http2(body)));
            }
            Err(Wait::Unsent(req)) => {
                let restored = req.into_body().into_inner();
                if matches!(restored, ReqBody::Stream(_)) {
                    *body = restored;
                }
                attempt += 1;
                if attempt > UNSENT_RETRIES {
                    return Err(UpstreamError::Send {
                        sent: false,
                        source: io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "HTTP/2 connection closed before the request was sent",
                        ),
                    });
                }
                tracing::debug!(backend = %backend.url, "HTTP/2 connection closing; sending again");
            }
            Err(Wait::Failed(e)) => return Err(e),
        }
    }
}

/// How waiting for a response head failed.
enum Wait {
    /// The connection never sent the request; here it is back.
    Unsent(Box<Request<Upload>>),
    Failed(UpstreamError),
}

async fn wait_head(
    fut: impl std::future::Future<
        Output = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Upload>>>,
    >,
    state: &UploadState,
    start: u64,
    response: u64,
    grpc_deadline: Option<u64>,
) -> Result<Response<Incoming>, Wait> {
    tokio::pin!(fut);
    let mut due = grpc_deadline.unwrap_or(start.saturating_add(response));
    loop {
        tokio::select! {
            biased;
            r = &mut fut => {
                return r.map_err(|mut e| match e.take_message() {
                    Some(req) => Wait::Unsent(Box::new(req)),
                    None => Wait::Failed(state.take_fault().unwrap_or_else(|| failed(e.into_error()))),
                });
            }
            () = tokio::time::sleep_until(clock::instant_at(due)) => {
                if grpc_deadline.is_some() {
                    return Err(Wait::Failed(UpstreamError::Timeout));
                }
                let now = clock::now_nanos();
                // The head is due `response` after the client's
                // body ended; a body still streaming has its own limit.
                due = match state.ended_at() {
                    None => now.saturating_add(response),
                    Some(t) if t.saturating_add(response) > now => t.saturating_add(response),
                    Some(_) => return Err(Wait::Failed(UpstreamError::Timeout)),
                };
            }
        }
    }
}

/// A failed exchange: the backend may have seen the request.
fn failed(e: hyper::Error) -> UpstreamError {
    UpstreamError::NoResponse {
        reused: false,
        source: io::Error::other(e),
    }
}

/// The request for the backend: an absolute URI whose authority is the
/// host the backend is told (`:authority`), the client's headers as the
/// forwarding plan rewrites them.
fn request(out: &Outgoing<'_>, target: &Target, tls: bool, body: Upload) -> Request<Upload> {
    let parts = out.parts;
    let rw = out.rewrite;
    let host = rw
        .extra()
        .find(|(n, _)| *n == "host")
        .map(|(_, v)| v)
        .or_else(|| parts.headers.get(HOST));
    let authority = host
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| target.authority.clone());
    let path = parts
        .uri
        .path_and_query()
        .filter(|p| p.as_str().starts_with('/'))
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    uri.authority = Some(authority);
    uri.path_and_query = Some(path);
    let uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 3);
    for (name, value) in &parts.headers {
        if name == HOST || name == CONTENT_LENGTH {
            // `:authority` carries the host; the body's length is framed by
            // HTTP/2 (hyper writes `content-length` from it).
            continue;
        }
        if name == TE {
            if value.as_bytes().eq_ignore_ascii_case(b"trailers") {
                headers.append(TE, value.clone());
            }
            continue;
        }
        if !rw.skips(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in rw.extra() {
        if !matches!(name, "host" | "connection" | "upgrade") {
            headers.append(HeaderName::from_static(name), value.clone());
        }
    }
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = headers;
    req
}

/// HTTP/2 has no hop-by-hop headers; a backend that sends some anyway does
/// not get them to the client.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    remove_connection_named(h);
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|n| is_hop_by_hop(n.as_str().as_bytes()))
        .cloned()
        .collect();
    for n in names {
        h.remove(n);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a health probe over HTTP/2 got.
pub struct ProbeAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The body (up to [`grpc::max_health_body`] bytes).
    pub body: Bytes,
    /// The trailers, or the head of a trailers-only answer.
    pub status_fields: HeaderMap,
}

/// What a health probe sends.
pub struct ProbeRequest {
    /// `GET` for HTTP checks, `POST` for gRPC.
    pub method: http::Method,
    /// The path.
    pub path: String,
    /// Headers besides `user-agent`.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// How a probe's connection turned out.
pub enum ProbeConn {
    /// An answer over HTTP/2.
    Answer(ProbeAnswer),
    /// The backend (`protocol: auto`) chose HTTP/1.1 on this connection.
    Http1(Box<Conn>),
}

/// One health probe over a fresh HTTP/2 connection (not pooled).
pub async fn probe(
    backend: &Backend,
    req: ProbeRequest,
    timeout: Duration,
) -> Result<ProbeConn, UpstreamError> {
    let stream = match pool::connect(backend, timeout).await? {
        pool::Opened::Http2(s) => s,
        pool::Opened::Http1(s) => {
            return Ok(ProbeConn::Http1(Conn::over(0, s, timeout)));
        }
    };
    let mut send = pool::handshake::<http_body_util::Full<Bytes>>(stream, timeout).await?;
    let scheme = if backend.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let uri = format!("{scheme}://{}{}", backend.target.authority, req.path);
    let mut request = Request::new(http_body_util::Full::new(req.body));
    *request.method_mut() = req.method;
    *request.uri_mut() = uri
        .parse()
        .map_err(|_| UpstreamError::Protocol(format!("cannot probe {uri:?}")))?;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = req.headers;
    request.headers_mut().insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("isame-lb health check"),
    );
    let resp = send.send_request(request).await.map_err(failed)?;
    let (parts, body) = resp.into_parts();
    let collected = http_body_util::Limited::new(body, grpc::max_health_body())
        .collect()
        .await
        .map_err(|e| UpstreamError::Body(io::Error::other(e)))?;
    let trailers = collected.trailers().cloned();
    let status_fields = trailers.unwrap_or(parts.headers);
    Ok(ProbeConn::Answer(ProbeAnswer {
        status: parts.status.as_u16(),
        body: collected.to_bytes(),
        status_fields,
    }))
}
