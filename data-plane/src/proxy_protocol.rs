//! The PROXY protocol (HAProxy's, versions 1 and 2): the header an L4 load
//! balancer puts in front of a connection to say whom it carries, read on
//! the listeners, and written in front of connections to backends that
//! want it.
//!
//! Reading: when `server.proxy_protocol` is set, the first bytes of every
//! connection are looked at before anything else (before TLS). A header is
//! believed only from a peer in `trusted`; from anyone else it closes the
//! connection, since it would let them claim any address. With `required`,
//! a connection without a header is closed too, and so is every connection
//! from outside `trusted`, before a byte is read. Bytes after the header
//! (a ClientHello, a request) are passed on untouched. The header must
//! arrive within the header-read timeout, like a request head.
//!
//! Parsing is `ppp`'s; what counts as a header start, what is believed and
//! what is refused is decided here.

use crate::client_ip::TrustedProxies;
use bytes::{Bytes, BytesMut};
use isame_proto::config::{ProxyProtocol, ProxyVersion};
use ppp::{v1, v2};
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How a v1 header starts.
const V1_START: &[u8] = b"PROXY ";
/// How a v2 header starts.
const V2_START: &[u8] = v2::PROTOCOL_PREFIX;
/// Longest header read (v1's are at most 107 bytes; v2's carry TLVs, which
/// cloud load balancers keep to a few hundred bytes).
pub const MAX_HEADER: usize = 4096;

/// The listeners' PROXY protocol settings, compiled.
#[derive(Debug)]
pub struct Inbound {
    trusted: TrustedProxies,
    required: bool,
}

impl Inbound {
    /// The settings of `server.proxy_protocol`.
    pub fn new(c: &ProxyProtocol) -> Self {
        Self {
            trusted: TrustedProxies::new(c.trusted.clone()),
            required: c.required,
        }
    }
}

/// Why a connection was closed before HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A PROXY header from a peer outside `trusted`, or any connection
    /// from one when headers are required.
    #[error("PROXY protocol from an untrusted peer")]
    Untrusted,
    /// No header where one is required.
    #[error("no PROXY protocol header where one is required")]
    Missing,
    /// A header that cannot be read.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
}

impl Refused {
    /// The `reason` label of `isame_lb_proxy_protocol_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Untrusted => "untrusted",
            Self::Missing => "missing",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// The reasons of `isame_lb_proxy_protocol_refused_total`.
pub const REFUSED_REASONS: [&str; 3] = ["untrusted", "missing", "malformed"];

/// What the start of a connection said.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The client and the address it connected to, from a header that
    /// carries addresses (`None` without a header, or for `LOCAL` and
    /// `UNKNOWN` ones, which are the load balancer's own health checks).
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// Bytes read past the header, to be read again by what follows.
    pub rest: Bytes,
}

/// What reading the start of a connection came to.
#[derive(Debug)]
pub enum Outcome {
    /// Go on serving.
    Accepted(Accepted),
    /// Close the connection.
    Refused(Refused),
    /// The peer closed or failed before anything could be decided.
    Ended(std::io::Error),
}

impl Inbound {
    /// Whether a connection from `peer` is served at all: with headers
    /// required, only trusted peers may connect.
    pub fn admits(&self, peer: IpAddr) -> Result<(), Refused> {
        if self.required && !self.trusted.contains(peer) {
            return Err(Refused::Untrusted);
        }
        Ok(())
    }

    /// Reads a header from the start of `io` (a connection from `peer`), or
    /// as much as tells there is none.
    pub async fn read<T: AsyncRead + Unpin>(&self, io: &mut T, peer: IpAddr) -> Outcome {
        let mut buf = BytesMut::with_capacity(512);
        loop {
            match io.read_buf(&mut buf).await {
                Ok(0) => return Outcome::Ended(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) => return Outcome::Ended(e),
            }
            match self.decide(&buf, peer) {
                Step::More if buf.len() >= MAX_HEADER => {
                    return Outcome::Refused(Refused::Malformed(format!(
                        "longer than {MAX_HEADER} bytes"
                    )))
                }
                Step::More => buf.reserve(512),
                Step::Done(Ok((addresses, used))) => {
                    let rest = buf.split_off(used).freeze();
                    return Outcome::Accepted(Accepted { addresses, rest });
                }
                Step::Done(Err(refused)) => return Outcome::Refused(refused),
            }
        }
    }

    /// What `buf`, the first bytes of a connection from `peer`, tells.
    fn decide(&self, buf: &[u8], peer: IpAddr) -> Step {
        let Some(version) = starts_header(buf) else {
            return if buf.len() < V1_START.len().max(V2_START.len()) && may_start_header(buf) {
                Step::More
            } else if self.required {
                Step::Done(Err(Refused::Missing))
            } else {
                Step::Done(Ok((None, 0)))
            };
        };
        if !self.trusted.contains(peer) {
            return Step::Done(Err(Refused::Untrusted));
        }
        match parse(version, buf) {
            Parsed::Incomplete => Step::More,
            Parsed::Header { addresses, len } => Step::Done(Ok((addresses, len))),
            Parsed::Invalid(why) => Step::Done(Err(Refused::Malformed(why))),
        }
    }
}

