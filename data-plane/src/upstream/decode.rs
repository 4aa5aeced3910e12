//! Reading a backend's response head and deciding how its body is framed.

use super::error::UpstreamError;
use crate::forwarding::is_hop_by_hop;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use std::mem::MaybeUninit;

/// Most headers a response may have.
const MAX_HEADERS: usize = 128;
/// Largest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the backend closes the connection.
    UntilClose,
    /// `101 Switching Protocols`: the connection now carries the protocol
    /// switched to, relayed as bytes (see [`crate::tunnel`]).
    Upgraded,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// Status code.
    pub status: StatusCode,
    /// Headers, hop-by-hop ones already removed.
    pub headers: HeaderMap,
    /// Body framing.
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
    /// The protocol switched to, for a `101` answer.
    pub upgrade: Option<HeaderValue>,
}

/// Parses a response head from the front of `buf`, removing it. `Ok(None)`
/// means more bytes are needed. Interim (1xx) responses are skipped.
#[cfg(test)]
pub fn parse(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, UpstreamError> {
    parse_with(buf, head_request, None, &mut Vec::new())
}

/// Parses a response head from the front of `buf`, removing it. `Ok(None)`
/// means more bytes are needed. Interim (1xx) responses are skipped.
/// `upgrade` is what an upgrade request asked for: only then is `101
/// Switching Protocols` an answer, and only to one of those protocols.
/// `spans` is scratch space the connection keeps between responses.
pub fn parse_with(
    buf: &mut BytesMut,
    head_request: bool,
    upgrade: Option<&HeaderValue>,
    spans: &mut Vec<Span>,
) -> Result<Option<Head>, UpstreamError> {
    loop {
        let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut headers)
            .map_err(|e| UpstreamError::Protocol(format!("malformed response head: {e}")))?;
        let len = match parsed {
            httparse::Status::Partial => {
                if buf.len() > MAX_HEAD {
                    return Err(UpstreamError::Protocol("response head too large".into()));
                }
                return Ok(None);
            }
            httparse::Status::Complete(len) if len > MAX_HEAD => {
                return Err(UpstreamError::Protocol("response head too large".into()));
            }
            httparse::Status::Complete(len) => len,
        };
        let code = resp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| UpstreamError::Protocol(format!("invalid status {code}")))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            let _ = buf.split_to(len);
            continue;
        }
        let http10 = resp.version == Some(0);
        // Header positions as offsets, so the head can be split off the buffer
        // and shared by the header values without copying them.
        let base = buf.as_ptr() as usize;
        spans.clear();
        spans.extend(resp.headers.iter().map(|h| Span {
            name: (h.name.as_ptr() as usize - base, h.name.len()),
            value: (h.value.as_ptr() as usize - base, h.value.len()),
        }));
        let head_bytes = buf.split_to(len).freeze();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return switched(spans, &head_bytes, http10, upgrade).map(Some);
        }
        return build(status, http10, spans, &head_bytes, head_request).map(Some);
    }
}

/// A `101` answer: valid only to an upgrade request, over HTTP/1.1, naming
/// one of the protocols asked for. Its end-to-end headers (such as
/// `Sec-WebSocket-Accept`) are kept.
fn switched(
    spans: &[Span],
    head: &Bytes,
    http10: bool,
    asked: Option<&HeaderValue>,
) -> Result<Head, UpstreamError> {
    let Some(asked) = asked else {
        return Err(UpstreamError::Protocol(
            "unrequested protocol upgrade".into(),
        ));
    };
    if http10 {
        return Err(UpstreamError::Protocol(
            "protocol upgrade over HTTP/1.0".into(),
        ));
    }
    let mut upgrade = None;
    let mut headers = HeaderMap::with_capacity(spans.len());
    for span in spans {
        let (name, value) = (span.name(head), span.value(head));
        if eq(name, "upgrade") {
            if upgrade.is_some() {
                return Err(UpstreamError::Protocol(
                    "more than one Upgrade header".into(),
                ));
            }
            upgrade = Some(
                HeaderValue::from_bytes(value)
                    .map_err(|_| UpstreamError::Protocol("invalid header value".into()))?,
            );
            continue;
        }
        if is_hop_by_hop(name) {
            continue;
        }
        let name = HeaderName::from_bytes(name)
            .map_err(|_| UpstreamError::Protocol("invalid header name".into()))?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(span.value.0..span.value.0 + span.value.1))
                .map_err(|_| UpstreamError::Protocol("invalid header value".into()))?;
        headers.append(name, value);
    }
    match upgrade {
        Some(chosen) if crate::upgrade::answers(asked, &chosen) => Ok(Head {
            status: StatusCode::SWITCHING_PROTOCOLS,
            headers,
            framing: Framing::Upgraded,
            keep_alive: false,
            upgrade: Some(chosen),
        }),
        _ => Err(UpstreamError::Protocol(
            "protocol upgrade to a protocol not asked for".into(),
        )),
    }
}

