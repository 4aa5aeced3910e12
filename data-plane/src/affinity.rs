//! What ties a request to a backend: the key a consistent hash is computed
//! from (`hash_on`), and the sticky cookie that names the backend a client
//! was last served by (`sticky`).
//!
//! The sticky cookie's value is an opaque id: the first 8 bytes of
//! SHA-256 over the upstream's name and the backend's URL, in hex. Every
//! data plane of a fleet computes the same id, so the cookie holds whichever
//! node the client reaches; no address appears in it.

use crate::ring::key_hash;
use http::header::{HeaderValue, COOKIE, SET_COOKIE};
use http::request::Parts;
use http::HeaderMap;
use isame_proto::config::{HashOn, Sticky};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::net::IpAddr;

/// What a request carries that ties it to a backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Affinity {
    /// The hash of its `hash_on` key, when the upstream hashes and the
    /// request has the key.
    pub hash: Option<u64>,
    /// The backend its sticky cookie names, when that is one of the
    /// upstream's.
    pub sticky: Option<usize>,
}

/// An upstream's sticky cookie, compiled.
#[derive(Debug)]
pub struct StickyRt {
    /// The cookie's name.
    name: String,
    /// Each backend's id, by backend index.
    ids: Vec<String>,
    /// Each backend's whole `Set-Cookie` value, made once per config.
    lines: Vec<Option<HeaderValue>>,
}

impl StickyRt {
    /// The cookie of `upstream`, whose backends have these URLs.
    pub fn new<'a>(s: &Sticky, upstream: &str, urls: impl Iterator<Item = &'a str>) -> Self {
        let mut attributes = String::from("; Path=/");
        if !s.ttl.is_zero() {
            let _ = write!(attributes, "; Max-Age={}", s.ttl.as_secs().max(1));
        }
        if s.secure {
            attributes.push_str("; Secure");
        }
        if s.http_only {
            attributes.push_str("; HttpOnly");
        }
        let _ = write!(attributes, "; SameSite={}", s.same_site.as_attribute());
        let ids: Vec<String> = urls.map(|u| backend_id(upstream, u)).collect();
        // The name is a validated token, the id hex and the attributes
        // fixed text: always a valid header value.
        let lines = ids
            .iter()
            .map(|id| HeaderValue::try_from(format!("{}={id}{attributes}", s.cookie)).ok())
            .collect();
        Self {
            name: s.cookie.clone(),
            ids,
            lines,
        }
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend the request's cookie names, if it names one of ours.
    fn named(&self, headers: &HeaderMap) -> Option<usize> {
        let value = cookie(headers, &self.name)?;
        self.ids.iter().position(|id| id.as_bytes() == value)
    }

    /// Adds `Set-Cookie` naming backend `chosen` unless the request's
    /// cookie already named it.
    pub fn set(&self, chosen: usize, affinity: &Affinity, headers: &mut HeaderMap) {
        if affinity.sticky == Some(chosen) {
            return;
        }
        if let Some(Some(v)) = self.lines.get(chosen) {
            headers.append(SET_COOKIE, v.clone());
        }
    }
}

/// The id a sticky cookie names backend `url` of `upstream` by.
fn backend_id(upstream: &str, url: &str) -> String {
    let url = url.strip_suffix('/').unwrap_or(url);
    let digest = Sha256::new()
        .chain_update(b"isame-sticky\0")
        .chain_update(upstream.as_bytes())
        .chain_update(b"\0")
        .chain_update(url.as_bytes())
        .finalize();
    digest[..8]
        .iter()
        .fold(String::with_capacity(16), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// What a request carries for `hash_on` and `sticky`; nothing is read when
/// the upstream uses neither.
pub fn of(
    hash_on: Option<&HashOn>,
    sticky: Option<&StickyRt>,
    parts: &Parts,
    client: IpAddr,
) -> Affinity {
    Affinity {
        hash: hash_on
            .and_then(|k| key(k, parts, client))
            .map(|k| match k {
                Key::Bytes(b) => key_hash(b),
                Key::Ip(ip) => match ip {
                    IpAddr::V4(v4) => key_hash(&v4.octets()),
                    IpAddr::V6(v6) => key_hash(&v6.octets()),
                },
            }),
        sticky: sticky.and_then(|s| s.named(&parts.headers)),
    }
}

/// A request's hash key.
enum Key<'a> {
    Bytes(&'a [u8]),
    Ip(IpAddr),
}

fn key<'a>(on: &HashOn, parts: &'a Parts, client: IpAddr) -> Option<Key<'a>> {
    match on {
        HashOn::ClientIp => Some(Key::Ip(client)),
        HashOn::Path => Some(Key::Bytes(parts.uri.path().as_bytes())),
        HashOn::Header(name) => parts
            .headers
            .get(name.as_str())
            .map(|v| Key::Bytes(v.as_bytes())),
        HashOn::Cookie(name) => cookie(&parts.headers, name).map(Key::Bytes),
        HashOn::Query(name) => query_param(parts.uri.query()?, name).map(Key::Bytes),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (HTTP/2
/// clients may send several), without surrounding quotes.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(COOKIE).iter().find_map(|line| {
        line.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (n, v) = (&pair[..eq], &pair[eq + 1..]);
            (n.trim_ascii() == name.as_bytes()).then(|| {
                let v = v.trim_ascii();
                v.strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v)
            })
        })
    })
}

