//! The host a request is for, validated before anything uses it.
//!
//! The request target's authority wins when it has one (absolute-form, or
//! HTTP/2's `:authority`), else the one `Host` header (RFC 9112 §3.2.2).
//! Either must be `host[:port]` as RFC 9110 §7.2 and RFC 3986 §3.2.2 define
//! it: a reg-name (unreserved characters, sub-delims, percent-escapes), an
//! IPv4 address or a bracketed IPv6 address, and an optional numeric port.
//! Userinfo, paths, backslashes, spaces and the like make it a 400, so
//! that routing, forwarding headers, redirects, middleware placeholders and
//! logs only ever see a host a browser would read the same way.

use http::header::{HeaderValue, HOST};
use http::{Request, Version};
use std::net::Ipv6Addr;

/// Why a request's host is refused (the client gets 400 with this text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.reason())]
pub enum HostError {
    /// More than one `Host` header.
    Repeated,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    Missing,
    /// Not `host[:port]`.
    Invalid,
    /// HTTP/2 `:authority` and `Host` name different hosts.
    Conflict,
}

impl HostError {
    /// The text of the 400 the client gets.
    pub fn reason(self) -> &'static str {
        match self {
            HostError::Repeated => "more than one Host header",
            HostError::Missing => "missing Host header",
            HostError::Invalid => "invalid host",
            HostError::Conflict => "Host header differs from the request's authority",
        }
    }
}

/// A validated host.
#[derive(Debug, Clone)]
pub struct RequestHost {
    /// `host[:port]` as the client sent it (forwarded as `Host` and
    /// `X-Forwarded-Host`).
    pub value: HeaderValue,
    /// Length of the host part: without the port and a trailing dot.
    name_len: usize,
    /// Taken from the request target (absolute-form or HTTP/2 `:authority`).
    pub from_target: bool,
}

impl RequestHost {
    /// `host[:port]` as sent.
    pub fn as_str(&self) -> &str {
        // Validation admits ASCII only, so this never fails.
        self.value.to_str().unwrap_or("")
    }

    /// The host without port or trailing dot (`[::1]` keeps its brackets):
    /// what routes match and redirects name.
    pub fn name(&self) -> &str {
        &self.as_str()[..self.name_len]
    }
}

/// Finds and validates the host of `req`. `None` when the request names no
/// host and may do without (HTTP/1.0, or HTTP/2 without `:authority`).
pub fn of<B>(req: &Request<B>) -> Result<Option<RequestHost>, HostError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Repeated);
    }
    let header = header
        .map(|h| parse(h.as_bytes()).map(|len| (h, len)))
        .transpose()?;
    let target = req
        .uri()
        .authority()
        .map(|a| {
            let len = parse(a.as_str().as_bytes())?;
            let value = HeaderValue::from_str(a.as_str()).map_err(|_| HostError::Invalid)?;
            Ok((value, len))
        })
        .transpose()?;
    match (target, header) {
        (Some((value, name_len)), header) => {
            // HTTP/1.1 ignores a Host header beside an absolute-form target
            // (once it is valid); HTTP/2 requires them to agree.
            if req.version() == Version::HTTP_2 {
                if let Some((h, _)) = header {
                    if !h.as_bytes().eq_ignore_ascii_case(value.as_bytes()) {
                        return Err(HostError::Conflict);
                    }
                }
            }
            Ok(Some(RequestHost {
                value,
                name_len,
                from_target: true,
            }))
        }
        (None, Some((h, name_len))) => Ok(Some(RequestHost {
            value: h.clone(),
            name_len,
            from_target: false,
        })),
        (None, None) if req.version() == Version::HTTP_11 => Err(HostError::Missing),
        (None, None) => Ok(None),
    }
}

/// Checks `host[:port]`; returns the length of the host part without a
/// trailing dot.
pub fn parse(s: &[u8]) -> Result<usize, HostError> {
    let (host_end, rest) = if s.first() == Some(&b'[') {
        let close = s
            .iter()
            .position(|&b| b == b']')
            .ok_or(HostError::Invalid)?;
        let inner = std::str::from_utf8(&s[1..close]).map_err(|_| HostError::Invalid)?;
        // IPv6 only: no IPvFuture, no zone identifiers.
        inner.parse::<Ipv6Addr>().map_err(|_| HostError::Invalid)?;
        (close + 1, &s[close + 1..])
    } else {
        let end = s.iter().position(|&b| b == b':').unwrap_or(s.len());
        check_reg_name(&s[..end])?;
        (end, &s[end..])
    };
    match rest {
        [] => {}
        [b':', port @ ..] => check_port(port)?,
        _ => return Err(HostError::Invalid),
    }
    let name_len = if host_end > 1 && s[host_end - 1] == b'.' {
        host_end - 1
    } else {
        host_end
    };
    Ok(name_len)
}

