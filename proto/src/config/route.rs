//! Routes: which requests go to which upstream (or split between
//! upstreams), with their own rate limits and middleware.

use super::field::forms::header_map;
use super::{HeaderField, Middleware, RateLimit, RouteRetry, NAME_PATTERN};
use isame_config_derive::Config;
use serde::Serialize;

/// Sends matching requests to an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct Route {
    /// Unique name (the rules of upstream names).
    #[config(required, pattern = NAME_PATTERN)]
    pub name: String,
    /// Host to match, exact (`api.example.com`) or wildcard
    /// (`*.example.com`: any subdomain); case-insensitive, port ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix to match on segment boundaries: `/api` matches `/api` and
    /// `/api/x`, not `/apix`; `/` matches everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Headers that must all be present with exactly these values (names
    /// case-insensitive).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_headers"
    )]
    #[config(with = header_map)]
    pub headers: Vec<HeaderMatch>,
    /// Cookies that must all be present with exactly these values (names
    /// case-sensitive), e.g. `{canary: "1"}` for the users of a canary.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_headers"
    )]
    #[config(with = header_map)]
    pub cookies: Vec<HeaderField>,
    /// Name of the upstream that serves matching requests; required
    /// unless `split` is given.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[config(pattern = NAME_PATTERN)]
    pub upstream: String,
    /// Instead of `upstream`: matching requests shared between upstreams
    /// by weight, exactly (like `weighted_round_robin`: every window of
    /// sum(weights) requests holds each share), for canaries and blue-green
    /// moves. A weight of 0 sends nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<Split>,
    /// A copy of some of the matching requests goes to a shadow upstream,
    /// whose answers are dropped: the client's response never waits for
    /// it or depends on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// Changes to the retry policy of the upstreams this route sends to,
    /// for its requests: which conditions fail over, how long each try
    /// waits, and which methods (`POST` too) may be sent again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RouteRetry>,
    /// Per-client rate limit for requests this route matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// What happens to matching requests and their responses, in the order
    /// written (responses pass back in reverse order).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub middleware: Vec<Middleware>,
}

/// One upstream of a route's `split` and its share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct Split {
    /// Name of the upstream.
    #[config(required, pattern = NAME_PATTERN)]
    pub upstream: String,
    /// Its share of the route's requests, relative to the others'.
    #[config(default = 1, max = 1000)]
    pub weight: u32,
}

/// A route's shadow traffic: copies of its requests sent to another
/// upstream, fire-and-forget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct Mirror {
    /// Name of the upstream that gets the copies; it must not serve the
    /// route itself.
    #[config(required, pattern = NAME_PATTERN)]
    pub upstream: String,
    /// Share of the route's requests copied, in percent: exactly this many
    /// of every 100, spread evenly.
    #[config(default = 100, max = 100)]
    pub percent: u32,
    /// Requests whose body is larger, or of unknown length (chunked), are
    /// not copied; smaller bodies are read before the request goes on (at
    /// most 16 MiB).
    #[config(default = 64 * 1024)]
    pub max_body_bytes: u32,
    /// Most copies from this route in flight at once on a node; a copy
    /// over the limit is dropped (and counted), so a slow shadow cannot
    /// take the primary's memory or connections.
    #[config(default = 64, min = 1, max = 10000)]
    pub max_in_flight: u32,
}

/// One header a route requires: its name and exact value.
pub type HeaderMatch = HeaderField;

fn serialize_headers<S: serde::Serializer>(h: &[HeaderMatch], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(h.len()))?;
    for m in h {
        map.serialize_entry(&m.name, &m.value)?;
    }
    map.end()
}
