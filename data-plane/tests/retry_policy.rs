//! Retry policies on real sockets: which answers and failures go again
//! (`retry_on`), how long each try may wait (`per_try_timeout`), which
//! methods may be sent twice (`retriable_methods`), and a route's changes
//! to its upstream's policy.

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use isame_testkit::backend::Mode;
use isame_testkit::{Backend, Client};
use std::time::Duration;
use tokio::time::Instant;

/// Two backends, `bad` first in rotation, in upstream `web`.
fn web(bad: &Backend, good: &Backend) -> String {
    upstream("web", "round_robin", &[(bad, 1), (good, 1)])
}

const FAST: &str =
    "  max_attempts: 2\n  initial_backoff: 1ms\n  max_backoff: 1ms\n  budget_percent: 100\n";

fn retry(extra: &str) -> String {
    format!("retry:\n{FAST}{extra}")
}

/// Sends `n` GETs of `path`; the statuses and the backends that answered.
async fn gets(
    proxy: &isame_data_plane::server::Server,
    path: &str,
    n: usize,
) -> Vec<(u16, String)> {
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let mut out = Vec::new();
    for _ in 0..n {
        let r = c.get(path).await.expect("response");
        out.push((r.status.as_u16(), backend_of(&r)));
    }
    out
}

async fn post(proxy: &isame_data_plane::server::Server, path: &str) -> (u16, String) {
    let r = Client::http1(proxy.proxy_addr)
        .await
        .expect("connect")
        .send(
            Request::post(path)
                .body(Full::new(Bytes::from_static(b"{\"order\":1}")))
                .expect("request"),
        )
        .await
        .expect("response");
    (r.status.as_u16(), backend_of(&r))
}

fn good(n: usize) -> Vec<(u16, String)> {
    vec![(200, "good".to_owned()); n]
}

#[tokio::test]
async fn explicit_statuses_and_5xx_go_again_only_when_listed() {
    let (bad, ok) = (Backend::start("bad").await, Backend::start("good").await);
    bad.set_mode(Mode::Status(429));

    // By default a 429 is the backend's answer, passed on.
    let proxy = start(&config(&[web(&bad, &ok)], &retry("")));
    let answers = gets(&proxy, "/", 4).await;
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 429).count(),
        2,
        "{answers:?}"
    );
    stop(proxy).await;

    // Listed, it goes to the other backend.
    let proxy = start(&config(
        &[web(&bad, &ok)],
        &retry("  retry_on: [connect_failure, 429]\n"),
    ));
    assert_eq!(gets(&proxy, "/", 4).await, good(4));
    stop(proxy).await;

    // A 500 is not a gateway error: only `5xx` retries it.
    bad.set_mode(Mode::Status(500));
    let proxy = start(&config(&[web(&bad, &ok)], &retry("")));
    let answers = gets(&proxy, "/", 4).await;
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 500).count(),
        2,
        "{answers:?}"
    );
    stop(proxy).await;
    let proxy = start(&config(&[web(&bad, &ok)], &retry("  retry_on: [5xx]\n")));
    assert_eq!(gets(&proxy, "/", 4).await, good(4));
    stop(proxy).await;
}

