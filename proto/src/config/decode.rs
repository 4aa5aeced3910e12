//! Turns a parsed YAML/JSON tree into a [`Config`], applying defaults and
//! recording every type problem and unknown field with its path instead of
//! stopping at the first. A field that cannot be read keeps its default so the
//! rest of the document is still checked.

use super::errors::{Path, Problems};
use super::*;
use serde_json::{Map, Value};

/// Reads the whole document. Problems are returned beside a best-effort config.
pub(super) fn decode(v: &Value) -> (Config, Problems) {
    let mut p = Problems::default();
    let config = config(v, &Path::root(), &mut p);
    (config, p)
}

/// A value that can be read from one field.
pub(super) trait Decode: Sized {
    /// The value, or what is wrong with it.
    fn read(v: &Value) -> Result<Self, String>;
}

/// A mapping whose keys are checked against the fields it may have.
pub(super) struct Obj<'a> {
    map: Option<&'a Map<String, Value>>,
    path: Path,
}

impl<'a> Obj<'a> {
    /// Opens `v` as a mapping with the given fields; `null` counts as empty.
    pub(super) fn open(v: &'a Value, path: &Path, fields: &[&str], p: &mut Problems) -> Self {
        let map = match v {
            Value::Object(m) => Some(m),
            Value::Null => None,
            other => {
                p.add(path, format!("expected a mapping, found {}", kind(other)));
                None
            }
        };
        if let Some(m) = map {
            for key in m.keys() {
                if !fields.contains(&key.as_str()) {
                    p.add(
                        &path.key(key),
                        format!(
                            "unknown field `{key}`; expected one of: {}",
                            fields.join(", ")
                        ),
                    );
                }
            }
        }
        Obj {
            map,
            path: path.clone(),
        }
    }

    fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// The field's value, `None` when absent or unreadable (then a problem is recorded).
    pub(super) fn opt<T: Decode>(&self, key: &str, p: &mut Problems) -> Option<T> {
        let v = self.raw(key)?;
        match T::read(v) {
            Ok(t) => Some(t),
            Err(msg) => {
                p.add(&self.path.key(key), msg);
                None
            }
        }
    }

    /// The field's value, or `default` when absent or unreadable.
    pub(super) fn get<T: Decode>(&self, key: &str, default: T, p: &mut Problems) -> T {
        self.opt(key, p).unwrap_or(default)
    }

    /// A required field; records a problem when it is absent.
    pub(super) fn req<T: Decode + Default>(&self, key: &str, p: &mut Problems) -> T {
        if self.raw(key).is_none() {
            p.add(&self.path.key(key), "required field is missing");
            return T::default();
        }
        self.get(key, T::default(), p)
    }

    /// A nested section, read by `f`.
    fn section<T>(
        &self,
        key: &str,
        p: &mut Problems,
        f: fn(&Value, &Path, &mut Problems) -> T,
    ) -> T {
        f(
            self.raw(key).unwrap_or(&Value::Null),
            &self.path.key(key),
            p,
        )
    }

    /// A list of items, each read by `f`; `null` or absent is empty.
    fn list<T>(
        &self,
        key: &str,
        p: &mut Problems,
        f: fn(&Value, &Path, &mut Problems) -> T,
    ) -> Vec<T> {
        let path = self.path.key(key);
        match self.raw(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| f(v, &path.index(i), p))
                .collect(),
            Some(other) => {
                p.add(&path, format!("expected a list, found {}", kind(other)));
                Vec::new()
            }
        }
    }
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl Decode for String {
    fn read(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!("expected a string, found {}", kind(other))),
        }
    }
}

/// A label that YAML may have typed as a number (`version: 1.0`).
#[derive(Default)]
struct Label(String);

impl Decode for Label {
    fn read(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(Label(s.clone())),
            Value::Number(n) => Ok(Label(n.to_string())),
            Value::Bool(b) => Ok(Label(b.to_string())),
            other => Err(format!("expected a string, found {}", kind(other))),
        }
    }
}

impl Decode for bool {
    fn read(v: &Value) -> Result<Self, String> {
        v.as_bool()
            .ok_or_else(|| format!("expected true or false, found {}", kind(v)))
    }
}

fn integer(v: &Value, max: u64) -> Result<u64, String> {
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        _ => Err(format!(
            "expected a whole number from 0 to {max}, found {}",
            match v {
                Value::Number(n) => n.to_string(),
                other => kind(other).to_owned(),
            }
        )),
    }
}

