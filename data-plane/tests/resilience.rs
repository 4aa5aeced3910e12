//! Health checks, circuit breakers and retries, against real backends that
//! fail on cue.
// These tests time real sockets and processes: wall-clock time is the point.
#![allow(clippy::disallowed_types)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use isame_testkit::raw::Reply;
use isame_testkit::{Backend, Client, Mode, RawBackend};
use std::time::{Duration, Instant};

/// Polls `/status` until `cond` holds for it, or panics after 5 s.
async fn wait_status(
    admin: std::net::SocketAddr,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = isame_testkit::client::get(admin, "/status")
            .await
            .expect("status")
            .json();
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn backend_field<'a>(s: &'a serde_json::Value, i: usize, field: &str) -> &'a serde_json::Value {
    &s["upstreams"][0]["backends"][i][field]
}

const FAST_HEALTH: &str = "health:\n  interval: 100ms\n  timeout: 80ms\n  unhealthy_threshold: 2\n  healthy_threshold: 2\n";

#[tokio::test]
async fn unhealthy_backends_leave_rotation_and_come_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&a, 1), (&b, 1)])],
        FAST_HEALTH,
    ));
    let admin = proxy.admin_addr;
    wait_status(admin, "first probes", |s| {
        backend_field(s, 1, "health_checked") == true
    })
    .await;
    b.set_health(503);
    let s = wait_status(admin, "b unhealthy", |s| {
        backend_field(s, 1, "healthy") == false
    })
    .await;
    assert!(
        backend_field(&s, 1, "last_check")
            .as_str()
            .unwrap_or("")
            .contains("503"),
        "{s}"
    );
    let metrics = isame_testkit::client::get(admin, "/metrics")
        .await
        .expect("metrics")
        .text();
    assert!(
        metrics.contains(&format!(
            "isame_lb_upstream_healthy{{backend=\"{}\",upstream=\"web\"}} 0",
            b.url()
        )),
        "{metrics}"
    );
    let before = b.hits();
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..10 {
        assert_eq!(backend_of(&c.get("/").await.expect("request")), "a");
    }
    assert_eq!(b.hits(), before, "no traffic to an unhealthy backend");
    b.set_health(200);
    wait_status(admin, "b healthy again", |s| {
        backend_field(s, 1, "healthy") == true
    })
    .await;
    let mut seen_b = false;
    for _ in 0..4 {
        seen_b |= backend_of(&c.get("/").await.expect("request")) == "b";
    }
    assert!(seen_b, "b is back in rotation");
    stop(proxy).await;
}

#[tokio::test]
async fn every_backend_down_means_503() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&a, 1), (&b, 1)])],
        FAST_HEALTH,
    ));
    a.set_health(500);
    b.set_health(500);
    wait_status(proxy.admin_addr, "all unhealthy", |s| {
        backend_field(s, 0, "healthy") == false && backend_field(s, 1, "healthy") == false
    })
    .await;
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "no backend available", "status": 503})
    );
    assert_eq!(a.hits() + b.hits(), 0);
    stop(proxy).await;
}

#[tokio::test]
async fn health_verdicts_survive_a_reload() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&a, 1), (&b, 1)])],
        FAST_HEALTH,
    ));
    b.set_health(503);
    wait_status(proxy.admin_addr, "b unhealthy", |s| {
        backend_field(s, 1, "healthy") == false
    })
    .await;
    proxy
        .apply(parse(&config(
            &[upstream("web", "round_robin", &[(&a, 1), (&b, 1), (&c, 1)])],
            FAST_HEALTH,
        )))
        .await
        .expect("reload");
    let s = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(
        backend_field(&s, 1, "healthy"),
        false,
        "b stays out right after the reload: {s}"
    );
    assert_eq!(backend_field(&s, 2, "health_checked"), false, "c is new");
    stop(proxy).await;
}

#[tokio::test]
async fn probes_use_the_upstreams_own_settings() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let yaml = format!(
        "upstreams:\n  - name: checked\n    health:\n      enabled: true\n      interval: 50ms\n      timeout: 40ms\n    backends: [\"{}\"]\n  - name: unchecked\n    backends: [\"{}\"]\n",
        a.url(),
        b.url()
    );
    let proxy = start(&yaml);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(a.probes() >= 5, "a probed every 50 ms: {}", a.probes());
    assert_eq!(b.probes(), 0, "global health checks are off in this config");
    stop(proxy).await;
}

const BREAKER: &str = "circuit_breaker:\n  failure_threshold: 3\n  timeout: 400ms\n";

