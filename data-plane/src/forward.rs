//! Sending one request to one backend over a pooled keep-alive connection.

use crate::backend::Backend;
use crate::body::ReqBody;
use crate::error::ProxyError;
use crate::pool::{self, Pooled};
use crate::snapshot::UpstreamRt;
use http::{Request, Response};
use hyper::body::Incoming;

/// Sends `req` to `backend` and waits for the response headers.
///
/// A pooled connection can die while idle (the backend closed it). When that
/// is detected before any byte of the request was written, the request is
/// sent again on another connection: the backend never saw it, so this is
/// always safe and is not counted as a retry.
pub async fn send(
    mut req: Request<ReqBody>,
    backend: &Backend,
    upstream: &UpstreamRt,
) -> Result<(Response<Incoming>, Pooled), ProxyError> {
    loop {
        let mut conn =
            pool::checkout(backend.state.uid, &backend.target, upstream.connect_timeout).await?;
        if let Err(e) = conn.tx.ready().await {
            if conn.reused {
                continue;
            }
            return Err(ProxyError::Upstream(e));
        }
        match tokio::time::timeout(upstream.response_timeout, conn.tx.try_send_request(req)).await {
            Err(_) => return Err(ProxyError::ResponseTimeout),
            Ok(Ok(resp)) => return Ok((resp, conn)),
            Ok(Err(mut e)) => match e.take_message() {
                Some(unsent) if conn.reused => req = unsent,
                _ => return Err(ProxyError::Upstream(e.into_error())),
            },
        }
    }
}