/// Removes complete interim (1xx) responses from the front of `buf`; true
/// once a final response has begun, which a backend may send before it has
/// read the whole request body.
pub fn skip_interim(buf: &mut BytesMut) -> Result<bool, UpstreamError> {
    while !buf.is_empty() {
        let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut headers)
            .map_err(|e| UpstreamError::Protocol(format!("malformed response head: {e}")))?;
        let interim = resp.code.map(|c| (100..200).contains(&c) && c != 101);
        match (parsed, interim) {
            (_, Some(false)) => return Ok(true),
            (httparse::Status::Complete(len), Some(true)) => {
                let _ = buf.split_to(len);
            }
            _ if buf.len() > MAX_HEAD => {
                return Err(UpstreamError::Protocol("response head too large".into()))
            }
            _ => return Ok(false),
        }
    }
    Ok(false)
}

/// Where one header's name and value lie in the head: (offset, length).
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

impl Span {
    fn name<'a>(&self, head: &'a [u8]) -> &'a [u8] {
        &head[self.name.0..self.name.0 + self.name.1]
    }

    fn value<'a>(&self, head: &'a [u8]) -> &'a [u8] {
        &head[self.value.0..self.value.0 + self.value.1]
    }
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(|t| t.trim_ascii())
}

fn build(
    status: StatusCode,
    http10: bool,
    spans: &[Span],
    head: &Bytes,
    head_request: bool,
) -> Result<Head, UpstreamError> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut other_coding = false;
    let mut saw_close = false;
    let mut saw_keep_alive = false;
    let mut connection_named = false;
    for span in spans {
        let (name, value) = (span.name(head), span.value(head));
        if eq(name, "content-length") {
            // Digits only: `+5` or ` 5 , 5` are not lengths a peer agreed on.
            let digits = value.trim_ascii();
            let n = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| UpstreamError::Protocol("invalid content-length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(UpstreamError::Protocol(
                    "conflicting content-length headers".into(),
                ));
            }
            length = Some(n);
        } else if eq(name, "transfer-encoding") {
            for t in tokens(value).filter(|t| !t.is_empty()) {
                // Only a final `chunked` delimits the body.
                chunked = eq(t, "chunked");
                other_coding |= !chunked;
            }
        } else if eq(name, "connection") {
            for t in tokens(value) {
                if eq(t, "close") {
                    saw_close = true;
                } else if eq(t, "keep-alive") {
                    saw_keep_alive = true;
                } else if !t.is_empty() {
                    connection_named = true;
                }
            }
        }
    }
    let named_by_connection = |name: &[u8]| {
        connection_named
            && spans
                .iter()
                .filter(|s| eq(s.name(head), "connection"))
                .flat_map(|s| tokens(s.value(head)))
                .any(|t| t.eq_ignore_ascii_case(name))
    };
    let mut headers = HeaderMap::with_capacity(spans.len());
    for span in spans {
        let name = span.name(head);
        if is_hop_by_hop(name) || named_by_connection(name) {
            continue;
        }
        let name = HeaderName::from_bytes(name)
            .map_err(|_| UpstreamError::Protocol("invalid header name".into()))?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(span.value.0..span.value.0 + span.value.1))
                .map_err(|_| UpstreamError::Protocol("invalid header value".into()))?;
        headers.append(name, value);
    }
    if other_coding {
        // Transfer codings other than chunked (gzip, ...) cannot be relayed
        // once the hop-by-hop Transfer-Encoding header is gone.
        return Err(UpstreamError::Protocol(
            "unsupported transfer-encoding".into(),
        ));
    }
    let no_body =
        head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Empty
    } else if chunked {
        // A body with Transfer-Encoding ignores Content-Length (RFC 9112 §6.3).
        headers.remove(http::header::CONTENT_LENGTH);
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let close = saw_close || (http10 && !saw_keep_alive);
    // A body delimited by close, or a message both chunked and sized, ends the connection.
    let keep_alive = !close && framing != Framing::UntilClose && !(chunked && length.is_some());
    Ok(Head {
        status,
        headers,
        framing,
        keep_alive,
        upgrade: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(raw: &str, head_request: bool) -> Result<Option<Head>, UpstreamError> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse(&mut buf, head_request)
    }

    fn ok(raw: &str) -> Head {
        match head_of(raw, false) {
            Ok(Some(h)) => h,
            other => panic!("{raw:?} → {other:?}"),
        }
    }

    #[test]
    fn sized_response_keeps_the_connection() {
        let h = ok("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok");
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(h.headers["content-length"], "2");
    }

    #[test]
    fn partial_heads_ask_for_more() {
        assert!(matches!(
            head_of("HTTP/1.1 200 OK\r\nContent-Le", false),
            Ok(None)
        ));
    }

    #[test]
    fn chunked_wins_over_length_and_ends_reuse() {
        let h = ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.headers.contains_key("content-length"));
        assert!(!h.headers.contains_key("transfer-encoding"));
        assert!(!h.keep_alive);
        assert!(ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").keep_alive);
    }

    #[test]
    fn close_delimited_and_http10() {
        let h = ok("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        assert!(!ok("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            ok("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n").keep_alive
        );
        assert!(
            !ok("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").keep_alive
        );
    }

    #[test]
    fn bodyless_statuses_and_head_requests() {
        assert_eq!(
            ok("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            ok("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n").framing,
            Framing::Empty
        );
        let h = head_of("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true)
            .expect("ok")
            .expect("head");
        assert_eq!(h.framing, Framing::Empty);
        assert_eq!(
            h.headers["content-length"], "10",
            "HEAD keeps the length of the body it would get"
        );
    }

    #[test]
    fn interim_responses_before_the_body_ends_are_told_apart() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 10"[..]);
        assert!(!skip_interim(&mut buf).expect("ok"));
        assert_eq!(&buf[..], b"HTTP/1.1 10", "the interim response is consumed");
        buf.extend_from_slice(b"3 Early Hints\r\n\r\nHTTP/1.1 413 Too Large\r\n");
        assert!(
            skip_interim(&mut buf).expect("ok"),
            "a final response has begun"
        );
        assert!(buf.starts_with(b"HTTP/1.1 413"));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let h =
            ok("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.status, 201);
        assert!(head_of(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            false
        )
        .is_err());
    }

    #[test]
    fn switching_protocols_answers_only_an_upgrade_asked_for() {
        let asked = HeaderValue::from_static("websocket");
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: abc\r\n\r\n\x81\x02hi";
        let mut buf = BytesMut::from(&raw[..]);
        let h = parse_with(&mut buf, false, Some(&asked), &mut Vec::new())
            .expect("valid")
            .expect("complete");
        assert_eq!(h.status, 101);
        assert_eq!(h.framing, Framing::Upgraded);
        assert_eq!(h.upgrade.as_ref().expect("protocol"), "websocket");
        assert_eq!(h.headers["sec-websocket-accept"], "abc");
        assert!(!h.headers.contains_key("connection"));
        assert_eq!(
            &buf[..],
            b"\x81\x02hi",
            "bytes after the head stay for the tunnel"
        );
        for bad in [
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(bad.as_bytes());
            assert!(
                parse_with(&mut buf, false, Some(&asked), &mut Vec::new()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let h = ok("HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Kept: 1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.headers.len(), 2, "{:?}", h.headers);
        assert!(h.headers.contains_key("x-kept"));
    }

    #[test]
    fn malformed_heads_are_refused() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "NOT HTTP\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ] {
            assert!(head_of(bad, false).is_err(), "{bad:?}");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD + 10));
        assert!(head_of(&huge, false).is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
                let mut buf = BytesMut::from(&bytes[..]);
                let _ = parse(&mut buf, false);
            }

            #[test]
            fn a_head_parses_the_same_however_it_arrives(
                status in prop_oneof![200u16..204, 205u16..304, 305u16..600],
                headers in prop::collection::vec(("x-[a-z]{1,8}", "[ -~&&[^ ]][ -~]{0,20}[ -~&&[^ ]]"), 0..10),
                cut in any::<prop::sample::Index>(),
            ) {
                let mut raw = format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 3\r\n");
                for (k, v) in &headers {
                    raw.push_str(&format!("{k}: {v}\r\n"));
                }
                raw.push_str("\r\nabc");
                let whole = ok(&raw);
                let cut = cut.index(raw.len());
                let mut buf = BytesMut::from(&raw.as_bytes()[..cut]);
                let first = parse(&mut buf, false).expect("no error on a prefix");
                let head = match first {
                    Some(h) => h,
                    None => {
                        buf.extend_from_slice(&raw.as_bytes()[cut..]);
                        parse(&mut buf, false).expect("valid").expect("complete")
                    }
                };
                prop_assert_eq!(head.status, whole.status);
                prop_assert_eq!(head.headers, whole.headers);
                prop_assert_eq!(head.framing, Framing::Length(3));
            }
        }
    }
}
