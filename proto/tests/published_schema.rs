//! The published JSON Schema and the README's configuration reference are
//! made from the model, and checked in: these tests fail when either is
//! stale (`ISAME_BLESS=1 cargo test -p isame-proto --test published_schema`
//! rewrites both). A real JSON Schema validator holds the schema to what
//! the reader accepts: every valid config, every example, and the original
//! plan's file pass it; documents the reader refuses for their shape fail it.

mod common;

use isame_proto::config::schema::{self, reference};
use isame_proto::config::{yaml, Config};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bless() -> bool {
    std::env::var_os("ISAME_BLESS").is_some()
}

fn validator() -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema::document())
        .expect("the schema is a valid JSON Schema")
}

fn problems(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_checked_in_schema_is_current() {
    let path = root().join("schema/isame.schema.json");
    let want = schema::document_text();
    if bless() {
        std::fs::write(&path, &want).expect("write the schema");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "schema/isame.schema.json is stale: run `ISAME_BLESS=1 cargo test -p isame-proto --test published_schema`"
    );
}

#[test]
fn the_readme_reference_is_current() {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let (Some(begin), Some(end)) = (readme.find(reference::BEGIN), readme.find(reference::END))
    else {
        panic!("README.md has no generated reference between its markers");
    };
    let want = reference::markdown(schema::this_build());
    let have = &readme[begin..end + reference::END.len()];
    if bless() && have != want {
        let updated = format!(
            "{}{want}{}",
            &readme[..begin],
            &readme[end + reference::END.len()..]
        );
        std::fs::write(&path, updated).expect("write README.md");
        return;
    }
    assert!(
        have == want,
        "README.md's configuration reference is stale: run `ISAME_BLESS=1 cargo test -p isame-proto --test published_schema`"
    );
}

#[test]
fn examples_and_the_original_plans_file_pass_the_schema_and_the_reader() {
    let v = validator();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        assert!(
            text.contains("# yaml-language-server: $schema="),
            "{} names its schema for editors",
            f.display()
        );
        let doc = yaml::parse(&text).unwrap_or_else(|e| panic!("{}: {e:?}", f.display()));
        assert_eq!(problems(&v, &doc), Vec::<String>::new(), "{}", f.display());
        Config::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    let seed = yaml::parse(common::SEED_SHAPED).expect("parses");
    assert_eq!(problems(&v, &seed), Vec::<String>::new());
}

#[test]
fn shapes_the_reader_refuses_the_schema_refuses() {
    let v = validator();
    let base = json!({"upstreams": [{"name": "a", "backends": ["http://127.0.0.1:1"]}]});
    assert!(v.is_valid(&base));
    let bad: &[(&str, Value)] = &[
        ("/colour", json!("blue")),
        ("/server", json!({"port": 0})),
        ("/server", json!({"port": "80"})),
        ("/server", json!({"read_timeout": 30})),
        ("/server", json!({"read_timeout": "30 seconds"})),
        ("/health", json!({"expected_statuses": [true]})),
        (
            "/routes",
            json!([{"name": "r", "upstream": "a", "middleware": [{"strip_prefix": "/a", "redirect": {"to": "/"}}]}]),
        ),
        // (A route with neither `upstream` nor `split` breaks a rule the
        // schema does not state: the reader says so as a rule.)
        ("/routes", json!([{"name": "r", "split": [{"weight": 1}]}])),
        ("/tls", json!({"min_version": "1.1"})),
    ];
    for (at, value) in bad {
        let mut doc = base.clone();
        doc[&at[1..]] = value.clone();
        assert!(!v.is_valid(&doc), "the schema accepts {doc}");
        assert!(
            Config::from_value(&doc).is_err(),
            "the reader accepts {doc}"
        );
    }
    let mut weight = base.clone();
    weight["upstreams"][0]["backends"][0] = json!({"url": "http://127.0.0.1:1", "weight": 1001});
    assert!(!v.is_valid(&weight));
    // What the reader reads leniently, the schema allows too.
    for (at, value) in [
        ("/version", json!(1.5)),
        ("/server", Value::Null),
        (
            "/health",
            json!({"expected_statuses": "2xx", "interval": " 1m30s "}),
        ),
        ("/tls", json!({"min_version": 1.3})),
    ] {
        let mut doc = base.clone();
        doc[&at[1..]] = value;
        assert_eq!(problems(&v, &doc), Vec::<String>::new(), "{doc}");
        Config::from_value(&doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
    }
}

#[test]
fn field_paths_name_what_a_config_uses() {
    let fields = schema::fields();
    for f in [
        "upstreams",
        "upstreams[].backends[].weight",
        "upstreams[].health.interval",
        "routes[].middleware[].redirect.status",
        "routes[].headers",
        "tls.certificates[].cert_file",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }
    let c = Config::from_yaml(
        "upstreams:\n  - name: a\n    backends: [{url: \"http://127.0.0.1:1\", drain: true}]\nroutes:\n  - name: r\n    upstream: a\n    headers: {X-A: b}\n",
    )
    .expect("valid");
    let used = schema::paths::used(
        schema::this_build(),
        &serde_json::to_value(&c).expect("json"),
    );
    assert!(used.contains("upstreams[].backends[].drain"), "{used:?}");
    assert!(used.contains("routes[].headers"), "{used:?}");
    assert!(
        !used.iter().any(|p| p.contains("X-A")),
        "header names are data: {used:?}"
    );
    assert!(used.iter().all(|p| fields.contains(p)), "{used:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// No valid config is refused by the schema, in its canonical form or
    /// as YAML writes it.
    #[test]
    fn every_valid_config_passes_the_schema(c in common::config()) {
        let v = validator();
        let json = serde_json::to_value(&c).expect("json");
        let found = problems(&v, &json);
        prop_assert!(found.is_empty(), "{found:?}\n{json}");
        let yaml_text = c.to_yaml().expect("yaml");
        let from_yaml = yaml::parse(&yaml_text).expect("parses");
        let found = problems(&v, &from_yaml);
        prop_assert!(found.is_empty(), "{found:?}\n{yaml_text}");
    }
}

proptest! {
    /// The schema's name pattern is the reader's name rule.
    #[test]
    fn the_name_pattern_is_the_name_rule(name in "[ -~]{0,3}|[A-Za-z0-9_.-]{0,130}") {
        let pattern = regex::Regex::new(isame_proto::config::NAME_PATTERN).expect("regex");
        prop_assert_eq!(
            pattern.is_match(&name),
            isame_proto::config::check_name(&name).is_ok(),
            "{:?}", name
        );
    }
}

/// The fields the canonical JSON writes even at their defaults (the model
/// as it was before fields were added with the rule below).
const WRITTEN_AT_DEFAULT: &[&str] = &[
    "circuit_breaker",
    "circuit_breaker.enabled",
    "circuit_breaker.failure_threshold",
    "circuit_breaker.half_open_requests",
    "circuit_breaker.timeout",
    "health",
    "health.enabled",
    "health.expected_statuses",
    "health.healthy_threshold",
    "health.interval",
    "health.path",
    "health.timeout",
    "health.unhealthy_threshold",
    "metrics",
    "metrics.address",
    "metrics.enabled",
    "metrics.path",
    "metrics.port",
    "retry",
    "retry.budget_min_per_second",
    "retry.budget_percent",
    "retry.enabled",
    "retry.initial_backoff",
    "retry.max_attempts",
    "retry.max_backoff",
    "retry.max_body_bytes",
    "server",
    "server.address",
    "server.https_port",
    "server.idle_timeout",
    "server.max_header_bytes",
    "server.port",
    "server.read_timeout",
    "server.shutdown_timeout",
    "server.write_timeout",
    "service",
    "tls",
    "tls.cert_file",
    "tls.enabled",
    "tls.key_file",
    "tls.min_version",
    "tls.redirect_http",
    "upstreams",
    "upstreams[].algorithm",
    "upstreams[].backends",
    "upstreams[].backends[].url",
    "upstreams[].backends[].weight",
    "upstreams[].connect_timeout",
    "upstreams[].name",
    "upstreams[].response_timeout",
    "version",
];

/// A field added to the model is left out of the canonical JSON while it
/// holds its default (`skip_serializing_if`): otherwise every config would
/// use it, and nodes that predate it could read none (docs/distribution.md).
#[test]
fn fields_added_to_the_model_are_left_out_at_their_default() {
    let c = Config::from_yaml("upstreams: [{name: a, backends: [\"http://127.0.0.1:1\"]}]\n")
        .expect("valid");
    let used = schema::paths::used(
        schema::this_build(),
        &serde_json::to_value(&c).expect("json"),
    );
    let new: Vec<&String> = used
        .iter()
        .filter(|p| !WRITTEN_AT_DEFAULT.contains(&p.as_str()))
        .collect();
    assert!(
        new.is_empty(),
        "written at their default, so older nodes would refuse every config: {new:?}"
    );
}
