//! Who the client is: the peer, unless the peer is a trusted proxy, in which
//! case the last untrusted hop of `X-Forwarded-For`.

use crate::forwarding::X_FORWARDED_FOR;
use http::header::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The CIDRs whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts the given networks.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// True when no proxy is trusted (the common, fast case).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `ip` lies in a trusted network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses one `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]:443`, `1.2.3.4:80`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The client address of a request that arrived from `peer`.
///
/// From an untrusted peer, the peer itself, whatever the headers say. From a
/// trusted peer, `X-Forwarded-For` is read from the right: trusted hops are
/// skipped and the first untrusted one is the client. An entry that does not
/// parse ends the walk at the last address that did.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(peer) {
        return canonical(peer);
    }
    let mut client = canonical(peer);
    let values: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for hop in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        match parse_hop(hop) {
            Some(ip) => {
                client = canonical(ip);
                if !trusted.contains(ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().expect("cidr")).collect())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&X_FORWARDED_FOR, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &xff(&["1.1.1.1"]), &t),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("203.0.113.9"), &xff(&["1.1.1.1"]), &trusted(&[])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_chain_yields_last_untrusted_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("198.51.100.7"));
    }

    #[test]
    fn all_trusted_yields_leftmost() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &xff(&["10.1.1.1, 10.2.2.2"]), &t),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn garbage_stops_the_walk() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &xff(&["1.2.3.4, nonsense, 10.0.0.3"]), &t),
            ip("10.0.0.3")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &xff(&[]), &t), ip("10.0.0.1"));
    }

    #[test]
    fn ports_and_mapped_addresses() {
        let t = trusted(&["127.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &xff(&["[2001:db8::1]:443"]), &t),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &xff(&["192.0.2.1:8080"]), &t),
            ip("192.0.2.1")
        );
    }
}
