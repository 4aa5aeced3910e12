//! The declarative config model: one typed [`Config`] that a YAML file, a REST
//! body, a stored version and a protobuf snapshot all turn into.
//!
//! It is a superset of the seed's YAML, so a seed-style file loads unchanged.
//! Reading ([`Config::from_yaml`], [`Config::from_json`]) applies defaults and
//! runs every validation rule, returning every problem at once with its path.

mod decode;
pub mod diff;
pub mod duration;
mod errors;
pub mod json;
pub mod middleware;
mod scalar;
pub mod tls_names;
mod validate;
pub mod yaml;

pub use diff::{diff, diff_from, Change, ChangeOp};
pub use errors::{ConfigError, ConfigErrors};
pub use middleware::{HeaderEdits, HeaderField, Middleware, Redirect, RewritePath};
pub use validate::{check_name, check_node_id};

use ipnet::IpNet;
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;

/// A complete, validated Isame configuration with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Free-form version label of this file (the seed's `version`).
    pub version: String,
    /// Service name, used in logs and `/status`.
    pub service: String,
    /// Client-facing listener settings.
    pub server: Server,
    /// Named groups of backends.
    pub upstreams: Vec<Upstream>,
    /// Request matching, in order; the first match wins. Empty: everything goes
    /// to the first upstream.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Peers whose `X-Forwarded-For` is believed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<IpNet>,
    /// Active health checks.
    pub health: Health,
    /// The admin listener (`/metrics`, `/health`, `/ready`, `/status`).
    pub metrics: Metrics,
    /// Per-backend circuit breaker.
    pub circuit_breaker: CircuitBreaker,
    /// Retry policy.
    pub retry: Retry,
    /// TLS termination.
    pub tls: Tls,
}

/// Client-facing listener settings (`server:`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Server {
    /// Address the proxy listeners bind to.
    pub address: IpAddr,
    /// Plain HTTP port.
    pub port: u16,
    /// HTTPS port, used when `tls.enabled`.
    pub https_port: u16,
    /// Longest time a client may take to send a request's headers.
    #[serde(serialize_with = "duration::serialize")]
    pub read_timeout: Duration,
    /// Longest time a write to the client may stall before the connection is closed.
    #[serde(serialize_with = "duration::serialize")]
    pub write_timeout: Duration,
    /// Longest time a keep-alive connection may sit idle between requests.
    #[serde(serialize_with = "duration::serialize")]
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: u32,
    /// On shutdown, how long in-flight requests may take to finish.
    #[serde(serialize_with = "duration::serialize")]
    pub shutdown_timeout: Duration,
}

/// How an upstream spreads requests over its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each backend in turn.
    RoundRobin,
    /// Smooth weighted round robin (nginx's): interleaved, never bursts.
    WeightedRoundRobin,
    /// The backend with the fewest requests in flight; ties rotate.
    LeastConnections,
}

impl Algorithm {
    /// Every algorithm with its config name.
    pub const ALL: [(&'static str, Algorithm); 3] = [
        ("round_robin", Algorithm::RoundRobin),
        ("weighted_round_robin", Algorithm::WeightedRoundRobin),
        ("least_connections", Algorithm::LeastConnections),
    ];

    /// The config name, e.g. `round_robin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::LeastConnections => "least_connections",
        }
    }
}

/// A named group of backends (`upstreams[]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upstream {
    /// Unique name, referenced by routes and shown in metrics.
    pub name: String,
    /// Balancing algorithm.
    pub algorithm: Algorithm,
    /// The servers requests go to.
    pub backends: Vec<Backend>,
    /// Per-client rate limit for this upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Longest time to open a connection to a backend.
    #[serde(serialize_with = "duration::serialize")]
    pub connect_timeout: Duration,
    /// Longest time from sending a request to a backend to its response headers.
    #[serde(serialize_with = "duration::serialize")]
    pub response_timeout: Duration,
    /// Health checks of this upstream's backends, when they differ from the
    /// global `health` (fields left out come from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// This upstream's circuit breaker, when it differs from the global one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// This upstream's retry policy, when it differs from the global one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// How `https://` backends are verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

/// Verification of `https://` backends (`upstreams[].tls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    /// PEM file of the CA(s) that sign the backends' certificates; empty:
    /// the system's roots.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ca_file: String,
    /// Name checked against the backends' certificates; empty: each
    /// backend URL's host.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub server_name: String,
}

/// One server of an upstream (`upstreams[].backends[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// Share of traffic under `weighted_round_robin` (1 to 1000).
    pub weight: u32,
    /// Draining: takes no new requests; those in flight finish. Set before
    /// removing a backend so that nothing is cut off.
    #[serde(skip_serializing_if = "is_false")]
    pub drain: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Sliding-window limit per client IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    /// Whether the limit applies.
    pub enabled: bool,
    /// Requests allowed per client IP in one window.
    pub requests_per_ip: u32,
    /// Length of the sliding window.
    #[serde(serialize_with = "duration::serialize")]
    pub window_size: Duration,
    /// Leading bits of an IPv6 address that identify one client (1 to 128;
    /// IPv4 clients are always their own address).
    #[serde(skip_serializing_if = "is_default_ipv6_prefix")]
    pub ipv6_prefix: u8,
}

