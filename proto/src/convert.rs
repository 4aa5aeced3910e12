//! Lossless conversion between the config model and its protobuf form
//! (`isame.v1.Config`). Model → protobuf cannot fail; protobuf → model checks
//! shapes the wire cannot express (ports, addresses, enum values) and then
//! runs every validation rule, so each hop accepts exactly the same configs.

use crate::config::*;
use crate::pb;
use ipnet::IpNet;
use std::net::IpAddr;
use std::time::Duration;

fn dur(d: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    })
}

impl From<&Config> for pb::Config {
    fn from(c: &Config) -> Self {
        pb::Config {
            version: c.version.clone(),
            service: c.service.clone(),
            server: Some(pb::Server {
                address: c.server.address.to_string(),
                port: c.server.port.into(),
                https_port: c.server.https_port.into(),
                read_timeout: dur(c.server.read_timeout),
                write_timeout: dur(c.server.write_timeout),
                idle_timeout: dur(c.server.idle_timeout),
                max_header_bytes: c.server.max_header_bytes,
                shutdown_timeout: dur(c.server.shutdown_timeout),
            }),
            upstreams: c.upstreams.iter().map(upstream_to_pb).collect(),
            routes: c
                .routes
                .iter()
                .map(|r| pb::Route {
                    name: r.name.clone(),
                    host: r.host.clone(),
                    path_prefix: r.path_prefix.clone(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| pb::HeaderMatch {
                            name: h.name.clone(),
                            value: h.value.clone(),
                        })
                        .collect(),
                    upstream: r.upstream.clone(),
                })
                .collect(),
            trusted_proxies: c.trusted_proxies.iter().map(|n| n.to_string()).collect(),
            health: Some(pb::Health {
                enabled: c.health.enabled,
                interval: dur(c.health.interval),
                timeout: dur(c.health.timeout),
                path: c.health.path.clone(),
                unhealthy_threshold: c.health.unhealthy_threshold,
                healthy_threshold: c.health.healthy_threshold,
            }),
            metrics: Some(pb::Metrics {
                enabled: c.metrics.enabled,
                address: c.metrics.address.to_string(),
                port: c.metrics.port.into(),
                path: c.metrics.path.clone(),
            }),
            circuit_breaker: Some(pb::CircuitBreaker {
                enabled: c.circuit_breaker.enabled,
                failure_threshold: c.circuit_breaker.failure_threshold,
                timeout: dur(c.circuit_breaker.timeout),
            }),
            retry: Some(pb::Retry {
                enabled: c.retry.enabled,
                max_attempts: c.retry.max_attempts,
                initial_backoff: dur(c.retry.initial_backoff),
                max_backoff: dur(c.retry.max_backoff),
            }),
            tls: Some(pb::Tls {
                enabled: c.tls.enabled,
                cert_file: c.tls.cert_file.clone(),
                key_file: c.tls.key_file.clone(),
                min_version: c.tls.min_version.clone(),
                cipher_suites: c.tls.cipher_suites.clone(),
            }),
        }
    }
}

fn upstream_to_pb(u: &Upstream) -> pb::Upstream {
    pb::Upstream {
        name: u.name.clone(),
        algorithm: match u.algorithm {
            Algorithm::RoundRobin => pb::Algorithm::RoundRobin,
            Algorithm::WeightedRoundRobin => pb::Algorithm::WeightedRoundRobin,
            Algorithm::LeastConnections => pb::Algorithm::LeastConnections,
        } as i32,
        backends: u
            .backends
            .iter()
            .map(|b| pb::Backend {
                url: b.url.clone(),
                weight: b.weight,
            })
            .collect(),
        rate_limit: u.rate_limit.as_ref().map(|r| pb::RateLimit {
            enabled: r.enabled,
            requests_per_ip: r.requests_per_ip,
            window_size: dur(r.window_size),
        }),
        connect_timeout: dur(u.connect_timeout),
        response_timeout: dur(u.response_timeout),
    }
}

/// Collects problems found while reading a protobuf config.
struct Reader {
    problems: Vec<ConfigError>,
}

impl Reader {
    fn fail(&mut self, path: &str, msg: impl Into<String>) {
        self.problems.push(ConfigError::new(path, msg));
    }

    fn msg<'a, T>(&mut self, m: &'a Option<T>, path: &str) -> Option<&'a T> {
        if m.is_none() {
            self.fail(path, "missing");
        }
        m.as_ref()
    }

    fn dur(&mut self, d: &Option<prost_types::Duration>, path: &str) -> Duration {
        match d {
            Some(d) if d.seconds >= 0 && (0..1_000_000_000).contains(&d.nanos) => {
                Duration::new(d.seconds as u64, d.nanos as u32)
            }
            Some(_) => {
                self.fail(path, "negative or malformed duration");
                Duration::ZERO
            }
            None => {
                self.fail(path, "missing");
                Duration::ZERO
            }
        }
    }

    fn port(&mut self, n: u32, path: &str) -> u16 {
        u16::try_from(n).unwrap_or_else(|_| {
            self.fail(path, "must be between 1 and 65535");
            0
        })
    }

    fn ip(&mut self, s: &str, path: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| {
            self.fail(path, format!("{s:?} is not an IP address"));
            IpAddr::from([0, 0, 0, 0])
        })
    }
}

