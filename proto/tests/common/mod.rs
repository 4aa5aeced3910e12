//! Shared by the property tests: a proptest strategy for arbitrary valid
//! [`Config`]s, every optional section and keyed list exercised; and the
//! original plan's file.
#![allow(dead_code)]

use isame_proto::config::*;
use proptest::prelude::*;
use std::net::IpAddr;
use std::time::Duration;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..3_600_000).prop_map(Duration::from_millis),
        (1u64..u32::MAX as u64).prop_map(Duration::from_nanos),
    ]
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::RoundRobin),
        Just(Algorithm::WeightedRoundRobin),
        Just(Algorithm::LeastConnections),
        Just(Algorithm::ConsistentHash),
    ]
}

fn upstream(index: usize) -> impl Strategy<Value = Upstream> {
    (
        "[a-z][a-z0-9_.-]{0,12}",
        algorithm(),
        prop::collection::vec((1u32..=1000, any::<bool>()), 1..5),
        prop::option::of((any::<bool>(), 1u32..10_000, duration())),
        duration(),
        duration(),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            1u32..10,
        ),
    )
        .prop_map(
            move |(name, algorithm, backends, rl, connect, response, own)| Upstream {
                name: format!("{name}-{index}"),
                algorithm,
                backends: backends
                    .into_iter()
                    .enumerate()
                    .map(|(j, (weight, tls))| Backend {
                        url: format!(
                            "{}://10.{index}.0.{j}:{}",
                            if tls { "https" } else { "http" },
                            3000 + j
                        ),
                        weight,
                        drain: j % 3 == 2,
                    })
                    .collect(),
                rate_limit: rl.map(|(enabled, requests_per_ip, window_size)| RateLimit {
                    enabled,
                    requests_per_ip,
                    window_size,
                    ipv6_prefix: 48 + (requests_per_ip % 81) as u8,
                }),
                connect_timeout: connect,
                response_timeout: response,
                health: own.0.then(|| Health {
                    expected_statuses: vec!["2xx".into(), "304".into()],
                    healthy_threshold: own.4,
                    ..Health::default()
                }),
                circuit_breaker: own.1.then(|| CircuitBreaker {
                    half_open_requests: own.4,
                    ..CircuitBreaker::default()
                }),
                retry: own.2.then(|| Retry {
                    budget_percent: own.4 * 10,
                    max_body_bytes: own.4 * 1000,
                    ..Retry::default()
                }),
                tls: own.3.then(|| UpstreamTls {
                    ca_file: "ca.pem".into(),
                    server_name: format!("backend-{index}.internal"),
                }),
                send_proxy_protocol: match response.as_secs() % 3 {
                    0 => None,
                    1 => Some(ProxyVersion::V1),
                    _ => Some(ProxyVersion::V2),
                },
                hash_on: (algorithm == Algorithm::ConsistentHash).then(|| {
                    let keys = [
                        HashOn::ClientIp,
                        HashOn::Header("X-User".into()),
                        HashOn::Cookie("sid".into()),
                        HashOn::Path,
                        HashOn::Query("user".into()),
                    ];
                    keys[own.4 as usize % keys.len()].clone()
                }),
                hash_fallback: (algorithm == Algorithm::ConsistentHash && own.3)
                    .then_some(Algorithm::LeastConnections),
                sticky: own.0.then(|| Sticky {
                    cookie: format!("lb-{index}"),
                    ttl: Duration::from_secs(u64::from(own.4) * 600),
                    secure: own.1,
                    http_only: own.2,
                    same_site: if own.1 {
                        SameSite::None
                    } else {
                        SameSite::Strict
                    },
                }),
                slow_start: Duration::from_secs(u64::from(own.4) * 3),
                outlier_detection: own.1.then(|| OutlierDetection {
                    consecutive_5xx: own.4 - 1,
                    interval: connect,
                    max_ejection_percent: own.4 * 10,
                    success_rate: own.2.then_some(SuccessRate {
                        minimum_percent: 50 + own.4,
                        request_volume: own.4 * 7,
                    }),
                    ..OutlierDetection::default()
                }),
                // Fields not drawn here keep their defaults: a new field
                // needs no edit to be round-tripped at its default.
                ..Upstream::default()
            },
        )
}

/// A header value: visible ASCII inside, no space or tab at either end.
const VALUE: &str = "[!-~]([ -~]{0,8}[!-~])?";