/// The IPv6 prefix length a client is keyed by when none is given: the /64
/// a single host is usually assigned.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

fn is_default_ipv6_prefix(p: &u8) -> bool {
    *p == DEFAULT_IPV6_PREFIX
}

/// Sends matching requests to an upstream (`routes[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Unique name.
    pub name: String,
    /// Host to match, exact (`api.example.com`) or wildcard (`*.example.com`);
    /// case-insensitive, port ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix to match on segment boundaries: `/api` matches `/api` and
    /// `/api/x`, not `/apix`. A prefix ending in `/` matches as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Headers that must all be present with exactly these values.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_headers"
    )]
    pub headers: Vec<HeaderMatch>,
    /// Name of the upstream that serves matching requests.
    pub upstream: String,
    /// Per-client rate limit for requests this route matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// What happens to matching requests and their responses, in the order
    /// written (responses pass back in reverse order).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub middleware: Vec<Middleware>,
}

/// One header a route requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// Exact value.
    pub value: String,
}

fn serialize_headers<S: serde::Serializer>(h: &[HeaderMatch], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(h.len()))?;
    for m in h {
        map.serialize_entry(&m.name, &m.value)?;
    }
    map.end()
}

/// Active health checks (`health:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Whether backends are probed.
    pub enabled: bool,
    /// Time between probes of one backend.
    #[serde(serialize_with = "duration::serialize")]
    pub interval: Duration,
    /// Longest time one probe may take.
    #[serde(serialize_with = "duration::serialize")]
    pub timeout: Duration,
    /// Path probed on each backend.
    pub path: String,
    /// Consecutive failures that mark a backend unhealthy.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that mark a backend healthy again.
    pub healthy_threshold: u32,
    /// Statuses that count as healthy: codes (`"204"`), ranges
    /// (`"200-399"`) or classes (`"2xx"`).
    pub expected_statuses: Vec<String>,
}

/// The admin listener (`metrics:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// Whether `/metrics` is served.
    pub enabled: bool,
    /// Address of the admin listener; loopback unless set.
    pub address: IpAddr,
    /// Port of the admin listener.
    pub port: u16,
    /// Path of the Prometheus endpoint.
    pub path: String,
}

/// Per-backend circuit breaker (`circuit_breaker:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CircuitBreaker {
    /// Whether breakers are used.
    pub enabled: bool,
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit stays open before probing.
    #[serde(serialize_with = "duration::serialize")]
    pub timeout: Duration,
    /// Requests let through to probe a half-open circuit.
    pub half_open_requests: u32,
}

/// Retry policy (`retry:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Whether failed requests may be retried.
    pub enabled: bool,
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// Backoff before the first retry.
    #[serde(serialize_with = "duration::serialize")]
    pub initial_backoff: Duration,
    /// Upper bound of the backoff.
    #[serde(serialize_with = "duration::serialize")]
    pub max_backoff: Duration,
    /// Retries may add at most this share of recent requests, in percent.
    pub budget_percent: u32,
    /// ...but at least this many retries per second are always allowed.
    pub budget_min_per_second: u32,
    /// Request bodies up to this size are kept so they can be sent again;
    /// larger ones stream and are not retried once sent.
    pub max_body_bytes: u32,
}

/// TLS termination (`tls:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tls {
    /// Whether the HTTPS listener runs.
    pub enabled: bool,
    /// Name of a certificate in the control plane's certificate store, used
    /// instead of `cert_file` and `key_file` (subscribed data planes only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub certificate: String,
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
    /// Oldest protocol version accepted: `"1.2"` or `"1.3"`.
    pub min_version: String,
    /// Allowed cipher suites by their IANA/Go names; empty means the safe defaults.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// More certificates, chosen by the name the client asks for (SNI);
    /// `cert_file` is the default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    /// Answer plain HTTP requests with a redirect to HTTPS.
    pub redirect_http: bool,
}

/// A certificate and its key (`tls.certificates[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Certificate {
    /// Name of a certificate in the control plane's certificate store, used
    /// instead of `cert_file` and `key_file` (subscribed data planes only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub certificate: String,
    /// PEM certificate chain.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cert_file: String,
    /// PEM private key.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_file: String,
}

impl Config {
    /// Names of the stored certificates this config refers to, each with the
    /// path of its first reference, in the order written.
    pub fn certificate_refs(&self) -> Vec<(String, String)> {
        let mut refs: Vec<(String, String)> = Vec::new();
        let mut add = |name: &str, path: String| {
            if !name.is_empty() && !refs.iter().any(|(n, _)| n == name) {
                refs.push((name.to_owned(), path));
            }
        };
        add(&self.tls.certificate, "tls.certificate".into());
        for (i, k) in self.tls.certificates.iter().enumerate() {
            add(&k.certificate, format!("tls.certificates[{i}].certificate"));
        }
        refs
    }
}

