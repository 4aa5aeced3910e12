//! Hot reload: a storm of reloads under traffic drops nothing, an invalid
//! config changes nothing, file changes are picked up, and unchanged backends
//! keep their connections and counters.

mod common;

use common::*;
use isame_testkit::{Backend, Client};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_storm_under_traffic_drops_nothing() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let configs = [
        config(&[upstream("web", "round_robin", &[(&a, 1), (&b, 1)])], ""),
        config(
            &[upstream("web", "weighted_round_robin", &[(&b, 3), (&c, 1)])],
            "",
        ),
        config(
            &[upstream("web", "least_connections", &[(&a, 1), (&c, 1)])],
            "",
        ),
        config(
            &[
                upstream("web", "round_robin", &[(&c, 1)]),
                upstream("other", "round_robin", &[(&a, 1)]),
            ],
            "routes:\n  - name: all\n    path_prefix: /\n    upstream: web\n",
        ),
    ];
    let proxy = Arc::new(start(&configs[0]));
    let running = Arc::new(AtomicBool::new(true));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (addr, running, ok, failures) = (
            proxy.proxy_addr,
            running.clone(),
            ok.clone(),
            failures.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut client = Client::http1(addr).await.expect("connect");
            while running.load(SeqCst) {
                // Half the clients also open a new connection now and then.
                if i % 2 == 1 && ok.load(SeqCst) % 25 == 0 {
                    client = Client::http1(addr).await.expect("reconnect");
                }
                match client.get("/?delay_ms=2").await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, SeqCst);
                    }
                    Ok(r) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("status {}", r.status)),
                    Err(e) => failures.lock().expect("lock").push(e.to_string()),
                }
            }
        }));
    }
    for n in 0..20 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let generation = proxy
            .apply(parse(&configs[(n + 1) % configs.len()]))
            .await
            .expect("reload");
        assert_eq!(generation, n as u64 + 2);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    running.store(false, SeqCst);
    for c in clients {
        c.await.expect("client");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    assert!(
        ok.load(SeqCst) > 100,
        "only {} requests went through",
        ok.load(SeqCst)
    );
    let proxy = Arc::try_unwrap(proxy).ok().expect("sole owner");
    stop(proxy).await;
}

#[tokio::test]
async fn invalid_reload_changes_nothing() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("isame.yaml");
    std::fs::write(
        &path,
        config(&[upstream("web", "round_robin", &[(&a, 1)])], ""),
    )
    .expect("write");
    let proxy = start_with(
        &std::fs::read_to_string(&path).expect("read"),
        Some(path.clone()),
        1,
    );
    // Half-written and plain wrong configs, one after the other.
    for bad in [
        "upstreams:\n  - name: web\n    backends: [".to_owned(),
        config(&[upstream("web", "round_robin", &[(&b, 0)])], ""),
        format!(
            "upstreams:\n  - name: web\n    backends: [\"{}\"]\n    colour: red\n",
            b.url()
        ),
    ] {
        std::fs::write(&path, bad).expect("write");
        let err = proxy.reload().await.expect_err("invalid config is refused");
        assert!(!err.to_string().is_empty());
        let r = isame_testkit::client::get(proxy.proxy_addr, "/")
            .await
            .expect("request");
        assert_eq!(
            (r.status.as_u16(), backend_of(&r).as_str()),
            (200, "a"),
            "still serving the old config"
        );
    }
    assert_eq!(proxy.config_version(), 1);
    assert_eq!(b.hits(), 0);
    let metrics = isame_testkit::client::get(proxy.admin_addr, "/metrics")
        .await
        .expect("metrics")
        .text();
    // The watcher may see the same bad files too: at least three refusals.
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("isame_lb_config_reloads_total{result=\"error\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(refused >= 3, "{metrics}");
    assert!(metrics.contains("isame_lb_config_version 1"), "{metrics}");
    stop(proxy).await;
}

#[tokio::test]
async fn editing_the_file_reloads_it() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("isame.yaml");
    let first = config(&[upstream("web", "round_robin", &[(&a, 1)])], "");
    std::fs::write(&path, &first).expect("write");
    let proxy = start_with(&first, Some(path.clone()), 1);
    // Replace the file the way editors do: write elsewhere, rename over it.
    let tmp = dir.path().join(".isame.yaml.swp");
    std::fs::write(
        &tmp,
        config(&[upstream("web", "round_robin", &[(&b, 1)])], ""),
    )
    .expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    let mut waited = 0;
    while proxy.config_version() < 2 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_eq!(proxy.config_version(), 2, "the file change was applied");
    let r = isame_testkit::client::get(proxy.proxy_addr, "/")
        .await
        .expect("request");
    assert_eq!(backend_of(&r), "b");
    // Touching the file without changing it is not a new version.
    std::fs::write(&path, std::fs::read(&path).expect("read")).expect("rewrite");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(proxy.config_version(), 2);
    stop(proxy).await;
}

