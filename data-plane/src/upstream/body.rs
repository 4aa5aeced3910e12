//! A backend's response body, read straight from its connection as the
//! client consumes it: `Content-Length`, chunked or close-delimited. When the
//! body ends cleanly on a keep-alive connection, the connection goes back to
//! the worker's pool.

use super::conn::{Conn, ReadError};
use super::decode::Framing;
use super::error::UpstreamError;
use crate::pool;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilClose,
    Done,
}

/// The body of a backend's response.
pub struct ResponseBody {
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    /// Longest wait for the next bytes (0: none).
    stall: u64,
    deadline: u64,
    /// When the request started (clock nanoseconds), for the pool's idle clock.
    started: u64,
}

impl ResponseBody {
    pub(super) fn new(
        conn: Conn,
        framing: Framing,
        keep_alive: bool,
        stall: u64,
        started: u64,
    ) -> Self {
        let state = match framing {
            Framing::Empty => State::Length(0),
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        let mut body = Self {
            conn: Some(conn),
            state,
            keep_alive,
            stall,
            deadline: 0,
            started,
        };
        if body.state == State::Length(0) {
            body.finish();
        }
        body
    }

    /// Ends the body; a clean keep-alive connection returns to the pool.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(mut conn) = self.conn.take() {
            // Bytes beyond the response mean the backend is out of step.
            if self.keep_alive && conn.read_buf.is_empty() {
                conn.served += 1;
                pool::checkin(conn, self.started);
            }
        }
    }

    /// Reads more from the backend; `Ok(false)` at end of stream.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, UpstreamError>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Err(UpstreamError::Body(io::ErrorKind::NotConnected.into())));
        };
        match ready!(conn.poll_read(cx, &mut self.deadline, self.stall)) {
            Ok(n) => {
                self.deadline = 0;
                Poll::Ready(Ok(n > 0))
            }
            Err(ReadError::Timeout) => Poll::Ready(Err(UpstreamError::Timeout)),
            Err(ReadError::Io(e)) => Poll::Ready(Err(UpstreamError::Body(e))),
        }
    }

    fn fail(&mut self, e: UpstreamError) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }

    fn buffered(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.read_buf.len())
    }

    /// Takes up to `max` buffered bytes as a data frame.
    fn take(&mut self, max: u64) -> Bytes {
        match self.conn.as_mut() {
            Some(c) => {
                let n = usize::try_from(max)
                    .unwrap_or(usize::MAX)
                    .min(c.read_buf.len());
                c.read_buf.split_to(n).freeze()
            }
            None => Bytes::new(),
        }
    }

    fn protocol(&mut self, msg: &str) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        self.fail(UpstreamError::Protocol(msg.to_owned()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(n) => {
                    if this.buffered() > 0 {
                        let data = this.take(n);
                        let left = n - data.len() as u64;
                        this.state = State::Length(left);
                        if left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.poll_more(cx)) {
                        Ok(true) => {}
                        Ok(false) => {
                            return this
                                .fail(UpstreamError::Body(io::ErrorKind::UnexpectedEof.into()))
                        }
                        Err(e) => return this.fail(e),
                    }
                }
                State::UntilClose => {
                    if this.buffered() > 0 {
                        return Poll::Ready(Some(Ok(Frame::data(this.take(u64::MAX)))));
                    }
                    match ready!(this.poll_more(cx)) {
                        Ok(true) => {}
                        Ok(false) => {
                            this.keep_alive = false;
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Err(e) => return this.fail(e),
                    }
                }
                State::ChunkSize => {
                    let parsed = match this.conn.as_ref() {
                        Some(c) => httparse::parse_chunk_size(&c.read_buf),
                        None => return this.protocol("connection lost"),
                    };
                    match parsed {
                        Ok(httparse::Status::Complete((used, size))) => {
                            let _ = this.take(used as u64);
                            this.state = if size == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if this.buffered() > MAX_CHUNK_LINE => {
                            return this.protocol("chunk size line too long");
                        }
                        Ok(httparse::Status::Partial) => match ready!(this.poll_more(cx)) {
                            Ok(true) => {}
                            Ok(false) => {
                                return this
                                    .fail(UpstreamError::Body(io::ErrorKind::UnexpectedEof.into()))
                            }
                            Err(e) => return this.fail(e),
                        },
                        Err(_) => return this.protocol("invalid chunk size"),
                    }
                }
                State::ChunkData(n) => {
                    if this.buffered() > 0 {
                        let data = this.take(n);
                        let left = n - data.len() as u64;
                        this.state = if left == 0 {
                            State::ChunkEnd
                        } else {
                            State::ChunkData(left)
                        };
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.poll_more(cx)) {
                        Ok(true) => {}
                        Ok(false) => {
                            return this
                                .fail(UpstreamError::Body(io::ErrorKind::UnexpectedEof.into()))
                        }
                        Err(e) => return this.fail(e),
                    }
                }
                State::ChunkEnd => {
                    if this.buffered() >= 2 {
                        if this.take(2).as_ref() != b"\r\n" {
                            return this.protocol("chunk not followed by CRLF");
                        }
                        this.state = State::ChunkSize;
                        continue;
                    }
                    match ready!(this.poll_more(cx)) {
                        Ok(true) => {}
                        Ok(false) => {
                            return this
                                .fail(UpstreamError::Body(io::ErrorKind::UnexpectedEof.into()))
                        }
                        Err(e) => return this.fail(e),
                    }
                }
                State::Trailers => {
                    let parsed = match this.conn.as_ref() {
                        Some(c) => parse_trailers(&c.read_buf),
                        None => return this.protocol("connection lost"),
                    };
                    match parsed {
                        Ok(Some((used, trailers))) => {
                            let _ = this.take(used as u64);
                            this.finish();
                            if trailers.is_empty() {
                                return Poll::Ready(None);
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(None) if this.buffered() > MAX_TRAILERS => {
                            return this.protocol("trailers too large")
                        }
                        Ok(None) => match ready!(this.poll_more(cx)) {
                            Ok(true) => {}
                            Ok(false) => {
                                return this
                                    .fail(UpstreamError::Body(io::ErrorKind::UnexpectedEof.into()))
                            }
                            Err(e) => return this.fail(e),
                        },
                        Err(()) => return this.protocol("invalid trailers"),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Parses the trailer section after the last chunk: `Some((bytes used, trailers))`.
fn parse_trailers(buf: &[u8]) -> Result<Option<(usize, HeaderMap)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    match httparse::parse_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete((used, parsed))) => {
            let mut map = HeaderMap::new();
            for h in parsed {
                let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ())?;
                let value = HeaderValue::from_bytes(h.value).map_err(|_| ())?;
                map.append(name, value);
            }
            Ok(Some((used, map)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(()),
    }
}
