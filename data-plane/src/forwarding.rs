//! Header rewriting between client and backend: hop-by-hop headers are
//! stripped both ways and the `X-Forwarded-*` headers are set.

use crate::client_ip::TrustedProxies;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST};
use std::net::IpAddr;

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// `upgrade`, the `Connection` token of an upgrade request.
static UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// True for the hop-by-hop header names of RFC 9110 §7.6.1 that are never
/// relayed, whatever `Connection` says: Connection, Keep-Alive, TE, Trailer,
/// Transfer-Encoding, Upgrade, Proxy-Authorization, Proxy-Authenticate,
/// Proxy-Connection. Any case.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    // Dispatch on length first: one comparison for almost every header.
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        2 => is("te"),
        7 => is("trailer") || is("upgrade"),
        10 => is("connection") || is("keep-alive"),
        16 => is("proxy-connection"),
        17 => is("transfer-encoding"),
        18 => is("proxy-authenticate"),
        19 => is("proxy-authorization"),
        _ => false,
    }
}

/// Removes the headers that `Connection` names (they are hop-by-hop too).
/// The fixed hop-by-hop headers are left for the writer to skip.
pub fn remove_connection_named(h: &mut HeaderMap) {
    if !h.contains_key(&CONNECTION) {
        return;
    }
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
        // Host and the forwarding headers are end-to-end whatever a client
        // claims; dropping them would change what the backend is told.
        if name != HOST && !name.as_str().starts_with("x-forwarded-") {
            h.remove(&name);
        }
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
    /// True when `host` came from the request target (absolute-form or
    /// HTTP/2): it then replaces any `Host` the client sent (RFC 9112 §3.2.2).
    pub host_from_target: bool,
}

/// How one request's headers change on the way to the backend. The writer of
/// the request head applies it while copying the headers ([`Rewrite::skips`],
/// [`Rewrite::extra`]), so the header map itself is never grown or rehashed.
#[derive(Debug, Clone)]
pub struct Rewrite {
    forwarded_for: HeaderValue,
    forwarded_proto: Option<HeaderValue>,
    forwarded_host: Option<HeaderValue>,
    keep_client_proto: bool,
    keep_client_host: bool,
    trusted_peer: bool,
    replace_host: bool,
    host: Option<HeaderValue>,
    /// The protocols asked for when the request is an upgrade (see
    /// [`crate::upgrade`]); `Connection: upgrade` goes with them.
    upgrade: Option<HeaderValue>,
    /// The client connection, for an upstream that sends PROXY headers.
    origin: Option<crate::upstream::Origin>,
}

impl Rewrite {
    /// True for a client header that is not passed on as it is.
    ///
    /// Besides the hop-by-hop headers and the `X-Forwarded-*` ones the proxy
    /// writes itself, the other client-address headers (`Forwarded`,
    /// `X-Real-IP`, `X-Client-IP`) pass only from a trusted proxy: anyone
    /// else could claim any address in them.
    pub fn skips(&self, name: &HeaderName) -> bool {
        let n = name.as_str().as_bytes();
        match n.len() {
            4 => self.replace_host && n == b"host",
            9 => !self.trusted_peer && (n == b"forwarded" || n == b"x-real-ip"),
            11 => !self.trusted_peer && n == b"x-client-ip",
            15 => n == b"x-forwarded-for",
            16 => n == b"x-forwarded-host" && !self.keep_client_host || is_hop_by_hop(n),
            17 => n == b"x-forwarded-proto" && !self.keep_client_proto || is_hop_by_hop(n),
            _ => is_hop_by_hop(n),
        }
    }

    /// Headers the proxy adds.
    pub fn extra(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        std::iter::once(("x-forwarded-for", &self.forwarded_for))
            .chain(
                self.forwarded_proto
                    .iter()
                    .map(|v| ("x-forwarded-proto", v)),
            )
            .chain(self.forwarded_host.iter().map(|v| ("x-forwarded-host", v)))
            .chain(self.host.iter().map(|v| ("host", v)))
            .chain(
                self.upgrade
                    .iter()
                    .flat_map(|v| [("connection", &UPGRADE_TOKEN), ("upgrade", v)]),
            )
    }

    /// Makes the request an upgrade to `protocols`.
    pub fn set_upgrade(&mut self, protocols: HeaderValue) {
        self.upgrade = Some(protocols);
    }

    /// The protocols asked for, when the request is an upgrade.
    pub fn upgrade(&self) -> Option<&HeaderValue> {
        self.upgrade.as_ref()
    }

    /// Sends the request on a backend connection that speaks for the
    /// client connection `origin` (see [`crate::proxy_protocol`]).
    pub fn set_origin(&mut self, origin: crate::upstream::Origin) {
        self.origin = Some(origin);
    }

    /// The client connection the request must go out for, if any.
    pub fn origin(&self) -> Option<crate::upstream::Origin> {
        self.origin
    }
}

