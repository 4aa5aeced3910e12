//! The declarative config model: one typed [`Config`] that a YAML file, a REST
//! body, a stored version and a protobuf snapshot all turn into.
//!
//! It is a superset of the seed's YAML, so a seed-style file loads unchanged.
//! Reading ([`Config::from_yaml`], [`Config::from_json`]) applies defaults and
//! runs every validation rule, returning every problem at once with its path.

pub mod diff;
mod dns;
pub mod duration;
mod errors;
pub(crate) mod field;
mod inherit;
pub mod json;
mod lifecycle;
pub mod middleware;
mod protocols;
mod retry;
mod route;
mod scalar;
pub mod schema;
pub mod tls_names;
mod traffic;
mod validate;
pub mod yaml;

pub use diff::{diff, diff_from, diff_values, Change, ChangeOp};
pub use dns::{Dns, MAX_DNS_REFRESH, MIN_DNS_REFRESH};
pub use errors::{ConfigError, ConfigErrors, ProblemKind};
pub use lifecycle::{OutlierDetection, SuccessRate};
pub use middleware::{HeaderEdits, HeaderField, Middleware, Redirect, RewritePath};
pub use protocols::{HealthProtocol, ProxyVersion, UpstreamProtocol};
pub use retry::{Retry, RetryOn, RouteRetry, IDEMPOTENT_METHODS, MAX_ATTEMPTS, MAX_RETRY_BODY};
pub use route::{HeaderMatch, Mirror, Route, Split};
pub use traffic::{HashOn, SameSite, Sticky};
pub use validate::{backend_port, check_name, check_node_id, speaks_http2, NAME_PATTERN};

use field::forms::{label, statuses, tls_version, trusted};
use ipnet::IpNet;
use isame_config_derive::Config;
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;

/// A complete, validated Isame configuration with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Config)]
pub struct Config {
    /// Free-form label of this file, shown in `/status`.
    #[config(with = label, default = "1".into())]
    pub version: String,
    /// Service name, shown in logs and `/status`.
    #[config(with = label, default = "isame-lb".into())]
    pub service: String,
    /// Client-facing listener settings.
    pub server: Server,
    /// Named groups of backends; at least one.
    #[config(required)]
    pub upstreams: Vec<Upstream>,
    /// Request matching, tried in order; the first match wins. None: everything
    /// goes to the first upstream.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Peers whose `X-Forwarded-For` is believed (CIDRs or addresses).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[config(with = trusted)]
    pub trusted_proxies: Vec<IpNet>,
    /// Active health checks of every upstream's backends.
    #[config(shared)]
    pub health: Health,
    /// The admin listener (`/metrics`, `/health`, `/ready`, `/status`).
    pub metrics: Metrics,
    /// Per-backend circuit breaker.
    #[config(shared)]
    pub circuit_breaker: CircuitBreaker,
    /// Retry policy.
    #[config(shared)]
    pub retry: Retry,
    /// TLS termination.
    pub tls: Tls,
    /// How backend host names are resolved.
    #[serde(skip_serializing_if = "Dns::is_default")]
    pub dns: Dns,
}

/// Client-facing listener settings.
#[derive(Debug, Clone, PartialEq, Serialize, Config)]
pub struct Server {
    /// Address the proxy listeners bind to.
    #[config(default = IpAddr::from([0, 0, 0, 0]))]
    pub address: IpAddr,
    /// Plain HTTP port.
    #[config(default = 8080, min = 1, max = 65535)]
    pub port: u16,
    /// HTTPS port, used when `tls.enabled`; differs from `port`.
    #[config(default = 8443, min = 1, max = 65535)]
    pub https_port: u16,
    /// A request's headers must arrive within this (from its first byte, or
    /// from accept); also the longest pause in a request body (408 after).
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(15))]
    pub read_timeout: Duration,
    /// Longest time a write to the client may stall before the connection is closed.
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(15))]
    pub write_timeout: Duration,
    /// A keep-alive connection with no request in flight closes after this.
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(60))]
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers) accepted; larger gets 431.
    #[config(default = 1 << 20, min = 1024, max = 67108864)]
    pub max_header_bytes: u32,
    /// On SIGTERM, how long requests in flight may take to finish.
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(30))]
    pub shutdown_timeout: Duration,
    /// PROXY protocol (v1 or v2) from the load balancers in front of the
    /// listeners: the client address a header carries is the client's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// Reading PROXY protocol headers on the listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Config)]