fn fields(
    names: &'static str,
    n: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<HeaderField>> {
    prop::collection::btree_map(names, VALUE, n).prop_map(|m| {
        m.into_iter()
            .map(|(name, value)| HeaderField { name, value })
            .collect()
    })
}

fn header_edits() -> impl Strategy<Value = HeaderEdits> {
    (
        fields("x-s-[a-z]{1,5}", 1..3),
        fields("X-A-[a-z]{1,5}", 0..2),
        prop::collection::btree_set("x-r-[a-z]{1,5}", 0..2),
    )
        .prop_map(|(set, add, remove)| HeaderEdits {
            set,
            add,
            remove: remove.into_iter().collect(),
        })
}

/// Every middleware kind, valid.
fn middleware() -> impl Strategy<Value = Middleware> {
    let segment = "[a-z0-9_-]{1,8}";
    prop_oneof![
        prop::collection::vec(segment, 1..3)
            .prop_map(|s| Middleware::StripPrefix(format!("/{}", s.join("/")))),
        (segment, segment, any::<bool>()).prop_map(|(a, b, named)| {
            Middleware::RewritePath(if named {
                RewritePath {
                    from: format!("^/{a}/(?P<rest>.*)$"),
                    to: format!("/{b}/${{rest}}$$"),
                }
            } else {
                RewritePath {
                    from: format!("^/{a}/([^/]+)/(.*)$"),
                    to: format!("/{b}/$2/${{1}}x"),
                }
            })
        }),
        header_edits().prop_map(Middleware::RequestHeaders),
        header_edits().prop_map(Middleware::ResponseHeaders),
        (
            prop::sample::select(vec![
                "https://{host}{uri}",
                "{scheme}://example.com/new{path}?from={query}",
                "/moved{?query}",
                "http://[::1]:8080/x",
            ]),
            prop::sample::select(vec![301u16, 302, 303, 307, 308]),
        )
            .prop_map(|(to, status)| Middleware::Redirect(Redirect {
                to: to.into(),
                status,
            })),
    ]
}

pub fn config() -> impl Strategy<Value = Config> {
    (
        (1usize..4).prop_flat_map(|n| (0..n).map(upstream).collect::<Vec<_>>()),
        prop::collection::vec(
            (
                prop::option::of("[a-z]{1,8}(\\.[a-z]{1,8}){0,2}"),
                prop::option::of("/[a-z0-9/_-]{0,10}"),
                prop::collection::btree_map("x-[a-z]{1,6}", "[ -~]{0,10}", 0..3),
                any::<prop::sample::Index>(),
                any::<bool>(),
                prop::collection::vec(middleware(), 0..4),
            ),
            0..4,
        ),
        prop::collection::vec((any::<[u8; 4]>(), 0u8..=32), 0..3),
        (any::<bool>(), duration(), 1u32..10, 1u32..10),
        (any::<bool>(), 1u32..100, duration()),
        (any::<bool>(), 1u32..=10, duration()),
        ("[a-zA-Z0-9 .-]{0,10}", "[a-z-]{0,10}"),
        (1024u32..100_000, duration(), duration(), duration()),
        any::<bool>(),
    )
        .prop_map(
            |(upstreams, routes, proxies, health, breaker, retry, labels, server, tls_on)| {
                let names: Vec<String> = upstreams.iter().map(|u| u.name.clone()).collect();
                let (interval_on, interval, unhealthy, healthy) = health;
                Config {
                    version: labels.0,
                    service: labels.1,
                    server: Server {
                        address: IpAddr::from([0, 0, 0, 0]),
                        port: 8080,
                        https_port: 8443,
                        read_timeout: server.1,
                        write_timeout: server.2,
                        idle_timeout: server.3,
                        max_header_bytes: server.0,
                        shutdown_timeout: Duration::from_secs(5),
                        proxy_protocol: (!proxies.is_empty()).then(|| ProxyProtocol {
                            trusted: vec!["10.0.0.0/8".parse().expect("valid net")],
                            required: tls_on,
                        }),
                    },
                    routes: routes
                        .into_iter()
                        .enumerate()
                        .map(
                            |(i, (host, path_prefix, headers, up, wildcard, middleware))| Route {
                                name: format!("r{i}"),
                                host: host.map(|h| if wildcard { format!("*.{h}") } else { h }),
                                path_prefix,
                                headers: headers
                                    .into_iter()
                                    .map(|(name, value)| HeaderMatch { name, value })
                                    .collect(),
                                cookies: if i % 2 == 1 {
                                    vec![HeaderField {
                                        name: "canary".into(),
                                        value: format!("v{i}"),
                                    }]
                                } else {
                                    Vec::new()
                                },
                                upstream: if i % 3 == 2 && names.len() > 1 {
                                    String::new()
                                } else {
                                    names[up.index(names.len())].clone()
                                },
                                split: if i % 3 == 2 && names.len() > 1 {
                                    names
                                        .iter()
                                        .enumerate()
                                        .map(|(k, n)| Split {
                                            upstream: n.clone(),
                                            weight: k as u32,
                                        })
                                        .collect()
                                } else {
                                    Vec::new()
                                },
                                rate_limit: wildcard.then(|| RateLimit {
                                    enabled: true,
                                    requests_per_ip: 7,
                                    window_size: Duration::from_secs(9),
                                    ipv6_prefix: 64,
                                }),
                                mirror: (i % 3 == 1 && names.len() > 1).then(|| Mirror {
                                    upstream: names
                                        .iter()
                                        .find(|n| **n != names[up.index(names.len())])
                                        .cloned()
                                        .unwrap_or_default(),
                                    percent: (i as u32 * 7) % 101,
                                    max_body_bytes: 1024,
                                    max_in_flight: 5,
                                }),
                                retry: (i % 2 == 0).then(|| RouteRetry {
                                    max_attempts: (i % 4 == 0).then_some(2),
                                    retry_on: (i % 4 == 2).then(|| vec![RetryOn::Status(503)]),
                                    per_try_timeout: (i % 4 == 0)
                                        .then(|| Duration::from_millis(250)),
                                    retriable_methods: Some(vec!["POST".into(), "GET".into()]),
                                }),
                                middleware,
                            },
                        )
                        .collect(),
                    upstreams,
                    trusted_proxies: proxies
                        .into_iter()
                        .map(|(ip, len)| {
                            ipnet::Ipv4Net::new(ip.into(), len)
                                .expect("prefix length is at most 32")
                                .into()
                        })
                        .collect(),
                    health: Health {
                        enabled: interval_on,
                        interval: interval + Duration::from_secs(10),
                        timeout: Duration::from_secs(1),
                        path: "/healthz".into(),
                        unhealthy_threshold: unhealthy,
                        healthy_threshold: healthy,
                        expected_statuses: vec!["200-399".into()],
                        ..Health::default()
                    },
                    metrics: Metrics::default(),
                    circuit_breaker: CircuitBreaker {
                        enabled: breaker.0,
                        failure_threshold: breaker.1,
                        timeout: breaker.2,
                        half_open_requests: breaker.1,
                    },
                    retry: Retry {
                        enabled: retry.0,
                        max_attempts: retry.1,
                        initial_backoff: retry.2,
                        max_backoff: retry.2 * 2,
                        budget_percent: retry.1 * 10,
                        budget_min_per_second: retry.1,
                        max_body_bytes: 65536,
                        retry_on: if retry.1 % 2 == 0 {
                            RetryOn::defaults()
                        } else {
                            vec![RetryOn::Status5xx, RetryOn::Status(429), RetryOn::Reset]
                        },
                        per_try_timeout: retry.2 * u32::from(retry.1 % 3 == 0),
                        retriable_methods: if retry.1 % 2 == 0 {
                            IDEMPOTENT_METHODS.iter().map(|m| (*m).to_owned()).collect()
                        } else {
                            vec!["GET".into()]
                        },
                    },
                    dns: Dns {
                        servers: if tls_on {
                            vec!["127.0.0.1:5353".into(), "::1".into()]
                        } else {
                            Vec::new()
                        },
                        timeout: Duration::from_millis(if tls_on { 2000 } else { 500 }),
                    },
                    tls: Tls {
                        enabled: tls_on,
                        certificate: String::new(),
                        cert_file: "cert.pem".into(),
                        key_file: "key.pem".into(),
                        min_version: "1.2".into(),
                        cipher_suites: vec!["TLS_AES_128_GCM_SHA256".into()],
                        certificates: vec![
                            Certificate {
                                certificate: String::new(),
                                cert_file: "b.pem".into(),
                                key_file: "b.key".into(),
                            },
                            Certificate {
                                certificate: "shop.example".into(),
                                cert_file: String::new(),
                                key_file: String::new(),
                            },
                        ],
                        redirect_http: tls_on,
                    },
                }
            },
        )
}

/// A file in the original plan's shape, every section written out.
pub const SEED_SHAPED: &str = r#"
version: "2.1.0"
service: "storefront-lb"

server:
  port: 8081
  https_port: 8444
  read_timeout: "10s"
  write_timeout: "20s"
  idle_timeout: "90s"
  max_header_bytes: 65536

upstreams:
  - name: "web"
    algorithm: "weighted_round_robin"
    backends:
      - url: "http://127.0.0.1:4001"
        weight: 5
      - url: "http://127.0.0.1:4002"
        weight: 1
    rate_limit:
      enabled: true
      requests_per_ip: 50
      window_size: "30s"
  - name: "api"
    algorithm: "least_connections"
    backends:
      - url: "http://api-a.internal:9000"
        weight: 1
      - url: "https://api-b.internal"
        weight: 1

health:
  enabled: true
  interval: "10s"
  timeout: "2s"
  path: "/healthz"
  unhealthy_threshold: 4
  healthy_threshold: 1

metrics:
  enabled: true
  port: 9191
  path: "/prom"

circuit_breaker:
  enabled: true
  failure_threshold: 7
  timeout: "45s"

retry:
  enabled: true
  max_attempts: 2
  initial_backoff: "50ms"
  max_backoff: "1s"

tls:
  enabled: false
  cert_file: "certs/site.pem"
  key_file: "certs/site.key"
  min_version: "1.2"
  cipher_suites:
    - "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    - "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
"#;
