//! Per-client sliding-window rate limits on upstreams and routes.

mod common;

use common::*;
use http::Request;
use http_body_util::Full;
use isame_testkit::{Backend, Client};

fn get_as(path: &str, client_ip: Option<&str>) -> Request<Full<bytes::Bytes>> {
    let mut b = Request::get(path);
    if let Some(ip) = client_ip {
        b = b.header("x-forwarded-for", ip);
    }
    b.body(Full::new(bytes::Bytes::new())).expect("request")
}

fn limited_upstream(b: &Backend, limit: u32) -> String {
    format!(
        "upstreams:\n  - name: web\n    rate_limit:\n      requests_per_ip: {limit}\n      window_size: 10s\n    backends: [\"{}\"]\n",
        b.url()
    )
}

#[tokio::test]
async fn over_the_limit_gets_429_with_rate_limit_headers() {
    let b = Backend::start("b").await;
    let proxy = start(&limited_upstream(&b, 3));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..3 {
        assert_eq!(c.get("/").await.expect("request").status, 200);
    }
    let r = c.get("/").await.expect("limited");
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "rate limited", "status": 429})
    );
    let secs: u64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=10).contains(&secs), "{secs}");
    assert_eq!(r.headers["ratelimit-limit"], "3");
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    assert_eq!(r.headers["ratelimit-reset"], secs.to_string().as_str());
    assert_eq!(b.hits(), 3, "limited requests never reach the backend");
    let metrics = isame_testkit::client::get(proxy.admin_addr, "/metrics")
        .await
        .expect("metrics")
        .text();
    assert!(
        metrics.contains("isame_lb_rate_limited_total{upstream=\"web\"} 1"),
        "{metrics}"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn clients_are_counted_apart_and_cannot_dodge_by_claiming_another_address() {
    let b = Backend::start("b").await;
    // Behind a trusted proxy, X-Forwarded-For tells clients apart.
    let trusted = start(&format!(
        "{}trusted_proxies: [\"127.0.0.0/8\"]\n",
        limited_upstream(&b, 2)
    ));
    let mut c = Client::http1(trusted.proxy_addr).await.expect("connect");
    for ip in ["198.51.100.1", "198.51.100.2"] {
        for _ in 0..2 {
            assert_eq!(
                c.send(get_as("/", Some(ip))).await.expect("request").status,
                200,
                "{ip}"
            );
        }
        assert_eq!(
            c.send(get_as("/", Some(ip))).await.expect("request").status,
            429,
            "{ip}"
        );
    }
    stop(trusted).await;
    // From an untrusted peer the header is ignored: a new claim each time
    // does not buy new requests.
    let direct = start(&limited_upstream(&b, 2));
    let mut c = Client::http1(direct.proxy_addr).await.expect("connect");
    let statuses: Vec<u16> =
        futures_statuses(&mut c, &["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]).await;
    assert_eq!(statuses, [200, 200, 429, 429]);
    stop(direct).await;
}

async fn futures_statuses(c: &mut Client, ips: &[&str]) -> Vec<u16> {
    let mut out = Vec::new();
    for ip in ips {
        out.push(
            c.send(get_as("/", Some(ip)))
                .await
                .expect("request")
                .status
                .as_u16(),
        );
    }
    out
}

#[tokio::test]
async fn routes_have_their_own_limits() {
    let b = Backend::start("b").await;
    let yaml = config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "routes:\n  - name: login\n    path_prefix: /login\n    upstream: web\n    rate_limit:\n      requests_per_ip: 1\n      window_size: 1m\n  - name: rest\n    path_prefix: /\n    upstream: web\n",
    );
    let proxy = start(&yaml);
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    assert_eq!(c.get("/login").await.expect("first").status, 200);
    assert_eq!(c.get("/login").await.expect("second").status, 429);
    for _ in 0..5 {
        assert_eq!(c.get("/other").await.expect("unlimited").status, 200);
    }
    stop(proxy).await;
}

#[tokio::test]
async fn counts_carry_over_a_reload_that_keeps_the_limit() {
    let (b, other) = (Backend::start("b").await, Backend::start("other").await);
    let proxy = start(&limited_upstream(&b, 2));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..2 {
        c.get("/").await.expect("request");
    }
    // Same limit, another backend: the client's count stays.
    proxy
        .apply(parse(&limited_upstream(&other, 2)))
        .await
        .expect("reload");
    assert_eq!(c.get("/").await.expect("request").status, 429);
    // A new limit starts afresh.
    proxy
        .apply(parse(&limited_upstream(&other, 5)))
        .await
        .expect("reload");
    assert_eq!(c.get("/").await.expect("request").status, 200);
    stop(proxy).await;
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_prefix() {
    let b = Backend::start("b").await;
    // The test's loopback peer is a trusted proxy, so X-Forwarded-For
    // names the client.
    let yaml = |prefix: &str| {
        format!(
            "trusted_proxies: [\"127.0.0.1/32\"]\nupstreams:\n  - name: web\n    rate_limit:\n      requests_per_ip: 1\n      window_size: 60s\n{prefix}    backends: [\"{}\"]\n",
            b.url()
        )
    };
    let proxy = start(&yaml(""));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    let status = |r: isame_testkit::Reply| r.status.as_u16();
    let ask = |ip: &'static str| get_as("/", Some(ip));
    assert_eq!(
        status(c.send(ask("2001:db8:1:2::1")).await.expect("r")),
        200
    );
    assert_eq!(
        status(c.send(ask("2001:db8:1:2:abcd::99")).await.expect("r")),
        429,
        "another address of the same /64 is the same client"
    );
    assert_eq!(
        status(c.send(ask("2001:db8:1:3::1")).await.expect("r")),
        200,
        "another /64"
    );
    stop(proxy).await;
    let proxy = start(&yaml("      ipv6_prefix: 128\n"));
    let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
    assert_eq!(
        status(c.send(ask("2001:db8:1:2::1")).await.expect("r")),
        200
    );
    assert_eq!(
        status(c.send(ask("2001:db8:1:2:abcd::99")).await.expect("r")),
        200,
        "with /128 every address is a client"
    );
    stop(proxy).await;
}
