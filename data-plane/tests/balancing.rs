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

/// A GET of `/` carrying `headers`.
fn get_with(headers: &[(&str, &str)]) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut b = http::Request::get("/");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(http_body_util::Full::default()).expect("request")
}

/// Which backend each of `users` (sent as `X-User`) reaches.
async fn owners(client: &mut Client, users: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for u in users {
        let r = client
            .send(get_with(&[("x-user", u)]))
            .await
            .expect("request");
        assert_eq!(r.status, 200);
        out.push(backend_of(&r));
    }
    out
}

#[tokio::test]
async fn consistent_hash_moves_only_the_keys_of_a_backend_that_leaves() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
        Backend::start("d").await,
    ];
    let yaml = |drain_c: bool, without_d: bool| {
        let mut s = String::from(
            "  - name: web\n    algorithm: consistent_hash\n    hash_on: header:X-User\n    backends:\n",
        );
        for (i, b) in backends.iter().enumerate() {
            if without_d && i == 3 {
                continue;
            }
            s.push_str(&format!("      - url: {}\n", b.url()));
            if drain_c && i == 2 {
                s.push_str("        drain: true\n");
            }
        }
        config(&[s], "")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("isame.yaml");
    std::fs::write(&path, yaml(false, false)).expect("write");
    let proxy = common::start_with(&yaml(false, false), Some(path.clone()), 2);
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let users: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
    let status = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    let up = &status["upstreams"][0];
    assert_eq!(
        (up["algorithm"].as_str(), up["hash_on"].as_str()),
        (Some("consistent_hash"), Some("header:X-User"))
    );

    let first = owners(&mut client, &users).await;
    assert_eq!(
        first,
        owners(&mut client, &users).await,
        "a key keeps its backend"
    );
    for name in ["a", "b", "c", "d"] {
        let n = first.iter().filter(|o| *o == name).count();
        assert!((50..=150).contains(&n), "{name} got {n} of 400: {first:?}");
    }

    // A draining backend is skipped: only its keys move, to the others.
    std::fs::write(&path, yaml(true, false)).expect("write");
    proxy.reload().await.expect("reload");
    let drained = owners(&mut client, &users).await;
    for (before, now) in first.iter().zip(&drained) {
        assert_ne!(now, "c");
        if before != "c" {
            assert_eq!(before, now, "a key of a staying backend moved");
        }
    }

    // Removing d: only d's keys move; c is back and takes its own keys again.
    std::fs::write(&path, yaml(false, true)).expect("write");
    proxy.reload().await.expect("reload");
    let removed = owners(&mut client, &users).await;
    for (before, now) in first.iter().zip(&removed) {
        assert_ne!(now, "d");
        if before != "d" {
            assert_eq!(before, now, "a key of a staying backend moved");
        }
    }

    // Without the key: the fallback (weighted round robin) rotates.
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..6 {
        seen.push(backend_of(&client.get("/").await.expect("request")));
    }
    let mut distinct = seen.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct, ["a", "b", "c"], "{seen:?}");
    stop(proxy).await;
}

#[tokio::test]
async fn consistent_hash_on_the_client_address_follows_trusted_forwarding() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&config(
        &[upstream("web", "consistent_hash", &[(&a, 1), (&b, 1)])],
        "trusted_proxies: [127.0.0.1]\n",
    ));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let mut by_client: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for i in 0..40 {
            let ip = format!("203.0.113.{i}");
            let r = client
                .send(get_with(&[("x-forwarded-for", &ip)]))
                .await
                .expect("request");
            let got = backend_of(&r);
            let was = by_client.entry(ip.clone()).or_insert_with(|| got.clone());
            assert_eq!(*was, got, "{ip} moved in round {round}");
        }
    }
    let on_a = by_client.values().filter(|b| *b == "a").count();
    assert!((8..=32).contains(&on_a), "a got {on_a} of 40 clients");
    stop(proxy).await;
}

/// The `lb` cookie a reply sets, as a request sends it back (`lb=ID`).
fn sticky_cookie(r: &isame_testkit::Reply) -> Option<String> {
    let line = r.headers.get("set-cookie")?.to_str().ok()?;
    Some(line.split(';').next()?.to_owned())
}

