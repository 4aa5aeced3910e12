//! Property tests: every valid config survives the YAML and canonical JSON
//! round trips unchanged, and no input makes the reader panic.

mod common;

use common::config;
use isame_proto::config::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn yaml_and_canonical_json_read_back_the_same(c in config()) {
        prop_assert_eq!(c.validate(), Ok(()));
        let yaml = c.to_yaml().expect("serializes");
        let from_yaml = Config::from_yaml(&yaml).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        prop_assert_eq!(&from_yaml, &c);
        let json = serde_json::to_string(&from_yaml).expect("serializes");
        prop_assert_eq!(Config::from_json(&json), Ok(c));
    }

    #[test]
    fn reader_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = Config::from_yaml(&text);
        let _ = Config::from_json(&text);
    }

    #[test]
    fn reader_never_panics_on_shuffled_fields(
        key in prop::sample::select(vec!["server", "upstreams", "routes", "health", "tls", "retry", "metrics", "trusted_proxies"]),
        value in prop_oneof![
            Just(serde_json::json!(null)), Just(serde_json::json!(-1)), Just(serde_json::json!("x")),
            Just(serde_json::json!([{"name": 1, "backends": [{"url": 2}]}])), Just(serde_json::json!({"port": [1]})),
            Just(serde_json::json!(1e300)), Just(serde_json::json!({"enabled": "yes"})),
        ],
    ) {
        let mut doc = serde_json::json!({"upstreams": [{"name": "a", "backends": ["http://127.0.0.1:1"]}]});
        doc[key] = value;
        let _ = Config::from_value(&doc);
    }
}

#[test]
fn an_unknown_field_anywhere_is_named_with_its_path() {
    let doc = serde_json::json!({
        "upstreams": [{"name": "a", "backends": [{"url": "http://127.0.0.1:1", "priority": 2}]}],
        "routes": [{"name": "r", "upstream": "a", "middleware": [{"redirect": {"to": "/x", "code": 301}}]}],
    });
    let errs = Config::from_value(&doc).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "upstreams[0].backends[0].priority",
            "routes[0].middleware[0].redirect.code"
        ],
        "{errs}"
    );
    assert!(
        errs.0[0]
            .message
            .contains("expected one of: url, weight, drain"),
        "{errs}"
    );
}

#[test]
fn bounds_declared_on_a_field_are_enforced_with_its_path() {
    let doc = serde_json::json!({
        "server": {"port": 0, "max_header_bytes": 10},
        "upstreams": [{"name": "a", "backends": [{"url": "http://127.0.0.1:1", "weight": 1001}],
                       "rate_limit": {"requests_per_ip": 1, "ipv6_prefix": 129}}],
    });
    let errs = Config::from_value(&doc).unwrap_err();
    let found: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        [
            "server.port: must be between 1 and 65535, found 0",
            "server.max_header_bytes: must be between 1024 and 67108864, found 10",
            "upstreams[0].backends[0].weight: must be between 1 and 1000, found 1001",
            "upstreams[0].rate_limit.ipv6_prefix: must be between 1 and 128, found 129",
        ]
    );
}

#[test]
fn an_upstream_section_inherits_the_fields_it_leaves_out() {
    let c = Config::from_yaml(
        "health: {interval: 7s, path: /ping}\nretry: {max_attempts: 5}\nupstreams:\n  - name: a\n    backends: [\"http://127.0.0.1:1\"]\n    health: {path: /ready}\n    retry: {}\n",
    )
    .expect("valid");
    let h = c.upstreams[0].health.as_ref().expect("own health");
    assert_eq!((h.interval.as_secs(), h.path.as_str()), (7, "/ready"));
    assert_eq!(
        c.upstreams[0].retry.as_ref().map(|r| r.max_attempts),
        Some(5)
    );
}

#[test]
fn an_unreadable_trusted_proxy_never_widens_trust() {
    let doc = serde_json::json!({
        "upstreams": [{"name": "a", "backends": ["http://127.0.0.1:1"]}],
        "trusted_proxies": ["10.0.0.0/8", 7, "bogus"],
    });
    let (c, problems) = Config::from_value_lenient(&doc);
    let paths: Vec<&str> = problems.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["trusted_proxies[1]", "trusted_proxies[2]"],
        "{problems}"
    );
    let shown: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["10.0.0.0/8", "0.0.0.0/32", "0.0.0.0/32"]);
}

#[test]
fn a_rule_under_an_unreadable_field_is_not_repeated() {
    let doc = serde_json::json!({
        "upstreams": [{"name": "a", "backends": ["http://127.0.0.1:1"]}],
        "tls": {"cipher_suites": [0, "TLS_AES_128_GCM_SHA256", 1]},
    });
    let errs = Config::from_value(&doc).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["tls.cipher_suites[0]", "tls.cipher_suites[2]"],
        "{errs}"
    );
}