/// The value of the first query parameter `name`, as sent; a parameter
/// without `=` has the empty value.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a [u8]> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name).then_some(v.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use isame_proto::config::SameSite;
    use std::time::Duration;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn hash(on: &str, p: &Parts) -> Option<u64> {
        let on = HashOn::parse(on).expect("hash_on");
        of(Some(&on), None, p, IpAddr::from([10, 0, 0, 9])).hash
    }

    #[test]
    fn keys_are_read_from_where_hash_on_says() {
        let p = parts(
            "/shop/cart?user=42&x&lang=en",
            &[("x-user", "alice"), ("cookie", "a=1; sid=\"s-9\"; b=2")],
        );
        assert_eq!(hash("header:X-User", &p), Some(key_hash(b"alice")));
        assert_eq!(hash("cookie:sid", &p), Some(key_hash(b"s-9")));
        assert_eq!(hash("query:user", &p), Some(key_hash(b"42")));
        assert_eq!(hash("query:x", &p), Some(key_hash(b"")));
        assert_eq!(hash("path", &p), Some(key_hash(b"/shop/cart")));
        assert_eq!(hash("client_ip", &p), Some(key_hash(&[10, 0, 0, 9])));
        for missing in ["header:x-other", "cookie:nope", "query:use", "query:lang2"] {
            assert_eq!(hash(missing, &p), None, "{missing}");
        }
        assert_eq!(hash("query:user", &parts("/", &[])), None);
    }

    #[test]
    fn sticky_cookies_name_backends_opaquely_and_are_honoured() {
        let s = Sticky {
            cookie: "lb".into(),
            ttl: Duration::from_secs(3600),
            secure: true,
            http_only: true,
            same_site: SameSite::Strict,
        };
        let urls = ["http://10.0.0.1:80", "http://10.0.0.2:80/"];
        let rt = StickyRt::new(&s, "api", urls.into_iter());
        let mut h = HeaderMap::new();
        rt.set(1, &Affinity::default(), &mut h);
        let line = h
            .get(SET_COOKIE)
            .expect("set-cookie")
            .to_str()
            .expect("ascii");
        assert!(!line.contains("10.0.0"), "{line}");
        assert!(
            line.ends_with("; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Strict"),
            "{line}"
        );
        let id = &line[3..19];
        assert_eq!(id, backend_id("api", "http://10.0.0.2:80"));
        assert_ne!(
            id,
            backend_id("web", "http://10.0.0.2:80"),
            "ids differ per upstream"
        );

        let p = parts("/", &[("cookie", &format!("other=1; lb={id}"))]);
        let a = of(None, Some(&rt), &p, IpAddr::from([1, 1, 1, 1]));
        assert_eq!(a.sticky, Some(1));
        let mut h = HeaderMap::new();
        rt.set(1, &a, &mut h);
        assert!(
            h.is_empty(),
            "no new cookie while it names the backend used"
        );
        rt.set(0, &a, &mut h);
        assert_eq!(h.get_all(SET_COOKIE).iter().count(), 1);

        let forged = parts("/", &[("cookie", "lb=0123456789abcdef")]);
        assert_eq!(
            of(None, Some(&rt), &forged, IpAddr::from([1, 1, 1, 1])).sticky,
            None
        );
    }
}
