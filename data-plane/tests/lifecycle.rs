//! A backend's way out of and back into rotation by what its traffic shows:
//! passive outlier detection, with health checks off, over real sockets.

mod common;

use common::*;
use isame_testkit::{Backend, Client, Mode};
use std::time::Duration;
use tokio::time::Instant;

/// `/status` of the proxy at `admin`.
async fn status(admin: std::net::SocketAddr) -> serde_json::Value {
    isame_testkit::client::get(admin, "/status")
        .await
        .expect("status")
        .json()
}

/// The metrics text of the proxy at `admin`.
async fn metrics(admin: std::net::SocketAddr) -> String {
    isame_testkit::client::get(admin, "/metrics")
        .await
        .expect("metrics")
        .text()
}

fn backend(s: &serde_json::Value, i: usize) -> &serde_json::Value {
    &s["upstreams"][0]["backends"][i]
}

#[tokio::test]
async fn a_backend_answering_5xx_is_ejected_and_comes_back_by_itself() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    b.set_mode(Mode::Status(500));
    let mut up = upstream("web", "round_robin", &[(&a, 1), (&b, 1)]);
    up.push_str(
        "    outlier_detection:\n      consecutive_5xx: 3\n      interval: 5s\n      base_ejection_time: 600ms\n      max_ejection_percent: 50\n",
    );
    let proxy = start(&config(&[up], ""));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(c.get("/").await.expect("request").status.as_u16());
    }
    assert_eq!(b.hits(), 3, "three 5xx in a row eject b: {statuses:?}");
    let s = status(proxy.admin_addr).await;
    assert_eq!(s["upstreams"][0]["outlier_detection"], true);
    let out = backend(&s, 1);
    assert_eq!(out["ejected"], true, "{s}");
    assert_eq!(out["last_ejection_reason"], "consecutive_5xx");
    assert_eq!(out["ejections"], 1);
    assert!(out["ejected_for"].is_string(), "{s}");
    assert_eq!(backend(&s, 0)["ejected"], false);
    let m = metrics(proxy.admin_addr).await;
    let url = b.url();
    for line in [
        format!("isame_lb_outlier_ejections_total{{backend=\"{url}\",reason=\"consecutive_5xx\",upstream=\"web\"}} 1"),
        format!("isame_lb_outlier_ejected{{backend=\"{url}\",upstream=\"web\"}} 1"),
    ] {
        assert!(m.contains(&line), "{line} missing from\n{m}");
    }
    // While b is out, every request goes to a and succeeds.
    for _ in 0..10 {
        let r = c.get("/").await.expect("request");
        assert_eq!((r.status.as_u16(), backend_of(&r).as_str()), (200, "a"));
    }
    assert_eq!(b.hits(), 3);

    // b recovers; after the ejection it is back without any health check.
    b.set_mode(Mode::Echo);
    tokio::time::sleep(Duration::from_millis(700)).await;
    for _ in 0..10 {
        assert_eq!(c.get("/").await.expect("request").status, 200);
    }
    assert!(b.hits() >= 8, "b is back in rotation: {}", b.hits());
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let m = metrics(proxy.admin_addr).await;
        if m.contains(&format!(
            "isame_lb_outlier_ejected{{backend=\"{url}\",upstream=\"web\"}} 0"
        )) {
            break;
        }
        assert!(Instant::now() < deadline, "the gauge never dropped:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        backend(&status(proxy.admin_addr).await, 1)["ejected"],
        false
    );

    // Ejected again within an interval of its return: twice as long.
    b.set_mode(Mode::Status(503));
    for _ in 0..8 {
        c.get("/").await.expect("request");
    }
    let s = status(proxy.admin_addr).await;
    assert_eq!(backend(&s, 1)["ejections"], 2, "{s}");
    let left = backend(&s, 1)["ejected_for"]
        .as_str()
        .expect("ejected_for")
        .to_owned();
    let ms = isame_proto::config::duration::parse(&left).expect("duration");
    assert!(
        ms > Duration::from_millis(600),
        "the second ejection lasts 2 × 600ms: {left}"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn connection_failures_eject_but_never_more_than_the_cap() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
        Backend::start("d").await,
    ];
    for b in &backends[1..] {
        b.set_mode(Mode::Close);
    }
    let pairs: Vec<(&Backend, u32)> = backends.iter().map(|b| (b, 1)).collect();
    let mut up = upstream("web", "round_robin", &pairs);
    up.push_str(
        "    outlier_detection:\n      consecutive_5xx: 0\n      consecutive_gateway_errors: 2\n      base_ejection_time: 30s\n      max_ejection_percent: 50\n",
    );
    let proxy = start(&config(&[up], ""));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..40 {
        let _ = c.get("/").await;
    }
    let s = status(proxy.admin_addr).await;
    let ejected: Vec<usize> = (0..4)
        .filter(|&i| backend(&s, i)["ejected"] == true)
        .collect();
    assert_eq!(ejected.len(), 2, "half of four backends at most: {s}");
    assert!(!ejected.contains(&0), "the good backend stays: {s}");
    for &i in &ejected {
        assert_eq!(
            backend(&s, i)["last_ejection_reason"],
            "consecutive_gateway_errors"
        );
    }
    stop(proxy).await;
}