pub struct ProxyProtocol {
    /// Peers that may send a PROXY header (CIDRs or addresses); a header
    /// from any other peer closes the connection.
    #[config(required, with = trusted)]
    pub trusted: Vec<IpNet>,
    /// Close every connection that does not start with a PROXY header, and
    /// so every connection from outside `trusted`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[config(default = false)]
    pub required: bool,
}

/// How an upstream spreads requests over its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Config)]
#[serde(rename_all = "snake_case")]
#[config(what = "algorithm")]
pub enum Algorithm {
    /// Each backend in turn.
    #[config(default)]
    RoundRobin,
    /// Smooth weighted round robin (nginx's): shares follow `weight`,
    /// interleaved, never in bursts.
    WeightedRoundRobin,
    /// The backend with the fewest requests in flight; ties rotate.
    LeastConnections,
    /// A ring hash of `hash_on`: the same key goes to the same backend,
    /// on every data plane, while that backend is eligible. Removing one of
    /// N backends moves only its own keys (about 1/N); shares follow `weight`.
    ConsistentHash,
}

/// A named group of backends.
#[derive(Debug, Clone, PartialEq, Serialize, Config)]
pub struct Upstream {
    /// Unique name, referenced by routes and shown in metrics: 1 to 128
    /// letters, digits, `-`, `_` and `.`, starting with a letter, a digit or `_`.
    #[config(required, pattern = NAME_PATTERN)]
    pub name: String,
    /// Balancing algorithm.
    pub algorithm: Algorithm,
    /// What `consistent_hash` hashes: `client_ip` (the default), `path`,
    /// `header:NAME`, `cookie:NAME` or `query:NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// The algorithm for requests without the `hash_on` key (no such
    /// header, cookie or parameter) under `consistent_hash`: any algorithm
    /// but `consistent_hash`; default `weighted_round_robin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_fallback: Option<Algorithm>,
    /// Cookie affinity, under any algorithm: a client that carries the
    /// cookie goes back to the backend it names while that backend is
    /// eligible; others get a cookie naming the backend that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// The servers requests go to; at least one.
    #[config(required)]
    pub backends: Vec<Backend>,
    /// The HTTP version backends are spoken to in. HTTP/2 multiplexes many
    /// requests on few connections and carries gRPC.
    #[serde(skip_serializing_if = "UpstreamProtocol::is_default")]
    pub protocol: UpstreamProtocol,
    /// Per-client rate limit for this upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Longest time to open a connection to a backend.
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(5))]
    pub connect_timeout: Duration,
    /// From the request being sent (its last body byte) to the response
    /// headers, and the longest stall while a backend reads a body or sends
    /// one (504 after).
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(30))]
    pub response_timeout: Duration,
    /// How long an idle connection to a backend is kept for the next
    /// request; `0s`: a connection serves one request. Keep it below the
    /// backends' own idle timeout (Node.js closes idle connections after
    /// 5s), or a request may be sent on a connection the backend is closing.
    #[serde(
        serialize_with = "duration::serialize",
        skip_serializing_if = "duration::is_secs::<30>"
    )]
    #[config(default = Duration::from_secs(30))]
    pub keepalive_timeout: Duration,
    /// Protocols a client may switch to through this upstream (HTTP/1.1
    /// `Upgrade`, answered by `101 Switching Protocols`): the connection is
    /// then relayed both ways as bytes until either side closes. Tokens as
    /// clients send them, compared without case; `[]` turns upgrades off.
    /// `h2c` is never passed on.
    #[serde(skip_serializing_if = "is_websocket_only")]
    #[config(default = vec!["websocket".into()])]
    pub upgrades: Vec<String>,
    /// When a backend leaves the config or is set to drain, how long its
    /// requests in flight and its tunnels (WebSockets) may go on; then they
    /// are cut. It takes no new request from the moment it leaves.
    #[serde(
        serialize_with = "duration::serialize",
        skip_serializing_if = "duration::is_secs::<30>"
    )]
    #[config(default = Duration::from_secs(30))]
    pub drain_timeout: Duration,
    /// How long an upgraded connection (a WebSocket) may carry no byte in
    /// either direction before the proxy closes it. Request timeouts do not
    /// apply to it.
    #[serde(
        serialize_with = "duration::serialize",
        skip_serializing_if = "duration::is_secs::<3600>"
    )]
    #[config(default = Duration::from_secs(3600))]
    pub tunnel_idle_timeout: Duration,
    /// Start each new connection to a backend with a PROXY protocol header
    /// naming the client (`v1` or `v2`); such a connection serves only
    /// requests of that client connection. Health checks send a header
    /// without addresses (`UNKNOWN`, `LOCAL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_proxy_protocol: Option<ProxyVersion>,
    /// This upstream's own health checks.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "inherit::serialize"
    )]
    #[config(inherit)]
    pub health: Option<Health>,
    /// A backend that joins the upstream (added by a reload), becomes
    /// healthy again or returns from an ejection takes a share of requests
    /// that grows linearly from nothing to its full share over this time,
    /// under every algorithm; `0s`: at once.
    #[serde(
        serialize_with = "duration::serialize",
        skip_serializing_if = "Duration::is_zero"
    )]
    pub slow_start: Duration,
    /// Backends given by host name are looked up again this often, or
    /// sooner when the answer's TTL is shorter (never more often than once
    /// a second); every address becomes an endpoint with the backend's
    /// weight and settings.
    #[serde(
        serialize_with = "duration::serialize",
        skip_serializing_if = "duration::is_secs::<30>"
    )]
    #[config(default = Duration::from_secs(30))]
    pub dns_refresh: Duration,
    /// Passive outlier detection: backends whose answers go bad leave the
    /// rotation for a while. Off unless this section is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// This upstream's own circuit breaker.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "inherit::serialize"
    )]
    #[config(inherit)]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// This upstream's own retry policy.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "inherit::serialize"
    )]
    #[config(inherit)]
    pub retry: Option<Retry>,
    /// How `https://` backends are verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

