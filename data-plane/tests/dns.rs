//! Backends by host name against a DNS server on loopback: every address
//! becomes an endpoint, answers that change while traffic flows lose no
//! request, failed lookups keep the last good addresses, and a name that
//! never resolved takes no requests until it does.

mod common;

use common::*;
use isame_data_plane::server::Server;
use isame_testkit::{Backend, Client, DnsMode, DnsServer};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::time::Instant;

/// Backends on 127.0.0.2, .3 and .4, all on one port (a URL names one).
async fn three() -> (Vec<Backend>, u16) {
    for _ in 0..20 {
        let first = Backend::start_on(addr(2, 0), "b2").await;
        let port = first.addr.port();
        let mut all = vec![first];
        for (last, name) in [(3, "b3"), (4, "b4")] {
            let Ok(l) = std::net::TcpListener::bind(addr(last, port)) else {
                break;
            };
            drop(l);
            all.push(Backend::start_on(addr(last, port), name).await);
        }
        if all.len() == 3 {
            return (all, port);
        }
    }
    panic!("no port free on 127.0.0.2, .3 and .4 at once");
}

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(ip(last), port)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

fn yaml(dns: &DnsServer, port: u16) -> String {
    config(
        &[format!(
            "  - name: web\n    dns_refresh: 1s\n    backends:\n      - url: http://api.test:{port}\n"
        )],
        &format!("dns:\n  servers: [\"{}\"]\n  timeout: 300ms\n", dns.addr),
    )
}

async fn status(proxy: &Server) -> serde_json::Value {
    isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json()
}

async fn metrics(proxy: &Server) -> String {
    isame_testkit::client::get(proxy.admin_addr, "/metrics")
        .await
        .expect("metrics")
        .text()
}

/// Sends requests until `done` says stop (at most 15 s); every one must
/// succeed. Returns who answered, in order.
async fn traffic_until(proxy: &Server, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(Instant::now() < deadline, "gave up; answered by {seen:?}");
        let r = c.get("/").await.expect("response");
        assert_eq!(r.status, 200, "request {} failed: {}", seen.len(), r.text());
        seen.push(backend_of(&r));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen
}

// Several threads: the proxy looks its names up at start while the test
// waits, and the DNS server runs on the test's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_address_is_an_endpoint_and_changes_lose_no_request() {
    let (backends, port) = three().await;
    let dns = DnsServer::start().await;
    // A long TTL: `dns_refresh: 1s` asks sooner.
    dns.set("api.test", &[ip(2), ip(3)], 300);
    let proxy = start(&yaml(&dns, port));

    // Both addresses serve from the first request on.
    let seen = traffic_until(&proxy, |s| s.len() >= 10).await;
    assert!(
        seen.iter().any(|b| b == "b2") && seen.iter().any(|b| b == "b3"),
        "{seen:?}"
    );
    let s = status(&proxy).await;
    let eps = &s["upstreams"][0]["backends"];
    assert_eq!(eps.as_array().map(Vec::len), Some(2), "{s}");
    assert_eq!(eps[0]["url"], format!("http://127.0.0.2:{port}"));
    assert_eq!(eps[0]["resolved_from"], format!("http://api.test:{port}"));
    assert_eq!(s["dns"][0]["name"], "api.test");
    assert_eq!(
        s["dns"][0]["addresses"],
        serde_json::json!(["127.0.0.2", "127.0.0.3"])
    );

    // The name moves to .3 and .4 while requests flow: none fails, and
    // soon only the new addresses answer.
    dns.set("api.test", &[ip(3), ip(4)], 1);
    let seen = traffic_until(&proxy, |s| {
        s.len() >= 20 && s[s.len() - 20..].iter().all(|b| b != "b2") && s.iter().any(|b| b == "b4")
    })
    .await;
    assert!(
        seen.len() < 2000,
        "{} requests before the change showed",
        seen.len()
    );
    assert!(backends[2].hits() > 0, "the new address took requests");
    let m = metrics(&proxy).await;
    assert!(
        m.contains("isame_lb_dns_addresses{name=\"api.test\"} 2"),
        "{m}"
    );
    assert!(
        m.contains(&format!("backend=\"http://127.0.0.4:{port}\"")),
        "{m}"
    );
    let v = proxy.config_version();
    assert_eq!(v, 1, "DNS changes do not make new config versions");
    stop(proxy).await;
}

