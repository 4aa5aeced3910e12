//! Each algorithm distributes real requests over real backends as promised.

mod common;

use common::*;
use isame_testkit::{Backend, Client};
use std::collections::HashMap;

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&a, 1), (&b, 1), (&c, 1)])],
        "",
    ));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let mut seen = Vec::new();
    for _ in 0..30 {
        let r = client.get("/").await.expect("request");
        assert_eq!(r.status, 200);
        seen.push(backend_of(&r));
    }
    // With one client in sequence, every backend appears once in every three.
    for window in seen.chunks(3) {
        let mut w = window.to_vec();
        w.sort();
        assert_eq!(w, ["a", "b", "c"], "{seen:?}");
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (10, 10, 10));
    stop(proxy).await;
}

#[tokio::test]
async fn weighted_round_robin_is_exact_and_interleaved() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = start(&config(
        &[upstream(
            "web",
            "weighted_round_robin",
            &[(&a, 3), (&b, 2), (&c, 1)],
        )],
        "",
    ));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let mut seen = Vec::new();
    for _ in 0..60 {
        seen.push(backend_of(&client.get("/").await.expect("request")));
    }
    for cycle in seen.chunks(6) {
        // nginx's smooth order for 3:2:1, never a burst.
        assert_eq!(cycle, ["a", "b", "a", "c", "b", "a"], "{seen:?}");
    }
    stop(proxy).await;
}

#[tokio::test]
async fn least_connections_avoids_the_busy_backend() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = start(&config(
        &[upstream(
            "web",
            "least_connections",
            &[(&a, 1), (&b, 1), (&c, 1)],
        )],
        "",
    ));
    let addr = proxy.proxy_addr;
    // Two slow requests occupy two backends.
    let slow = tokio::spawn(async move {
        let mut c1 = Client::http1(addr).await.expect("connect");
        let mut c2 = Client::http1(addr).await.expect("connect");
        let (r1, r2) = tokio::join!(c1.get("/?delay_ms=1500"), c2.get("/?delay_ms=1500"));
        (
            backend_of(&r1.expect("slow 1")),
            backend_of(&r2.expect("slow 2")),
        )
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut client = Client::http1(addr).await.expect("connect");
    let mut quick = HashMap::new();
    for _ in 0..9 {
        *quick
            .entry(backend_of(&client.get("/").await.expect("quick")))
            .or_insert(0) += 1;
    }
    let (s1, s2) = slow.await.expect("slow requests");
    assert_ne!(
        s1, s2,
        "the second slow request must avoid the first's backend"
    );
    assert_eq!(
        quick.len(),
        1,
        "quick requests all go to the idle backend: {quick:?}"
    );
    assert!(
        !quick.contains_key(&s1) && !quick.contains_key(&s2),
        "{quick:?} vs {s1} {s2}"
    );
    stop(proxy).await;
}

#[tokio::test]
async fn least_connections_rotates_ties() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&config(
        &[upstream("web", "least_connections", &[(&a, 1), (&b, 1)])],
        "",
    ));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..20 {
        client.get("/").await.expect("request");
    }
    assert_eq!((a.hits(), b.hits()), (10, 10));
    stop(proxy).await;
}

#[tokio::test]
async fn routes_pick_upstreams_by_host_path_and_header() {
    let (web, api, canary) = (
        Backend::start("web").await,
        Backend::start("api").await,
        Backend::start("canary").await,
    );
    let yaml = config(
        &[
            upstream("web", "round_robin", &[(&web, 1)]),
            upstream("api", "round_robin", &[(&api, 1)]),
            upstream("canary", "round_robin", &[(&canary, 1)]),
        ],
        r#"routes:
  - name: canary
    path_prefix: /api
    headers:
      x-canary: "yes"
    upstream: canary
  - name: api
    host: api.example.com
    path_prefix: /api
    upstream: api
  - name: site
    path_prefix: /
    upstream: web
"#,
    );
    let proxy = start(&yaml);
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let req = |host: &str, path: &str, canary: bool| {
        let mut b = http::Request::get(path).header("host", host);
        if canary {
            b = b.header("x-canary", "yes");
        }
        b.body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request")
    };
    let r = client
        .send(req("api.example.com", "/api/users", false))
        .await
        .expect("api");
    assert_eq!(backend_of(&r), "api");
    assert_eq!(
        r.json()["path"],
        "/api/users",
        "the path is passed unchanged"
    );
    let r = client
        .send(req("api.example.com:8080", "/api", true))
        .await
        .expect("canary");
    assert_eq!(backend_of(&r), "canary");
    let r = client
        .send(req("www.example.com", "/api/users", false))
        .await
        .expect("site");
    assert_eq!(backend_of(&r), "web");
    let r = client
        .send(req("api.example.com", "/apix", false))
        .await
        .expect("site");
    assert_eq!(backend_of(&r), "web", "prefixes match whole path segments");
    stop(proxy).await;
}

#[tokio::test]
async fn unmatched_request_gets_json_404() {
    let web = Backend::start("web").await;
    let yaml = config(
        &[upstream("web", "round_robin", &[(&web, 1)])],
        "routes:\n  - name: api\n    path_prefix: /api\n    upstream: web\n",
    );
    let proxy = start(&yaml);
    let r = isame_testkit::client::get(proxy.proxy_addr, "/elsewhere")
        .await
        .expect("request");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no route");
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(web.hits(), 0);
    stop(proxy).await;
}

#[tokio::test]
async fn abandoned_requests_release_their_backend() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&config(
        &[upstream("web", "least_connections", &[(&a, 1), (&b, 1)])],
        "",
    ));
    let addr = proxy.proxy_addr;
    // Clients that give up while their backend is still thinking.
    let mut gave_up = Vec::new();
    for _ in 0..4 {
        gave_up.push(tokio::spawn(async move {
            let mut c = Client::http1(addr).await.expect("connect");
            let _ = c.get("/?delay_ms=3000").await;
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    let busy: u64 = (0..2)
        .map(|i| {
            status["upstreams"][0]["backends"][i]["in_flight"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(busy, 4, "{status}");
    for t in &gave_up {
        t.abort();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    for i in 0..2 {
        assert_eq!(
            status["upstreams"][0]["backends"][i]["in_flight"], 0,
            "{status}"
        );
    }
    assert_eq!(status["active_connections"], 0, "{status}");
    stop(proxy).await;
}
