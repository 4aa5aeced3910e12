//! How an upstream keeps a client on one backend: the key a consistent hash
//! is computed from (`hash_on`), the algorithm used when a request has no
//! such key, and cookie affinity (`sticky`).

use super::errors::{Path, Problems};
use super::field::{kind, Field, Reader};
use super::schema::Defs;
use super::validate::is_token_byte;
use super::{duration, Algorithm, Upstream};
use isame_config_derive::Config;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

/// What a consistent hash is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashOn {
    /// The client's address (as `trusted_proxies` decide it).
    ClientIp,
    /// The value of a request header (its first line, as sent).
    Header(String),
    /// The value of a request cookie.
    Cookie(String),
    /// The request path, without the query.
    Path,
    /// The value of a query parameter, as sent (not decoded).
    Query(String),
}

/// `hash_on` as a JSON Schema pattern; [`HashOn::parse`] accepts exactly this.
const HASH_ON_PATTERN: &str =
    "^(client_ip|path|(header|cookie):[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}|query:[^&=#\\s]{1,256})$";

/// Longest header, cookie or query parameter name a hash may be keyed on.
const MAX_KEY_NAME: usize = 256;

impl HashOn {
    /// Reads `client_ip`, `path`, `header:NAME`, `cookie:NAME` or `query:NAME`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let named = |name: &str, what: &str, ok: fn(u8) -> bool| {
            if name.is_empty() || name.len() > MAX_KEY_NAME || !name.bytes().all(ok) {
                Err(format!(
                    "{s:?}: {what} must be 1 to {MAX_KEY_NAME} characters of a {what}"
                ))
            } else {
                Ok(name.to_owned())
            }
        };
        match s.split_once(':') {
            None if s == "client_ip" => Ok(HashOn::ClientIp),
            None if s == "path" => Ok(HashOn::Path),
            Some(("header", n)) => named(n, "header name", is_token_byte).map(HashOn::Header),
            Some(("cookie", n)) => named(n, "cookie name", is_token_byte).map(HashOn::Cookie),
            Some(("query", n)) => named(n, "query parameter name", |b| {
                !matches!(b, b'&' | b'=' | b'#') && !b.is_ascii_whitespace()
            })
            .map(HashOn::Query),
            _ => Err(format!(
                "{s:?} is not a hash key: expected client_ip, path, header:NAME, cookie:NAME or query:NAME"
            )),
        }
    }

    /// The key as a config writes it.
    pub fn as_string(&self) -> String {
        match self {
            HashOn::ClientIp => "client_ip".into(),
            HashOn::Path => "path".into(),
            HashOn::Header(n) => format!("header:{n}"),
            HashOn::Cookie(n) => format!("cookie:{n}"),
            HashOn::Query(n) => format!("query:{n}"),
        }
    }
}

impl Serialize for HashOn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

impl Field for HashOn {
    fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self> {
        match v {
            Value::String(s) => HashOn::parse(s).map_err(|e| r.add(at, e)).ok(),
            other => {
                r.add(at, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    fn schema(_: &mut Defs) -> Value {
        json!({"type": "string", "pattern": HASH_ON_PATTERN})
    }

    fn to_json(&self) -> Value {
        Value::String(self.as_string())
    }
}

/// Cookie affinity: the proxy names the backend that answered in a cookie
/// and sends the client's later requests to it while it is eligible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct Sticky {
    /// Name of the cookie. Its value is an opaque id of the backend (a hash
    /// of the upstream's name and the backend's URL): no address appears in it.
    #[config(required)]
    pub cookie: String,
    /// How long the client keeps the cookie (`Max-Age`); `0s`: until the
    /// browser closes (a session cookie).
    #[serde(
        serialize_with = "duration::serialize",
        skip_serializing_if = "Duration::is_zero"
    )]
    pub ttl: Duration,
    /// Send the cookie over HTTPS only (`Secure`).
    #[config(default = false)]
    pub secure: bool,
    /// Hide the cookie from scripts (`HttpOnly`).
    #[config(default = true)]
    pub http_only: bool,
    /// Which cross-site requests carry the cookie (`SameSite`).
    pub same_site: SameSite,
}

/// The `SameSite` attribute of a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Config)]
#[serde(rename_all = "snake_case")]
#[config(what = "SameSite value")]
pub enum SameSite {
    /// Sent with top-level navigations from other sites.
    #[config(default)]
    Lax,
    /// Sent with requests from this site only.
    Strict,
    /// Sent with every request; needs `secure`.
    None,
}

impl SameSite {
    /// The attribute's value.
    pub fn as_attribute(&self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// Longest sticky cookie lifetime: what browsers keep at most (400 days).
const MAX_STICKY_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

/// Longest ramp of a backend's share.
const MAX_SLOW_START: Duration = Duration::from_secs(3600);

/// The rules across an upstream's balancing fields.
pub(super) fn validate(u: &Upstream, path: &Path, p: &mut Problems) {
    if u.algorithm != Algorithm::ConsistentHash {
        if u.hash_on.is_some() {
            p.add(
                &path.key("hash_on"),
                "applies only to `algorithm: consistent_hash`",
            );
        }
        if u.hash_fallback.is_some() {
            p.add(
                &path.key("hash_fallback"),
                "applies only to `algorithm: consistent_hash`",
            );
        }
    }
    if u.hash_fallback == Some(Algorithm::ConsistentHash) {
        p.add(
            &path.key("hash_fallback"),
            "must be round_robin, weighted_round_robin or least_connections",
        );
    }
    if u.slow_start > MAX_SLOW_START {
        p.add(&path.key("slow_start"), "must be at most 1h");
    }
    if let Some(s) = &u.sticky {
        let at = path.key("sticky");
        if s.cookie.is_empty() || !s.cookie.bytes().all(is_token_byte) {
            p.add(
                &at.key("cookie"),
                format!(
                    "{:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
                    s.cookie
                ),
            );
        }
        if s.same_site == SameSite::None && !s.secure {
            p.add(
                &at.key("same_site"),
                "`none` needs `secure: true` (browsers drop the cookie otherwise)",
            );
        }
        if s.ttl > MAX_STICKY_TTL {
            p.add(
                &at.key("ttl"),
                "must be at most 9600h (400 days, what browsers keep)",
            );
        }
    }
}

impl Upstream {
    /// What its consistent hash is keyed on (`client_ip` unless set).
    pub fn hash_key(&self) -> HashOn {
        self.hash_on.clone().unwrap_or(HashOn::ClientIp)
    }

    /// The algorithm for requests without a hash key.
    pub fn fallback_algorithm(&self) -> Algorithm {
        self.hash_fallback.unwrap_or(Algorithm::WeightedRoundRobin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_read_and_write_back() {
        for s in [
            "client_ip",
            "path",
            "header:X-User",
            "cookie:session",
            "query:user_id",
        ] {
            let k = HashOn::parse(s).expect(s);
            assert_eq!(k.as_string(), s);
        }
        for bad in [
            "",
            "ip",
            "header:",
            "header:a b",
            "cookie:a;b",
            "query:a=b",
            "path:x",
            "Header:x",
        ] {
            assert!(HashOn::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_schema_pattern_agrees_with_the_reader() {
        let re = regex::Regex::new(HASH_ON_PATTERN).expect("pattern");
        for s in [
            "client_ip",
            "path",
            "header:X-User",
            "cookie:s",
            "query:q",
            "header:",
            "query:a b",
            "query:a&b",
            "header:x y",
            "nope",
            "client_ip:x",
        ] {
            assert_eq!(re.is_match(s), HashOn::parse(s).is_ok(), "{s:?}");
        }
    }
}