impl Default for Server {
    fn default() -> Self {
        Self {
            address: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            https_port: 8443,
            read_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 1 << 20,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            path: "/health".into(),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            expected_statuses: vec!["200-399".into()],
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            enabled: true,
            address: IpAddr::from([127, 0, 0, 1]),
            port: 9090,
            path: "/metrics".into(),
        }
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 5,
            timeout: Duration::from_secs(60),
            half_open_requests: 1,
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            budget_percent: 20,
            budget_min_per_second: 10,
            max_body_bytes: 64 * 1024,
        }
    }
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            enabled: false,
            certificate: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            min_version: "1.2".into(),
            cipher_suites: Vec::new(),
            certificates: Vec::new(),
            redirect_http: false,
        }
    }
}

/// Defaults of fields that have no section struct of their own.
pub mod defaults {
    use std::time::Duration;
    /// Default `connect_timeout`.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default `response_timeout`.
    pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default backend weight.
    pub const WEIGHT: u32 = 1;
    /// Default service name.
    pub const SERVICE: &str = "isame-lb";
    /// Default version label.
    pub const VERSION: &str = "1";
}

impl Config {
    /// The health checks that apply to upstream `u`.
    pub fn health_of<'a>(&'a self, u: &'a Upstream) -> &'a Health {
        u.health.as_ref().unwrap_or(&self.health)
    }

    /// The circuit breaker that applies to upstream `u`.
    pub fn breaker_of<'a>(&'a self, u: &'a Upstream) -> &'a CircuitBreaker {
        u.circuit_breaker.as_ref().unwrap_or(&self.circuit_breaker)
    }

    /// The retry policy that applies to upstream `u`.
    pub fn retry_of<'a>(&'a self, u: &'a Upstream) -> &'a Retry {
        u.retry.as_ref().unwrap_or(&self.retry)
    }

    /// Reads a YAML document, applies defaults and validates it.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigErrors> {
        let value = yaml::parse(text).map_err(|e| match e {
            yaml::YamlError::Syntax(msg) => ConfigErrors::one("", format!("invalid YAML: {msg}")),
            yaml::YamlError::TooLarge(msg) => ConfigErrors::one("", msg),
            yaml::YamlError::Content(errors) => errors,
        })?;
        Self::from_value(&value)
    }

    /// Reads a JSON document, applies defaults and validates it.
    pub fn from_json(text: &str) -> Result<Config, ConfigErrors> {
        let value =
            json::parse(text).map_err(|e| ConfigErrors::one("", format!("invalid JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// Reads an already parsed document tree, applies defaults and validates it.
    pub fn from_value(value: &serde_json::Value) -> Result<Config, ConfigErrors> {
        let (config, problems) = Self::from_value_lenient(value);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Reads a document tree as far as it goes: the config (with defaults
    /// where a field could not be read) beside every problem found. For
    /// documents that were valid when they were stored and must still be
    /// shown after the rules changed; new input goes through [`Config::from_value`].
    pub fn from_value_lenient(value: &serde_json::Value) -> (Config, ConfigErrors) {
        let (config, mut problems) = decode::decode(value);
        let decode_paths: Vec<String> = problems.0.iter().map(|p| p.path.clone()).collect();
        let mut rules = errors::Problems::default();
        validate::validate(&config, &mut rules);
        // A field that could not be read was replaced by its default; rules about
        // that default would only repeat the first complaint.
        problems.0.extend(
            rules
                .0
                .into_iter()
                .filter(|r| !decode_paths.iter().any(|d| covers(d, &r.path))),
        );
        (config, ConfigErrors(problems.0))
    }

    /// Checks an in-memory config (e.g. one converted from protobuf) against every rule.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut rules = errors::Problems::default();
        validate::validate(self, &mut rules);
        if rules.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(rules.0))
        }
    }

    /// The config as YAML, defaults written out.
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        serde_yaml_ng::to_string(self)
    }

    /// The upstream a request goes to when no route is configured.
    pub fn default_upstream(&self) -> Option<&Upstream> {
        self.upstreams.first()
    }
}

/// True when `path` is `prefix` itself or lies under it.
fn covers(prefix: &str, path: &str) -> bool {
    path == prefix
        || prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// An inclusive range of status codes, from `"204"`, `"200-299"` or `"2xx"`.
pub fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a status, a range like \"200-299\" or a class like \"2xx\"");
    let code = |t: &str| -> Result<u16, String> {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(bad)
    };
    if let Some(class) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
        let d = code(&format!("{class}00"))?;
        return Ok((d, d + 99));
    }
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (code(a)?, code(b)?);
            if a > b {
                return Err(bad());
            }
            Ok((a, b))
        }
        None => code(s).map(|c| (c, c)),
    }
}