// Several threads: the proxy looks its names up at start while the test
// waits, and the DNS server runs on the test's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_lookups_keep_the_last_good_addresses() {
    let (_backends, port) = three().await;
    let dns = DnsServer::start().await;
    dns.set("api.test", &[ip(2)], 1);
    let proxy = start(&yaml(&dns, port));
    traffic_until(&proxy, |s| s.len() >= 3).await;

    for mode in [DnsMode::Fail, DnsMode::Silent] {
        dns.set_mode(mode);
        let asked = dns.queries();
        // Requests keep going to .2 while lookups fail.
        let seen = traffic_until(&proxy, |s| s.len() >= 10 && dns.queries() > asked + 1).await;
        assert!(seen.iter().all(|b| b == "b2"), "{seen:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = status(&proxy).await;
            if s["dns"][0]["error"].is_string() {
                assert_eq!(
                    s["dns"][0]["addresses"],
                    serde_json::json!(["127.0.0.2"]),
                    "{s}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "no error shown: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        dns.set_mode(DnsMode::Answer);
        // The error clears at the next good answer.
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(&proxy).await["dns"][0]["error"].is_string() {
            assert!(Instant::now() < deadline, "error never cleared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let m = metrics(&proxy).await;
    assert!(
        m.lines()
            .any(|l| l
                .starts_with("isame_lb_dns_lookups_total{name=\"api.test\",result=\"failed\"}")),
        "{m}"
    );
    // A name that goes away (NXDOMAIN) keeps its last addresses too.
    dns.remove("api.test");
    let asked = dns.queries();
    let seen = traffic_until(&proxy, |s| s.len() >= 5 && dns.queries() > asked + 1).await;
    assert!(seen.iter().all(|b| b == "b2"), "{seen:?}");
    stop(proxy).await;
}

// Several threads: the proxy looks its names up at start while the test
// waits, and the DNS server runs on the test's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_never_resolved_takes_requests_once_it_does() {
    let (_backends, port) = three().await;
    let dns = DnsServer::start().await;
    let proxy = start(&yaml(&dns, port));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let r = c.get("/").await.expect("response");
    assert_eq!(r.status, 503, "no endpoint yet: {}", r.text());
    let s = status(&proxy).await;
    assert!(s["dns"][0]["error"].is_string(), "{s}");
    assert!(s["dns"][0]["addresses"].is_null(), "{s}");

    dns.set("api.test", &[ip(4)], 1);
    // Failed lookups are tried again within seconds (1 s, doubling).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get("/").await.expect("response");
        if r.status == 200 {
            assert_eq!(backend_of(&r), "b4");
            break;
        }
        assert_eq!(r.status, 503);
        assert!(Instant::now() < deadline, "the name never took requests");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(proxy).await;
}

// Several threads: the proxy looks its names up at start while the test
// waits, and the DNS server runs on the test's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_adds_a_name_serves_it_at_once() {
    let (_backends, port) = three().await;
    let dns = DnsServer::start().await;
    dns.set("new.test", &[ip(3)], 300);
    let plain = Backend::start("plain").await;
    let before = config(
        &[upstream("web", "round_robin", &[(&plain, 1)])],
        &format!("dns:\n  servers: [\"{}\"]\n", dns.addr),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("isame.yaml");
    std::fs::write(&path, &before).expect("write");
    let proxy = start_with(&before, Some(path.clone()), 2);
    let after = before.replace(
        &format!("      - url: {}\n", plain.url()),
        &format!("      - url: http://new.test:{port}\n"),
    );
    assert_ne!(after, before);
    std::fs::write(&path, after).expect("write");
    proxy.reload().await.expect("reload");
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let r = c.get("/").await.expect("response");
    assert_eq!((r.status.as_u16(), backend_of(&r).as_str()), (200, "b3"));
    assert!(metrics(&proxy)
        .await
        .contains("isame_lb_dns_addresses{name=\"new.test\"} 1"));
    // Back to addresses only: the name leaves `/status` and the metrics.
    std::fs::write(&path, &before).expect("write");
    proxy.reload().await.expect("reload");
    assert!(!metrics(&proxy).await.contains("new.test"));
    assert_eq!(status(&proxy).await["dns"], serde_json::json!([]));
    stop(proxy).await;
}