impl Decode for u8 {
    fn read(v: &Value) -> Result<Self, String> {
        integer(v, u64::from(u8::MAX)).map(|n| n as u8)
    }
}

impl Decode for u16 {
    fn read(v: &Value) -> Result<Self, String> {
        integer(v, u64::from(u16::MAX)).map(|n| n as u16)
    }
}

impl Decode for u32 {
    fn read(v: &Value) -> Result<Self, String> {
        integer(v, u64::from(u32::MAX)).map(|n| n as u32)
    }
}

impl Decode for Duration {
    fn read(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) => duration::parse(s),
            Value::Number(n) => Err(format!(
                "durations need a unit: write \"{n}s\" or \"{n}ms\", not {n}"
            )),
            other => Err(format!(
                "expected a duration such as \"30s\", found {}",
                kind(other)
            )),
        }
    }
}

impl Decode for IpAddr {
    fn read(v: &Value) -> Result<Self, String> {
        let s = String::read(v)?;
        s.parse()
            .map_err(|_| format!("{s:?} is not an IP address (e.g. \"0.0.0.0\" or \"::1\")"))
    }
}

impl Decode for IpNet {
    fn read(v: &Value) -> Result<Self, String> {
        let s = String::read(v)?;
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(net);
        }
        s.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{s:?} is not a CIDR (e.g. \"10.0.0.0/8\") or an IP address"))
    }
}

impl Decode for Algorithm {
    fn read(v: &Value) -> Result<Self, String> {
        let s = String::read(v)?;
        Algorithm::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, a)| *a)
            .ok_or_else(|| {
                let names: Vec<_> = Algorithm::ALL.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown algorithm {s:?}; expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

impl Decode for Vec<String> {
    fn read(v: &Value) -> Result<Self, String> {
        match v {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| String::read(item).map_err(|e| format!("[{i}]: {e}")))
                .collect(),
            other => Err(format!("expected a list of strings, found {}", kind(other))),
        }
    }
}

const CONFIG_FIELDS: &[&str] = &[
    "version",
    "service",
    "server",
    "upstreams",
    "routes",
    "trusted_proxies",
    "health",
    "metrics",
    "circuit_breaker",
    "retry",
    "tls",
];

fn config(v: &Value, path: &Path, p: &mut Problems) -> Config {
    let o = Obj::open(v, path, CONFIG_FIELDS, p);
    // The global sections first: an upstream's own sections start from them.
    let health = o.section("health", p, |v, path, p| {
        health(v, path, p, &Health::default())
    });
    let circuit_breaker = o.section("circuit_breaker", p, |v, path, p| {
        circuit_breaker(v, path, p, &CircuitBreaker::default())
    });
    let retry = o.section("retry", p, |v, path, p| {
        retry(v, path, p, &Retry::default())
    });
    let bases = Bases {
        health: &health,
        circuit_breaker: &circuit_breaker,
        retry: &retry,
    };
    let upstreams = match o.raw("upstreams") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| upstream(v, &path.key("upstreams").index(i), p, &bases))
            .collect(),
        Some(other) => {
            p.add(
                &path.key("upstreams"),
                format!("expected a list, found {}", kind(other)),
            );
            Vec::new()
        }
    };
    Config {
        version: o.get("version", Label(defaults::VERSION.into()), p).0,
        service: o.get("service", Label(defaults::SERVICE.into()), p).0,
        server: o.section("server", p, server),
        upstreams,
        routes: o.list("routes", p, route),
        trusted_proxies: o.list("trusted_proxies", p, |v, path, p| match IpNet::read(v) {
            Ok(n) => n,
            Err(e) => {
                p.add(path, e);
                IpNet::from(IpAddr::from([0, 0, 0, 0]))
            }
        }),
        metrics: o.section("metrics", p, metrics),
        tls: o.section("tls", p, tls),
        health,
        circuit_breaker,
        retry,
    }
}

/// The global sections an upstream's own sections inherit from.
struct Bases<'a> {
    health: &'a Health,
    circuit_breaker: &'a CircuitBreaker,
    retry: &'a Retry,
}

fn server(v: &Value, path: &Path, p: &mut Problems) -> Server {
    let o = Obj::open(
        v,
        path,
        &[
            "address",
            "port",
            "https_port",
            "read_timeout",
            "write_timeout",
            "idle_timeout",
            "max_header_bytes",
            "shutdown_timeout",
        ],
        p,
    );
    let d = Server::default();
    Server {
        address: o.get("address", d.address, p),
        port: o.get("port", d.port, p),
        https_port: o.get("https_port", d.https_port, p),
        read_timeout: o.get("read_timeout", d.read_timeout, p),
        write_timeout: o.get("write_timeout", d.write_timeout, p),
        idle_timeout: o.get("idle_timeout", d.idle_timeout, p),
        max_header_bytes: o.get("max_header_bytes", d.max_header_bytes, p),
        shutdown_timeout: o.get("shutdown_timeout", d.shutdown_timeout, p),
    }
}

