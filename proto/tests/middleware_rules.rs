//! `routes[].middleware`: how each shape reads, every rule it must satisfy
//! (checked by a config that breaks it, with the path and a fragment of the
//! message the user must see), its protobuf form and how a change shows in
//! the diff.

use isame_proto::config::{
    diff, ChangeOp, Config, ConfigErrors, HeaderEdits, HeaderField, Middleware, Redirect,
    RewritePath,
};

/// A config whose route `api` takes the middleware list `list` (YAML, each
/// line indented under `middleware:`).
fn with(list: &str) -> String {
    format!(
        r#"
upstreams:
  - name: api
    backends: ["http://127.0.0.1:3000"]
routes:
  - name: api
    path_prefix: /api
    upstream: api
    middleware:
{list}"#
    )
}

fn errors_of(yaml: &str) -> ConfigErrors {
    match Config::from_yaml(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_problem(list: &str, path: &str, fragment: &str) {
    let yaml = with(list);
    let errs = errors_of(&yaml);
    assert!(
        errs.iter()
            .any(|e| e.path == path && e.message.contains(fragment)),
        "expected `{path}: …{fragment}…` in:\n{errs}\nfor:\n{yaml}"
    );
}

#[track_caller]
fn valid(list: &str) -> Vec<Middleware> {
    match Config::from_yaml(&with(list)) {
        Ok(c) => c.routes[0].middleware.clone(),
        Err(e) => panic!("expected valid:\n{list}\n{e}"),
    }
}

const EXAMPLE: &str = r#"      - strip_prefix: /api
      - rewrite_path: {from: "^/v1/(.*)$", to: "/v2/$1"}
      - request_headers: {set: {X-Env: prod}, add: {X-Tag: a}, remove: [X-Debug]}
      - response_headers:
          set: {Strict-Transport-Security: "max-age=63072000"}
          remove: [Server]
      - redirect: {to: "https://example.com{path}", status: 301}
      - redirect: {to: "/elsewhere{?query}"}
"#;

fn field(name: &str, value: &str) -> HeaderField {
    HeaderField {
        name: name.into(),
        value: value.into(),
    }
}

#[test]
fn every_shape_reads_in_the_order_written() {
    assert_eq!(
        valid(EXAMPLE),
        [
            Middleware::StripPrefix("/api".into()),
            Middleware::RewritePath(RewritePath {
                from: "^/v1/(.*)$".into(),
                to: "/v2/$1".into(),
            }),
            Middleware::RequestHeaders(HeaderEdits {
                set: vec![field("X-Env", "prod")],
                add: vec![field("X-Tag", "a")],
                remove: vec!["X-Debug".into()],
            }),
            Middleware::ResponseHeaders(HeaderEdits {
                set: vec![field("Strict-Transport-Security", "max-age=63072000")],
                add: vec![],
                remove: vec!["Server".into()],
            }),
            Middleware::Redirect(Redirect {
                to: "https://example.com{path}".into(),
                status: 301,
            }),
            Middleware::Redirect(Redirect {
                to: "/elsewhere{?query}".into(),
                status: 302,
            }),
        ]
    );
}

#[test]
fn yaml_and_json_forms_read_back_the_same() {
    let c = Config::from_yaml(&with(EXAMPLE)).expect("valid");
    let yaml = c.to_yaml().expect("serializes");
    assert!(yaml.contains("- strip_prefix: /api"), "{yaml}");
    assert_eq!(Config::from_yaml(&yaml), Ok(c.clone()), "{yaml}");
    let json = serde_json::to_string(&c).expect("serializes");
    assert_eq!(Config::from_json(&json), Ok(c), "{json}");
}

#[test]
fn a_route_without_middleware_serializes_as_before() {
    let c = Config::from_yaml(&with("      []\n")).expect("valid");
    let json = serde_json::to_value(&c).expect("serializes");
    assert!(json["routes"][0].get("middleware").is_none(), "{json}");
}

#[test]
fn items_must_be_one_key_mappings_naming_a_known_middleware() {
    assert_problem(
        "      - gzip: true\n",
        "routes[0].middleware[0]",
        "unknown middleware `gzip`; expected one of: strip_prefix, rewrite_path, request_headers, response_headers, redirect",
    );
    assert_problem(
        "      - strip_prefix: /a\n        redirect: {to: /b}\n",
        "routes[0].middleware[0]",
        "exactly one key naming it (e.g. `strip_prefix: /api`); found strip_prefix, redirect",
    );
    assert_problem("      - {}\n", "routes[0].middleware[0]", "found none");
    assert_problem(
        "      - strip_prefix\n",
        "routes[0].middleware[0]",
        "expected a mapping with one key naming the middleware",
    );
    let errs = errors_of(&with("      strip_prefix: /a\n"));
    assert_eq!(errs.0[0].path, "routes[0].middleware", "{errs}");
    // An item that cannot be read is reported once, and the items after it
    // keep their own positions.
    let errs = errors_of(&with(
        "      - gzip: true\n      - request_headers: {set: {\"X Bad\": x}}\n",
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[0].middleware[0]",
            "routes[0].middleware[1].request_headers.set.X Bad"
        ],
        "{errs}"
    );
}

#[test]
fn unknown_fields_and_types_are_named() {
    assert_problem(
        "      - rewrite_path: {from: a, too: /b}\n",
        "routes[0].middleware[0].rewrite_path.too",
        "unknown field `too`; expected one of: from, to",
    );
    assert_problem(
        "      - rewrite_path: {from: a}\n",
        "routes[0].middleware[0].rewrite_path.to",
        "required",
    );
    assert_problem(
        "      - redirect: {status: 301}\n",
        "routes[0].middleware[0].redirect.to",
        "required",
    );
    assert_problem(
        "      - strip_prefix: 5\n",
        "routes[0].middleware[0].strip_prefix",
        "expected a string",
    );
    assert_problem(
        "      - request_headers: {set: [X-A]}\n",
        "routes[0].middleware[0].request_headers.set",
        "mapping of name to value",
    );
    assert_problem(
        "      - request_headers: {set: {X-A: 5}}\n",
        "routes[0].middleware[0].request_headers.set.X-A",
        "expected a string",
    );
    assert_problem(
        "      - response_headers: {drop: [Server]}\n",
        "routes[0].middleware[0].response_headers.drop",
        "expected one of: set, add, remove",
    );
    assert_problem(
        "      - redirect: {to: /b, status: permanent}\n",
        "routes[0].middleware[0].redirect.status",
        "whole number",
    );
    let errs = errors_of(&with("      - strip_prefix: 5\n"));
    assert_eq!(
        errs.len(),
        1,
        "an unreadable value is reported once: {errs}"
    );
}

#[test]
fn strip_prefix_rules() {
    let at = "routes[0].middleware[0].strip_prefix";
    assert_problem("      - strip_prefix: api\n", at, "must start with '/'");
    assert_problem("      - strip_prefix: /a b\n", at, "plain path");
    assert_problem("      - strip_prefix: /a?b\n", at, "plain path");
    assert_problem("      - strip_prefix: /é\n", at, "percent-encode");
    assert_problem("      - strip_prefix: /\n", at, "would change nothing");
    assert_problem(
        "      - strip_prefix: /api/\n",
        at,
        "without a trailing '/': \"/api\"",
    );
    valid("      - strip_prefix: /api/v1\n");
}

#[test]
fn rewrite_path_rules() {
    let from = "routes[0].middleware[0].rewrite_path.from";
    let to = "routes[0].middleware[0].rewrite_path.to";
    assert_problem(
        "      - rewrite_path: {from: \"(\", to: /x}\n",
        from,
        "not a valid regular expression",
    );
    assert_problem(
        "      - rewrite_path: {from: \"\", to: /x}\n",
        from,
        "must not be empty",
    );
    assert_problem(
        "      - rewrite_path: {from: \"\\\\w{1000}{1000}\", to: /x}\n",
        from,
        "too large",
    );
    assert_problem(
        &format!(
            "      - rewrite_path: {{from: \"{}\", to: /x}}\n",
            "a".repeat(1025)
        ),
        from,
        "longer than 1024",
    );
    assert_problem(
        "      - rewrite_path: {from: a, to: x}\n",
        to,
        "must start with '/'",
    );
    assert_problem(
        "      - rewrite_path: {from: a, to: \"/x?y=1\"}\n",
        to,
        "plain path",
    );
    assert_problem(
        "      - rewrite_path: {from: \"^/(a)$\", to: \"/$2\"}\n",
        to,
        "$2 names no group of `from` (it has 1 numbered group(s))",
    );
    assert_problem(
        "      - rewrite_path: {from: \"^/(a)$\", to: \"/$1x\"}\n",
        to,
        "write ${1}x for group 1",
    );
    assert_problem(
        "      - rewrite_path: {from: \"^/(?P<id>a)$\", to: \"/${name}\"}\n",
        to,
        "and named id",
    );
    assert_problem(
        "      - rewrite_path: {from: a, to: \"/cost$\"}\n",
        to,
        "$$ for a '$'",
    );
    valid("      - rewrite_path: {from: \"^/(?P<id>[0-9]+)/(.*)$\", to: \"/items/${id}/$2/$$\"}\n");
}

#[test]
fn header_rules() {
    let set = "routes[0].middleware[0].request_headers.set";
    assert_problem(
        "      - request_headers: {set: {\"X Bad\": x}}\n",
        "routes[0].middleware[0].request_headers.set.X Bad",
        "\"X Bad\" is not a valid header name",
    );
    assert_problem(
        "      - request_headers: {set: {X-A: \"a\\u0001\"}}\n",
        &format!("{set}.X-A"),
        "visible ASCII",
    );
    assert_problem(
        "      - request_headers: {set: {X-A: \" a\"}}\n",
        &format!("{set}.X-A"),
        "must not start or end with spaces",
    );
    assert_problem(
        "      - request_headers: {}\n",
        "routes[0].middleware[0].request_headers",
        "at least one header",
    );
    assert_problem(
        "      - response_headers:\n",
        "routes[0].middleware[0].response_headers",
        "at least one header",
    );
    assert_problem(
        "      - request_headers: {set: {X-A: a}, remove: [x-a]}\n",
        "routes[0].middleware[0].request_headers.remove[0]",
        "named more than once",
    );
    assert_problem(
        "      - response_headers: {set: {X-A: a}, add: {X-a: b}}\n",
        "routes[0].middleware[0].response_headers.add.X-a",
        "named more than once",
    );
    assert_problem(
        "      - response_headers: {remove: [\"\"]}\n",
        "routes[0].middleware[0].response_headers.remove[0]",
        "not a valid header name",
    );
    // Empty values are values.
    valid("      - request_headers: {set: {X-Empty: \"\"}}\n");
}

#[test]
fn headers_the_proxy_manages_are_refused() {
    for side in ["request_headers", "response_headers"] {
        for name in [
            "Connection",
            "Keep-Alive",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "Proxy-Authorization",
            "Proxy-Authenticate",
            "Proxy-Connection",
        ] {
            assert_problem(
                &format!("      - {side}: {{set: {{{name}: x}}}}\n"),
                &format!("routes[0].middleware[0].{side}.set.{name}"),
                "hop-by-hop",
            );
        }
        assert_problem(
            &format!("      - {side}: {{remove: [Content-Length]}}\n"),
            &format!("routes[0].middleware[0].{side}.remove[0]"),
            "framing",
        );
    }
    for op in ["set", "add"] {
        assert_problem(
            &format!("      - request_headers: {{{op}: {{Host: a.example}}}}\n"),
            &format!("routes[0].middleware[0].request_headers.{op}.Host"),
            "routed by",
        );
    }
    assert_problem(
        "      - request_headers: {remove: [host]}\n",
        "routes[0].middleware[0].request_headers.remove[0]",
        "routed by",
    );
    for name in [
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "Forwarded",
        "X-Real-IP",
        "X-Client-IP",
    ] {
        assert_problem(
            &format!("      - request_headers: {{remove: [{name}]}}\n"),
            "routes[0].middleware[0].request_headers.remove[0]",
            "trusted_proxies",
        );
    }
    // In responses these are ordinary headers.
    valid("      - response_headers: {set: {Host: x, X-Forwarded-For: y}, remove: [Server]}\n");
}

#[test]
fn redirect_rules() {
    let to = "routes[0].middleware[0].redirect.to";
    for status in [200, 300, 304, 305, 400] {
        assert_problem(
            &format!("      - redirect: {{to: /x, status: {status}}}\n"),
            "routes[0].middleware[0].redirect.status",
            "expected one of: 301, 302, 303, 307, 308",
        );
    }
    assert_problem("      - redirect: {to: \"\"}\n", to, "must not be empty");
    assert_problem(
        "      - redirect: {to: \"https://{hostname}/\"}\n",
        to,
        "unknown placeholder {hostname}; expected one of: {scheme}, {host}, {path}, {query}, {?query}, {uri}",
    );
    assert_problem("      - redirect: {to: \"/a{path\"}\n", to, "without '}'");
    assert_problem("      - redirect: {to: \"/a}\"}\n", to, "without '{'");
    assert_problem("      - redirect: {to: \"/a b\"}\n", to, "visible ASCII");
    for bad in [
        "example.com/x",
        "{host}/x",
        "//evil.example/",
        "ftp://x/",
        "https:///x",
    ] {
        assert_problem(
            &format!("      - redirect: {{to: \"{bad}\"}}\n"),
            to,
            "absolute http(s) URL",
        );
    }
    for good in [
        "https://{host}{uri}",
        "{scheme}://www.example.com{path}{?query}",
        "/login?next={path}",
        "{uri}",
        "https://example.com:8443/#top",
    ] {
        valid(&format!(
            "      - redirect: {{to: \"{good}\", status: 308}}\n"
        ));
    }
}

#[test]
fn a_changed_list_is_one_change_of_the_routes_middleware() {
    let old = Config::from_yaml(&with(EXAMPLE)).expect("valid");
    let mut new = old.clone();
    new.routes[0].middleware.swap(0, 1);
    let changes = diff(&old, &new);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].op, ChangeOp::Changed);
    assert_eq!(changes[0].path, "routes[api].middleware");
    assert_eq!(
        changes[0].new.as_ref().map(|v| v[0].clone()),
        Some(serde_json::json!({"rewrite_path": {"from": "^/v1/(.*)$", "to": "/v2/$1"}}))
    );
    let mut none = old.clone();
    none.routes[0].middleware.clear();
    let changes = diff(&none, &old);
    assert_eq!(
        (changes[0].op, changes[0].path.as_str()),
        (ChangeOp::Added, "routes[api].middleware")
    );
}
