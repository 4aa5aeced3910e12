//! Writing a request head for a backend, and the framing of its body.

use crate::forwarding::Rewrite;
use http::header::{CONTENT_LENGTH, COOKIE};
use http::request::Parts;
use std::io::Write;

/// How the request body travels to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes, announced by `Content-Length`.
    Length(u64),
    /// Unknown length: `Transfer-Encoding: chunked`.
    Chunked,
}

/// Appends the request head (origin-form target, HTTP/1.1) to `out`: the
/// client's headers as `rw` rewrites them, and the `Content-Length` or
/// `Transfer-Encoding` that `framing` needs.
pub fn head(out: &mut Vec<u8>, parts: &Parts, framing: BodyFraming, rw: &Rewrite) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    match parts.uri.path_and_query().map(|pq| pq.as_str()) {
        Some(pq) if pq.starts_with('/') || pq == "*" => out.extend_from_slice(pq.as_bytes()),
        // `http://host?q` has an empty path, which is `/` in origin-form.
        Some(pq) => {
            out.push(b'/');
            out.extend_from_slice(pq.as_bytes());
        }
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_length = false;
    let mut cookies_written = false;
    for (name, value) in &parts.headers {
        if rw.skips(name) {
            continue;
        }
        if name == COOKIE {
            // HTTP/2 splits cookies into several fields; HTTP/1.1 wants one
            // line, joined with "; " (RFC 9113 §8.2.3).
            if !cookies_written {
                cookies_written = true;
                out.extend_from_slice(b"cookie: ");
                for (i, v) in parts.headers.get_all(COOKIE).iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b"; ");
                    }
                    out.extend_from_slice(v.as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
            continue;
        }
        if name == CONTENT_LENGTH {
            // Our framing decides; a client's header is kept only when it agrees.
            if framing != BodyFraming::Length(parse_length(value.as_bytes()).unwrap_or(u64::MAX))
                && !(framing == BodyFraming::Empty && value.as_bytes() == b"0")
            {
                continue;
            }
            has_length = true;
        }
        line(out, name.as_str(), value.as_bytes());
    }
    for (name, value) in rw.extra() {
        line(out, name, value.as_bytes());
    }
    match framing {
        BodyFraming::Length(n) if !has_length => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
}

fn line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn parse_length(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// The chunk-size line that precedes `len` bytes of chunked data.
pub fn chunk_prefix(len: usize) -> Vec<u8> {
    format!("{len:x}\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_ip::TrustedProxies;
    use crate::forwarding::{forward_request, Forwarded};
    use http::{HeaderValue, Request};

    /// The head as written, without the forwarding headers every request gets.
    fn encode(req: Request<()>, framing: BodyFraming) -> String {
        let (mut parts, ()) = req.into_parts();
        let peer = HeaderValue::from_static("127.0.0.1");
        let trusted = TrustedProxies::default();
        let host = parts.headers.get("host").cloned();
        let rw = forward_request(
            &mut parts.headers,
            &Forwarded {
                peer: [127, 0, 0, 1].into(),
                peer_value: &peer,
                proto: "http",
                trusted: &trusted,
                host: host.as_ref(),
                host_from_target: false,
            },
        );
        let mut out = Vec::new();
        head(&mut out, &parts, framing, &rw);
        String::from_utf8(out)
            .expect("ascii")
            .replace(
                "x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n",
                "",
            )
            .replace("x-forwarded-host: example.com\r\n", "")
    }

    #[test]
    fn writes_origin_form_heads() {
        let req = Request::get("http://example.com/a/b?c=d")
            .header("host", "example.com")
            .header("x-a", "1")
            .header("connection", "x-a")
            .header("transfer-encoding", "chunked")
            .body(())
            .expect("request");
        assert_eq!(
            encode(req, BodyFraming::Empty),
            "GET /a/b?c=d HTTP/1.1\r\nhost: example.com\r\n\r\n"
        );
    }

    #[test]
    fn cookies_are_joined_and_empty_paths_become_slash() {
        let req = Request::get("http://example.com?q=1")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(())
            .expect("request");
        assert_eq!(
            encode(req, BodyFraming::Empty),
            "GET /?q=1 HTTP/1.1\r\ncookie: a=1; b=2\r\n\r\n"
        );
        let req = Request::options("*").body(()).expect("request");
        assert_eq!(
            encode(req, BodyFraming::Empty),
            "OPTIONS * HTTP/1.1\r\n\r\n"
        );
    }

    #[test]
    fn framing_replaces_client_framing_headers() {
        let req = Request::post("/up")
            .header("content-length", "5")
            .body(())
            .expect("request");
        assert_eq!(
            encode(req, BodyFraming::Length(5)),
            "POST /up HTTP/1.1\r\ncontent-length: 5\r\n\r\n"
        );
        let req = Request::post("/up").body(()).expect("request");
        assert_eq!(
            encode(req, BodyFraming::Length(7)),
            "POST /up HTTP/1.1\r\ncontent-length: 7\r\n\r\n"
        );
        let req = Request::post("/up")
            .header("content-length", "9")
            .body(())
            .expect("request");
        assert_eq!(
            encode(req, BodyFraming::Chunked),
            "POST /up HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let req = Request::get("/")
            .header("content-length", "0")
            .body(())
            .expect("request");
        assert_eq!(
            encode(req, BodyFraming::Empty),
            "GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(chunk_prefix(255), b"ff\r\n");
    }
}
