//! Per-route middleware seen from real clients and echo backends: each kind,
//! the order they run in both ways, redirects that never reach a backend,
//! response headers on the proxy's own errors, retries and hot reload.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use isame_testkit::{Backend, Client, Mode, Reply};
use serde_json::Value;

/// A config with one upstream `web` on `b` and the route blocks `routes`
/// (YAML list items under `routes:`), plus extra top-level YAML.
fn with_routes(b: &Backend, routes: &str, extra: &str) -> String {
    config(
        &[upstream("web", "round_robin", &[(b, 1)])],
        &format!("routes:\n{routes}{extra}"),
    )
}

/// `GET target` with extra request headers.
async fn get(client: &mut Client, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(target);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client
        .send(req.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response")
}

/// The path (with query) the echo backend saw.
fn echoed_path(r: &Reply) -> String {
    r.json()["path"].as_str().unwrap_or("").to_owned()
}

/// The values of a request header the echo backend saw.
fn echoed(r: &Reply, name: &str) -> Vec<String> {
    match &r.json()["headers"][name] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn header(r: &Reply, name: &str) -> Option<String> {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn strip_prefix_on_segment_boundaries_keeps_the_query() {
    let b = Backend::start("b").await;
    let proxy = start(&with_routes(
        &b,
        "  - name: api\n    path_prefix: /api\n    upstream: web\n    middleware:\n      - strip_prefix: /api\n",
        "",
    ));
    for mut client in [
        Client::http1(proxy.proxy_addr).await.expect("connect"),
        Client::http2(proxy.proxy_addr).await.expect("connect h2"),
    ] {
        for (target, seen) in [
            ("/api/users", "/users"),
            ("/api/users/7?x=1&y", "/users/7?x=1&y"),
            ("/api", "/"),
            ("/api/", "/"),
            ("/api?x=1", "/?x=1"),
        ] {
            let r = get(&mut client, target, &[]).await;
            assert_eq!(r.status, 200, "{target}: {}", r.text());
            assert_eq!(echoed_path(&r), seen, "{target}");
        }
    }
    stop(proxy).await;
}

#[tokio::test]
async fn rewrite_path_uses_capture_groups_and_keeps_the_query() {
    let b = Backend::start("b").await;
    let proxy = start(&with_routes(
        &b,
        concat!(
            "  - name: api\n    upstream: web\n    middleware:\n",
            "      - rewrite_path: {from: \"^/v1/(?P<kind>[a-z]+)/([0-9]+)$\", to: \"/v2/${kind}/item-$2\"}\n",
        ),
        "",
    ));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    for (target, seen) in [
        ("/v1/users/7?q=a%20b", "/v2/users/item-7?q=a%20b"),
        ("/v1/users/7", "/v2/users/item-7"),
        ("/v1/users/x", "/v1/users/x"),
        ("/other", "/other"),
    ] {
        let r = get(&mut client, target, &[]).await;
        assert_eq!(echoed_path(&r), seen, "{target}");
    }
    stop(proxy).await;
}

#[tokio::test]
async fn request_headers_are_set_added_and_removed_beside_the_forwarding_ones() {
    let b = Backend::start("b").await;
    let proxy = start(&with_routes(
        &b,
        concat!(
            "  - name: all\n    upstream: web\n    middleware:\n",
            "      - request_headers:\n",
            "          set: {X-Env: prod}\n",
            "          add: {X-Tag: b}\n",
            "          remove: [X-Debug]\n",
        ),
        "",
    ));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let r = get(
        &mut client,
        "/",
        &[
            ("x-env", "dev"),
            ("x-env", "test"),
            ("x-tag", "a"),
            ("x-debug", "1"),
            ("x-forwarded-for", "6.6.6.6"),
        ],
    )
    .await;
    assert_eq!(echoed(&r, "x-env"), ["prod"]);
    assert_eq!(echoed(&r, "x-tag"), ["a", "b"]);
    assert!(echoed(&r, "x-debug").is_empty(), "{}", r.text());
    assert_eq!(
        echoed(&r, "x-forwarded-for"),
        ["127.0.0.1"],
        "forwarding headers are the proxy's as before"
    );
    // A header the client's Connection names is dropped before the
    // middleware runs, so what the middleware sets still arrives.
    let raw = exchange(
        proxy.proxy_addr,
        b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close, X-Env\r\nX-Env: dev\r\n\r\n"
            .to_vec(),
    )
    .await;
    assert!(raw.contains(r#""x-env":"prod""#), "{raw}");
    stop(proxy).await;
}

#[tokio::test]
async fn response_headers_reach_the_client_on_backend_answers_and_proxy_errors() {
    let b = Backend::start("b").await;
    // A port nothing listens on.
    let down = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let down_url = format!("http://{}", down.local_addr().expect("addr"));
    drop(down);
    let response_headers = concat!(
        "      - response_headers:\n",
        "          set: {Strict-Transport-Security: \"max-age=63072000\"}\n",
        "          add: {X-Served-By: isame}\n",
        "          remove: [X-Backend]\n",
    );
    let yaml = format!(
        "upstreams:\n{}  - name: gone\n    backends: [\"{down_url}\"]\nroutes:\n  - name: gone\n    path_prefix: /gone\n    upstream: gone\n    middleware:\n{response_headers}  - name: web\n    path_prefix: /web\n    upstream: web\n    middleware:\n{response_headers}",
        upstream("web", "round_robin", &[(&b, 1)]),
    );
    let proxy = start(&yaml);
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let r = get(&mut client, "/web/x", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        header(&r, "strict-transport-security").as_deref(),
        Some("max-age=63072000")
    );
    assert_eq!(header(&r, "x-served-by").as_deref(), Some("isame"));
    assert_eq!(header(&r, "x-backend"), None, "removed on the way back");
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/json"),
        "the rest is the backend's"
    );
    let r = get(&mut client, "/gone", &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        header(&r, "strict-transport-security").as_deref(),
        Some("max-age=63072000"),
        "the proxy's own error on this route carries them too"
    );
    let r = get(&mut client, "/nowhere", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        header(&r, "strict-transport-security"),
        None,
        "no route, no route middleware"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn order_matters_both_ways() {
    let b = Backend::start("b").await;
    // Two routes with the same steps in opposite orders, told apart by a header.
    let steps = [
        "      - strip_prefix: /api\n",
        "      - rewrite_path: {from: \"^/v1/(.*)$\", to: \"/v2/$1\"}\n",
        "      - request_headers: {set: {X-V: one}}\n",
        "      - request_headers: {add: {X-V: two}}\n",
        "      - response_headers: {set: {X-Layer: first}}\n",
        "      - response_headers: {set: {X-Layer: second}}\n",
    ];
    let route = |name: &str, steps: &[&str]| {
        format!(
            "  - name: {name}\n    headers: {{x-order: {name}}}\n    upstream: web\n    middleware:\n{}",
            steps.concat()
        )
    };
    let reversed: Vec<&str> = steps.iter().rev().copied().collect();
    let proxy = start(&with_routes(
        &b,
        &format!(
            "{}{}",
            route("written", &steps),
            route("reversed", &reversed)
        ),
        "",
    ));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let written = get(&mut client, "/api/v1/x", &[("x-order", "written")]).await;
    let reversed = get(&mut client, "/api/v1/x", &[("x-order", "reversed")]).await;
    // Stripped first, /v1/x is then rewritten; rewritten first, /api/v1/x
    // does not match and is only stripped.
    assert_eq!(echoed_path(&written), "/v2/x");
    assert_eq!(echoed_path(&reversed), "/v1/x");
    // Set then add keeps both; add then set leaves the set value.
    assert_eq!(echoed(&written, "x-v"), ["one", "two"]);
    assert_eq!(echoed(&reversed, "x-v"), ["one"]);
    // Responses pass back in reverse order: the step written first has the
    // last word.
    assert_eq!(header(&written, "x-layer").as_deref(), Some("first"));
    assert_eq!(header(&reversed, "x-layer").as_deref(), Some("second"));
    stop(proxy).await;
}

#[tokio::test]
async fn redirects_answer_without_calling_the_backend() {
    let b = Backend::start("b").await;
    let proxy = start(&with_routes(
        &b,
        concat!(
            "  - name: moved\n    path_prefix: /old\n    upstream: web\n    middleware:\n",
            "      - response_headers: {set: {X-Redirected-By: isame}}\n",
            "      - strip_prefix: /old\n",
            "      - redirect: {to: \"https://{host}/new{uri}\", status: 301}\n",
            "      - response_headers: {set: {X-Never: seen}}\n",
            "  - name: login\n    path_prefix: /account\n    upstream: web\n    middleware:\n",
            "      - redirect: {to: \"/login?next={path}&{query}\"}\n",
            "  - name: all\n    path_prefix: /\n    upstream: web\n    middleware:\n",
            "      - redirect: {to: \"{scheme}://www.example.com{path}{?query}\", status: 308}\n",
        ),
        "",
    ));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let r = get(
        &mut client,
        "/old/a/b?x=1",
        &[("host", "shop.example:8080")],
    )
    .await;
    assert_eq!(r.status, 301);
    assert_eq!(
        header(&r, "location").as_deref(),
        Some("https://shop.example/new/a/b?x=1")
    );
    assert!(r.body.is_empty(), "{}", r.text());
    assert_eq!(header(&r, "x-redirected-by").as_deref(), Some("isame"));
    assert_eq!(
        header(&r, "x-never"),
        None,
        "steps after the redirect never ran"
    );
    let r = get(&mut client, "/account/me?tab=2", &[]).await;
    assert_eq!(r.status, 302, "the default status");
    assert_eq!(
        header(&r, "location").as_deref(),
        Some("/login?next=/account/me&tab=2")
    );
    let r = get(&mut client, "/x", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(
        header(&r, "location").as_deref(),
        Some("http://www.example.com/x")
    );
    // `{host}` with no host to fill it in is the client's mistake.
    let raw = exchange(proxy.proxy_addr, b"GET /old/a HTTP/1.0\r\n\r\n".to_vec()).await;
    assert!(raw.starts_with("HTTP/1.0 400"), "{raw}");
    assert_eq!(b.hits(), 0, "no request reached the backend");
    stop(proxy).await;
}

#[tokio::test]
async fn a_retried_request_carries_the_rewritten_path() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.set_mode(Mode::Status(503));
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&a, 1), (&b, 1)])],
        concat!(
            "routes:\n  - name: api\n    path_prefix: /api\n    upstream: web\n    middleware:\n",
            "      - strip_prefix: /api\n",
            "      - request_headers: {add: {X-Once: \"1\"}}\n",
            "retry:\n  max_attempts: 2\n  initial_backoff: 1ms\n  max_backoff: 1ms\n",
        ),
    ));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..2 {
        let r = get(&mut client, "/api/x?q=1", &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(echoed_path(&r), "/x?q=1");
        assert_eq!(echoed(&r, "x-once"), ["1"], "added once, not per try");
    }
    assert_eq!(a.hits(), 1, "one request went to the failing backend first");
    assert_eq!(b.hits(), 2);
    stop(proxy).await;
}

#[tokio::test]
async fn a_reload_swaps_the_middleware() {
    let b = Backend::start("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("isame.yaml");
    let version = |steps: &str| {
        with_routes(
            &b,
            &format!("  - name: api\n    path_prefix: /api\n    upstream: web\n{steps}"),
            "",
        )
    };
    let first = version("    middleware:\n      - request_headers: {set: {X-Version: one}}\n");
    std::fs::write(&path, &first).expect("write");
    let proxy = start_with(&first, Some(path.clone()), 1);
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let r = get(&mut client, "/api/x", &[]).await;
    assert_eq!(
        (echoed_path(&r).as_str(), echoed(&r, "x-version")),
        ("/api/x", vec!["one".to_owned()])
    );

    std::fs::write(
        &path,
        version("    middleware:\n      - strip_prefix: /api\n      - request_headers: {set: {X-Version: two}}\n"),
    )
    .expect("write");
    proxy.reload().await.expect("reload");
    let r = get(&mut client, "/api/x", &[]).await;
    assert_eq!(
        (echoed_path(&r).as_str(), echoed(&r, "x-version")),
        ("/x", vec!["two".to_owned()])
    );

    // An invalid list changes nothing.
    std::fs::write(
        &path,
        version("    middleware:\n      - redirect: {to: /x, status: 200}\n"),
    )
    .expect("write");
    let err = proxy.reload().await.expect_err("refused");
    assert!(
        err.to_string()
            .contains("routes[0].middleware[0].redirect.status"),
        "{err}"
    );
    let r = get(&mut client, "/api/x", &[]).await;
    assert_eq!(echoed(&r, "x-version"), ["two"]);

    std::fs::write(&path, version("")).expect("write");
    proxy.reload().await.expect("reload");
    let r = get(&mut client, "/api/x", &[]).await;
    assert_eq!(echoed_path(&r), "/api/x");
    assert!(echoed(&r, "x-version").is_empty(), "{}", r.text());
    stop(proxy).await;
}