#[tokio::test]
async fn conditions_left_out_are_not_retried() {
    let (bad, ok) = (Backend::start("bad").await, Backend::start("good").await);
    bad.set_mode(Mode::Status(503));
    // `gateway_error` left out: the 503 is passed on.
    let proxy = start(&config(
        &[web(&bad, &ok)],
        &retry("  retry_on: [connect_failure, reset, timeout]\n"),
    ));
    let answers = gets(&proxy, "/", 4).await;
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 503).count(),
        2,
        "{answers:?}"
    );
    stop(proxy).await;

    // `reset` left out: a backend that closes without answering is a 502.
    bad.set_mode(Mode::Close);
    let proxy = start(&config(
        &[web(&bad, &ok)],
        &retry("  retry_on: [gateway_error]\n"),
    ));
    let answers = gets(&proxy, "/", 4).await;
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 502).count(),
        2,
        "{answers:?}"
    );
    stop(proxy).await;
    let proxy = start(&config(&[web(&bad, &ok)], &retry("  retry_on: [reset]\n")));
    assert_eq!(gets(&proxy, "/", 4).await, good(4));
    stop(proxy).await;

    // `connect_failure` left out: a refused connection is a 502 too.
    let gone = Backend::start("gone").await;
    let gone_url = gone.url();
    drop(gone);
    let yaml = format!(
        "upstreams:\n  - name: web\n    backends: [\"{gone_url}\", \"{}\"]\n{}health:\n  enabled: false\ncircuit_breaker:\n  enabled: false\n",
        ok.url(),
        retry("  retry_on: [gateway_error]\n")
    );
    let proxy = start(&yaml);
    let answers = gets(&proxy, "/", 4).await;
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 502).count(),
        2,
        "{answers:?}"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn per_try_timeout_leaves_time_for_another_backend() {
    let (slow, ok) = (Backend::start("slow").await, Backend::start("good").await);
    slow.set_mode(Mode::Hang);
    let up = format!(
        "  - name: web\n    response_timeout: 10s\n    backends:\n      - url: {}\n      - url: {}\n",
        slow.url(),
        ok.url()
    );
    let proxy = start(&config(&[up], &retry("  per_try_timeout: 200ms\n")));
    let began = Instant::now();
    assert_eq!(gets(&proxy, "/", 2).await, good(2));
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "each try gave up after 200ms, not 10s: {took:?}"
    );
    assert_eq!(slow.hits(), 1, "the slow backend had its try");
    let s = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(
        s["upstreams"][0]["retry"]["per_try_timeout"], "200ms",
        "{s}"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn a_route_opts_posts_in_and_others_stay_safe() {
    let (bad, ok) = (Backend::start("bad").await, Backend::start("good").await);
    bad.set_mode(Mode::Status(503));
    let routes = "routes:\n  - name: orders\n    path_prefix: /orders\n    upstream: web\n    retry:\n      retriable_methods: [POST, GET]\n      max_attempts: 3\n  - name: rest\n    path_prefix: /\n    upstream: web\n";
    let proxy = start(&config(
        &[web(&bad, &ok)],
        &format!("{}{routes}", retry("")),
    ));
    // The route that opts in: a POST answered 503 goes to the other backend.
    for _ in 0..4 {
        assert_eq!(post(&proxy, "/orders").await, (200, "good".to_owned()));
    }
    let bad_hits = bad.hits();
    assert_eq!(bad_hits, 2, "every other POST tried bad first");
    // Elsewhere a POST that reached a backend is never sent twice.
    let mut failed = 0;
    for _ in 0..4 {
        if post(&proxy, "/other").await.0 == 503 {
            failed += 1;
        }
    }
    assert_eq!(failed, 2, "the POSTs bad answered were not replayed");
    assert_eq!(bad.hits(), bad_hits + 2);
    let s = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(
        s["routes"][0]["retry"]["retriable_methods"],
        serde_json::json!(["POST", "GET"]),
        "{s}"
    );
    stop(proxy).await;

    // A route can also narrow the policy: one try, no retries.
    let routes = "routes:\n  - name: once\n    path_prefix: /\n    upstream: web\n    retry:\n      max_attempts: 1\n";
    let proxy = start(&config(
        &[web(&bad, &ok)],
        &format!("{}{routes}", retry("")),
    ));
    let answers = gets(&proxy, "/", 4).await;
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 503).count(),
        2,
        "{answers:?}"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn a_split_route_changes_the_policy_of_each_upstream_it_sends_to() {
    let (a_bad, a_ok) = (Backend::start("bad").await, Backend::start("good").await);
    let (b_bad, b_ok) = (Backend::start("bad").await, Backend::start("good").await);
    a_bad.set_mode(Mode::Status(429));
    b_bad.set_mode(Mode::Status(429));
    let ups = [
        upstream("v1", "round_robin", &[(&a_bad, 1), (&a_ok, 1)]),
        upstream("v2", "round_robin", &[(&b_bad, 1), (&b_ok, 1)]),
    ];
    let routes = "routes:\n  - name: canary\n    path_prefix: /\n    split:\n      - upstream: v1\n        weight: 1\n      - upstream: v2\n        weight: 1\n    retry:\n      retry_on: [429]\n";
    let proxy = start(&config(&ups, &format!("{}{routes}", retry(""))));
    assert_eq!(gets(&proxy, "/", 8).await, good(8));
    assert_eq!(
        (a_bad.hits(), b_bad.hits()),
        (2, 2),
        "both upstreams were tried"
    );
    stop(proxy).await;
}