#[tokio::test]
async fn ejection_state_survives_a_reload_and_a_removed_backend_loses_its_series() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    b.set_mode(Mode::Status(502));
    let detection = "    outlier_detection: {consecutive_gateway_errors: 1, base_ejection_time: 30s, max_ejection_percent: 50}\n";
    let both = {
        let mut up = upstream("web", "round_robin", &[(&a, 1), (&b, 1)]);
        up.push_str(detection);
        config(&[up], "")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("isame.yaml");
    std::fs::write(&path, &both).expect("write");
    let proxy = start_with(&both, Some(path.clone()), 1);
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..4 {
        c.get("/").await.expect("request");
    }
    assert_eq!(b.hits(), 1);
    // A reload that keeps b keeps it ejected.
    std::fs::write(
        &path,
        both.replace("base_ejection_time: 30s", "base_ejection_time: 31s"),
    )
    .expect("write");
    proxy.reload().await.expect("reload");
    assert_eq!(backend(&status(proxy.admin_addr).await, 1)["ejected"], true);
    for _ in 0..4 {
        c.get("/").await.expect("request");
    }
    assert_eq!(b.hits(), 1, "still ejected after the reload");
    // b leaves the config: its series go after a scrape.
    let only_a = {
        let mut up = upstream("web", "round_robin", &[(&a, 1)]);
        up.push_str(detection);
        config(&[up], "")
    };
    std::fs::write(&path, &only_a).expect("write");
    proxy.reload().await.expect("reload");
    metrics(proxy.admin_addr).await;
    let m = metrics(proxy.admin_addr).await;
    assert!(!m.contains(&b.url()), "b's series linger:\n{m}");
    stop(proxy).await;
}