#[tokio::test]
async fn unchanged_backends_keep_connections_and_counters() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start_with(
        &config(&[upstream("web", "least_connections", &[(&a, 1)])], ""),
        None,
        1,
    );
    let addr = proxy.proxy_addr;
    let mut client = Client::http1(addr).await.expect("connect");
    for _ in 0..3 {
        client.get("/").await.expect("request");
    }
    assert_eq!(a.accepted(), 1);
    // A slow request is in flight on `a` across the reload.
    let slow = tokio::spawn(async move {
        let mut c = Client::http1(addr).await.expect("connect");
        c.get("/?delay_ms=800").await.expect("slow").status
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy
        .apply(parse(&config(
            &[upstream("web", "least_connections", &[(&a, 5), (&b, 1)])],
            "",
        )))
        .await
        .expect("reload");
    let status = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    let backends = &status["upstreams"][0]["backends"];
    assert_eq!(
        backends[0]["in_flight"], 1,
        "a's in-flight count survived the reload: {status}"
    );
    assert_eq!(backends[0]["weight"], 5);
    assert_eq!(backends[1]["in_flight"], 0);
    // Least connections sends new work to b while a is busy.
    let r = client.get("/").await.expect("request");
    assert_eq!(backend_of(&r), "b");
    assert_eq!(slow.await.expect("slow"), 200);
    let status = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(status["upstreams"][0]["backends"][0]["in_flight"], 0);
    // a's pooled connections outlived the reload: no new connection to a was needed.
    let before = a.accepted();
    for _ in 0..4 {
        client.get("/").await.expect("request");
    }
    assert!(a.hits() >= 6);
    assert_eq!(a.accepted(), before, "a's pool survived the reload");
    stop(proxy).await;
}

#[tokio::test]
async fn draining_backend_finishes_its_requests_and_takes_no_new_ones() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let both = |drain_a: bool| {
        format!(
            "upstreams:\n  - name: web\n    backends:\n      - url: {}\n        drain: {drain_a}\n      - url: {}\n",
            a.url(),
            b.url()
        )
    };
    let proxy = start_with(&both(false), None, 1);
    let addr = proxy.proxy_addr;
    let mut client = Client::http1(addr).await.expect("connect");
    // Find a request that lands on a and keep it in flight across the drain.
    let slow = loop {
        let s = tokio::spawn(async move {
            let mut c = Client::http1(addr).await.expect("connect");
            let r = c.get("/?delay_ms=600").await.expect("slow");
            (r.status.as_u16(), backend_of(&r))
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        if a.hits() == 1 {
            break s;
        }
        s.await.expect("slow");
    };
    proxy.apply(parse(&both(true))).await.expect("reload");
    for _ in 0..10 {
        let r = client.get("/").await.expect("request");
        assert_eq!(backend_of(&r), "b", "a is draining");
    }
    assert_eq!(slow.await.expect("slow"), (200, "a".to_string()));
    let status = isame_testkit::client::get(proxy.admin_addr, "/status")
        .await
        .expect("status")
        .json();
    assert_eq!(status["upstreams"][0]["backends"][0]["draining"], true);
    // Undrained, a takes its turn again.
    proxy.apply(parse(&both(false))).await.expect("reload");
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(backend_of(&client.get("/").await.expect("request")));
    }
    assert!(seen.contains(&"a".to_string()), "{seen:?}");
    stop(proxy).await;
}

/// The `/metrics` text of the proxy's admin port (one scrape).
async fn scrape(admin: std::net::SocketAddr) -> String {
    isame_testkit::client::get(admin, "/metrics")
        .await
        .expect("metrics")
        .text()
}

#[tokio::test]
async fn series_of_departed_backends_and_upstreams_go_after_a_scrape() {
    let keep = Backend::start("keep").await;
    let proxy = start(&config(
        &[upstream("web", "round_robin", &[(&keep, 1)])],
        "",
    ));
    let mut before: Vec<Backend> = Vec::new();
    // Twenty rounds: each brings a new backend in its own upstream, sends
    // it traffic, then replaces it.
    for round in 0..20 {
        let b = Backend::start(&format!("b{round}")).await;
        let up = format!("churn{round}");
        proxy
            .apply(parse(&config(
                &[
                    upstream("web", "round_robin", &[(&keep, 1)]),
                    upstream(&up, "round_robin", &[(&b, 1)]),
                ],
                &format!("routes:\n  - name: c\n    path_prefix: /c\n    upstream: {up}\n  - name: w\n    path_prefix: /\n    upstream: web\n"),
            )))
            .await
            .expect("reload");
        let mut c = Client::http1(proxy.proxy_addr).await.expect("connect");
        for _ in 0..3 {
            assert_eq!(c.get("/c").await.expect("request").status, 200);
            assert_eq!(c.get("/").await.expect("request").status, 200);
        }
        let text = scrape(proxy.admin_addr).await;
        assert!(text.contains(&format!("backend=\"{}\"", b.url())), "{text}");
        // The backend of the round before left with the reload above: this
        // scrape is its last. The one of two rounds ago is gone.
        if let Some(p) = before.last() {
            assert!(
                text.contains(&format!("backend=\"{}\"", p.url())),
                "round {round}: {text}"
            );
        }
        if before.len() >= 2 {
            let p = &before[before.len() - 2];
            assert!(
                !text.contains(&format!("backend=\"{}\"", p.url())),
                "round {round}: {text}"
            );
        }
        before.push(b);
    }
    proxy
        .apply(parse(&config(
            &[upstream("web", "round_robin", &[(&keep, 1)])],
            "",
        )))
        .await
        .expect("reload");
    let last = scrape(proxy.admin_addr).await;
    assert!(
        last.contains("upstream=\"churn19\""),
        "seen once more: {last}"
    );
    let text = scrape(proxy.admin_addr).await;
    assert!(
        !text.contains("churn"),
        "no upstream that left keeps a series: {text}"
    );
    let series = text
        .lines()
        .filter(|l| l.starts_with("isame_lb_requests_total{"))
        .count();
    assert_eq!(series, 1, "only `keep`'s GET 200 remains: {text}");
    assert!(text.contains(&format!("backend=\"{}\"", keep.url())));
    stop(proxy).await;
}