/// Plans the request headers for the backend: hop-by-hop headers go (those
/// `Connection` names are removed now), the peer is appended to
/// `X-Forwarded-For` (earlier hops are kept only from a trusted peer),
/// `X-Forwarded-Proto` and `X-Forwarded-Host` are set (kept as sent when a
/// trusted proxy set them) and `Host` is added when the request had none.
pub fn forward_request(h: &mut HeaderMap, f: &Forwarded<'_>) -> Rewrite {
    remove_connection_named(h);
    let trusted = !f.trusted.is_empty() && f.trusted.contains(f.peer);
    let forwarded_for = if trusted && h.contains_key(&X_FORWARDED_FOR) {
        let mut chain = Vec::with_capacity(64);
        for v in h.get_all(&X_FORWARDED_FOR) {
            if !chain.is_empty() {
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(v.as_bytes());
        }
        chain.extend_from_slice(b", ");
        chain.extend_from_slice(f.peer_value.as_bytes());
        HeaderValue::from_bytes(&chain).unwrap_or_else(|_| f.peer_value.clone())
    } else {
        f.peer_value.clone()
    };
    let keep_client_proto = trusted && h.contains_key(&X_FORWARDED_PROTO);
    let keep_client_host = trusted && h.contains_key(&X_FORWARDED_HOST);
    Rewrite {
        forwarded_for,
        forwarded_proto: (!keep_client_proto).then(|| HeaderValue::from_static(f.proto)),
        forwarded_host: if keep_client_host {
            None
        } else {
            f.host.cloned()
        },
        keep_client_proto,
        keep_client_host,
        trusted_peer: trusted,
        replace_host: f.host_from_target && f.host.is_some(),
        host: if f.host_from_target || !h.contains_key(&HOST) {
            f.host.cloned()
        } else {
            None
        },
        upgrade: None,
        origin: None,
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

    /// The headers a backend would receive.
    fn sent(mut h: HeaderMap, f: &Forwarded<'_>) -> Vec<(String, String)> {
        let rw = forward_request(&mut h, f);
        let mut out: Vec<(String, String)> = h
            .iter()
            .filter(|(n, _)| !rw.skips(n))
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        out.extend(
            rw.extra()
                .map(|(n, v)| (n.to_owned(), v.to_str().unwrap_or("?").to_owned())),
        );
        out
    }

    fn get<'a>(sent: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        sent.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
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
            host_from_target: false,
        }
    }

    #[test]
    fn the_target_host_replaces_a_different_host_header() {
        let none = TrustedProxies::default();
        let pv = HeaderValue::from_static("192.0.2.1");
        let target = HeaderValue::from_static("public.example");
        let mut f = forwarded("192.0.2.1", &pv, &none, Some(&target));
        f.host_from_target = true;
        let out = sent(map(&[("host", "admin.example")]), &f);
        assert_eq!(get(&out, "host"), ["public.example"]);
        assert_eq!(get(&out, "x-forwarded-host"), ["public.example"]);
    }

    #[test]
    fn other_client_address_headers_pass_only_from_trusted_proxies() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("cidr")]);
        let pv = HeaderValue::from_static("203.0.113.5");
        let claims = [
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-client-ip", "1.2.3.4"),
        ];
        let out = sent(map(&claims), &forwarded("203.0.113.5", &pv, &trusted, None));
        for (n, _) in claims {
            assert!(
                get(&out, n).is_empty(),
                "{n} from an untrusted peer: {out:?}"
            );
        }
        let pv = HeaderValue::from_static("10.1.1.1");
        let out = sent(map(&claims), &forwarded("10.1.1.1", &pv, &trusted, None));
        for (n, v) in claims {
            assert_eq!(get(&out, n), [v], "{n} from a trusted proxy");
        }
    }

    #[test]
    fn recognizes_every_hop_by_hop_name() {
        // The config model's list (what middleware may not touch) is the
        // one this fast matcher must agree with, in any case.
        for n in isame_proto::config::middleware::HOP_BY_HOP {
            assert!(is_hop_by_hop(n.as_bytes()), "{n}");
            assert!(is_hop_by_hop(n.to_ascii_uppercase().as_bytes()), "{n}");
        }
        for n in [
            "host",
            "tee",
            "content-length",
            "x-connection",
            "proxy-connections",
        ] {
            assert!(!is_hop_by_hop(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_not_sent() {
        let none = TrustedProxies::default();
        let pv = HeaderValue::from_static("192.0.2.1");
        let h = map(&[
            ("connection", "close, X-Secret"),
            ("connection", "x-other, host, x-forwarded-host"),
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
        let host = HeaderValue::from_static("kept.example");
        let out = sent(h, &forwarded("192.0.2.1", &pv, &none, Some(&host)));
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "host",
                "x-keep",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host"
            ],
            "{out:?}"
        );
        assert_eq!(get(&out, "host"), ["kept.example"]);
    }

    #[test]
    fn untrusted_peer_cannot_spoof_forwarding_headers() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("cidr")]);
        let pv = HeaderValue::from_static("203.0.113.5");
        let host = HeaderValue::from_static("shop.example");
        let h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let out = sent(h, &forwarded("203.0.113.5", &pv, &trusted, Some(&host)));
        assert_eq!(get(&out, "x-forwarded-for"), ["203.0.113.5"]);
        assert_eq!(get(&out, "x-forwarded-proto"), ["http"]);
        assert_eq!(get(&out, "x-forwarded-host"), ["shop.example"]);
        assert_eq!(
            get(&out, "host"),
            ["shop.example"],
            "a request without Host gets one"
        );
    }

    #[test]
    fn trusted_peer_chain_is_extended() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("cidr")]);
        let pv = HeaderValue::from_static("10.0.0.7");
        let h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-proto", "https"),
            ("host", "a.example"),
        ]);
        let host = h.get("host").cloned();
        let out = sent(h, &forwarded("10.0.0.7", &pv, &trusted, host.as_ref()));
        assert_eq!(
            get(&out, "x-forwarded-for"),
            ["1.2.3.4, 10.9.9.9, 10.0.0.7"]
        );
        assert_eq!(get(&out, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&out, "x-forwarded-host"), ["a.example"]);
        assert_eq!(get(&out, "host"), ["a.example"]);
    }
}
