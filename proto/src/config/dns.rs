//! How backend host names are resolved: the name servers asked (`dns`)
//! and how often an upstream's names are asked again (`dns_refresh`).

use super::duration;
use super::errors::{Path, Problems};
use isame_config_derive::Config;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// Longest `dns_refresh`.
pub const MAX_DNS_REFRESH: Duration = Duration::from_secs(3600);
/// Shortest time between two lookups of one name, whatever its TTL.
pub const MIN_DNS_REFRESH: Duration = Duration::from_secs(1);

/// Resolution of backend host names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct Dns {
    /// Name servers to ask, as `IP` or `IP:port` (port 53 by default); empty:
    /// the system's (`/etc/resolv.conf`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Longest wait for one lookup's answer.
    #[serde(
        serialize_with = "duration::serialize",
        skip_serializing_if = "duration::is_secs::<2>"
    )]
    #[config(default = Duration::from_secs(2))]
    pub timeout: Duration,
}

impl Dns {
    /// True when every field holds its default (the section is left out of
    /// the canonical JSON).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The name servers as socket addresses (the invalid ones left out:
    /// validation reports them).
    pub fn server_addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().filter_map(|s| server_addr(s)).collect()
    }
}

fn server_addr(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// The rules of the `dns` section.
pub(super) fn validate(d: &Dns, path: &Path, p: &mut Problems) {
    for (i, s) in d.servers.iter().enumerate() {
        if server_addr(s).is_none() {
            p.add(
                &path.key("servers").index(i),
                format!("{s:?} is not a name server address (IP or IP:port)"),
            );
        }
    }
    if d.timeout.is_zero() || d.timeout > Duration::from_secs(30) {
        p.add(&path.key("timeout"), "must be between 1ms and 30s");
    }
}

/// The rule of an upstream's `dns_refresh`.
pub(super) fn validate_refresh(d: Duration, path: &Path, p: &mut Problems) {
    if !(MIN_DNS_REFRESH..=MAX_DNS_REFRESH).contains(&d) {
        p.add(path, "must be between 1s and 1h");
    }
}