#[tokio::test]
async fn sticky_cookies_keep_a_client_on_its_backend_while_it_is_eligible() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let yaml = |drain: Option<&str>| {
        let mut s =
            String::from("  - name: web\n    sticky: {cookie: lb, ttl: 1h}\n    backends:\n");
        for (name, be) in [("a", &a), ("b", &b), ("c", &c)] {
            s.push_str(&format!("      - url: {}\n", be.url()));
            if drain == Some(name) {
                s.push_str("        drain: true\n");
            }
        }
        config(&[s], "")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("isame.yaml");
    std::fs::write(&path, yaml(None)).expect("write");
    let proxy = common::start_with(&yaml(None), Some(path.clone()), 2);
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let status = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(status["upstreams"][0]["sticky_cookie"], "lb");

    let first = client.get("/").await.expect("request");
    let home = backend_of(&first);
    let cookie = sticky_cookie(&first).expect("a new client gets a cookie");
    let line = first.headers["set-cookie"].to_str().expect("ascii");
    assert!(
        line.ends_with("; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"),
        "{line}"
    );
    for addr in [a.addr, b.addr, c.addr] {
        assert!(
            !line.contains(&addr.port().to_string()),
            "the cookie names no address: {line}"
        );
    }
    // Round robin would rotate; the cookie holds, and is not set again.
    for _ in 0..9 {
        let r = client
            .send(get_with(&[("cookie", &cookie)]))
            .await
            .expect("request");
        assert_eq!(backend_of(&r), home);
        assert!(r.headers.get("set-cookie").is_none());
    }
    // A cookie from elsewhere (or forged) is replaced by a real one.
    let r = client
        .send(get_with(&[("cookie", "lb=0000000000000000")]))
        .await
        .expect("request");
    assert!(sticky_cookie(&r).is_some());

    // The backend drains: the client moves, and its cookie with it.
    std::fs::write(&path, yaml(Some(&home))).expect("write");
    proxy.reload().await.expect("reload");
    let moved = client
        .send(get_with(&[("cookie", &cookie)]))
        .await
        .expect("request");
    let new_home = backend_of(&moved);
    assert_ne!(new_home, home);
    let new_cookie = sticky_cookie(&moved).expect("a cookie for the new backend");
    assert_ne!(new_cookie, cookie);
    for _ in 0..5 {
        let r = client
            .send(get_with(&[("cookie", &new_cookie)]))
            .await
            .expect("request");
        assert_eq!(backend_of(&r), new_home);
    }
    stop(proxy).await;
}

#[tokio::test]
async fn a_route_split_shares_requests_exactly_and_follows_a_reload() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let yaml = |w1: u32, w2: u32| {
        config(
            &[
                upstream("v1", "round_robin", &[(&v1, 1)]),
                upstream("v2", "round_robin", &[(&v2, 1)]),
            ],
            &format!(
                "routes:\n  - name: shop\n    path_prefix: /\n    split:\n      - {{upstream: v1, weight: {w1}}}\n      - {{upstream: v2, weight: {w2}}}\n"
            ),
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("isame.yaml");
    std::fs::write(&path, yaml(3, 1)).expect("write");
    let proxy = common::start_with(&yaml(3, 1), Some(path.clone()), 2);
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen.push(backend_of(&client.get("/").await.expect("request")));
    }
    for window in seen.chunks(4) {
        assert_eq!(window.iter().filter(|b| *b == "v2").count(), 1, "{seen:?}");
    }
    let status = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(status["routes"][0]["split"][1]["weight"], 1, "{status}");

    std::fs::write(&path, yaml(0, 1)).expect("write");
    proxy.reload().await.expect("reload");
    for _ in 0..10 {
        assert_eq!(backend_of(&client.get("/").await.expect("request")), "v2");
    }
    stop(proxy).await;
}

#[tokio::test]
async fn canary_users_are_picked_out_by_cookie() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let proxy = start(&config(
        &[
            upstream("v1", "round_robin", &[(&v1, 1)]),
            upstream("v2", "round_robin", &[(&v2, 1)]),
        ],
        "routes:\n  - name: canary-users\n    cookies: {canary: \"1\"}\n    upstream: v2\n  - name: everyone\n    upstream: v1\n",
    ));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    for (cookie, want) in [
        (None, "v1"),
        (Some("canary=1"), "v2"),
        (Some("session=abc; canary=1"), "v2"),
        (Some("canary=0"), "v1"),
        (Some("xcanary=1"), "v1"),
        (Some("canary=\"1\""), "v2"),
    ] {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
        let r = client.send(get_with(&headers)).await.expect("request");
        assert_eq!(backend_of(&r), want, "cookie {cookie:?}");
    }
    stop(proxy).await;
}
