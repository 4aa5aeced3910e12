//! An HTTP/1.1 backend's response body, read straight from its connection as the
//! client consumes it: `Content-Length`, chunked or close-delimited. When the
//! body ends cleanly on a keep-alive connection, the connection goes back to
//! the worker's pool.

use super::chunked::{self, Decoder};
use super::conn::{Conn, ReadError};
use super::decode::Framing;
use super::error::UpstreamError;
use crate::pool;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(Decoder),
    UntilClose,
    /// The connection switched protocols: no body, and the connection is
    /// kept for [`Http1Body::take_upgraded`].
    Upgraded,
    Done,
}

/// The body of a backend's response.
pub struct Http1Body {
    conn: Option<Box<Conn>>,
    state: State,
    keep_alive: bool,
    /// Longest wait for the next bytes (0: none).
    stall: u64,
    deadline: u64,
}

type Polled = Poll<Option<Result<Frame<Bytes>, UpstreamError>>>;

impl Http1Body {
    pub(super) fn new(conn: Box<Conn>, framing: Framing, keep_alive: bool, stall: u64) -> Self {
        let state = match framing {
            Framing::Empty => State::Length(0),
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Decoder::default()),
            Framing::UntilClose => State::UntilClose,
            Framing::Upgraded => State::Upgraded,
        };
        let mut body = Self {
            conn: Some(conn),
            state,
            keep_alive,
            stall,
            deadline: 0,
        };
        if matches!(body.state, State::Length(0)) {
            body.finish();
        }
        body
    }

    /// The connection of a `101` answer, for relaying the protocol
    /// switched to; never pooled.
    pub fn take_upgraded(&mut self) -> Option<Box<Conn>> {
        match self.state {
            State::Upgraded => {
                self.state = State::Done;
                self.conn.take()
            }
            _ => None,
        }
    }

    /// Ends the body; a clean keep-alive connection returns to the pool.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(mut conn) = self.conn.take() {
            // Bytes beyond the response mean the backend is out of step.
            if self.keep_alive && conn.read_buf.is_empty() {
                conn.served += 1;
                pool::checkin(conn, crate::clock::now_nanos());
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

    fn fail(&mut self, e: UpstreamError) -> Polled {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }

    fn buffered(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.read_buf.len())
    }

    /// Takes up to `max` buffered bytes.
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

    /// Hands out what the buffer holds; `None` when a read is needed first.
    fn buffered_frame(&mut self) -> Option<Polled> {
        match &mut self.state {
            State::Done | State::Upgraded => Some(Poll::Ready(None)),
            State::Length(0) => {
                self.finish();
                Some(Poll::Ready(None))
            }
            State::Length(n) => {
                let n = *n;
                if self.buffered() == 0 {
                    return None;
                }
                let data = self.take(n);
                let left = n - data.len() as u64;
                self.state = State::Length(left);
                if left == 0 {
                    self.finish();
                }
                Some(Poll::Ready(Some(Ok(Frame::data(data)))))
            }
            State::UntilClose => {
                if self.buffered() == 0 {
                    return None;
                }
                Some(Poll::Ready(Some(Ok(Frame::data(self.take(u64::MAX))))))
            }
            State::Chunked(decoder) => {
                let Some(conn) = self.conn.as_mut() else {
                    return Some(self.fail(UpstreamError::Protocol("connection lost".into())));
                };
                match decoder.step(&mut conn.read_buf) {
                    Ok(chunked::Step::Data(data)) => Some(Poll::Ready(Some(Ok(Frame::data(data))))),
                    Ok(chunked::Step::Trailers(t)) => {
                        self.finish();
                        Some(Poll::Ready(Some(Ok(Frame::trailers(t)))))
                    }
                    Ok(chunked::Step::End) => {
                        self.finish();
                        Some(Poll::Ready(None))
                    }
                    Ok(chunked::Step::NeedMore) => None,
                    Err(msg) => Some(self.fail(UpstreamError::Protocol(msg.into()))),
                }
            }
        }
    }
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = &mut *self;
        loop {
            if let Some(polled) = this.buffered_frame() {
                return polled;
            }
            match ready!(this.poll_more(cx)) {
                Ok(true) => {}
                Ok(false) if matches!(this.state, State::UntilClose) => {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(false) => {
                    return this.fail(UpstreamError::Body(io::ErrorKind::UnexpectedEof.into()))
                }
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Done | State::Upgraded | State::Length(0) => true,
            State::Chunked(d) => d.done(),
            State::Length(_) | State::UntilClose => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