fn upstream(v: &Value, path: &Path, p: &mut Problems, bases: &Bases<'_>) -> Upstream {
    let o = Obj::open(
        v,
        path,
        &[
            "name",
            "algorithm",
            "backends",
            "rate_limit",
            "connect_timeout",
            "response_timeout",
            "health",
            "circuit_breaker",
            "retry",
            "tls",
        ],
        p,
    );
    let own = |key: &str| o.raw(key).map(|v| (v, path.key(key)));
    Upstream {
        name: o.req("name", p),
        algorithm: o.get("algorithm", Algorithm::RoundRobin, p),
        backends: o.list("backends", p, backend),
        rate_limit: o
            .raw("rate_limit")
            .map(|_| o.section("rate_limit", p, rate_limit)),
        connect_timeout: o.get("connect_timeout", defaults::CONNECT_TIMEOUT, p),
        response_timeout: o.get("response_timeout", defaults::RESPONSE_TIMEOUT, p),
        health: own("health").map(|(v, path)| health(v, &path, p, bases.health)),
        circuit_breaker: own("circuit_breaker")
            .map(|(v, path)| circuit_breaker(v, &path, p, bases.circuit_breaker)),
        retry: own("retry").map(|(v, path)| retry(v, &path, p, bases.retry)),
        tls: own("tls").map(|(v, path)| upstream_tls(v, &path, p)),
    }
}

fn upstream_tls(v: &Value, path: &Path, p: &mut Problems) -> UpstreamTls {
    let o = Obj::open(v, path, &["ca_file", "server_name"], p);
    UpstreamTls {
        ca_file: o.get("ca_file", String::new(), p),
        server_name: o.get("server_name", String::new(), p),
    }
}

fn backend(v: &Value, path: &Path, p: &mut Problems) -> Backend {
    // A bare string is shorthand for `{url: ...}`.
    if let Value::String(url) = v {
        return Backend {
            url: url.clone(),
            weight: defaults::WEIGHT,
            drain: false,
        };
    }
    let o = Obj::open(v, path, &["url", "weight", "drain"], p);
    Backend {
        url: o.req("url", p),
        weight: o.get("weight", defaults::WEIGHT, p),
        drain: o.get("drain", false, p),
    }
}

fn rate_limit(v: &Value, path: &Path, p: &mut Problems) -> RateLimit {
    let o = Obj::open(
        v,
        path,
        &["enabled", "requests_per_ip", "window_size", "ipv6_prefix"],
        p,
    );
    RateLimit {
        enabled: o.get("enabled", true, p),
        requests_per_ip: o.req("requests_per_ip", p),
        window_size: o.get("window_size", Duration::from_secs(60), p),
        ipv6_prefix: o.get("ipv6_prefix", super::DEFAULT_IPV6_PREFIX, p),
    }
}

fn route(v: &Value, path: &Path, p: &mut Problems) -> Route {
    let o = Obj::open(
        v,
        path,
        &[
            "name",
            "host",
            "path_prefix",
            "headers",
            "upstream",
            "rate_limit",
            "middleware",
        ],
        p,
    );
    let headers = match o.raw("headers") {
        None => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(name, value)| match String::read(value) {
                Ok(value) => Some(HeaderMatch {
                    name: name.clone(),
                    value,
                }),
                Err(e) => {
                    p.add(&path.key("headers").key(name), e);
                    None
                }
            })
            .collect(),
        Some(other) => {
            p.add(
                &path.key("headers"),
                format!(
                    "expected a mapping of header name to value, found {}",
                    kind(other)
                ),
            );
            Vec::new()
        }
    };
    Route {
        name: o.req("name", p),
        host: o.opt("host", p),
        path_prefix: o.opt("path_prefix", p),
        headers,
        upstream: o.req("upstream", p),
        rate_limit: o
            .raw("rate_limit")
            .map(|_| o.section("rate_limit", p, rate_limit)),
        middleware: o.list("middleware", p, middleware::decode),
    }
}

/// A list of status specifications; a single one may be written bare.
struct Statuses(Vec<String>);

