//! A backend's response body, whichever HTTP version brought it.

use super::body::Http1Body;
use super::conn::Conn;
use super::error::UpstreamError;
use super::h2::H2Body;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The body of a backend's response.
pub enum ResponseBody {
    /// Read from an HTTP/1.1 connection.
    Http1(Http1Body),
    /// One stream of an HTTP/2 connection.
    Http2(H2Body),
}

impl ResponseBody {
    /// The connection of a `101` answer (HTTP/1.1 only), for relaying the
    /// protocol switched to.
    pub fn take_upgraded(&mut self) -> Option<Box<Conn>> {
        match self {
            ResponseBody::Http1(b) => b.take_upgraded(),
            ResponseBody::Http2(_) => None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match self.get_mut() {
            ResponseBody::Http1(b) => Pin::new(b).poll_frame(cx),
            ResponseBody::Http2(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Http1(b) => b.is_end_stream(),
            ResponseBody::Http2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Http1(b) => b.size_hint(),
            ResponseBody::Http2(b) => b.size_hint(),
        }
    }
}