/// Verification of `https://` backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct UpstreamTls {
    /// PEM file of the CAs that sign the backends' certificates; empty: the
    /// system's roots.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ca_file: String,
    /// Name the backends' certificates must carry; empty: each backend URL's host.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub server_name: String,
}

/// One server of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
#[config(shorthand = url)]
pub struct Backend {
    /// `http://host:port`, `https://host:port` or `h2c://host:port`
    /// (HTTP/2 with prior knowledge), without a path.
    #[config(required)]
    pub url: String,
    /// Share of traffic under `weighted_round_robin`.
    #[config(default = 1, min = 1, max = 1000)]
    pub weight: u32,
    /// Draining: takes no new requests; those in flight and its tunnels
    /// finish, up to the upstream's `drain_timeout`, as when the backend
    /// is removed.
    #[serde(skip_serializing_if = "is_false")]
    pub drain: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_websocket_only(v: &[String]) -> bool {
    matches!(v, [one] if one == "websocket")
}

/// Sliding-window limit per client IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct RateLimit {
    /// Whether the limit applies.
    #[config(default = true)]
    pub enabled: bool,
    /// Requests allowed per client in one window.
    #[config(required)]
    pub requests_per_ip: u32,
    /// Length of the sliding window.
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(60))]
    pub window_size: Duration,
    /// Leading bits of an IPv6 address that identify one client (IPv4
    /// clients are always their own address).
    #[serde(skip_serializing_if = "is_default_ipv6_prefix")]
    #[config(default = DEFAULT_IPV6_PREFIX, min = 1, max = 128)]
    pub ipv6_prefix: u8,
}

/// The IPv6 prefix length a client is keyed by when none is given: the /64
/// a single host is usually assigned.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

fn is_default_ipv6_prefix(p: &u8) -> bool {
    *p == DEFAULT_IPV6_PREFIX
}

