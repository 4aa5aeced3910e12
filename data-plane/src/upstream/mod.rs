//! The HTTP/1.1 client side of the proxy: sends a request to a backend over a
//! pooled keep-alive connection and hands back the response head and a body
//! that streams from the connection.
//!
//! It runs inside the request's own task: no connection task, no channels
//! between the request and the socket, one `writev`/`write` and one `read`
//! for a small exchange. What it accepts from backends is strict (see
//! `decode`): anything ambiguous is a 502, never a guess.

mod body;
mod chunked;
mod conn;
mod decode;
mod encode;
mod error;

pub use body::ResponseBody;
pub use conn::Conn;
pub use decode::{Framing, Head};
pub use encode::BodyFraming;
pub use error::UpstreamError;

use crate::backend::Backend;
use crate::body::ReqBody;
use crate::headers::Rewrite;
use crate::pool;
use crate::snapshot::UpstreamRt;
use bytes::Bytes;
use conn::ReadError;
use http::request::Parts;
use http::Method;
use http_body::{Body, Frame};
use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::Poll;

/// How many times a request that never reached a backend is sent again on
/// another connection (stale keep-alive connections).
const STALE_RETRIES: usize = 3;

/// Sends the request to `backend` and waits for the response head.
///
/// `start` is when the request arrived (clock nanoseconds): the response
/// head must come within the upstream's `response_timeout` of it. A pooled
/// connection that turns out to be dead before the backend saw the request
/// is replaced transparently; that is always safe and not a retry.
pub async fn send(
    parts: &Parts,
    rewrite: &Rewrite,
    mut body: ReqBody,
    backend: &Backend,
    upstream: &UpstreamRt,
    start: u64,
) -> Result<(Head, ResponseBody), UpstreamError> {
    let head_request = parts.method == Method::HEAD;
    let framing = request_framing(&body);
    // An exchange that never produced a response byte may be replayed on a
    // fresh connection when nothing else can have happened: an idempotent
    // method without a body.
    let replayable = framing == BodyFraming::Empty && is_idempotent(&parts.method);
    let timeout = nanos(upstream.response_timeout);
    let deadline = start.saturating_add(timeout);
    let mut attempt = 0;
    loop {
        let mut conn = pool::checkout(backend, upstream, start).await?;
        let reused = conn.served > 0;
        match exchange(
            &mut conn,
            parts,
            rewrite,
            framing,
            &mut body,
            head_request,
            deadline,
        )
        .await
        {
            Ok((head, reusable)) => {
                let keep_alive = head.keep_alive && reusable;
                let body = ResponseBody::new(conn, head.framing, keep_alive, timeout, start);
                return Ok((head, body));
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

/// What happened while the request body was being sent.
enum Step {
    Frame(Option<Result<Frame<Bytes>, hyper::Error>>),
    BackendSpoke,
    BackendGone(std::io::Error),
}

/// One request/response exchange on `conn`. Returns the head and whether
/// the connection can carry another request once the body is read.
async fn exchange(
    conn: &mut Conn,
    parts: &Parts,
    rewrite: &Rewrite,
    framing: BodyFraming,
    body: &mut ReqBody,
    head_request: bool,
    deadline: u64,
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
                .map_err(|e| (false, e))
        }
        _ => conn.write_tracked(&head_buf).await,
    };
    conn.write_buf = head_buf;
    if let Err((sent, source)) = wrote {
        return Err(UpstreamError::Send { sent, source });
    }
    let mut reusable = true;
    if matches!(body, ReqBody::Stream(_)) && framing != BodyFraming::Empty {
        reusable = send_body(conn, body, framing).await?;
    }
    loop {
        if let Some(head) = decode::parse_with(&mut conn.read_buf, head_request, &mut conn.spans)? {
            return Ok((head, reusable));
        }
        match conn.read_more(deadline).await {
            Ok(0) => {
                return Err(UpstreamError::NoResponse {
                    reused,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                })
            }
            Ok(_) => {}
            Err(ReadError::Timeout) => return Err(UpstreamError::Timeout),
            Err(ReadError::Io(source)) => return Err(UpstreamError::NoResponse { reused, source }),
        }
    }
}

/// Streams the client's body to the backend. Returns false when the backend
/// answered before the body was complete (the connection cannot be reused).
async fn send_body(
    conn: &mut Conn,
    body: &mut ReqBody,
    framing: BodyFraming,
) -> Result<bool, UpstreamError> {
    let chunked = framing == BodyFraming::Chunked;
    loop {
        let step = poll_fn(|cx| {
            if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) {
                return Poll::Ready(Step::Frame(frame));
            }
            // While the client is slow, watch for the backend answering early.
            let mut no_deadline = 0;
            match conn.poll_read(cx, &mut no_deadline, 0) {
                Poll::Ready(Ok(n)) if n > 0 => Poll::Ready(Step::BackendSpoke),
                Poll::Ready(Ok(_)) => {
                    Poll::Ready(Step::BackendGone(std::io::ErrorKind::UnexpectedEof.into()))
                }
                Poll::Ready(Err(ReadError::Io(e))) => Poll::Ready(Step::BackendGone(e)),
                Poll::Ready(Err(ReadError::Timeout)) | Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match step {
            Step::BackendSpoke => {
                // "100 Continue" and other interim answers do not end the upload.
                if decode::skip_interim(&mut conn.read_buf)? {
                    return Ok(false);
                }
            }
            Step::BackendGone(source) => return Err(UpstreamError::Send { sent: true, source }),
            Step::Frame(None) => {
                if chunked {
                    conn.write_tracked(b"0\r\n\r\n")
                        .await
                        .map_err(|(_, source)| UpstreamError::Send { sent: true, source })?;
                }
                return Ok(true);
            }
            Step::Frame(Some(Err(e))) => return Err(UpstreamError::ClientBody(e)),
            Step::Frame(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    // Request trailers are not relayed.
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                let written = if chunked {
                    let prefix = encode::chunk_prefix(data.len());
                    conn.write_all_vectored(&mut [
                        IoSlice::new(&prefix),
                        IoSlice::new(&data),
                        IoSlice::new(b"\r\n"),
                    ])
                    .await
                } else {
                    conn.write_all_vectored(&mut [IoSlice::new(&data)]).await
                };
                if let Err(source) = written {
                    // The backend may have refused the body and answered: let
                    // the caller read what it said.
                    if !conn.read_buf.is_empty() {
                        return Ok(false);
                    }
                    return Err(UpstreamError::Send { sent: true, source });
                }
            }
        }
    }
}