impl Decode for Statuses {
    fn read(v: &Value) -> Result<Self, String> {
        match v {
            Value::Array(items) => items
                .iter()
                .map(|i| Label::read(i).map(|l| l.0))
                .collect::<Result<_, _>>()
                .map(Statuses),
            other => Label::read(other).map(|l| Statuses(vec![l.0])),
        }
    }
}

fn health(v: &Value, path: &Path, p: &mut Problems, d: &Health) -> Health {
    let o = Obj::open(
        v,
        path,
        &[
            "enabled",
            "interval",
            "timeout",
            "path",
            "unhealthy_threshold",
            "healthy_threshold",
            "expected_statuses",
        ],
        p,
    );
    Health {
        enabled: o.get("enabled", d.enabled, p),
        interval: o.get("interval", d.interval, p),
        timeout: o.get("timeout", d.timeout, p),
        path: o.get("path", d.path.clone(), p),
        unhealthy_threshold: o.get("unhealthy_threshold", d.unhealthy_threshold, p),
        healthy_threshold: o.get("healthy_threshold", d.healthy_threshold, p),
        expected_statuses: o
            .get(
                "expected_statuses",
                Statuses(d.expected_statuses.clone()),
                p,
            )
            .0,
    }
}

fn metrics(v: &Value, path: &Path, p: &mut Problems) -> Metrics {
    let o = Obj::open(v, path, &["enabled", "address", "port", "path"], p);
    let d = Metrics::default();
    Metrics {
        enabled: o.get("enabled", d.enabled, p),
        address: o.get("address", d.address, p),
        port: o.get("port", d.port, p),
        path: o.get("path", d.path, p),
    }
}

fn circuit_breaker(v: &Value, path: &Path, p: &mut Problems, d: &CircuitBreaker) -> CircuitBreaker {
    let o = Obj::open(
        v,
        path,
        &[
            "enabled",
            "failure_threshold",
            "timeout",
            "half_open_requests",
        ],
        p,
    );
    CircuitBreaker {
        enabled: o.get("enabled", d.enabled, p),
        failure_threshold: o.get("failure_threshold", d.failure_threshold, p),
        timeout: o.get("timeout", d.timeout, p),
        half_open_requests: o.get("half_open_requests", d.half_open_requests, p),
    }
}

fn retry(v: &Value, path: &Path, p: &mut Problems, d: &Retry) -> Retry {
    let o = Obj::open(
        v,
        path,
        &[
            "enabled",
            "max_attempts",
            "initial_backoff",
            "max_backoff",
            "budget_percent",
            "budget_min_per_second",
            "max_body_bytes",
        ],
        p,
    );
    Retry {
        enabled: o.get("enabled", d.enabled, p),
        max_attempts: o.get("max_attempts", d.max_attempts, p),
        initial_backoff: o.get("initial_backoff", d.initial_backoff, p),
        max_backoff: o.get("max_backoff", d.max_backoff, p),
        budget_percent: o.get("budget_percent", d.budget_percent, p),
        budget_min_per_second: o.get("budget_min_per_second", d.budget_min_per_second, p),
        max_body_bytes: o.get("max_body_bytes", d.max_body_bytes, p),
    }
}

fn certificate(v: &Value, path: &Path, p: &mut Problems) -> Certificate {
    let o = Obj::open(v, path, &["certificate", "cert_file", "key_file"], p);
    Certificate {
        certificate: o.get("certificate", String::new(), p),
        cert_file: o.get("cert_file", String::new(), p),
        key_file: o.get("key_file", String::new(), p),
    }
}

fn tls(v: &Value, path: &Path, p: &mut Problems) -> Tls {
    let o = Obj::open(
        v,
        path,
        &[
            "enabled",
            "certificate",
            "cert_file",
            "key_file",
            "min_version",
            "cipher_suites",
            "certificates",
            "redirect_http",
        ],
        p,
    );
    let d = Tls::default();
    let min_version = o.get("min_version", Label(d.min_version.clone()), p).0;
    Tls {
        enabled: o.get("enabled", d.enabled, p),
        certificate: o.get("certificate", d.certificate, p),
        cert_file: o.get("cert_file", d.cert_file, p),
        key_file: o.get("key_file", d.key_file, p),
        // The seed wrote an empty string for "the default".
        min_version: if min_version.is_empty() {
            d.min_version
        } else {
            min_version
        },
        cipher_suites: o.get("cipher_suites", d.cipher_suites, p),
        certificates: o.list("certificates", p, certificate),
        redirect_http: o.get("redirect_http", d.redirect_http, p),
    }
}