#[tokio::test]
async fn a_failing_backend_trips_its_breaker_and_is_probed_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    b.set_mode(Mode::Status(500));
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&a, 1), (&b, 1)])],
        BREAKER,
    ));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..6 {
        c.get("/").await.expect("request");
    }
    assert_eq!(b.hits(), 3, "three failures open the circuit");
    let s = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(backend_field(&s, 1, "circuit"), "open", "{s}");
    let metrics = isame_testkit::client::get(proxy.admin_addr, "/metrics")
        .await
        .expect("metrics")
        .text();
    assert!(
        metrics.contains(&format!(
            "isame_lb_circuit_open{{backend=\"{}\",upstream=\"web\"}} 1",
            b.url()
        )),
        "{metrics}"
    );
    for _ in 0..5 {
        assert_eq!(
            backend_of(&c.get("/").await.expect("request")),
            "a",
            "b is skipped while open"
        );
    }
    assert_eq!(b.hits(), 3);
    // After the timeout one probe goes through; it fails, so the circuit reopens.
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..4 {
        c.get("/").await.expect("request");
    }
    assert_eq!(b.hits(), 4, "exactly one half-open probe");
    // b recovers; the next probe closes the circuit.
    b.set_mode(Mode::Echo);
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..6 {
        c.get("/").await.expect("request");
    }
    assert!(b.hits() >= 6, "b is back: {}", b.hits());
    let s = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(backend_field(&s, 1, "circuit"), "closed", "{s}");
    stop(proxy).await;
}

const RETRY: &str = "retry:\n  max_attempts: 3\n  initial_backoff: 10ms\n  max_backoff: 50ms\n";

fn retries_counted(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("isame_lb_retries_total{upstream=\"web\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_another_backend() {
    let (bad, good) = (Backend::start("bad").await, Backend::start("good").await);
    bad.set_mode(Mode::Status(503));
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&bad, 1), (&good, 1)])],
        RETRY,
    ));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..4 {
        let r = c.get("/").await.expect("request");
        assert_eq!((r.status.as_u16(), backend_of(&r).as_str()), (200, "good"));
    }
    assert_eq!(bad.hits(), 2, "every other request tried bad first");
    let metrics = isame_testkit::client::get(proxy.admin_addr, "/metrics")
        .await
        .expect("metrics")
        .text();
    assert_eq!(retries_counted(&metrics), 2, "{metrics}");
    stop(proxy).await;
}

#[tokio::test]
async fn a_post_that_reached_a_backend_is_never_replayed() {
    let (bad, good) = (Backend::start("bad").await, Backend::start("good").await);
    bad.set_mode(Mode::Status(503));
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&bad, 1), (&good, 1)])],
        RETRY,
    ));
    let r = isame_testkit::client::Client::http1(proxy.proxy_addr)
        .await
        .expect("connect")
        .send(
            Request::post("/order")
                .body(Full::new(Bytes::from_static(b"{}")))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(r.status, 503, "the backend's own answer");
    assert_eq!((bad.hits(), good.hits()), (1, 0));
    stop(proxy).await;
}

#[tokio::test]
async fn a_post_that_never_reached_a_backend_goes_to_another() {
    let gone = Backend::start("gone").await;
    let gone_url = gone.url();
    drop(gone);
    let good = Backend::start("good").await;
    let proxy = start(&format!(
        "upstreams:\n  - name: web\n    backends: [\"{gone_url}\", \"{}\"]\n{RETRY}",
        good.url()
    ));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..2 {
        let r = c
            .send(
                Request::post("/order")
                    .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["body_len"], 7);
    }
    assert_eq!(good.hits(), 2);
    stop(proxy).await;
}

#[tokio::test]
async fn small_bodies_are_kept_and_sent_again_large_ones_are_not() {
    let bad = RawBackend::start(|r| {
        if r.body_read {
            Reply::Send(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n".to_vec())
        } else {
            Reply::Interim(Vec::new())
        }
    })
    .await;
    let good = Backend::start("good").await;
    let proxy = start(&format!(
        "upstreams:\n  - name: web\n    backends: [\"{}\", \"{}\"]\n{RETRY}  max_body_bytes: 1000\n",
        bad.url(),
        good.url()
    ));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let small = c
        .send(
            Request::put("/doc")
                .body(Full::new(Bytes::from(vec![b'x'; 900])))
                .expect("request"),
        )
        .await
        .expect("small");
    assert_eq!(small.status, 200);
    assert_eq!(
        small.json()["body_len"],
        900,
        "the retry carried the whole body"
    );
    let large = c
        .send(
            Request::put("/doc")
                .body(Full::new(Bytes::from(vec![b'x'; 5000])))
                .expect("request"),
        )
        .await
        .expect("large");
    // Round robin sends the second request to `good` first; force `bad` by
    // sending until it is bad's turn again.
    let large = if large.status == 200 {
        c.send(
            Request::put("/doc")
                .body(Full::new(Bytes::from(vec![b'x'; 5000])))
                .expect("request"),
        )
        .await
        .expect("large")
    } else {
        large
    };
    assert_eq!(
        large.status, 502,
        "a body too large to keep is not sent again"
    );
    assert_eq!(
        bad.requests()
            .iter()
            .filter(|r| r.body.len() == 5000)
            .count(),
        1
    );
    stop(proxy).await;
}

#[tokio::test]
async fn timeouts_are_retried_for_idempotent_requests() {
    let (slow, good) = (Backend::start("slow").await, Backend::start("good").await);
    slow.set_mode(Mode::Hang);
    let proxy = start(&format!(
        "upstreams:\n  - name: web\n    response_timeout: 200ms\n    backends: [\"{}\", \"{}\"]\n{RETRY}",
        slow.url(),
        good.url()
    ));
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!((r.status.as_u16(), backend_of(&r).as_str()), (200, "good"));
    stop(proxy).await;
}

#[tokio::test]
async fn max_attempts_bounds_the_tries() {
    let bs = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    for b in &bs {
        b.set_mode(Mode::Status(503));
    }
    let proxy = start(&config(
        &[upstream(
            "web",
            "round_robin",
            &[(&bs[0], 1), (&bs[1], 1), (&bs[2], 1)],
        )],
        "retry:\n  max_attempts: 2\n  initial_backoff: 1ms\n  max_backoff: 1ms\n",
    ));
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!(r.status, 503);
    assert_eq!(
        bs.iter().map(Backend::hits).sum::<usize>(),
        2,
        "two tries, on two different backends"
    );
    assert!(bs.iter().all(|b| b.hits() <= 1));
    stop(proxy).await;
}

#[tokio::test]
async fn the_retry_budget_caps_retries_during_an_outage() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.set_mode(Mode::Status(503));
    b.set_mode(Mode::Status(503));
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&a, 1), (&b, 1)])],
        "retry:\n  max_attempts: 3\n  initial_backoff: 1ms\n  max_backoff: 1ms\n  budget_percent: 0\n  budget_min_per_second: 1\n",
    ));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..40 {
        assert_eq!(c.get("/").await.expect("request").status, 503);
    }
    let metrics = isame_testkit::client::get(proxy.admin_addr, "/metrics")
        .await
        .expect("metrics")
        .text();
    let retries = retries_counted(&metrics);
    assert_eq!(
        retries, 10,
        "one a second over the ten-second window: {metrics}"
    );
    assert_eq!(a.hits() + b.hits(), 50);
    stop(proxy).await;
}

