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

fn health_to_pb(h: &Health) -> pb::Health {
    pb::Health {
        enabled: h.enabled,
        interval: dur(h.interval),
        timeout: dur(h.timeout),
        path: h.path.clone(),
        unhealthy_threshold: h.unhealthy_threshold,
        healthy_threshold: h.healthy_threshold,
        expected_statuses: h.expected_statuses.clone(),
    }
}

fn breaker_to_pb(b: &CircuitBreaker) -> pb::CircuitBreaker {
    pb::CircuitBreaker {
        enabled: b.enabled,
        failure_threshold: b.failure_threshold,
        timeout: dur(b.timeout),
        half_open_requests: b.half_open_requests,
    }
}

fn retry_to_pb(r: &Retry) -> pb::Retry {
    pb::Retry {
        enabled: r.enabled,
        max_attempts: r.max_attempts,
        initial_backoff: dur(r.initial_backoff),
        max_backoff: dur(r.max_backoff),
        budget_percent: r.budget_percent,
        budget_min_per_second: r.budget_min_per_second,
        max_body_bytes: r.max_body_bytes,
    }
}

fn rate_limit_to_pb(r: &RateLimit) -> pb::RateLimit {
    pb::RateLimit {
        enabled: r.enabled,
        requests_per_ip: r.requests_per_ip,
        window_size: dur(r.window_size),
        ipv6_prefix: (r.ipv6_prefix != crate::config::DEFAULT_IPV6_PREFIX)
            .then_some(u32::from(r.ipv6_prefix)),
    }
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
                    rate_limit: r.rate_limit.as_ref().map(rate_limit_to_pb),
                    middleware: r.middleware.iter().map(middleware_to_pb).collect(),
                })
                .collect(),
            trusted_proxies: c.trusted_proxies.iter().map(|n| n.to_string()).collect(),
            health: Some(health_to_pb(&c.health)),
            metrics: Some(pb::Metrics {
                enabled: c.metrics.enabled,
                address: c.metrics.address.to_string(),
                port: c.metrics.port.into(),
                path: c.metrics.path.clone(),
            }),
            circuit_breaker: Some(breaker_to_pb(&c.circuit_breaker)),
            retry: Some(retry_to_pb(&c.retry)),
            tls: Some(pb::Tls {
                enabled: c.tls.enabled,
                certificate: c.tls.certificate.clone(),
                cert_file: c.tls.cert_file.clone(),
                key_file: c.tls.key_file.clone(),
                min_version: c.tls.min_version.clone(),
                cipher_suites: c.tls.cipher_suites.clone(),
                certificates: c
                    .tls
                    .certificates
                    .iter()
                    .map(|k| pb::Certificate {
                        certificate: k.certificate.clone(),
                        cert_file: k.cert_file.clone(),
                        key_file: k.key_file.clone(),
                    })
                    .collect(),
                redirect_http: c.tls.redirect_http,
            }),
        }
    }
}

fn middleware_to_pb(m: &Middleware) -> pb::Middleware {
    use pb::middleware::Kind;
    let edits = |e: &HeaderEdits| pb::HeaderEdits {
        set: e.set.iter().map(field_to_pb).collect(),
        add: e.add.iter().map(field_to_pb).collect(),
        remove: e.remove.clone(),
    };
    pb::Middleware {
        kind: Some(match m {
            Middleware::StripPrefix(prefix) => Kind::StripPrefix(prefix.clone()),
            Middleware::RewritePath(r) => Kind::RewritePath(pb::RewritePath {
                from: r.from.clone(),
                to: r.to.clone(),
            }),
            Middleware::RequestHeaders(e) => Kind::RequestHeaders(edits(e)),
            Middleware::ResponseHeaders(e) => Kind::ResponseHeaders(edits(e)),
            Middleware::Redirect(r) => Kind::Redirect(pb::Redirect {
                to: r.to.clone(),
                status: r.status.into(),
            }),
        }),
    }
}

