//! Every validation rule, checked by a config that breaks it. Each case names
//! the path and a fragment of the message the user must see.

use isame_proto::config::{Config, ConfigErrors, ProblemKind, RetryOn, IDEMPOTENT_METHODS};

/// A valid config; cases patch it by replacing text.
const BASE: &str = r#"
server:
  port: 8080
upstreams:
  - name: web
    backends:
      - url: http://127.0.0.1:3000
      - url: http://127.0.0.1:3001
        weight: 2
routes:
  - name: all
    path_prefix: /
    upstream: web
"#;

fn errors_of(yaml: &str) -> ConfigErrors {
    match Config::from_yaml(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_problem(yaml: &str, path: &str, fragment: &str) {
    let errs = errors_of(yaml);
    assert!(
        errs.iter()
            .any(|e| e.path == path && e.message.contains(fragment)),
        "expected `{path}: …{fragment}…` in:\n{errs}\nfor:\n{yaml}"
    );
}

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[test]
fn base_is_valid() {
    Config::from_yaml(BASE).expect("base config is valid");
}

#[test]
fn syntax_errors_are_reported() {
    assert_problem("upstreams: [", "", "invalid YAML");
    assert!(Config::from_json("{").unwrap_err().0[0]
        .message
        .contains("invalid JSON"));
}

#[test]
fn unknown_fields_are_named_at_every_level() {
    assert_problem(&with("colour: blue\n"), "colour", "unknown field `colour`");
    assert_problem(
        &BASE.replace("  port: 8080", "  port: 8080\n  prot: 1"),
        "server.prot",
        "unknown field `prot`",
    );
    assert_problem(
        &BASE.replace("weight: 2", "weight: 2\n        wieght: 3"),
        "upstreams[0].backends[1].wieght",
        "expected one of: url, weight",
    );
}

#[test]
fn type_errors_name_the_field() {
    assert_problem(
        &BASE.replace("port: 8080", "port: eighty"),
        "server.port",
        "whole number",
    );
    assert_problem(
        &BASE.replace("port: 8080", "port: 70000"),
        "server.port",
        "0 to 65535",
    );
    assert_problem(
        &with("health:\n  interval: 30\n"),
        "health.interval",
        "need a unit",
    );
    assert_problem(
        &with("health:\n  interval: 5 parsecs\n"),
        "health.interval",
        "invalid duration",
    );
    assert_problem(
        &with("health:\n  enabled: maybe\n"),
        "health.enabled",
        "true or false",
    );
    assert_problem(
        &with("server: 5\n").replace("server:\n  port: 8080\n", ""),
        "server",
        "expected a mapping",
    );
    assert_problem(&BASE.replace("backends:\n      - url: http://127.0.0.1:3000\n      - url: http://127.0.0.1:3001\n        weight: 2", "backends: 3"), "upstreams[0].backends", "expected a list");
    assert_problem(
        &with("trusted_proxies: [\"10.0.0.0/33\"]\n"),
        "trusted_proxies[0]",
        "not a CIDR",
    );
    assert_problem(
        &with("metrics:\n  address: localhost\n"),
        "metrics.address",
        "not an IP address",
    );
}

#[test]
fn whole_numbers_written_with_a_zero_fraction_are_whole() {
    // JSON Schema's `integer` accepts 2.0, and so does the reader.
    let c = Config::from_yaml(&BASE.replace("weight: 2", "weight: 2.0")).expect("2.0 is whole");
    assert_eq!(c.upstreams[0].backends[1].weight, 2);
    assert_problem(
        &BASE.replace("weight: 2", "weight: 2.5"),
        "upstreams[0].backends[1].weight",
        "whole number",
    );
    assert_problem(
        &BASE.replace("weight: 2", "weight: -2.0"),
        "upstreams[0].backends[1].weight",
        "whole number",
    );
}

#[test]
fn problems_say_whether_the_schema_states_their_rule() {
    let kind_at = |yaml: &str, path: &str| {
        errors_of(yaml)
            .iter()
            .find(|e| e.path == path)
            .map(|e| e.kind)
            .unwrap_or_else(|| panic!("no problem at {path}"))
    };
    // Shape: a type, a malformed duration, an unknown field.
    assert_eq!(
        kind_at(&BASE.replace("port: 8080", "port: eighty"), "server.port"),
        ProblemKind::Schema
    );
    assert_eq!(
        kind_at(&with("health:\n  interval: 5 parsecs\n"), "health.interval"),
        ProblemKind::Schema
    );
    assert_eq!(
        kind_at(&with("colour: blue\n"), "colour"),
        ProblemKind::Schema
    );
    assert_eq!(
        kind_at(
            &with("trusted_proxies: [\"10.0.0.0/33\"]\n"),
            "trusted_proxies[0]"
        ),
        ProblemKind::Schema
    );
    // Shaped like an IPv6 CIDR (the schema's pattern) but not one.
    assert_eq!(
        kind_at(
            &with("trusted_proxies: [\"1:2:3/64\"]\n"),
            "trusted_proxies[0]"
        ),
        ProblemKind::Rule
    );
    // Beyond the schema: a well-written duration too large for 64 bits of
    // nanoseconds, and a route naming an upstream that does not exist.
    assert_eq!(
        kind_at(
            &with("health:\n  interval: 99999999999h\n"),
            "health.interval"
        ),
        ProblemKind::Rule
    );
    assert_eq!(
        kind_at(
            &BASE.replace("upstream: web", "upstream: nope"),
            "routes[0].upstream"
        ),
        ProblemKind::Rule
    );
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let yaml = r#"
server:
  port: 0
  read_timeout: 0s
upstreams:
  - name: "bad name!"
    algorithm: fastest
    backends:
      - url: ftp://x
        weight: 0
  - name: ok
    backends: []
routes:
  - name: r
    upstream: missing
retry:
  max_attempts: 50
extra: 1
"#;
    let errs = errors_of(yaml);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "server.port",
        "server.read_timeout",
        "upstreams[0].name",
        "upstreams[0].algorithm",
        "upstreams[0].backends[0].url",
        "upstreams[0].backends[0].weight",
        "upstreams[1].backends",
        "routes[0].upstream",
        "retry.max_attempts",
        "extra",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
}

#[test]
fn an_unreadable_field_is_reported_once() {
    let errs = errors_of(&BASE.replace("port: 8080", "port: nope"));
    assert_eq!(errs.len(), 1, "{errs}");
}

#[test]
fn server_rules() {
    assert_problem(
        &BASE.replace("port: 8080", "port: 0"),
        "server.port",
        "between 1 and 65535",
    );
    assert_problem(
        &BASE.replace("port: 8080", "port: 8080\n  https_port: 0"),
        "server.https_port",
        "between 1 and 65535",
    );
    for field in ["read_timeout", "write_timeout", "idle_timeout"] {
        assert_problem(
            &BASE.replace("port: 8080", &format!("port: 8080\n  {field}: 0s")),
            &format!("server.{field}"),
            "longer than 0s",
        );
    }
    assert_problem(
        &BASE.replace("port: 8080", "port: 8080\n  max_header_bytes: 10"),
        "server.max_header_bytes",
        "between 1024",
    );
    assert_problem(
        &with("tls:\n  enabled: true\n  cert_file: a\n  key_file: b\n")
            .replace("port: 8080", "port: 8080\n  https_port: 8080"),
        "server.https_port",
        "must differ",
    );
}

#[test]
fn upstream_rules() {
    assert_problem("upstreams: []\n", "upstreams", "at least one upstream");
    assert_problem("{}", "upstreams", "required field is missing");
    assert_problem(
        &BASE.replace("name: web", "name: \"\""),
        "upstreams[0].name",
        "must not be empty",
    );
    assert_problem(
        &BASE.replace("- name: web", "- algorithm: round_robin"),
        "upstreams[0].name",
        "required field is missing",
    );
    // A key given twice is an error, not a silent "last one wins".
    assert_problem(
        &BASE.replace("- name: web", "- name: web\n    name: api"),
        "",
        "duplicate entry with key \"name\"",
    );
    assert_problem(
        &BASE.replace("name: web", "name: \"we b\""),
        "upstreams[0].name",
        "may only contain",
    );
    assert_problem(
        &BASE.replace("name: web", &format!("name: {}", "a".repeat(129))),
        "upstreams[0].name",
        "at most 128",
    );
    let dup = BASE.replace(
        "routes:",
        "  - name: web\n    backends:\n      - url: http://127.0.0.1:4000\nroutes:",
    );
    assert_problem(&dup, "upstreams[1].name", "duplicate upstream name");
    assert_problem(
        &BASE.replace("name: web", "name: web\n    connect_timeout: 0s"),
        "upstreams[0].connect_timeout",
        "longer than 0s",
    );
    assert_problem(
        &BASE.replace("name: web", "name: web\n    response_timeout: 0s"),
        "upstreams[0].response_timeout",
        "longer than 0s",
    );
    assert_problem(
        &BASE.replace("name: web", "name: web\n    algorithm: random"),
        "upstreams[0].algorithm",
        "unknown algorithm",
    );
}

#[test]
fn backend_rules() {
    let url = |u: &str| BASE.replace("http://127.0.0.1:3000", u);
    assert_problem(
        &url("ftp://127.0.0.1"),
        "upstreams[0].backends[0].url",
        "scheme must be http, https or h2c",
    );
    assert_problem(
        &url("not a url"),
        "upstreams[0].backends[0].url",
        "not a valid URL",
    );
    assert_problem(
        &url("\"\""),
        "upstreams[0].backends[0].url",
        "must not be empty",
    );
    assert_problem(
        &url("http://127.0.0.1:3000/base"),
        "upstreams[0].backends[0].url",
        "without a path",
    );
    assert_problem(
        &url("http://127.0.0.1:3000/?q=1"),
        "upstreams[0].backends[0].url",
        "without a path",
    );
    assert_problem(
        &url("http://user:pw@127.0.0.1:3000"),
        "upstreams[0].backends[0].url",
        "credentials",
    );
    assert_problem(
        &url("http://127.0.0.1:3001"),
        "upstreams[0].backends[1].url",
        "duplicate backend",
    );
    assert_problem(
        &BASE.replace("weight: 2", "weight: 0"),
        "upstreams[0].backends[1].weight",
        "between 1 and 1000",
    );
    assert_problem(
        &BASE.replace("weight: 2", "weight: 1001"),
        "upstreams[0].backends[1].weight",
        "between 1 and 1000",
    );
    assert_problem(
        &BASE.replace(
            "      - url: http://127.0.0.1:3000\n",
            "      - weight: 1\n",
        ),
        "upstreams[0].backends[0].url",
        "required",
    );
    // A bare string is shorthand for {url: ...}.
    let short = BASE.replace("- url: http://127.0.0.1:3000", "- http://127.0.0.1:3000");
    assert_eq!(
        Config::from_yaml(&short).expect("valid").upstreams[0].backends[0].weight,
        1
    );
}

#[test]
fn rate_limit_rules() {
    let rl = |body: &str| BASE.replace("name: web", &format!("name: web\n    rate_limit:\n{body}"));
    assert_problem(
        &rl("      enabled: true\n      requests_per_ip: 0\n"),
        "upstreams[0].rate_limit.requests_per_ip",
        "at least 1",
    );
    assert_problem(
        &rl("      enabled: true\n      requests_per_ip: 5\n      window_size: 0s\n"),
        "upstreams[0].rate_limit.window_size",
        "longer than 0s",
    );
    assert_problem(
        &rl("      enabled: true\n"),
        "upstreams[0].rate_limit.requests_per_ip",
        "required",
    );
    for bad in ["0", "129"] {
        assert_problem(
            &rl(&format!(
                "      requests_per_ip: 5\n      ipv6_prefix: {bad}\n"
            )),
            "upstreams[0].rate_limit.ipv6_prefix",
            "must be between 1 and 128",
        );
    }
    assert_problem(
        &rl("      requests_per_ip: 5\n      ipv6_prefix: 300\n"),
        "upstreams[0].rate_limit.ipv6_prefix",
        "from 0 to 255",
    );
    let c = Config::from_yaml(&rl("      requests_per_ip: 5\n")).expect("valid");
    let limit = c.upstreams[0].rate_limit.as_ref().expect("a limit");
    assert_eq!(limit.ipv6_prefix, 64, "clients are /64 networks by default");
    let c = Config::from_yaml(&rl("      requests_per_ip: 5\n      ipv6_prefix: 128\n"))
        .expect("valid");
    assert_eq!(
        c.upstreams[0].rate_limit.as_ref().map(|l| l.ipv6_prefix),
        Some(128)
    );
}

#[test]
fn names_are_usable_as_path_segments() {
    // `.` and `..` are resolved away by URL-normalising clients; a leading
    // `-` reads as an option on a command line.
    for bad in [".", "..", ".hidden", "-web"] {
        assert_problem(
            &BASE.replace("name: web", &format!("name: \"{bad}\"")),
            "upstreams[0].name",
            "must start with a letter, a digit or '_'",
        );
        assert_problem(
            &BASE.replace("name: all", &format!("name: \"{bad}\"")),
            "routes[0].name",
            "must start with a letter, a digit or '_'",
        );
    }
    for good in ["web", "Web-2", "api.v1", "9lives", "a_b.c-d", "_internal"] {
        let yaml = BASE
            .replace("name: web", &format!("name: {good}"))
            .replace("upstream: web", &format!("upstream: {good}"));
        Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    assert!(isame_proto::config::check_node_id("..").is_err());
    assert!(isame_proto::config::check_node_id("dp-1.example:8080").is_ok());
}

#[test]
fn route_rules() {
    let route = |body: &str| BASE.replace("    path_prefix: /\n", body);
    assert_problem(
        &route("    path_prefix: api\n"),
        "routes[0].path_prefix",
        "must start with '/'",
    );
    assert_problem(
        &route("    path_prefix: /a b\n"),
        "routes[0].path_prefix",
        "plain path",
    );
    assert_problem(
        &route("    host: \"api.example.com:80\"\n"),
        "routes[0].host",
        "not a host name",
    );
    assert_problem(
        &route("    host: \"-bad-.com\"\n"),
        "routes[0].host",
        "not a host name",
    );
    assert_problem(
        &route("    headers:\n      \"bad header\": x\n"),
        "routes[0].headers.bad header",
        "not a valid header name",
    );
    assert_problem(
        &route("    headers:\n      X-A: x\n      x-a: y\n"),
        "routes[0].headers.x-a",
        "duplicate header",
    );
    assert_problem(
        &route("    headers:\n      X-A: \"\\u0001\"\n"),
        "routes[0].headers.X-A",
        "visible ASCII",
    );
    assert_problem(
        &route("    headers: [1]\n"),
        "routes[0].headers",
        "mapping of name to value",
    );
    assert_problem(
        &BASE.replace("upstream: web", "upstream: nowhere"),
        "routes[0].upstream",
        "no upstream is named",
    );
    assert_problem(
        &BASE.replace("    upstream: web\n", ""),
        "routes[0].upstream",
        "required",
    );
    assert_problem(
        &BASE.replace(
            "  - name: all\n",
            "  - name: all\n    path_prefix: /x\n    upstream: web\n  - name: all\n",
        ),
        "routes[1].name",
        "duplicate route name",
    );
    // Wildcards and header matches are fine.
    Config::from_yaml(&route(
        "    host: \"*.example.com\"\n    headers:\n      X-Env: canary\n",
    ))
    .expect("valid");
}

#[test]
fn health_rules() {
    let h = |body: &str| with(&format!("health:\n{body}"));
    assert_problem(&h("  interval: 0s\n"), "health.interval", "longer than 0s");
    assert_problem(&h("  timeout: 0s\n"), "health.timeout", "longer than 0s");
    assert_problem(
        &h("  interval: 1s\n  timeout: 2s\n"),
        "health.timeout",
        "not be longer than health.interval",
    );
    assert_problem(&h("  path: health\n"), "health.path", "must start with '/'");
    assert_problem(
        &h("  unhealthy_threshold: 0\n"),
        "health.unhealthy_threshold",
        "at least 1",
    );
    assert_problem(
        &h("  healthy_threshold: 0\n"),
        "health.healthy_threshold",
        "at least 1",
    );
    // A disabled section is not checked, as in the seed.
    Config::from_yaml(&h("  enabled: false\n  interval: 0s\n"))
        .expect("disabled health is not checked");
}

#[test]
fn metrics_rules() {
    let m = |body: &str| with(&format!("metrics:\n{body}"));
    assert_problem(&m("  port: 0\n"), "metrics.port", "between 1 and 65535");
    assert_problem(&m("  port: 8080\n"), "metrics.port", "must differ");
    assert_problem(
        &m("  path: metrics\n"),
        "metrics.path",
        "must start with '/'",
    );
    assert_problem(&m("  path: /status\n"), "metrics.path", "built-in");
}

#[test]
fn circuit_breaker_rules() {
    let b = |body: &str| with(&format!("circuit_breaker:\n{body}"));
    assert_problem(
        &b("  failure_threshold: 0\n"),
        "circuit_breaker.failure_threshold",
        "at least 1",
    );
    assert_problem(
        &b("  timeout: 0s\n"),
        "circuit_breaker.timeout",
        "longer than 0s",
    );
}

#[test]
fn retry_rules() {
    let r = |body: &str| with(&format!("retry:\n{body}"));
    assert_problem(
        &r("  max_attempts: 0\n"),
        "retry.max_attempts",
        "between 1 and 10",
    );
    assert_problem(
        &r("  max_attempts: 11\n"),
        "retry.max_attempts",
        "between 1 and 10",
    );
    assert_problem(
        &r("  initial_backoff: 0s\n"),
        "retry.initial_backoff",
        "longer than 0s",
    );
    assert_problem(
        &r("  initial_backoff: 3s\n  max_backoff: 1s\n"),
        "retry.max_backoff",
        "not be shorter",
    );
}

#[test]
fn tls_rules() {
    let t = |body: &str| with(&format!("tls:\n{body}"));
    assert_problem(
        &t("  enabled: true\n  key_file: k\n"),
        "tls.cert_file",
        "required when tls.enabled",
    );
    assert_problem(
        &t("  enabled: true\n  cert_file: c\n"),
        "tls.key_file",
        "required when tls.enabled",
    );
    assert_problem(
        &t("  min_version: \"1.1\"\n"),
        "tls.min_version",
        "expected \"1.2\" or \"1.3\"",
    );
    assert_problem(
        &t("  cipher_suites: [TLS_FAKE]\n"),
        "tls.cipher_suites[0]",
        "unknown cipher suite",
    );
    assert_problem(
        &t("  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n"),
        "tls.cipher_suites[0]",
        "legacy",
    );
    assert_problem(
        &t("  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"),
        "tls.cipher_suites[1]",
        "duplicate",
    );
    assert_problem(
        &t("  min_version: \"1.3\"\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"),
        "tls.cipher_suites",
        "no listed suite works",
    );
    // An empty min_version means the default, as in the seed.
    let c = Config::from_yaml(&t("  min_version: \"\"\n")).expect("valid");
    assert_eq!(c.tls.min_version, "1.2");
}

#[test]
fn upstream_sections_inherit_from_the_global_ones() {
    let yaml = BASE.replace(
        "  - name: web\n",
        "  - name: web\n    health:\n      path: /ready\n    retry:\n      max_attempts: 5\n    circuit_breaker:\n      enabled: false\n",
    ) + "health:\n  interval: 7s\n  timeout: 1s\nretry:\n  initial_backoff: 20ms\n";
    let c = Config::from_yaml(&yaml).expect("valid");
    let u = &c.upstreams[0];
    let h = c.health_of(u);
    assert_eq!(h.path, "/ready", "set on the upstream");
    assert_eq!(
        h.interval,
        std::time::Duration::from_secs(7),
        "inherited from the global section"
    );
    let r = c.retry_of(u);
    assert_eq!(
        (r.max_attempts, r.initial_backoff),
        (5, std::time::Duration::from_millis(20))
    );
    assert!(!c.breaker_of(u).enabled);
    assert_eq!(c.health.path, "/health", "the global section is untouched");
}

#[test]
fn resilience_rules() {
    let up = |body: &str| BASE.replace("  - name: web\n", &format!("  - name: web\n{body}"));
    assert_problem(
        &up("    health:\n      expected_statuses: [\"2xx\", \"700\"]\n"),
        "upstreams[0].health.expected_statuses[1]",
        "not a status",
    );
    assert_problem(
        &up("    health:\n      expected_statuses: []\n"),
        "upstreams[0].health.expected_statuses",
        "at least one",
    );
    assert_problem(
        &up("    health:\n      interval: 0s\n"),
        "upstreams[0].health.interval",
        "longer than 0s",
    );
    assert_problem(
        &up("    circuit_breaker:\n      half_open_requests: 0\n"),
        "upstreams[0].circuit_breaker.half_open_requests",
        "at least 1",
    );
    assert_problem(
        &up("    retry:\n      budget_percent: 101\n"),
        "upstreams[0].retry.budget_percent",
        "between 0 and 100",
    );
    assert_problem(
        &up("    retry:\n      max_body_bytes: 100000000\n"),
        "upstreams[0].retry.max_body_bytes",
        "at most",
    );
    assert_problem(
        &up("    tls:\n      server_name: \"*.x.com\"\n"),
        "upstreams[0].tls.server_name",
        "not a wildcard",
    );
    assert_problem(
        &up("    tls:\n      verify: false\n"),
        "upstreams[0].tls.verify",
        "unknown field",
    );
    assert_problem(
        &BASE.replace(
            "    upstream: web\n",
            "    upstream: web\n    rate_limit:\n      requests_per_ip: 0\n",
        ),
        "routes[0].rate_limit.requests_per_ip",
        "at least 1",
    );
    // Status specifications in every accepted form.
    let c = Config::from_yaml(&up("    health:\n      expected_statuses: 204\n"))
        .expect("a bare status");
    assert_eq!(
        c.upstreams[0]
            .health
            .as_ref()
            .expect("override")
            .expected_statuses,
        ["204"]
    );
    for ok in ["200", "2xx", "200-299", "100-599"] {
        assert!(isame_proto::config::parse_status_range(ok).is_ok(), "{ok}");
    }
    for bad in ["", "2x", "299-200", "abc", "600"] {
        assert!(
            isame_proto::config::parse_status_range(bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn tls_certificates_and_redirect_rules() {
    let t = |body: &str| with(&format!("tls:\n{body}"));
    assert_problem(
        &t("  redirect_http: true\n"),
        "tls.redirect_http",
        "needs tls.enabled",
    );
    assert_problem(
        &t("  enabled: true\n  cert_file: a\n  key_file: b\n  certificates:\n    - cert_file: c\n"),
        "tls.certificates[0].key_file",
        "required",
    );
    assert_problem(
        &t("  enabled: true\n  cert_file: a\n  key_file: b\n  certificates:\n    - cert_file: \"\"\n      key_file: k\n"),
        "tls.certificates[0].cert_file",
        "required",
    );
    // A stored certificate by name, instead of the files, never with them.
    assert_problem(
        &t("  enabled: true\n  certificate: main\n  cert_file: a\n"),
        "tls.cert_file",
        "must be left out when `certificate` names a stored certificate",
    );
    assert_problem(
        &t("  enabled: true\n  certificate: main\n  certificates:\n    - certificate: \"bad name\"\n"),
        "tls.certificates[0].certificate",
        "may only contain",
    );
    let named = Config::from_yaml(&t(
        "  enabled: true\n  certificate: main\n  certificates:\n    - certificate: shop\n    - certificate: main\n",
    ))
    .expect("valid");
    assert_eq!(
        named.certificate_refs(),
        [
            ("main".to_owned(), "tls.certificate".to_owned()),
            (
                "shop".to_owned(),
                "tls.certificates[0].certificate".to_owned()
            ),
        ]
    );
    Config::from_yaml(&t("  enabled: true\n  cert_file: a\n  key_file: b\n  redirect_http: true\n  certificates:\n    - cert_file: c\n      key_file: d\n"))
        .expect("valid");
}

#[test]
fn http2_and_grpc_rules() {
    // h2c backends, and `protocol` on upstreams, are accepted.
    let h2c = BASE.replace("http://127.0.0.1:3000", "h2c://127.0.0.1:3000");
    Config::from_yaml(&h2c).expect("h2c backends are valid");
    let with_protocol = |p: &str| {
        BASE.replace(
            "  - name: web\n",
            &format!("  - name: web\n    protocol: {p}\n"),
        )
    };
    for p in ["http1", "http2", "auto"] {
        Config::from_yaml(&with_protocol(p)).expect("every protocol is valid");
    }
    assert_problem(
        &with_protocol("h3"),
        "upstreams[0].protocol",
        "http1, http2, auto",
    );

    // PROXY headers name one client per connection; HTTP/2 mixes clients.
    let proxied = |yaml: String| {
        yaml.replace(
            "  - name: web\n",
            "  - name: web\n    send_proxy_protocol: v2\n",
        )
    };
    assert_problem(
        &proxied(h2c.clone()),
        "upstreams[0].send_proxy_protocol",
        "cannot be used with HTTP/2 backends",
    );
    assert_problem(
        &proxied(with_protocol("http2")),
        "upstreams[0].send_proxy_protocol",
        "cannot be used with HTTP/2 backends",
    );
    // `auto` to http:// backends is HTTP/1.1: PROXY headers are fine.
    Config::from_yaml(&proxied(with_protocol("auto"))).expect("auto over http:// is HTTP/1.1");

    // gRPC health checks need an HTTP/2 backend, at whichever level they
    // are asked for.
    let grpc_health = "health:\n  enabled: true\n  protocol: grpc\n";
    assert_problem(
        &with(grpc_health),
        "health.protocol",
        "gRPC health checks need HTTP/2 backends; upstream \"web\" has none",
    );
    let own = BASE.replace(
        "  - name: web\n",
        "  - name: web\n    health:\n      protocol: grpc\n      grpc_service: pkg.Svc\n",
    );
    assert_problem(
        &own,
        "upstreams[0].health.protocol",
        "gRPC health checks need HTTP/2 backends",
    );
    Config::from_yaml(&format!("{h2c}{grpc_health}")).expect("gRPC health over h2c");
    // Disabled checks are not held against the upstream.
    Config::from_yaml(&with("health:\n  enabled: false\n  protocol: grpc\n"))
        .expect("disabled gRPC health is not checked");
    assert_problem(
        &with("health:\n  protocol: grpcs\n"),
        "health.protocol",
        "http, grpc",
    );
}

#[test]
fn balancing_affinity_rules() {
    let hashed = |extra: &str| {
        BASE.replace(
            "  - name: web\n",
            &format!("  - name: web\n    algorithm: consistent_hash\n{extra}"),
        )
    };
    let c = Config::from_yaml(&hashed("    hash_on: header:X-User\n")).expect("valid");
    assert_eq!(c.upstreams[0].hash_key().as_string(), "header:X-User");
    assert_eq!(
        c.upstreams[0].fallback_algorithm(),
        isame_proto::config::Algorithm::WeightedRoundRobin
    );
    Config::from_yaml(&hashed(
        "    hash_on: client_ip\n    hash_fallback: least_connections\n",
    ))
    .expect("valid");
    assert_problem(
        &hashed("    hash_on: header:X User\n"),
        "upstreams[0].hash_on",
        "header name",
    );
    assert_problem(
        &hashed("    hash_on: ip\n"),
        "upstreams[0].hash_on",
        "expected client_ip, path, header:NAME, cookie:NAME or query:NAME",
    );
    assert_problem(
        &hashed("    hash_fallback: consistent_hash\n"),
        "upstreams[0].hash_fallback",
        "must be round_robin",
    );
    let plain = |extra: &str| BASE.replace("  - name: web\n", &format!("  - name: web\n{extra}"));
    assert_problem(
        &plain("    hash_on: path\n"),
        "upstreams[0].hash_on",
        "applies only to `algorithm: consistent_hash`",
    );
    assert_problem(
        &plain("    hash_fallback: round_robin\n"),
        "upstreams[0].hash_fallback",
        "applies only",
    );

    let c = Config::from_yaml(&plain("    slow_start: 30s\n")).expect("valid");
    assert_eq!(
        c.upstreams[0].slow_start,
        std::time::Duration::from_secs(30)
    );
    assert_problem(
        &plain("    slow_start: 2h\n"),
        "upstreams[0].slow_start",
        "at most 1h",
    );
    let c = Config::from_yaml(&plain("    sticky: {cookie: lb, ttl: 1h}\n")).expect("valid");
    let s = c.upstreams[0].sticky.as_ref().expect("sticky");
    assert!(s.http_only && !s.secure);
    assert_eq!(s.ttl, std::time::Duration::from_secs(3600));
    assert_problem(
        &plain("    sticky: {cookie: \"a;b\"}\n"),
        "upstreams[0].sticky.cookie",
        "is not a cookie name",
    );
    assert_problem(
        &plain("    sticky: {cookie: lb, same_site: none}\n"),
        "upstreams[0].sticky.same_site",
        "needs `secure: true`",
    );
    assert_problem(
        &plain("    sticky: {cookie: lb, ttl: 10000h}\n"),
        "upstreams[0].sticky.ttl",
        "at most 9600h",
    );
    assert_problem(
        &plain("    sticky: {ttl: 1h}\n"),
        "upstreams[0].sticky.cookie",
        "required",
    );
}

#[test]
fn outlier_detection_rules() {
    let with_od = |section: &str| {
        BASE.replace(
            "  - name: web\n",
            &format!("  - name: web\n    outlier_detection: {section}\n"),
        )
    };
    let c = Config::from_yaml(&with_od("{}")).expect("valid");
    let o = c.upstreams[0].outlier_detection.as_ref().expect("section");
    assert!(o.enabled);
    assert_eq!((o.consecutive_5xx, o.max_ejection_percent), (5, 10));
    Config::from_yaml(&with_od("{success_rate: {minimum_percent: 95}}")).expect("valid");
    assert_problem(
        &with_od("{base_ejection_time: 1m, max_ejection_time: 30s}"),
        "upstreams[0].outlier_detection.max_ejection_time",
        "at least base_ejection_time",
    );
    assert_problem(
        &with_od("{interval: 0s}"),
        "upstreams[0].outlier_detection.interval",
        "longer than 0s",
    );
    assert_problem(
        &with_od("{consecutive_5xx: 0, consecutive_gateway_errors: 0}"),
        "upstreams[0].outlier_detection",
        "no rule left",
    );
    assert_problem(
        &with_od("{max_ejection_percent: 101}"),
        "upstreams[0].outlier_detection.max_ejection_percent",
        "",
    );
    assert_problem(
        &with_od("{success_rate: {minimum_percent: 0}}"),
        "upstreams[0].outlier_detection.success_rate.minimum_percent",
        "",
    );
    assert_problem(
        &with_od("{success_rate: {request_volume: 5}}"),
        "upstreams[0].outlier_detection.success_rate.minimum_percent",
        "required",
    );
    // Switched off, the rules do not apply.
    Config::from_yaml(&with_od(
        "{enabled: false, consecutive_5xx: 0, consecutive_gateway_errors: 0}",
    ))
    .expect("valid");
}

#[test]
fn route_split_rules() {
    let base = BASE.replace(
        "      - url: http://127.0.0.1:3001\n        weight: 2\n",
        "      - url: http://127.0.0.1:3001\n        weight: 2\n  - name: canary\n    backends: [http://127.0.0.1:4000]\n",
    );
    let split = |body: &str| base.replace("    upstream: web\n", body);
    let c = Config::from_yaml(&split(
        "    split:\n      - {upstream: web, weight: 90}\n      - {upstream: canary, weight: 10}\n",
    ))
    .expect("valid");
    assert_eq!(c.routes[0].split.len(), 2);
    assert!(c.routes[0].upstream.is_empty());
    assert_problem(&split(""), "routes[0].upstream", "required (or `split`");
    assert_problem(
        &split("    upstream: web\n    split: [{upstream: canary}]\n"),
        "routes[0].split",
        "either `upstream` or `split`",
    );
    assert_problem(
        &split("    split: [{upstream: web}, {upstream: nope}]\n"),
        "routes[0].split[1].upstream",
        "no upstream is named \"nope\"",
    );
    assert_problem(
        &split("    split: [{upstream: web}, {upstream: web}]\n"),
        "routes[0].split[1].upstream",
        "already in this split",
    );
    assert_problem(
        &split("    split: [{upstream: web, weight: 0}]\n"),
        "routes[0].split",
        "at least one weight",
    );
    assert_problem(
        &split("    split: [{upstream: web, weight: 1001}]\n"),
        "routes[0].split[0].weight",
        "",
    );
    assert_problem(
        &split("    split: [{weight: 3}]\n"),
        "routes[0].split[0].upstream",
        "required",
    );
}

#[test]
fn route_cookie_rules() {
    let c = Config::from_yaml(&BASE.replace(
        "    upstream: web\n",
        "    upstream: web\n    cookies: {canary: \"1\"}\n",
    ))
    .expect("valid");
    assert_eq!(c.routes[0].cookies[0].name, "canary");
    assert_problem(
        &BASE.replace(
            "    upstream: web\n",
            "    upstream: web\n    cookies: {\"a b\": x}\n",
        ),
        "routes[0].cookies.a b",
        "not a valid cookie name",
    );
    assert_problem(
        &BASE.replace(
            "    upstream: web\n",
            "    upstream: web\n    cookies: {c: \"x;y\"}\n",
        ),
        "routes[0].cookies.c",
        "visible ASCII other than",
    );
}

#[test]
fn retry_policy_rules() {
    let r = |body: &str| with(&format!("retry:\n{body}"));
    let c = Config::from_yaml(&r(
        "  retry_on: [connect_failure, 5xx, 429, \"503\"]\n  per_try_timeout: 250ms\n  retriable_methods: [GET, HEAD]\n",
    ))
    .expect("valid");
    assert_eq!(
        c.retry.retry_on,
        [
            RetryOn::ConnectFailure,
            RetryOn::Status5xx,
            RetryOn::Status(429),
            RetryOn::Status(503)
        ]
    );
    assert_eq!(
        c.retry.per_try_timeout,
        std::time::Duration::from_millis(250)
    );
    // Defaults: today's conditions, the idempotent methods, no per-try limit.
    let d = Config::from_yaml(BASE).expect("valid");
    assert_eq!(d.retry.retry_on, RetryOn::defaults());
    assert_eq!(d.retry.retriable_methods, IDEMPOTENT_METHODS);
    assert!(d.retry.per_try_timeout.is_zero());

    assert_problem(
        &r("  retry_on: [bogus]\n"),
        "retry.retry_on[0]",
        "not a retry condition",
    );
    assert_problem(
        &r("  retry_on: [reset, 700]\n"),
        "retry.retry_on[1]",
        "400 to 599",
    );
    assert_problem(&r("  retry_on: [200]\n"), "retry.retry_on[0]", "400 to 599");
    assert_problem(
        &r("  retry_on: [reset, reset]\n"),
        "retry.retry_on[1]",
        "listed twice",
    );
    assert_problem(
        &r("  retry_on: [{a: 1}]\n"),
        "retry.retry_on[0]",
        "condition name or a status code",
    );
    assert_problem(
        &r("  retriable_methods: [get]\n"),
        "retry.retriable_methods[0]",
        "write GET",
    );
    assert_problem(
        &r("  retriable_methods: [\"G T\"]\n"),
        "retry.retriable_methods[0]",
        "not a method",
    );
    // Only a route may make a method that is not idempotent retriable.
    assert_problem(
        &r("  retriable_methods: [GET, POST]\n"),
        "retry.retriable_methods[1]",
        "not idempotent",
    );
    assert_problem(
        &BASE.replace(
            "    backends:",
            "    retry:\n      retriable_methods: [PATCH]\n    backends:",
        ),
        "upstreams[0].retry.retriable_methods[0]",
        "a route can opt in",
    );
    let route = |body: &str| {
        BASE.replace(
            "    upstream: web\n",
            &format!("    upstream: web\n    retry:\n{body}"),
        )
    };
    let c = Config::from_yaml(&route(
        "      retriable_methods: [POST]\n      per_try_timeout: 1s\n",
    ))
    .expect("a route may opt POST in");
    let rr = c.routes[0].retry.as_ref().expect("route retry");
    assert_eq!(
        rr.retriable_methods.as_deref(),
        Some(&["POST".to_owned()][..])
    );
    assert_eq!(rr.retry_on, None, "left out: the upstream's");
    assert_problem(
        &route("      max_attempts: 0\n"),
        "routes[0].retry.max_attempts",
        "between 1 and 10",
    );
    assert_problem(
        &route("      max_attempts: 11\n"),
        "routes[0].retry.max_attempts",
        "between 1 and 10",
    );
    assert_problem(
        &route("      retry_on: [nope]\n"),
        "routes[0].retry.retry_on[0]",
        "not a retry condition",
    );
    assert_problem(
        &route("      retriable_methods: [post]\n"),
        "routes[0].retry.retriable_methods[0]",
        "write POST",
    );
    assert_problem(
        &route("      budget_percent: 5\n"),
        "routes[0].retry.budget_percent",
        "unknown field",
    );
}

#[test]
fn route_mirror_rules() {
    let two = BASE.replace(
        "routes:",
        "  - name: shadow\n    backends: [\"http://127.0.0.1:4000\"]\nroutes:",
    );
    let mirror = |body: &str| {
        two.replace(
            "    upstream: web\n",
            &format!("    upstream: web\n    mirror:\n{body}"),
        )
    };
    let c =
        Config::from_yaml(&mirror("      upstream: shadow\n      percent: 5\n")).expect("valid");
    let m = c.routes[0].mirror.as_ref().expect("mirror");
    assert_eq!(
        (m.percent, m.max_body_bytes, m.max_in_flight),
        (5, 65536, 64)
    );
    assert_problem(
        &mirror("      percent: 5\n"),
        "routes[0].mirror.upstream",
        "required",
    );
    assert_problem(
        &mirror("      upstream: nope\n"),
        "routes[0].mirror.upstream",
        "no upstream is named",
    );
    assert_problem(
        &mirror("      upstream: web\n"),
        "routes[0].mirror.upstream",
        "serves this route",
    );
    assert_problem(
        &mirror("      upstream: shadow\n      percent: 101\n"),
        "routes[0].mirror.percent",
        "between 0 and 100",
    );
    assert_problem(
        &mirror("      upstream: shadow\n      max_in_flight: 0\n"),
        "routes[0].mirror.max_in_flight",
        "between 1 and 10000",
    );
    assert_problem(
        &mirror("      upstream: shadow\n      max_body_bytes: 20000000\n"),
        "routes[0].mirror.max_body_bytes",
        "at most 16777216",
    );
    // A split's upstreams serve the route too.
    let split = two.replace(
        "    upstream: web\n",
        "    split:\n      - upstream: web\n      - upstream: shadow\n    mirror:\n      upstream: shadow\n",
    );
    assert_problem(&split, "routes[0].mirror.upstream", "serves this route");
}

#[test]
fn dns_rules() {
    let c = Config::from_yaml(&with(
        "dns:\n  servers: [\"127.0.0.1:5353\", \"::1\", 10.0.0.2]\n",
    ))
    .expect("valid");
    let addrs: Vec<String> = c
        .dns
        .server_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(addrs, ["127.0.0.1:5353", "[::1]:53", "10.0.0.2:53"]);
    assert_eq!(
        c.upstreams[0].dns_refresh,
        std::time::Duration::from_secs(30)
    );
    assert_problem(
        &with("dns:\n  servers: [\"ns.example:53\"]\n"),
        "dns.servers[0]",
        "not a name server address",
    );
    assert_problem(
        &with("dns:\n  timeout: 0s\n"),
        "dns.timeout",
        "between 1ms and 30s",
    );
    assert_problem(
        &with("dns:\n  timeout: 1m\n"),
        "dns.timeout",
        "between 1ms and 30s",
    );
    let refresh = |d: &str| {
        BASE.replace(
            "    backends:",
            &format!("    dns_refresh: {d}\n    backends:"),
        )
    };
    Config::from_yaml(&refresh("5s")).expect("valid");
    assert_problem(
        &refresh("500ms"),
        "upstreams[0].dns_refresh",
        "between 1s and 1h",
    );
    assert_problem(
        &refresh("2h"),
        "upstreams[0].dns_refresh",
        "between 1s and 1h",
    );
}

#[test]
fn drain_timeout_rules() {
    let d = |v: &str| {
        BASE.replace(
            "    backends:",
            &format!("    drain_timeout: {v}\n    backends:"),
        )
    };
    let c = Config::from_yaml(&d("0s")).expect("cut at once is valid");
    assert!(c.upstreams[0].drain_timeout.is_zero());
    let c = Config::from_yaml(BASE).expect("valid");
    assert_eq!(
        c.upstreams[0].drain_timeout,
        std::time::Duration::from_secs(30)
    );
    assert_problem(&d("25h"), "upstreams[0].drain_timeout", "at most 24h");
}