/// Reads a protobuf config into the model and validates it.
pub fn config_from_pb(c: &pb::Config) -> Result<Config, ConfigErrors> {
    let mut r = Reader {
        problems: Vec::new(),
    };
    let ds = Server::default();
    let server = match r.msg(&c.server, "server") {
        Some(s) => Server {
            address: r.ip(&s.address, "server.address"),
            port: r.port(s.port, "server.port"),
            https_port: r.port(s.https_port, "server.https_port"),
            read_timeout: r.dur(&s.read_timeout, "server.read_timeout"),
            write_timeout: r.dur(&s.write_timeout, "server.write_timeout"),
            idle_timeout: r.dur(&s.idle_timeout, "server.idle_timeout"),
            max_header_bytes: s.max_header_bytes,
            shutdown_timeout: r.dur(&s.shutdown_timeout, "server.shutdown_timeout"),
        },
        None => ds,
    };
    let upstreams = c
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| upstream_from_pb(&mut r, u, &format!("upstreams[{i}]")))
        .collect();
    let routes = c
        .routes
        .iter()
        .map(|rt| Route {
            name: rt.name.clone(),
            host: rt.host.clone(),
            path_prefix: rt.path_prefix.clone(),
            headers: rt
                .headers
                .iter()
                .map(|h| HeaderMatch {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            upstream: rt.upstream.clone(),
        })
        .collect();
    let trusted_proxies = c
        .trusted_proxies
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<IpNet>().unwrap_or_else(|_| {
                r.fail(
                    &format!("trusted_proxies[{i}]"),
                    format!("{s:?} is not a CIDR"),
                );
                IpNet::from(IpAddr::from([0, 0, 0, 0]))
            })
        })
        .collect();
    let health = match r.msg(&c.health, "health") {
        Some(h) => Health {
            enabled: h.enabled,
            interval: r.dur(&h.interval, "health.interval"),
            timeout: r.dur(&h.timeout, "health.timeout"),
            path: h.path.clone(),
            unhealthy_threshold: h.unhealthy_threshold,
            healthy_threshold: h.healthy_threshold,
        },
        None => Health::default(),
    };
    let metrics = match r.msg(&c.metrics, "metrics") {
        Some(m) => Metrics {
            enabled: m.enabled,
            address: r.ip(&m.address, "metrics.address"),
            port: r.port(m.port, "metrics.port"),
            path: m.path.clone(),
        },
        None => Metrics::default(),
    };
    let circuit_breaker = match r.msg(&c.circuit_breaker, "circuit_breaker") {
        Some(b) => CircuitBreaker {
            enabled: b.enabled,
            failure_threshold: b.failure_threshold,
            timeout: r.dur(&b.timeout, "circuit_breaker.timeout"),
        },
        None => CircuitBreaker::default(),
    };
    let retry = match r.msg(&c.retry, "retry") {
        Some(x) => Retry {
            enabled: x.enabled,
            max_attempts: x.max_attempts,
            initial_backoff: r.dur(&x.initial_backoff, "retry.initial_backoff"),
            max_backoff: r.dur(&x.max_backoff, "retry.max_backoff"),
        },
        None => Retry::default(),
    };
    let tls = match r.msg(&c.tls, "tls") {
        Some(t) => Tls {
            enabled: t.enabled,
            cert_file: t.cert_file.clone(),
            key_file: t.key_file.clone(),
            min_version: t.min_version.clone(),
            cipher_suites: t.cipher_suites.clone(),
        },
        None => Tls::default(),
    };
    let config = Config {
        version: c.version.clone(),
        service: c.service.clone(),
        server,
        upstreams,
        routes,
        trusted_proxies,
        health,
        metrics,
        circuit_breaker,
        retry,
        tls,
    };
    if !r.problems.is_empty() {
        return Err(ConfigErrors(r.problems));
    }
    config.validate()?;
    Ok(config)
}

fn upstream_from_pb(r: &mut Reader, u: &pb::Upstream, path: &str) -> Upstream {
    let algorithm = match pb::Algorithm::try_from(u.algorithm) {
        Ok(pb::Algorithm::RoundRobin) => Algorithm::RoundRobin,
        Ok(pb::Algorithm::WeightedRoundRobin) => Algorithm::WeightedRoundRobin,
        Ok(pb::Algorithm::LeastConnections) => Algorithm::LeastConnections,
        Ok(pb::Algorithm::Unspecified) | Err(_) => {
            r.fail(
                &format!("{path}.algorithm"),
                format!("unknown algorithm {}", u.algorithm),
            );
            Algorithm::RoundRobin
        }
    };
    Upstream {
        name: u.name.clone(),
        algorithm,
        backends: u
            .backends
            .iter()
            .map(|b| Backend {
                url: b.url.clone(),
                weight: b.weight,
            })
            .collect(),
        rate_limit: u.rate_limit.as_ref().map(|rl| RateLimit {
            enabled: rl.enabled,
            requests_per_ip: rl.requests_per_ip,
            window_size: r.dur(&rl.window_size, &format!("{path}.rate_limit.window_size")),
        }),
        connect_timeout: r.dur(&u.connect_timeout, &format!("{path}.connect_timeout")),
        response_timeout: r.dur(&u.response_timeout, &format!("{path}.response_timeout")),
    }
}
