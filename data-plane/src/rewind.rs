//! A client stream with bytes already read put back in front: what was read
//! to tell HTTP/2 from HTTP/1.1, or what one HTTP/1.1 connection object had
//! read beyond its last request when it was put away, is read again by the
//! next. While its connection is being parked, shutting it down does
//! nothing, so that the socket outlives the connection object.

use crate::conn_timeouts::ConnState;
use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, with `prefix` read first.
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
    /// The connection, when it may be parked (see [`ConnState::parking`]).
    conn: Option<Arc<ConnState>>,
}

impl<T> Rewind<T> {
    /// Reads `prefix`, then `inner`.
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self {
            prefix,
            inner,
            conn: None,
        }
    }

    /// The same, for a connection that may be parked: while `conn` is
    /// being parked, a shutdown leaves `inner` open.
    pub fn parkable(prefix: Bytes, inner: T, conn: Arc<ConnState>) -> Self {
        Self {
            prefix,
            inner,
            conn: Some(conn),
        }
    }

    /// The stream and what is left of the prefix.
    pub fn into_parts(self) -> (T, Bytes) {
        (self.inner, self.prefix)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.conn.as_ref().is_some_and(|c| c.parking()) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_the_prefix_then_the_stream() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" world").await.expect("write");
        drop(client);
        let mut r = Rewind::new(Bytes::from_static(b"hello"), server);
        let mut small = [0u8; 3];
        r.read_exact(&mut small).await.expect("read");
        assert_eq!(&small, b"hel");
        let mut rest = String::new();
        r.read_to_string(&mut rest).await.expect("read");
        assert_eq!(rest, "lo world");
        let (_, left) = r.into_parts();
        assert!(left.is_empty());
    }
}