enum Step {
    More,
    Done(Result<(Option<(SocketAddr, SocketAddr)>, usize), Refused>),
}

/// The version whose start `buf` begins with in full.
fn starts_header(buf: &[u8]) -> Option<ProxyVersion> {
    if buf.starts_with(V1_START) {
        Some(ProxyVersion::V1)
    } else if buf.starts_with(V2_START) {
        Some(ProxyVersion::V2)
    } else {
        None
    }
}

/// True while `buf` is too short to tell and could still begin a header.
fn may_start_header(buf: &[u8]) -> bool {
    V1_START.starts_with(buf) || V2_START.starts_with(buf)
}

enum Parsed {
    Incomplete,
    Header {
        addresses: Option<(SocketAddr, SocketAddr)>,
        len: usize,
    },
    Invalid(String),
}

fn parse(version: ProxyVersion, buf: &[u8]) -> Parsed {
    match version {
        ProxyVersion::V1 => {
            // The header ends at its first CR, which must be followed by LF.
            let Some(cr) = buf.iter().position(|&b| b == b'\r') else {
                return if buf.len() >= 107 {
                    Parsed::Invalid("a v1 header longer than 107 bytes".into())
                } else {
                    Parsed::Incomplete
                };
            };
            if buf.len() < cr + 2 {
                return Parsed::Incomplete;
            }
            match v1::Header::try_from(&buf[..cr + 2]) {
                Ok(h) => Parsed::Header {
                    addresses: match h.addresses {
                        v1::Addresses::Unknown => None,
                        v1::Addresses::Tcp4(a) => Some((
                            SocketAddr::new(a.source_address.into(), a.source_port),
                            SocketAddr::new(a.destination_address.into(), a.destination_port),
                        )),
                        v1::Addresses::Tcp6(a) => Some((
                            SocketAddr::new(a.source_address.into(), a.source_port),
                            SocketAddr::new(a.destination_address.into(), a.destination_port),
                        )),
                    },
                    len: cr + 2,
                },
                Err(e) => Parsed::Invalid(e.to_string()),
            }
        }
        ProxyVersion::V2 => match v2::Header::try_from(buf) {
            Ok(h) => Parsed::Header {
                addresses: match (h.command, h.addresses) {
                    (v2::Command::Local, _) => None,
                    (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some((
                        SocketAddr::new(a.source_address.into(), a.source_port),
                        SocketAddr::new(a.destination_address.into(), a.destination_port),
                    )),
                    (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some((
                        SocketAddr::new(a.source_address.into(), a.source_port),
                        SocketAddr::new(a.destination_address.into(), a.destination_port),
                    )),
                    // Unix sockets and unspecified families carry no
                    // address a client IP can be taken from.
                    (v2::Command::Proxy, _) => None,
                },
                len: h.len(),
            },
            Err(v2::ParseError::Incomplete(_) | v2::ParseError::Partial(..)) => Parsed::Incomplete,
            Err(e) => Parsed::Invalid(e.to_string()),
        },
    }
}

/// The header a backend connection starts with: `client` connected to
/// `local`, or, with no addresses, a health check's (`UNKNOWN`, `LOCAL`).
pub fn header(version: ProxyVersion, addresses: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    let addresses = addresses.map(same_family);
    match version {
        ProxyVersion::V1 => {
            let a = match addresses {
                None => v1::Addresses::Unknown,
                Some(pair) => v1::Addresses::from(pair),
            };
            a.to_string().into_bytes()
        }
        ProxyVersion::V2 => {
            let built = match addresses {
                None => v2::Builder::with_addresses(
                    v2::Version::Two | v2::Command::Local,
                    v2::Protocol::Unspecified,
                    v2::Addresses::Unspecified,
                ),
                Some(pair) => v2::Builder::with_addresses(
                    v2::Version::Two | v2::Command::Proxy,
                    v2::Protocol::Stream,
                    v2::Addresses::from(pair),
                ),
            };
            // Writing to a Vec cannot fail; the fixed 16 bytes of a LOCAL
            // header are the fallback all the same.
            built.build().unwrap_or_else(|_| {
                let mut h = V2_START.to_vec();
                h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
                h
            })
        }
    }
}

/// Both addresses in one family (a header names one): IPv4 when both can
/// be, else IPv6 with IPv4 ones mapped.
fn same_family((a, b): (SocketAddr, SocketAddr)) -> (SocketAddr, SocketAddr) {
    match (a.ip(), b.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (a, b),
        _ => {
            let v6 = |s: SocketAddr| match s.ip() {
                IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), s.port()),
                IpAddr::V6(_) => s,
            };
            (v6(a), v6(b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(required: bool) -> Inbound {
        Inbound {
            trusted: TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")]),
            required,
        }
    }

    const LB: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    async fn read(i: &Inbound, input: &[u8], peer: IpAddr) -> Outcome {
        let mut io = input;
        i.read(&mut io, peer).await
    }

    fn pair(a: &str, b: &str) -> (SocketAddr, SocketAddr) {
        (a.parse().expect("addr"), b.parse().expect("addr"))
    }

    #[tokio::test]
    async fn v1_and_v2_headers_give_the_client_and_leave_the_rest() {
        let i = inbound(false);
        let v1 = b"PROXY TCP4 203.0.113.9 10.1.1.1 51000 443\r\nGET / HTTP/1.1\r\n\r\n";
        match read(&i, v1, LB).await {
            Outcome::Accepted(a) => {
                assert_eq!(a.addresses, Some(pair("203.0.113.9:51000", "10.1.1.1:443")));
                assert_eq!(&a.rest[..], b"GET / HTTP/1.1\r\n\r\n");
            }
            other => panic!("{other:?}"),
        }
        let mut v2 = header(
            ProxyVersion::V2,
            Some(pair("[2001:db8::5]:4000", "[2001:db8::1]:80")),
        );
        v2.extend_from_slice(b"\x16\x03\x01");
        match read(&i, &v2, LB).await {
            Outcome::Accepted(a) => {
                assert_eq!(
                    a.addresses,
                    Some(pair("[2001:db8::5]:4000", "[2001:db8::1]:80"))
                );
                assert_eq!(&a.rest[..], b"\x16\x03\x01");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn health_check_headers_carry_no_client() {
        let i = inbound(true);
        for v in [ProxyVersion::V1, ProxyVersion::V2] {
            let mut h = header(v, None);
            h.extend_from_slice(b"GET /");
            match read(&i, &h, LB).await {
                Outcome::Accepted(a) => {
                    assert_eq!(a.addresses, None);
                    assert_eq!(&a.rest[..], b"GET /");
                }
                other => panic!("{v:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn untrusted_peers_missing_and_bad_headers_are_refused() {
        let i = inbound(false);
        let v1 = b"PROXY TCP4 1.2.3.4 10.1.1.1 1 2\r\n";
        assert!(matches!(
            read(&i, v1, OTHER).await,
            Outcome::Refused(Refused::Untrusted)
        ));
        // Without `required`, no header is fine from anyone.
        match read(&i, b"GET / HTTP/1.1\r\n", OTHER).await {
            Outcome::Accepted(a) => {
                assert_eq!(a.addresses, None);
                assert_eq!(&a.rest[..], b"GET / HTTP/1.1\r\n");
            }
            other => panic!("{other:?}"),
        }
        let strict = inbound(true);
        assert!(matches!(
            read(&strict, b"GET / HTTP/1.1\r\n", LB).await,
            Outcome::Refused(Refused::Missing)
        ));
        assert_eq!(strict.admits(OTHER), Err(Refused::Untrusted));
        assert_eq!(strict.admits(LB), Ok(()));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 nonsense 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 10.1.1.1 1 2\rX",
            b"PROXY UDP4 1.2.3.4 10.1.1.1 1 2\r\n",
        ] {
            assert!(
                matches!(
                    read(&i, bad, LB).await,
                    Outcome::Refused(Refused::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        let mut v2 = V2_START.to_vec();
        v2.extend_from_slice(&[0x31, 0x11, 0, 12]);
        v2.extend_from_slice(&[0; 12]);
        assert!(matches!(
            read(&i, &v2, LB).await,
            Outcome::Refused(Refused::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn headers_cut_short_or_endless_end_the_connection() {
        let i = inbound(false);
        assert!(matches!(
            read(&i, b"PROXY TCP4 1.2.3.4", LB).await,
            Outcome::Ended(_)
        ));
        assert!(matches!(read(&i, b"PRO", LB).await, Outcome::Ended(_)));
        let endless = vec![b'a'; 200];
        let mut v1 = b"PROXY ".to_vec();
        v1.extend_from_slice(&endless);
        assert!(matches!(
            read(&i, &v1, LB).await,
            Outcome::Refused(Refused::Malformed(_))
        ));
        // A v2 header announcing more than the limit.
        let mut v2 = V2_START.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        v2.resize(MAX_HEADER + 100, 0);
        assert!(matches!(
            read(&i, &v2, LB).await,
            Outcome::Refused(Refused::Malformed(_))
        ));
    }

    #[test]
    fn a_header_names_one_family() {
        let h = header(
            ProxyVersion::V1,
            Some(pair("203.0.113.9:5", "[2001:db8::1]:80")),
        );
        assert_eq!(
            String::from_utf8(h).expect("text"),
            "PROXY TCP6 ::ffff:203.0.113.9 2001:db8::1 5 80\r\n"
        );
        assert_eq!(
            header(ProxyVersion::V1, None),
            b"PROXY UNKNOWN\r\n".to_vec()
        );
        let v2 = header(ProxyVersion::V2, None);
        assert_eq!(&v2[12..], &[0x20, 0x00, 0x00, 0x00]);
    }
}
