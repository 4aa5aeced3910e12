//! One keep-alive connection to a backend, with its buffers and a lazily
//! armed timer for response deadlines.

use super::error::UpstreamError;
use super::stream::{Stream, TlsTarget};
use crate::backend::Target;
use crate::clock;
use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// A client connection as a PROXY protocol header names it: the client,
/// and the address it connected to.
pub type Origin = (std::net::SocketAddr, std::net::SocketAddr);

/// Least room offered to each read from a backend.
const READ_RESERVE: usize = 16 * 1024;

/// An open connection to a backend.
pub struct Conn {
    /// The backend's id (keys the pool).
    pub uid: u32,
    /// The client connection named by the PROXY protocol header this
    /// connection began with; it serves that client connection only.
    pub origin: Option<Origin>,
    io: Stream,
    /// Bytes read from the backend and not consumed yet.
    pub read_buf: BytesMut,
    /// The request head being written (reused between requests).
    pub write_buf: Vec<u8>,
    /// Requests completed on this connection.
    pub served: u64,
    /// How long it may wait idle in the pool, in nanoseconds (its
    /// upstream's `keepalive_timeout` when it was last checked out).
    pub keepalive: u64,
    /// Scratch for parsing response heads.
    pub spans: Vec<super::decode::Span>,
    /// A deadline timer re-armed only when it fires (see [`Conn::poll_read`]).
    timer: Pin<Box<Sleep>>,
    /// The timer never sleeps longer than this past a check.
    granularity: u64,
}

impl Conn {
    /// Opens a connection (and its TLS, for an `https://` backend) within
    /// `connect_timeout`, first writing `preamble` (a PROXY protocol
    /// header) when there is one. `granularity` is the shortest deadline
    /// this connection will be asked to keep.
    pub async fn connect(
        uid: u32,
        target: &Target,
        tls: Option<&TlsTarget>,
        connect_timeout: Duration,
        granularity: Duration,
        preamble: Option<&[u8]>,
    ) -> Result<Box<Conn>, UpstreamError> {
        let io = tokio::time::timeout(connect_timeout, async {
            let mut tcp = open(target).await?;
            if let Some(p) = preamble {
                tcp.write_all(p).await?;
            }
            match tls {
                None => Ok(Stream::Plain(tcp)),
                Some(t) => t.connect(tcp).await,
            }
        })
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
        Ok(Self::over(uid, io, granularity))
    }

    /// A connection over a transport opened elsewhere (a TLS connection
    /// whose ALPN chose HTTP/1.1).
    pub fn over(uid: u32, io: Stream, granularity: Duration) -> Box<Conn> {
        let granularity = u64::try_from(granularity.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1_000_000);
        Box::new(Conn {
            uid,
            origin: None,
            io,
            read_buf: BytesMut::with_capacity(4 * READ_RESERVE),
            write_buf: Vec::with_capacity(1024),
            served: 0,
            keepalive: 0,
            spans: Vec::with_capacity(32),
            timer: Box::pin(tokio::time::sleep_until(clock::instant_at(
                clock::now_nanos().saturating_add(granularity),
            ))),
            granularity,
        })
    }

    /// True when the backend closed this idle connection or sent something
    /// unasked. Uses the readiness the event loop already recorded, so a live
    /// idle connection costs no system call.
    pub fn is_stale(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.tcp().poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(())) => match &mut self.io {
                Stream::Plain(tcp) => {
                    let mut probe = [0u8; 1];
                    !matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                }
                // TLS may have taken in records that carry no data (a session
                // ticket): only a read through it tells.
                Stream::Tls(_) => {
                    let mut probe = [0u8; 1];
                    let mut buf = tokio::io::ReadBuf::new(&mut probe);
                    !matches!(
                        Pin::new(&mut self.io).poll_read(&mut cx, &mut buf),
                        Poll::Pending
                    )
                }
            },
        }
    }

    /// Writes `bufs` completely; on failure, tells whether any byte went out.
    pub async fn write_all_vectored(
        &mut self,
        bufs: &mut [io::IoSlice<'_>],
    ) -> Result<(), (bool, io::Error)> {
        let mut bufs = &mut bufs[..];
        let mut sent = false;
        io::IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            match self.io.write_vectored(bufs).await {
                Ok(0) => return Err((sent, io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    sent = true;
                    io::IoSlice::advance_slices(&mut bufs, n);
                }
                Err(e) => return Err((sent, e)),
            }
        }
        Ok(())
    }

    /// One vectored write attempt.
    pub fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    /// Reads more bytes into `read_buf`; `Ok(0)` at end of stream.
    ///
    /// `deadline` (clock nanoseconds) bounds the wait: when it is 0 and
    /// `stall` is not, a wait starts a deadline `stall` from now, so a read
    /// that finds data at once never looks at the clock.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        deadline: &mut u64,
        stall: u64,
    ) -> Poll<Result<usize, ReadError>> {
        // Through `AsyncRead`, so tokio notices a short read and clears the
        // socket's readiness: the next read waits for the kernel's event
        // instead of paying an `EAGAIN` system call.
        if self.read_buf.capacity() - self.read_buf.len() < READ_RESERVE {
            self.read_buf.reserve(READ_RESERVE);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(ReadError::Io(e))),
            Poll::Pending => {
                if *deadline == 0 {
                    if stall == 0 {
                        return Poll::Pending;
                    }
                    *deadline = clock::now_nanos().saturating_add(stall);
                }
                ready!(self.poll_deadline(cx, *deadline));
                Poll::Ready(Err(ReadError::Timeout))
            }
        }
    }

    /// Ready once `deadline` has passed. The timer is only re-armed when it
    /// fires, at most `granularity` ahead, so a request normally arms nothing.
    pub fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: u64) -> Poll<()> {
        // A deadline closer than the timer's next check (a shorter timeout
        // than the one this connection was opened for) moves the timer in.
        if clock::instant_at(deadline) < self.timer.deadline() {
            self.timer.as_mut().reset(clock::instant_at(deadline));
        }
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let now = clock::now_nanos();
            if now >= deadline {
                return Poll::Ready(());
            }
            let next = deadline.min(now.saturating_add(self.granularity));
            self.timer.as_mut().reset(clock::instant_at(next));
        }
    }

    /// Reads more bytes, failing with [`ReadError::Timeout`] at `deadline`.
    pub async fn read_more(&mut self, deadline: u64) -> Result<usize, ReadError> {
        let mut deadline = deadline;
        std::future::poll_fn(|cx| self.poll_read(cx, &mut deadline, 0)).await
    }

    /// The transport and the bytes read from it and not consumed yet, for
    /// a connection that switched protocols.
    pub fn into_parts(self) -> (Stream, BytesMut) {
        (self.io, self.read_buf)
    }

    /// Writes all of `buf`; on failure, tells whether any byte went out.
    pub async fn write_tracked(&mut self, buf: &[u8]) -> Result<(), (bool, io::Error)> {
        let mut written = 0;
        while written < buf.len() {
            match self.io.write(&buf[written..]).await {
                Ok(0) => return Err((written > 0, io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) => return Err((written > 0, e)),
            }
        }
        Ok(())
    }
}

/// Why a read from the backend failed.
#[derive(Debug)]
pub enum ReadError {
    /// The socket failed.
    Io(io::Error),
    /// The deadline passed.
    Timeout,
}

/// A TCP connection to `target` (its first address that answers).
pub(super) async fn open(target: &Target) -> io::Result<TcpStream> {
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
