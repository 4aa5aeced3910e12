//! A config written in the original Go plan's YAML shape loads unchanged,
//! and every default matches that plan.

use isame_proto::config::{Algorithm, Config};
use std::time::Duration;

mod common;

use common::SEED_SHAPED;

#[test]
fn seed_shaped_file_loads_with_its_values() {
    let c = Config::from_yaml(SEED_SHAPED).expect("seed-shaped config is valid");
    assert_eq!(c.version, "2.1.0");
    assert_eq!(c.service, "storefront-lb");
    assert_eq!(c.server.port, 8081);
    assert_eq!(c.server.https_port, 8444);
    assert_eq!(c.server.read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.write_timeout, Duration::from_secs(20));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(90));
    assert_eq!(c.server.max_header_bytes, 65536);
    assert_eq!(c.upstreams.len(), 2);
    assert_eq!(c.upstreams[0].algorithm, Algorithm::WeightedRoundRobin);
    assert_eq!(c.upstreams[0].backends[0].weight, 5);
    let rl = c.upstreams[0].rate_limit.as_ref().expect("rate limit");
    assert!(rl.enabled);
    assert_eq!(rl.requests_per_ip, 50);
    assert_eq!(rl.window_size, Duration::from_secs(30));
    assert_eq!(c.upstreams[1].algorithm, Algorithm::LeastConnections);
    assert!(c.upstreams[1].rate_limit.is_none());
    assert_eq!(c.health.path, "/healthz");
    assert_eq!(c.health.unhealthy_threshold, 4);
    assert_eq!(c.metrics.port, 9191);
    assert_eq!(c.metrics.path, "/prom");
    assert_eq!(c.circuit_breaker.failure_threshold, 7);
    assert_eq!(c.circuit_breaker.timeout, Duration::from_secs(45));
    assert_eq!(c.retry.max_attempts, 2);
    assert_eq!(c.retry.initial_backoff, Duration::from_millis(50));
    assert_eq!(c.tls.cipher_suites.len(), 2);
    assert!(c.routes.is_empty());
    assert_eq!(c.default_upstream().map(|u| u.name.as_str()), Some("web"));
}

#[test]
fn minimal_file_gets_the_plans_defaults() {
    let c = Config::from_yaml(
        "upstreams:\n  - name: app\n    backends:\n      - url: http://127.0.0.1:3000\n",
    )
    .expect("minimal config is valid");
    assert_eq!(c.server.port, 8080);
    assert_eq!(c.server.https_port, 8443);
    assert_eq!(c.server.read_timeout, Duration::from_secs(15));
    assert_eq!(c.server.write_timeout, Duration::from_secs(15));
    assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.max_header_bytes, 1 << 20);
    let u = &c.upstreams[0];
    assert_eq!(u.algorithm, Algorithm::RoundRobin);
    assert_eq!(u.backends[0].weight, 1);
    assert!(c.health.enabled);
    assert_eq!(c.health.interval, Duration::from_secs(30));
    assert_eq!(c.health.timeout, Duration::from_secs(5));
    assert_eq!(c.health.path, "/health");
    assert_eq!(c.health.unhealthy_threshold, 3);
    assert_eq!(c.health.healthy_threshold, 2);
    assert!(c.metrics.enabled);
    assert_eq!(c.metrics.port, 9090);
    assert_eq!(c.metrics.path, "/metrics");
    assert_eq!(c.metrics.address.to_string(), "127.0.0.1");
    assert!(c.circuit_breaker.enabled);
    assert_eq!(c.circuit_breaker.failure_threshold, 5);
    assert_eq!(c.circuit_breaker.timeout, Duration::from_secs(60));
    assert!(c.retry.enabled);
    assert_eq!(c.retry.max_attempts, 3);
    assert_eq!(c.retry.initial_backoff, Duration::from_millis(100));
    assert_eq!(c.retry.max_backoff, Duration::from_secs(2));
    assert!(!c.tls.enabled);
    assert_eq!(c.tls.min_version, "1.2");
}

#[test]
fn the_same_config_reads_from_json() {
    let yaml = Config::from_yaml(SEED_SHAPED).expect("valid");
    let json = serde_json::to_string(&yaml).expect("serializes");
    assert_eq!(Config::from_json(&json), Ok(yaml));
}