fn field_to_pb(f: &HeaderField) -> pb::HeaderMatch {
    pb::HeaderMatch {
        name: f.name.clone(),
        value: f.value.clone(),
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
                drain: b.drain,
            })
            .collect(),
        rate_limit: u.rate_limit.as_ref().map(rate_limit_to_pb),
        connect_timeout: dur(u.connect_timeout),
        response_timeout: dur(u.response_timeout),
        health: u.health.as_ref().map(health_to_pb),
        circuit_breaker: u.circuit_breaker.as_ref().map(breaker_to_pb),
        retry: u.retry.as_ref().map(retry_to_pb),
        tls: u.tls.as_ref().map(|t| pb::UpstreamTls {
            ca_file: t.ca_file.clone(),
            server_name: t.server_name.clone(),
        }),
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

    fn health(&mut self, h: &pb::Health, path: &str) -> Health {
        Health {
            enabled: h.enabled,
            interval: self.dur(&h.interval, &format!("{path}.interval")),
            timeout: self.dur(&h.timeout, &format!("{path}.timeout")),
            path: h.path.clone(),
            unhealthy_threshold: h.unhealthy_threshold,
            healthy_threshold: h.healthy_threshold,
            expected_statuses: h.expected_statuses.clone(),
        }
    }

    fn breaker(&mut self, b: &pb::CircuitBreaker, path: &str) -> CircuitBreaker {
        CircuitBreaker {
            enabled: b.enabled,
            failure_threshold: b.failure_threshold,
            timeout: self.dur(&b.timeout, &format!("{path}.timeout")),
            half_open_requests: b.half_open_requests,
        }
    }

    fn retry(&mut self, r: &pb::Retry, path: &str) -> Retry {
        Retry {
            enabled: r.enabled,
            max_attempts: r.max_attempts,
            initial_backoff: self.dur(&r.initial_backoff, &format!("{path}.initial_backoff")),
            max_backoff: self.dur(&r.max_backoff, &format!("{path}.max_backoff")),
            budget_percent: r.budget_percent,
            budget_min_per_second: r.budget_min_per_second,
            max_body_bytes: r.max_body_bytes,
        }
    }

    /// A middleware; one without a kind (or from a newer sender, with a
    /// kind this build does not know) is refused rather than skipped.
    fn middleware(&mut self, m: &pb::Middleware, path: &str) -> Option<Middleware> {
        use pb::middleware::Kind;
        let edits = |e: &pb::HeaderEdits| HeaderEdits {
            set: e.set.iter().map(field_from_pb).collect(),
            add: e.add.iter().map(field_from_pb).collect(),
            remove: e.remove.clone(),
        };
        Some(match m.kind.as_ref() {
            Some(Kind::StripPrefix(prefix)) => Middleware::StripPrefix(prefix.clone()),
            Some(Kind::RewritePath(r)) => Middleware::RewritePath(RewritePath {
                from: r.from.clone(),
                to: r.to.clone(),
            }),
            Some(Kind::RequestHeaders(e)) => Middleware::RequestHeaders(edits(e)),
            Some(Kind::ResponseHeaders(e)) => Middleware::ResponseHeaders(edits(e)),
            Some(Kind::Redirect(r)) => Middleware::Redirect(Redirect {
                to: r.to.clone(),
                status: u16::try_from(r.status).unwrap_or_else(|_| {
                    self.fail(&format!("{path}.redirect.status"), "not a redirect status");
                    0
                }),
            }),
            None => {
                self.fail(
                    path,
                    format!(
                        "missing or unknown kind; expected one of: {}",
                        Middleware::NAMES.join(", ")
                    ),
                );
                return None;
            }
        })
    }

    fn rate_limit(&mut self, r: &pb::RateLimit, path: &str) -> RateLimit {
        RateLimit {
            enabled: r.enabled,
            requests_per_ip: r.requests_per_ip,
            window_size: self.dur(&r.window_size, &format!("{path}.window_size")),
            // Out of range is caught by validation, which runs next.
            ipv6_prefix: r
                .ipv6_prefix
                .map_or(crate::config::DEFAULT_IPV6_PREFIX, |n| {
                    u8::try_from(n).unwrap_or(0)
                }),
        }
    }
}

/// Reads a protobuf config into the model and validates it.
pub fn config_from_pb(c: &pb::Config) -> Result<Config, ConfigErrors> {
    let mut r = Reader {
        problems: Vec::new(),
    };
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
        None => Server::default(),
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
        .enumerate()
        .map(|(i, rt)| Route {
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
            rate_limit: rt
                .rate_limit
                .as_ref()
                .map(|l| r.rate_limit(l, &format!("routes[{i}].rate_limit"))),
            middleware: rt
                .middleware
                .iter()
                .enumerate()
                .filter_map(|(j, m)| r.middleware(m, &format!("routes[{i}].middleware[{j}]")))
                .collect(),
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
        Some(h) => r.health(h, "health"),
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
        Some(b) => r.breaker(b, "circuit_breaker"),
        None => CircuitBreaker::default(),
    };
    let retry = match r.msg(&c.retry, "retry") {
        Some(x) => r.retry(x, "retry"),
        None => Retry::default(),
    };
    let tls = match r.msg(&c.tls, "tls") {
        Some(t) => Tls {
            enabled: t.enabled,
            certificate: t.certificate.clone(),
            cert_file: t.cert_file.clone(),
            key_file: t.key_file.clone(),
            min_version: t.min_version.clone(),
            cipher_suites: t.cipher_suites.clone(),
            certificates: t
                .certificates
                .iter()
                .map(|k| Certificate {
                    certificate: k.certificate.clone(),
                    cert_file: k.cert_file.clone(),
                    key_file: k.key_file.clone(),
                })
                .collect(),
            redirect_http: t.redirect_http,
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

fn field_from_pb(h: &pb::HeaderMatch) -> HeaderField {
    HeaderField {
        name: h.name.clone(),
        value: h.value.clone(),
    }
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
                drain: b.drain,
            })
            .collect(),
        rate_limit: u
            .rate_limit
            .as_ref()
            .map(|l| r.rate_limit(l, &format!("{path}.rate_limit"))),
        connect_timeout: r.dur(&u.connect_timeout, &format!("{path}.connect_timeout")),
        response_timeout: r.dur(&u.response_timeout, &format!("{path}.response_timeout")),
        health: u
            .health
            .as_ref()
            .map(|h| r.health(h, &format!("{path}.health"))),
        circuit_breaker: u
            .circuit_breaker
            .as_ref()
            .map(|b| r.breaker(b, &format!("{path}.circuit_breaker"))),
        retry: u
            .retry
            .as_ref()
            .map(|x| r.retry(x, &format!("{path}.retry"))),
        tls: u.tls.as_ref().map(|t| UpstreamTls {
            ca_file: t.ca_file.clone(),
            server_name: t.server_name.clone(),
        }),
    }
}