/// RFC 3986 reg-name (IPv4 addresses are reg-names too), not empty, with
/// no escaped control characters.
fn check_reg_name(name: &[u8]) -> Result<(), HostError> {
    if name.is_empty() {
        return Err(HostError::Invalid);
    }
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            b'%' => {
                let hex = name.get(i + 1..i + 3).ok_or(HostError::Invalid)?;
                let byte = std::str::from_utf8(hex)
                    .ok()
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(HostError::Invalid)?;
                // No escaped control characters (`%00`, `%0A`, ...).
                if byte < 0x20 || byte == 0x7f {
                    return Err(HostError::Invalid);
                }
                i += 2;
            }
            _ => return Err(HostError::Invalid),
        }
        i += 1;
    }
    Ok(())
}

/// Digits that fit a port; empty is allowed (`host:`, RFC 3986 §3.2.3).
fn check_port(port: &[u8]) -> Result<(), HostError> {
    if port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return Err(HostError::Invalid);
    }
    if !port.is_empty() {
        let n: u32 = port.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
        if n > u32::from(u16::MAX) {
            return Err(HostError::Invalid);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Result<&str, HostError> {
        parse(s.as_bytes()).map(|n| &s[..n])
    }

    #[test]
    fn accepts_host_names_addresses_and_ports() {
        for (input, host) in [
            ("example.com", "example.com"),
            ("Shop.Example.com:8080", "Shop.Example.com"),
            ("example.com.", "example.com"),
            ("example.com.:443", "example.com"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]", "[::1]"),
            ("[2001:db8::7]:8443", "[2001:db8::7]"),
            ("host:", "host"),
            ("[::1]:", "[::1]"),
            ("under_score.example", "under_score.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a%2Db.example", "a%2Db.example"),
            ("a!$&'()*+,;=b", "a!$&'()*+,;=b"),
        ] {
            assert_eq!(name(input), Ok(host), "{input}");
        }
    }

    #[test]
    fn refuses_anything_that_is_not_host_and_port() {
        for input in [
            "",
            ":80",
            "user@other.example",
            "user:pass@other.example",
            "other.example/evil",
            "a.example\\@b.example",
            "a b.example",
            "evil.com?.example.com",
            "evil.com#.example.com",
            "a.example:80:80",
            "a.example:http",
            "a.example:65536",
            "a.example:123456",
            "[::1",
            "[::1]x",
            "[v1.fe80::a]",
            "[fe80::1%25eth0]",
            "[127.0.0.1]",
            "a%2.example",
            "a%zz.example",
            "a%00.example",
            "a%0d%0a.example",
            "a%7F.example",
            "caf\u{e9}.example",
            "a\"b",
            "<a>",
            "a|b",
        ] {
            assert_eq!(
                parse(input.as_bytes()),
                Err(HostError::Invalid),
                "{input:?}"
            );
        }
    }

    fn request(version: Version, target: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(target);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn the_target_authority_wins_over_host_in_http1() {
        let r = request(Version::HTTP_11, "http://a.example:81/x", &["b.example"]);
        let h = of(&r).expect("valid").expect("a host");
        assert_eq!(
            (h.as_str(), h.name(), h.from_target),
            ("a.example:81", "a.example", true)
        );
        let r = request(Version::HTTP_11, "/x", &["B.example."]);
        let h = of(&r).expect("valid").expect("a host");
        assert_eq!(
            (h.as_str(), h.name(), h.from_target),
            ("B.example.", "B.example", false)
        );
    }

    #[test]
    fn userinfo_in_the_target_and_bad_host_headers_are_refused() {
        let r = request(
            Version::HTTP_11,
            "http://user@other.example/",
            &["a.example"],
        );
        assert_eq!(of(&r).err(), Some(HostError::Invalid));
        let r = request(Version::HTTP_11, "http://a.example/", &["bad/host"]);
        assert_eq!(
            of(&r).err(),
            Some(HostError::Invalid),
            "Host must be valid even when ignored"
        );
        let r = request(Version::HTTP_11, "/", &["a.example", "b.example"]);
        assert_eq!(of(&r).err(), Some(HostError::Repeated));
    }

    #[test]
    fn http11_needs_a_host_and_http2_must_agree() {
        assert_eq!(
            of(&request(Version::HTTP_11, "/", &[])).err(),
            Some(HostError::Missing)
        );
        assert!(of(&request(Version::HTTP_10, "/", &[]))
            .expect("valid")
            .is_none());
        let r = request(Version::HTTP_2, "https://a.example/", &["b.example"]);
        assert_eq!(of(&r).err(), Some(HostError::Conflict));
        let r = request(Version::HTTP_2, "https://a.example/", &["A.EXAMPLE"]);
        assert_eq!(of(&r).expect("valid").expect("a host").name(), "a.example");
    }
}