#[tokio::test]
async fn nothing_is_retried_once_the_response_has_started() {
    let (cut, good) = (
        RawBackend::start(|_| {
            Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec())
        })
        .await,
        Backend::start("good").await,
    );
    let proxy = start(&format!(
        "upstreams:\n  - name: web\n    backends: [\"{}\", \"{}\"]\n{RETRY}",
        cut.url(),
        good.url()
    ));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    assert!(c.get("/").await.is_err(), "the client sees the body fail");
    assert_eq!(cut.requests().len(), 1);
    assert_eq!(
        good.hits(),
        0,
        "no second try after response bytes went out"
    );
    stop(proxy).await;
}

/// The circuit state `/status` shows for the first upstream's backend `i`.
async fn circuit(admin: std::net::SocketAddr, i: usize) -> String {
    let s = isame_testkit::client::get(admin, "/status")
        .await
        .expect("status")
        .json();
    backend_field(&s, i, "circuit")
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_probe_whose_client_hangs_up_gives_its_slot_back() {
    use tokio::io::AsyncWriteExt;
    let b = Backend::start("b").await;
    b.set_mode(Mode::Status(500));
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "circuit_breaker:\n  failure_threshold: 1\n  timeout: 300ms\n  half_open_requests: 1\n",
    ));
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!(r.status, 500);
    assert_eq!(circuit(proxy.admin_addr, 0).await, "open");
    // The half-open probe goes to a backend that does not answer, and its
    // client gives up and hangs up.
    b.set_mode(Mode::Hang);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut s = tokio::net::TcpStream::connect(proxy.proxy_addr)
        .await
        .expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.hits() < 2 {
        assert!(Instant::now() < deadline, "the probe never reached b");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(circuit(proxy.admin_addr, 0).await, "half_open");
    drop(s);
    // The backend recovers: it must get traffic again.
    b.set_mode(Mode::Echo);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut served = 0;
    for _ in 0..10 {
        let r = isame_testkit::client::get(proxy.proxy_addr, "/")
            .await
            .expect("request");
        served += usize::from(r.status == 200);
    }
    assert_eq!(served, 10, "the abandoned probe's slot came back");
    assert_eq!(circuit(proxy.admin_addr, 0).await, "closed");
    stop(proxy).await;
}

#[tokio::test]
async fn a_stalled_upload_counts_neither_for_nor_against_the_backend() {
    let b = Backend::start("b").await;
    b.set_mode(Mode::Status(500));
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "server:\n  read_timeout: 300ms\ncircuit_breaker:\n  failure_threshold: 2\n  timeout: 60s\n",
    ));
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!(r.status, 500, "first failure");
    // A client that stops in the middle of its body: 408, the backend's fault
    // it is not, and nor is it a success that forgives the failure before.
    let stalled = exchange(
        proxy.proxy_addr,
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await;
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    assert_eq!(circuit(proxy.admin_addr, 0).await, "closed");
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!(r.status, 500, "second failure");
    assert_eq!(
        circuit(proxy.admin_addr, 0).await,
        "open",
        "two failures in a row, the stalled upload between them counting for nothing"
    );
    stop(proxy).await;
}
