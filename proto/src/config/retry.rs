//! Retry policies: the global `retry` section, an upstream's own, and a
//! route's override of what fails over (`retry_on`), how long each try
//! may wait (`per_try_timeout`) and which methods may be sent twice
//! (`retriable_methods`).

use super::duration;
use super::errors::{Path, Problems};
use super::field::{kind, Field, Reader};
use super::schema::Defs;
use super::validate::is_token_byte;
use isame_config_derive::Config;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Most tries a retry policy may make.
pub const MAX_ATTEMPTS: u32 = 10;
/// Largest request body kept in memory for retries.
pub const MAX_RETRY_BODY: u32 = 16 << 20;

/// Retry policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct Retry {
    /// Whether failed requests may be retried.
    #[config(default = true)]
    pub enabled: bool,
    /// Tries in all, the first included (1 to 10).
    #[config(default = 3)]
    pub max_attempts: u32,
    /// Backoff before the first retry.
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_millis(100))]
    pub initial_backoff: Duration,
    /// Upper bound of the backoff; at least `initial_backoff`.
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(2))]
    pub max_backoff: Duration,
    /// Retries may add at most this share of the last 10 s of requests, in
    /// percent (0 to 100)...
    #[config(default = 20)]
    pub budget_percent: u32,
    /// ...plus this many retries per second.
    #[config(default = 10)]
    pub budget_min_per_second: u32,
    /// Request bodies up to this size are kept so they can be sent again;
    /// larger ones stream and are not retried once sent (at most 16 MiB).
    #[config(default = 64 * 1024)]
    pub max_body_bytes: u32,
    /// What makes a try go again: `connect_failure` (no connection, so the
    /// backend saw nothing), `reset` (the connection closed or broke
    /// before a response head), `timeout` (no response head in time),
    /// `gateway_error` (502, 503 or 504), `5xx` (any 5xx),
    /// `grpc_unavailable` (gRPC status 14 before any message) and status
    /// codes (`429`).
    #[serde(skip_serializing_if = "RetryOn::is_default_list")]
    #[config(default = RetryOn::defaults())]
    pub retry_on: Vec<RetryOn>,
    /// Longest wait for each try's response head, so that a slow backend
    /// leaves time to try another; `0s`: the upstream's
    /// `response_timeout`, which also bounds it.
    #[serde(
        serialize_with = "duration::serialize",
        skip_serializing_if = "super::inherit::zero"
    )]
    pub per_try_timeout: Duration,
    /// Methods whose requests may go again once a backend may have seen
    /// them. Idempotent methods only (GET, HEAD, OPTIONS, PUT, DELETE,
    /// TRACE); any other is opted into per route (`routes[].retry`).
    #[serde(skip_serializing_if = "is_idempotent_list")]
    #[config(default = idempotent_methods())]
    pub retriable_methods: Vec<String>,
}

/// A route's changes to the retry policy of the upstreams it sends to;
/// fields left out keep the upstream's. The budget and backoff stay the
/// upstream's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct RouteRetry {
    /// Tries in all, the first included (1 to 10); `1` turns retries off
    /// for the route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// What makes a try go again (as the upstream's `retry_on`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<RetryOn>>,
    /// Longest wait for each try's response head (as the upstream's).
    #[serde(
        serialize_with = "serialize_opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_try_timeout: Option<Duration>,
    /// Methods whose requests may go again once a backend may have seen
    /// them; unlike the upstream's, any method, `POST` included: listing a
    /// method that is not idempotent here says its requests are safe to
    /// run twice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retriable_methods: Option<Vec<String>>,
}

fn serialize_opt_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration::serialize(d, s),
        None => s.serialize_none(),
    }
}

/// One condition under which a failed try goes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetryOn {
    /// No connection could be opened (refused, unreachable, timed out):
    /// the backend saw nothing.
    #[default]
    ConnectFailure,
    /// The connection closed, broke or carried something other than HTTP
    /// before a complete response head.
    Reset,
    /// No response head within `per_try_timeout` (or `response_timeout`).
    Timeout,
    /// The backend answered 502, 503 or 504.
    GatewayError,
    /// The backend answered any 5xx.
    Status5xx,
    /// A gRPC backend answered `UNAVAILABLE` (14) before any message.
    GrpcUnavailable,
    /// The backend answered exactly this status.
    Status(u16),
}

impl RetryOn {
    /// Today's conditions: everything but an answer a backend chose to give.
    pub fn defaults() -> Vec<RetryOn> {
        vec![
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::Timeout,
            RetryOn::GatewayError,
            RetryOn::GrpcUnavailable,
        ]
    }

    fn is_default_list(v: &[RetryOn]) -> bool {
        super::inherit::skips(v == Self::defaults().as_slice())
    }

    /// Reads a condition's name or a status code.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "connect_failure" => RetryOn::ConnectFailure,
            "reset" => RetryOn::Reset,
            "timeout" => RetryOn::Timeout,
            "gateway_error" => RetryOn::GatewayError,
            "5xx" => RetryOn::Status5xx,
            "grpc_unavailable" => RetryOn::GrpcUnavailable,
            code if code.bytes().all(|b| b.is_ascii_digit()) && !code.is_empty() => {
                match code.parse::<u64>() {
                    Ok(n) => Self::code(n)?,
                    Err(_) => return Err(format!("{code} is not a status code")),
                }
            }
            other => {
                return Err(format!(
                    "{other:?} is not a retry condition: expected connect_failure, reset, timeout, gateway_error, 5xx, grpc_unavailable or a status code"
                ))
            }
        })
    }

    fn code(n: u64) -> Result<Self, String> {
        match u16::try_from(n) {
            Ok(c @ 400..=599) => Ok(RetryOn::Status(c)),
            _ => Err(format!(
                "{n} is not a status to retry on: expected 400 to 599"
            )),
        }
    }

    /// The condition as a config writes it.
    pub fn to_value(&self) -> Value {
        match self {
            RetryOn::ConnectFailure => json!("connect_failure"),
            RetryOn::Reset => json!("reset"),
            RetryOn::Timeout => json!("timeout"),
            RetryOn::GatewayError => json!("gateway_error"),
            RetryOn::Status5xx => json!("5xx"),
            RetryOn::GrpcUnavailable => json!("grpc_unavailable"),
            RetryOn::Status(c) => json!(c),
        }
    }
}