/// Active health checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct Health {
    /// Whether backends are probed.
    #[config(default = true)]
    pub enabled: bool,
    /// Time between probes of one backend.
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(30))]
    pub interval: Duration,
    /// Longest time one probe may take; at most `interval`.
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(5))]
    pub timeout: Duration,
    /// Path probed on each backend.
    #[config(default = "/health".into())]
    pub path: String,
    /// What a probe asks: `http` (`GET path`) or `grpc` (the standard gRPC
    /// health service).
    #[serde(skip_serializing_if = "HealthProtocol::is_default")]
    pub protocol: HealthProtocol,
    /// The service a `grpc` probe asks about; empty: the server as a whole.
    #[serde(skip_serializing_if = "inherit::empty")]
    pub grpc_service: String,
    /// Failed probes in a row that take a backend out.
    #[config(default = 3)]
    pub unhealthy_threshold: u32,
    /// Good probes in a row that bring it back.
    #[config(default = 2)]
    pub healthy_threshold: u32,
    /// Statuses that count as healthy: codes (`"204"`), ranges
    /// (`"200-399"`) or classes (`"2xx"`).
    #[config(with = statuses, default = vec!["200-399".into()])]
    pub expected_statuses: Vec<String>,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct Metrics {
    /// Whether `/metrics` is served (`/health`, `/ready` and `/status` always are).
    #[config(default = true)]
    pub enabled: bool,
    /// Address of the admin listener.
    #[config(default = IpAddr::from([127, 0, 0, 1]))]
    pub address: IpAddr,
    /// Port of the admin listener; differs from the proxy's ports.
    #[config(default = 9090, min = 1, max = 65535)]
    pub port: u16,
    /// Path of the Prometheus endpoint.
    #[config(default = "/metrics".into())]
    pub path: String,
}

/// Per-backend circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct CircuitBreaker {
    /// Whether breakers are used.
    #[config(default = true)]
    pub enabled: bool,
    /// Consecutive failures (connect errors, timeouts, 5xx) that open the circuit.
    #[config(default = 5)]
    pub failure_threshold: u32,
    /// How long an open circuit stays open before probing.
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(60))]
    pub timeout: Duration,
    /// Requests let through to probe a half-open circuit.
    #[config(default = 1)]
    pub half_open_requests: u32,
}

/// TLS termination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct Tls {
    /// Whether the HTTPS listener runs.
    pub enabled: bool,
    /// Name of a certificate in the control plane's certificate store, used
    /// instead of `cert_file` and `key_file` (subscribed data planes only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub certificate: String,
    /// PEM certificate chain; required when enabled, unless `certificate`.
    pub cert_file: String,
    /// PEM private key; required when enabled, unless `certificate`.
    pub key_file: String,
    /// Oldest protocol version accepted.
    #[config(with = tls_version, default = "1.2".into())]
    pub min_version: String,
    /// Allowed cipher suites by their IANA or Go names (e.g.
    /// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`); empty: the safe defaults.
    /// Legacy CBC, RC4 and 3DES suites are refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// More certificates, chosen by the name the client asks for (SNI);
    /// `cert_file` is the default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    /// Answer plain HTTP requests with 308 to the same URL over HTTPS.
    pub redirect_http: bool,
}

/// A certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
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
        let mut r = field::Reader::default();
        let config = field::read_section(
            value,
            &errors::Path::root(),
            &mut r,
            &Config::default(),
            None,
        )
        .unwrap_or_default();
        let mut problems = r.problems;
        let decode_paths: std::collections::HashSet<String> =
            problems.0.iter().map(|p| p.path.clone()).collect();
        let mut rules = errors::Problems::default();
        validate::validate(&config, &mut rules);
        // A field that could not be read was replaced by its default; rules about
        // that default would only repeat the first complaint.
        problems.0.extend(
            rules
                .0
                .into_iter()
                .filter(|r| !ancestors(&r.path).any(|a| decode_paths.contains(a))),
        );
        (config, ConfigErrors(problems.0))
    }

    /// Checks an in-memory config against the rules across fields
    /// (`validate.rs`); bounds declared on single fields are the reader's.
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

/// `path` and every path it lies under, the document (`""`) last:
/// `a.b[0].c`, `a.b[0]`, `a.b`, `a`, `""`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let cuts = path
        .char_indices()
        .filter(|(_, c)| *c == '.' || *c == '[')
        .map(|(i, _)| i)
        .rev();
    std::iter::once(path)
        .chain(cuts.map(move |i| &path[..i]))
        .chain(std::iter::once(""))
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