#[tokio::test]
async fn slow_start_ramps_a_new_backends_share_and_never_turns_a_request_away() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let yaml = |backends: &[(&Backend, u32)]| {
        let mut up = upstream("web", "round_robin", backends);
        up.push_str("    slow_start: 2s\n");
        config(&[up], "")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("isame.yaml");
    std::fs::write(&path, yaml(&[(&a, 1)])).expect("write");
    let proxy = start_with(&yaml(&[(&a, 1)]), Some(path.clone()), 1);
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    assert_eq!(backend_of(&c.get("/").await.expect("request")), "a");

    std::fs::write(&path, yaml(&[(&a, 1), (&b, 1)])).expect("write");
    proxy.reload().await.expect("reload");
    let s = status(proxy.admin_addr).await;
    assert_eq!(s["upstreams"][0]["slow_start"], "2s");
    assert!(
        backend(&s, 1)["slow_start_share"]
            .as_f64()
            .is_some_and(|p| p < 0.5),
        "{s}"
    );
    assert!(backend(&s, 0)["slow_start_share"].is_null(), "{s}");
    let t0 = Instant::now();
    let mut seen: Vec<(f64, bool)> = Vec::new();
    while t0.elapsed() < Duration::from_millis(2600) {
        let r = c.get("/").await.expect("request");
        assert_eq!(r.status, 200, "slow start never fails a request");
        seen.push((t0.elapsed().as_secs_f64(), backend_of(&r) == "b"));
    }
    let share = |from: f64, to: f64| {
        let w: Vec<bool> = seen
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|(_, b)| *b)
            .collect();
        assert!(
            w.len() >= 20,
            "too few requests in [{from}, {to}): {}",
            w.len()
        );
        w.iter().filter(|b| **b).count() as f64 / w.len() as f64
    };
    let (early, middle, done) = (share(0.0, 0.4), share(0.9, 1.3), share(2.2, 2.6));
    assert!(early < 0.2, "b takes little at first: {early}");
    assert!((0.15..0.45).contains(&middle), "b ramps: {middle}");
    assert!(
        (0.4..0.6).contains(&done),
        "b takes its full share after 2s: {done}"
    );
    assert!(early < middle && middle < done, "{early} {middle} {done}");

    // Every backend ramping at once (the only one replaced): still served.
    let c2 = Backend::start("c").await;
    std::fs::write(&path, yaml(&[(&c2, 1)])).expect("write");
    proxy.reload().await.expect("reload");
    for _ in 0..20 {
        let r = c.get("/").await.expect("request");
        assert_eq!((r.status.as_u16(), backend_of(&r).as_str()), (200, "c"));
    }
    stop(proxy).await;
}

/// Starts `GET path` on a new connection and returns it once the response
/// head arrived, with the body bytes read so far.
async fn started(addr: std::net::SocketAddr, path: &str) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
    }
    (s, got)
}

/// Reads until the peer closes (or 5 s pass); the bytes and how long it took.
async fn drain_all(mut s: tokio::net::TcpStream, mut got: Vec<u8>) -> (Vec<u8>, Duration) {
    use tokio::io::AsyncReadExt;
    let t = Instant::now();
    let mut buf = [0u8; 16384];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    (got, t.elapsed())
}

#[tokio::test]
async fn a_removed_backends_streaming_responses_are_cut_at_its_drain_timeout() {
    let (slow, other) = (Backend::start("slow").await, Backend::start("other").await);
    let yaml = |backends: &[&Backend], timeout: &str| {
        let list: Vec<String> = backends
            .iter()
            .map(|b| format!("\"{}\"", b.url()))
            .collect();
        config(
            &[format!(
                "  - name: web\n    drain_timeout: {timeout}\n    backends: [{}]\n",
                list.join(", ")
            )],
            "",
        )
    };
    // 20 chunks of 16 KiB, 100 ms apart: two seconds of body.
    let path = "/stream?bytes=327680&trickle_ms=100";
    let proxy = start(&yaml(&[&slow], "300ms"));
    let (s, got) = started(proxy.proxy_addr, path).await;
    let t = Instant::now();
    proxy
        .apply(parse(&yaml(&[&other], "300ms")))
        .await
        .expect("remove slow");
    let (got, _) = drain_all(s, got).await;
    let took = t.elapsed();
    assert!(got.len() < 327_680, "cut short: {} bytes", got.len());
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "cut {took:?} after the backend left"
    );
    // New requests go to the backend that stayed.
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    assert_eq!(backend_of(&c.get("/").await.expect("response")), "other");
    stop(proxy).await;

    // With a longer deadline the same response finishes whole.
    let proxy = start(&yaml(&[&slow], "10s"));
    let (s, got) = started(proxy.proxy_addr, path).await;
    proxy
        .apply(parse(&yaml(&[&other], "10s")))
        .await
        .expect("remove slow");
    let (got, _) = drain_all(s, got).await;
    assert!(got.len() > 327_680, "whole: {} bytes", got.len());
    stop(proxy).await;
}