impl Serialize for RetryOn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl Field for RetryOn {
    fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self> {
        let parsed = match v {
            Value::String(s) => RetryOn::parse(s),
            // As every whole number is read (`429.0` included).
            Value::Number(_) => {
                return u16::read(v, at, r)
                    .and_then(|n| RetryOn::code(u64::from(n)).map_err(|e| r.add(at, e)).ok())
            }
            other => Err(format!(
                "expected a condition name or a status code, found {}",
                kind(other)
            )),
        };
        parsed.map_err(|e| r.add(at, e)).ok()
    }

    fn schema(_: &mut Defs) -> Value {
        json!({"type": ["string", "integer"], "anyOf": [
            {"enum": ["connect_failure", "reset", "timeout", "gateway_error", "5xx", "grpc_unavailable"]},
            {"type": "integer", "minimum": 400, "maximum": 599},
            {"type": "string", "pattern": "^[45][0-9][0-9]$"}
        ]})
    }

    fn to_json(&self) -> Value {
        self.to_value()
    }
}

/// The methods RFC 9110 (§9.2.2) calls idempotent.
pub const IDEMPOTENT_METHODS: [&str; 6] = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"];

fn idempotent_methods() -> Vec<String> {
    IDEMPOTENT_METHODS.iter().map(|m| (*m).to_owned()).collect()
}

fn is_idempotent_list(v: &[String]) -> bool {
    super::inherit::skips(v.iter().map(String::as_str).eq(IDEMPOTENT_METHODS))
}

/// The rules of a global or upstream retry policy.
pub(super) fn validate(r: &Retry, path: &Path, p: &mut Problems) {
    if !r.enabled {
        return;
    }
    attempts(r.max_attempts, &path.key("max_attempts"), p);
    if r.initial_backoff.is_zero() {
        p.add(&path.key("initial_backoff"), "must be longer than 0s");
    }
    if r.max_backoff < r.initial_backoff {
        p.add(
            &path.key("max_backoff"),
            "must not be shorter than retry.initial_backoff",
        );
    }
    if r.budget_percent > 100 {
        p.add(&path.key("budget_percent"), "must be between 0 and 100");
    }
    if r.max_body_bytes > MAX_RETRY_BODY {
        p.add(
            &path.key("max_body_bytes"),
            format!(
                "must be at most {MAX_RETRY_BODY} (bodies are held in memory to be sent again)"
            ),
        );
    }
    conditions(&r.retry_on, &path.key("retry_on"), p);
    let at = path.key("retriable_methods");
    methods(&r.retriable_methods, &at, p);
    for (i, m) in r.retriable_methods.iter().enumerate() {
        if is_method(m) && !IDEMPOTENT_METHODS.contains(&m.as_str()) {
            p.add(
                &at.index(i),
                format!(
                    "{m} is not idempotent: a request a backend may have run would run twice; a route can opt in (routes[].retry.retriable_methods)"
                ),
            );
        }
    }
}

/// The rules of a route's override.
pub(super) fn validate_route(r: &RouteRetry, path: &Path, p: &mut Problems) {
    if let Some(n) = r.max_attempts {
        attempts(n, &path.key("max_attempts"), p);
    }
    if let Some(on) = &r.retry_on {
        conditions(on, &path.key("retry_on"), p);
    }
    if let Some(m) = &r.retriable_methods {
        methods(m, &path.key("retriable_methods"), p);
    }
}

fn attempts(n: u32, at: &Path, p: &mut Problems) {
    if !(1..=MAX_ATTEMPTS).contains(&n) {
        p.add(
            at,
            format!("must be between 1 and {MAX_ATTEMPTS} (tries in all, the first included)"),
        );
    }
}

fn conditions(on: &[RetryOn], at: &Path, p: &mut Problems) {
    for (i, c) in on.iter().enumerate() {
        if on[..i].contains(c) {
            p.add(&at.index(i), "listed twice");
        }
    }
}

fn is_method(m: &str) -> bool {
    !m.is_empty() && m.len() <= 32 && m.bytes().all(is_token_byte)
}

fn methods(list: &[String], at: &Path, p: &mut Problems) {
    for (i, m) in list.iter().enumerate() {
        let here = at.index(i);
        if !is_method(m) {
            p.add(
                &here,
                format!("{m:?} is not a method (1 to 32 letters, digits and !#$%&'*+-.^_`|~)"),
            );
        } else if *m != m.to_ascii_uppercase() && is_standard(&m.to_ascii_uppercase()) {
            // Methods are case-sensitive: `get` would never match a GET.
            let upper = m.to_ascii_uppercase();
            p.add(&here, format!("methods are case-sensitive: write {upper}"));
        } else if list[..i].contains(m) {
            p.add(&here, "listed twice");
        }
    }
}

fn is_standard(m: &str) -> bool {
    IDEMPOTENT_METHODS.contains(&m) || matches!(m, "POST" | "PATCH" | "CONNECT")
}
