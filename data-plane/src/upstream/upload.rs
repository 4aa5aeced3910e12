//! Streaming a client's request body to a backend.
//!
//! Three things can happen while a body is on its way, and the upload waits
//! for all of them at once: the client sends more, the backend accepts more,
//! or the backend answers before the body is complete (`413`, or an interim
//! `100 Continue`, which does not end the upload). Each wait is bounded: a
//! client that stops sending for `client_stall`, or a backend that stops
//! reading for `backend_stall`, ends the exchange.

use super::conn::{Conn, ReadError};
use super::decode;
use super::encode::{self, BodyFraming};
use super::error::UpstreamError;
use crate::body::ReqBody;
use crate::clock;
use bytes::{Buf, Bytes};
use http_body::Body;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

/// How an upload ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The whole body went out.
    Complete,
    /// The backend answered before the body was complete; the connection
    /// cannot carry another request.
    AnsweredEarly,
}

/// The state of one upload.
pub struct Upload<'a> {
    conn: &'a mut Conn,
    body: &'a mut ReqBody,
    chunked: bool,
    /// Bytes taken from the client and not yet written to the backend.
    pending: VecDeque<Bytes>,
    body_done: bool,
    client_stall: u64,
    backend_stall: u64,
    /// The current wait's deadline (0: not waiting yet), and whether it is
    /// the backend (true) or the client (false) that is being waited for.
    deadline: (u64, bool),
}

impl<'a> Upload<'a> {
    /// Prepares to send `body` on `conn` with `framing` (not `Empty`).
    pub fn new(
        conn: &'a mut Conn,
        body: &'a mut ReqBody,
        framing: BodyFraming,
        client_stall: u64,
        backend_stall: u64,
    ) -> Self {
        Self {
            conn,
            body,
            chunked: framing == BodyFraming::Chunked,
            pending: VecDeque::with_capacity(3),
            body_done: false,
            client_stall,
            backend_stall,
            deadline: (0, false),
        }
    }

    /// Sends the body; see [`Sent`].
    pub async fn run(mut self) -> Result<Sent, UpstreamError> {
        std::future::poll_fn(|cx| self.poll(cx)).await
    }

    fn queue(&mut self, data: Bytes) {
        if self.chunked {
            self.pending
                .push_back(Bytes::from(encode::chunk_prefix(data.len())));
            self.pending.push_back(data);
            self.pending.push_back(Bytes::from_static(b"\r\n"));
        } else {
            self.pending.push_back(data);
        }
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.pending.front_mut() else {
                return;
            };
            let take = n.min(front.len());
            front.advance(take);
            n -= take;
            if front.is_empty() {
                self.pending.pop_front();
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Sent, UpstreamError>> {
        loop {
            if !self.pending.is_empty() {
                let slices: Vec<IoSlice<'_>> =
                    self.pending.iter().map(|b| IoSlice::new(b)).collect();
                match self.conn.poll_write_vectored(cx, &slices) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(sent_err(io::ErrorKind::WriteZero.into())))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.advance(n);
                        self.deadline = (0, false);
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        // A backend that refused the body may have said why.
                        return match self.answered() {
                            Ok(true) => Poll::Ready(Ok(Sent::AnsweredEarly)),
                            _ => Poll::Ready(Err(sent_err(e))),
                        };
                    }
                    Poll::Pending => {}
                }
            } else if self.body_done {
                return Poll::Ready(Ok(Sent::Complete));
            } else {
                match Pin::new(&mut *self.body).poll_frame(cx) {
                    Poll::Ready(None) => {
                        self.body_done = true;
                        if self.chunked {
                            self.pending.push_back(Bytes::from_static(b"0\r\n\r\n"));
                        }
                        self.deadline = (0, false);
                        continue;
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        // Request trailers are not relayed.
                        if let Ok(data) = frame.into_data() {
                            if !data.is_empty() {
                                self.queue(data);
                            }
                        }
                        self.deadline = (0, false);
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(UpstreamError::ClientBody(e)))
                    }
                    Poll::Pending => {}
                }
            }
            // Waiting for the client or the backend: watch for an early answer.
            let mut no_deadline = 0;
            match self.conn.poll_read(cx, &mut no_deadline, 0) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(match self.answered() {
                        Ok(true) => Ok(Sent::AnsweredEarly),
                        _ => Err(sent_err(io::ErrorKind::UnexpectedEof.into())),
                    })
                }
                Poll::Ready(Ok(_)) => match self.answered() {
                    Ok(true) => return Poll::Ready(Ok(Sent::AnsweredEarly)),
                    // Only "100 Continue" or the like: keep uploading.
                    Ok(false) => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                },
                Poll::Ready(Err(ReadError::Io(e))) => return Poll::Ready(Err(sent_err(e))),
                Poll::Ready(Err(ReadError::Timeout)) | Poll::Pending => {}
            }
            // Bound the wait.
            let backend = !self.pending.is_empty();
            if self.deadline.0 == 0 || self.deadline.1 != backend {
                let stall = if backend {
                    self.backend_stall
                } else {
                    self.client_stall
                };
                self.deadline = (clock::now_nanos().saturating_add(stall), backend);
            }
            return match self.conn.poll_deadline(cx, self.deadline.0) {
                Poll::Ready(()) if backend => Poll::Ready(Err(UpstreamError::Timeout)),
                Poll::Ready(()) => Poll::Ready(Err(UpstreamError::ClientStalled)),
                Poll::Pending => Poll::Pending,
            };
        }
    }

    /// True when the backend's bytes so far begin a final response
    /// (interim responses are consumed).
    fn answered(&mut self) -> Result<bool, UpstreamError> {
        decode::skip_interim(&mut self.conn.read_buf)
    }
}

fn sent_err(source: io::Error) -> UpstreamError {
    UpstreamError::Send { sent: true, source }
}
