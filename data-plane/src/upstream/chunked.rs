//! Decoding `Transfer-Encoding: chunked` (RFC 9112 §7.1) from a buffer that
//! fills up a read at a time. Pure: no I/O, so it is tested byte by byte.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Trailer fields that may be relayed: not hop-by-hop, and nothing that
/// frames, routes or describes the content (RFC 9110 §6.5.1).
fn relayable_trailer(name: &str) -> bool {
    !crate::forwarding::is_hop_by_hop(name.as_bytes())
        && ![
            "content-length",
            "content-encoding",
            "content-type",
            "content-range",
            "host",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// What the decoder found in the buffer.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Some body bytes.
    Data(Bytes),
    /// The trailer section (the body is complete).
    Trailers(HeaderMap),
    /// The body is complete, without trailers.
    End,
    /// More bytes are needed.
    NeedMore,
}

/// A chunked body decoder.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Self { state: State::Size }
    }
}

impl Decoder {
    /// True once the last chunk and the trailers were consumed.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes what it can from the front of `buf`.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, &'static str> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                // httparse also takes a line with no digits as size 0.
                State::Size if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
                    return Err("invalid chunk size")
                }
                State::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        let _ = buf.split_to(used);
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err("chunk size line too long")
                    }
                    Ok(httparse::Status::Partial) => return Ok(Step::NeedMore),
                    Err(_) => return Err("invalid chunk size"),
                },
                State::Data(n) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Step::Data(buf.split_to(take).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk not followed by CRLF");
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(buf, &mut headers) {
                        Ok(httparse::Status::Complete((used, parsed))) => {
                            let mut map = HeaderMap::new();
                            for h in parsed.iter().filter(|h| relayable_trailer(h.name)) {
                                let name = HeaderName::from_bytes(h.name.as_bytes())
                                    .map_err(|_| "invalid trailer name")?;
                                let value = HeaderValue::from_bytes(h.value)
                                    .map_err(|_| "invalid trailer value")?;
                                map.append(name, value);
                            }
                            let _ = buf.split_to(used);
                            self.state = State::Done;
                            return Ok(if map.is_empty() {
                                Step::End
                            } else {
                                Step::Trailers(map)
                            });
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                            return Err("trailers too large")
                        }
                        Ok(httparse::Status::Partial) => return Ok(Step::NeedMore),
                        Err(_) => return Err("invalid trailers"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `wire` to a decoder in pieces cut at `cuts`; returns body and trailers.
    fn decode_in_pieces(
        wire: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<u8>, Option<HeaderMap>, usize), &'static str> {
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        for p in points {
            buf.extend_from_slice(&wire[fed..p.max(fed)]);
            fed = p.max(fed);
            loop {
                match d.step(&mut buf)? {
                    Step::Data(b) => body.extend_from_slice(&b),
                    Step::Trailers(t) => {
                        trailers = Some(t);
                        return Ok((body, trailers, buf.len()));
                    }
                    Step::End => return Ok((body, trailers, buf.len())),
                    Step::NeedMore => break,
                }
            }
        }
        Err("incomplete")
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let wire = b"5\r\nhello\r\n1;name=value\r\n \r\n5\r\nworld\r\n0\r\nX-Sum: 42\r\nContent-Length: 9\r\nConnection: x\r\n\r\nNEXT";
        let (body, trailers, rest) = decode_in_pieces(wire, &[]).expect("valid");
        assert_eq!(body, b"hello world");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["x-sum"], "42");
        assert_eq!(
            trailers.len(),
            1,
            "framing and hop-by-hop trailers are dropped: {trailers:?}"
        );
        assert_eq!(rest, 4, "bytes after the body stay in the buffer");
    }

    #[test]
    fn refuses_broken_framing() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
        ] {
            assert!(
                decode_in_pieces(bad, &[]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}", "e".repeat(5000));
        assert_eq!(
            decode_in_pieces(long.as_bytes(), &[]),
            Err("chunk size line too long")
        );
    }

    proptest! {
        #[test]
        fn any_split_decodes_the_same(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..8),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut wire = Vec::new();
            for c in &chunks {
                wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let (body, trailers, rest) = decode_in_pieces(&wire, &cuts).expect("valid framing");
            prop_assert_eq!(body, chunks.concat());
            prop_assert!(trailers.is_none());
            prop_assert_eq!(rest, 0);
        }

        #[test]
        fn garbage_never_panics(wire in prop::collection::vec(any::<u8>(), 0..400), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
            let _ = decode_in_pieces(&wire, &cuts);
        }
    }
}
