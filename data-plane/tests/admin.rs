//! The admin listener: metrics with the contract's names, health, readiness, status.

mod common;

use common::*;
use isame_testkit::{client::get, Backend, Client};

#[tokio::test]
async fn metrics_use_the_contract_names() {
    let b = Backend::start("b").await;
    let proxy = start(&config(&[upstream("web", "round_robin", &[(&b, 1)])], ""));
    let mut client = Client::http1(proxy.proxy_addr).await.expect("connect");
    for _ in 0..3 {
        client.get("/").await.expect("request");
    }
    client.get("/?status=500").await.expect("request");
    let r = get(proxy.admin_addr, "/metrics").await.expect("metrics");
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/plain"));
    let text = r.text();
    let url = b.url();
    for expected in [
        format!(
            r#"isame_lb_requests_total{{backend="{url}",method="GET",status="200",upstream="web"}} 3"#
        ),
        format!(
            r#"isame_lb_requests_total{{backend="{url}",method="GET",status="500",upstream="web"}} 1"#
        ),
        r#"isame_lb_request_duration_seconds_count{upstream="web"} 4"#.to_owned(),
        format!(r#"isame_lb_upstream_healthy{{backend="{url}",upstream="web"}} 1"#),
        format!(r#"isame_lb_circuit_open{{backend="{url}",upstream="web"}} 0"#),
        "isame_lb_active_connections 1".to_owned(),
        "isame_lb_config_version 1".to_owned(),
        r#"isame_lb_config_reloads_total{result="success"} 0"#.to_owned(),
        r#"isame_lb_retries_total{upstream="web"} 0"#.to_owned(),
        r#"isame_lb_rate_limited_total{upstream="web"} 0"#.to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected}\n{text}");
    }
    drop(client);
    stop(proxy).await;
}

#[tokio::test]
async fn health_ready_and_status() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&config(
        &[upstream("web", "weighted_round_robin", &[(&a, 3), (&b, 1)])],
        "service: shop\nversion: \"7\"\nroutes:\n  - name: all\n    path_prefix: /\n    upstream: web\n",
    ));
    let health = get(proxy.admin_addr, "/health").await.expect("health");
    assert_eq!(
        (health.status.as_u16(), health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = get(proxy.admin_addr, "/ready").await.expect("ready");
    assert_eq!(ready.status, 200);
    let s = get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(s["service"], "shop");
    assert_eq!(s["version"], "7");
    assert_eq!(s["config_version"], 1);
    assert_eq!(s["workers"], 2);
    assert_eq!(s["listeners"]["proxy"], proxy.proxy_addr.to_string());
    let up = &s["upstreams"][0];
    assert_eq!(up["name"], "web");
    assert_eq!(up["algorithm"], "weighted_round_robin");
    assert_eq!(up["backends"][0]["url"], a.url());
    assert_eq!(up["backends"][0]["weight"], 3);
    assert_eq!(up["backends"][0]["in_flight"], 0);
    assert_eq!(up["backends"][1]["healthy"], true);
    assert_eq!(s["routes"][0]["name"], "all");
    assert_eq!(
        get(proxy.admin_addr, "/nope").await.expect("404").status,
        404
    );
    let mut c = Client::http1(proxy.admin_addr).await.expect("connect");
    let post = http::Request::post("/status")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("req");
    assert_eq!(c.send(post).await.expect("405").status, 405);
    // The proxy port proxies every path, including the admin ones.
    let r = get(proxy.proxy_addr, "/status").await.expect("proxied");
    assert_eq!(r.json()["path"], "/status");
    stop(proxy).await;
}

#[tokio::test]
async fn metrics_can_be_moved_or_disabled() {
    let b = Backend::start("b").await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "metrics:\n  path: /prom\n",
    ));
    assert_eq!(
        get(proxy.admin_addr, "/prom").await.expect("prom").status,
        200
    );
    assert_eq!(
        get(proxy.admin_addr, "/metrics").await.expect("old").status,
        404
    );
    stop(proxy).await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&b, 1)])],
        "metrics:\n  enabled: false\n",
    ));
    assert_eq!(
        get(proxy.admin_addr, "/metrics").await.expect("off").status,
        404
    );
    assert_eq!(
        get(proxy.admin_addr, "/status")
            .await
            .expect("status")
            .status,
        200
    );
    stop(proxy).await;
}
