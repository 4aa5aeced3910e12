//! Header rewriting between client and backend: hop-by-hop headers are
//! stripped both ways and the `X-Forwarded-*` headers are set.

use crate::client_ip::TrustedProxies;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION,
    TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use std::net::IpAddr;

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// True for the names [`strip_hop_by_hop`] removes whatever `Connection` says.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Dispatch on length first: one comparison for almost every header.
    let s = name.as_str();
    match s.len() {
        2 => s == "te",
        7 => s == "trailer" || s == "upgrade",
        10 => s == "connection" || s == "keep-alive",
        16 => s == "proxy-connection",
        17 => s == "transfer-encoding",
        18 => s == "proxy-authenticate",
        19 => s == "proxy-authorization",
        _ => false,
    }
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1: `Connection` and every
/// header it names, plus Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade,
/// Proxy-Authorization, Proxy-Authenticate and Proxy-Connection.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none: one pass over the names, no hashing.
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    if h.contains_key(&CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(&CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // Tokens that name no header of their own need no lookup.
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            // Host is end-to-end whatever a client claims; dropping it would
            // change which site the backend serves.
            if name != HOST {
                h.remove(&name);
            }
        }
    }
    for name in [
        &CONNECTION,
        &TE,
        &TRAILER,
        &TRANSFER_ENCODING,
        &UPGRADE,
        &PROXY_AUTHORIZATION,
        &PROXY_AUTHENTICATE,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ] {
        h.remove(name);
    }
}

/// What the proxy knows about the client side of one request.
pub struct Forwarded<'a> {
    /// The peer that sent this request.
    pub peer: IpAddr,
    /// The peer address as a header value, made once per connection.
    pub peer_value: &'a HeaderValue,
    /// `http` or `https`.
    pub proto: &'static str,
    /// Proxies whose forwarding headers are believed.
    pub trusted: &'a TrustedProxies,
    /// The host the client asked for (Host header or HTTP/2 `:authority`).
    pub host: Option<&'a HeaderValue>,
}

/// Rewrites request headers for the backend: strips hop-by-hop headers,
/// appends the peer to `X-Forwarded-For` (keeping earlier hops only from a
/// trusted peer), sets `X-Forwarded-Proto` and `X-Forwarded-Host` (kept as
/// sent when a trusted proxy set them) and makes sure `Host` is present.
pub fn forward_request(h: &mut HeaderMap, f: &Forwarded<'_>) {
    strip_hop_by_hop(h);
    let trusted = !f.trusted.is_empty() && f.trusted.contains(f.peer);
    if trusted && h.contains_key(&X_FORWARDED_FOR) {
        let mut chain = Vec::with_capacity(64);
        for v in h.get_all(&X_FORWARDED_FOR) {
            if !chain.is_empty() {
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(v.as_bytes());
        }
        chain.extend_from_slice(b", ");
        chain.extend_from_slice(f.peer_value.as_bytes());
        match HeaderValue::from_bytes(&chain) {
            Ok(v) => h.insert(&X_FORWARDED_FOR, v),
            Err(_) => h.insert(&X_FORWARDED_FOR, f.peer_value.clone()),
        };
    } else {
        h.insert(&X_FORWARDED_FOR, f.peer_value.clone());
    }
    if !(trusted && h.contains_key(&X_FORWARDED_PROTO)) {
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(f.proto));
    }
    if !(trusted && h.contains_key(&X_FORWARDED_HOST)) {
        match f.host {
            Some(host) => {
                h.insert(&X_FORWARDED_HOST, host.clone());
            }
            None => {
                h.remove(&X_FORWARDED_HOST);
            }
        }
    }
    if !h.contains_key(&HOST) {
        if let Some(host) = f.host {
            h.insert(HOST, host.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn recognizes_every_hop_by_hop_name() {
        for n in [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "proxy-authenticate",
            "proxy-connection",
        ] {
            assert!(is_hop_by_hop(&HeaderName::from_static(n)), "{n}");
        }
        for n in [
            "host",
            "tee",
            "content-length",
            "x-connection",
            "proxy-connections",
        ] {
            assert!(
                !is_hop_by_hop(&HeaderName::from_bytes(n.as_bytes()).expect("name")),
                "{n}"
            );
        }
    }

    #[test]
    fn strips_connection_named_and_fixed_hop_headers() {
        let mut h = map(&[
            ("connection", "close, X-Secret"),
            ("connection", "x-other, host"),
            ("host", "kept.example"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("proxy-connection", "keep-alive"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
        assert_eq!(h["host"], "kept.example");
    }

    fn forwarded<'a>(
        peer: &str,
        pv: &'a HeaderValue,
        trusted: &'a TrustedProxies,
        host: Option<&'a HeaderValue>,
    ) -> Forwarded<'a> {
        Forwarded {
            peer: peer.parse().expect("ip"),
            peer_value: pv,
            proto: "http",
            trusted,
            host,
        }
    }

    #[test]
    fn untrusted_peer_cannot_spoof_forwarding_headers() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("cidr")]);
        let pv = HeaderValue::from_static("203.0.113.5");
        let host = HeaderValue::from_static("shop.example");
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        forward_request(
            &mut h,
            &forwarded("203.0.113.5", &pv, &trusted, Some(&host)),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.5");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["host"], "shop.example");
    }

    #[test]
    fn trusted_peer_chain_is_extended() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("cidr")]);
        let pv = HeaderValue::from_static("10.0.0.7");
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-proto", "https"),
            ("host", "a.example"),
        ]);
        let host = h.get("host").cloned();
        forward_request(&mut h, &forwarded("10.0.0.7", &pv, &trusted, host.as_ref()));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.9.9.9, 10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.example");
    }
}
