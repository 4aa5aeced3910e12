//! Property tests: every valid config survives YAML and protobuf round trips
//! unchanged, and no input makes the reader panic.

mod common;

use common::config;
use isame_proto::config::*;
use isame_proto::convert::config_from_pb;
use isame_proto::pb;
use proptest::prelude::*;
use prost::Message;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn yaml_model_proto_model_is_identity(c in config()) {
        prop_assert_eq!(c.validate(), Ok(()));
        let yaml = c.to_yaml().expect("serializes");
        let from_yaml = Config::from_yaml(&yaml).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        prop_assert_eq!(&from_yaml, &c);
        let wire = pb::Config::from(&from_yaml).encode_to_vec();
        let decoded = pb::Config::decode(wire.as_slice()).expect("decodes");
        prop_assert_eq!(config_from_pb(&decoded), Ok(c));
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
fn proto_with_missing_sections_is_refused_with_paths() {
    let errs = config_from_pb(&pb::Config::default()).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"server"), "{paths:?}");
    assert!(paths.contains(&"health"), "{paths:?}");
}

#[test]
fn proto_is_validated_like_yaml() {
    let c = Config::from_yaml("upstreams:\n  - name: a\n    backends: [\"http://127.0.0.1:1\"]\n")
        .expect("valid");
    let mut wire = pb::Config::from(&c);
    wire.upstreams[0].backends[0].weight = 0;
    wire.upstreams[0].algorithm = 99;
    let errs = config_from_pb(&wire).unwrap_err();
    assert!(
        errs.iter().any(|e| e.path == "upstreams[0].algorithm"),
        "{errs}"
    );
    wire.upstreams[0].algorithm = pb::Algorithm::RoundRobin as i32;
    let errs = config_from_pb(&wire).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.path == "upstreams[0].backends[0].weight"),
        "{errs}"
    );
}
