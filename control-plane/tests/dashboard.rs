//! The web dashboard at `/`: its files and headers over HTTP, the two
//! endpoints it relies on (`/whoami`, `/traffic`), and the whole thing
//! driven in headless Chromium against a control plane with two fake nodes,
//! one labelled `stage=canary` so that a staged rollout has a canary
//! (`tests/dashboard/run.sh` installs Chromium and playwright-core on first
//! use). With `ISAME_SCREENSHOTS=1` the browser run writes its screenshots
//! to `docs/screenshots/`.

mod common;

use common::*;
use http::Method;
use isame_control_plane::app;
use isame_control_plane::store::Role;
use isame_proto::pb;
use isame_proto::pb::node_message::Kind;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

async fn get(cp: &Cp, path: &str, headers: &[(&str, &str)]) -> isame_testkit::Reply {
    call(cp.addr, Method::GET, path, None, headers, "").await
}

fn header<'a>(r: &'a isame_testkit::Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn files_are_served_without_a_token_with_strict_headers() {
    let cp = start().await;
    let page = get(&cp, "/", &[]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let html = page.text();
    assert!(html.contains(r#"<script type="module" src="/ui/app.js">"#));
    let csp = header(&page, "content-security-policy");
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    assert!(page.headers.get("set-cookie").is_none());

    // Every file the page and its modules load is served, with its type.
    let mut files: Vec<String> = Vec::new();
    let mut queue = vec![html];
    while let Some(text) = queue.pop() {
        for piece in text.split('"').skip(1).step_by(2) {
            let path = if let Some(rel) = piece.strip_prefix("./") {
                format!("/ui/{rel}")
            } else if piece.starts_with("/ui/") {
                piece.to_owned()
            } else {
                continue;
            };
            if files.contains(&path) {
                continue;
            }
            let r = get(&cp, &path, &[]).await;
            assert_eq!(r.status, 200, "{path} is referenced but not served");
            assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{path}");
            assert!(!header(&r, "etag").is_empty(), "{path}");
            if path.ends_with(".js") {
                assert_eq!(header(&r, "content-type"), "text/javascript; charset=utf-8");
                queue.push(r.text());
            } else if path.ends_with(".css") {
                assert_eq!(header(&r, "content-type"), "text/css; charset=utf-8");
            } else if path.ends_with(".svg") {
                assert_eq!(header(&r, "content-type"), "image/svg+xml");
            }
            files.push(path);
        }
    }
    for needed in ["/ui/app.js", "/ui/history.js", "/ui/style.css"] {
        assert!(files.iter().any(|f| f == needed), "{needed} in {files:?}");
    }

    // Revalidation: same ETag, no body.
    let first = get(&cp, "/ui/app.js", &[]).await;
    let etag = header(&first, "etag").to_owned();
    let again = get(&cp, "/ui/app.js", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(header(&again, "etag"), etag);
    let other = get(&cp, "/ui/app.js", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(other.status, 200);

    // HEAD works; other methods and unknown paths get the API's JSON errors.
    let head = call(cp.addr, Method::HEAD, "/", None, &[], "").await;
    assert_eq!(head.status, 200);
    let post = call(cp.addr, Method::POST, "/", None, &[], "x").await;
    assert_eq!(post.status, 405);
    assert!(post.json()["error"].is_string());
    for missing in [
        "/ui/",
        "/ui/nope.js",
        "/index.html",
        "/ui/../Cargo.toml",
        "/web/app.js",
    ] {
        let r = get(&cp, missing, &[]).await;
        assert_eq!(r.status, 404, "{missing}");
        assert_eq!(header(&r, "content-type"), "application/json", "{missing}");
        assert!(r.json()["error"].is_string(), "{missing}");
    }
    cp.stop().await;
}

#[tokio::test]
async fn whoami_names_the_token_and_its_role() {
    let cp = start().await;
    let store = cp.cp.configs.store();
    let viewer = app::create_token(store, "dashboard-viewer", Role::Viewer)
        .await
        .expect("viewer");
    let node = app::create_token(store, "edge", Role::Node)
        .await
        .expect("node");
    let r = cp.get("/api/v1/whoami").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"name": app::BOOTSTRAP_TOKEN_NAME, "role": "admin"})
    );
    let r = call(
        cp.addr,
        Method::GET,
        "/api/v1/whoami",
        Some(&viewer),
        &[],
        "",
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"name": "dashboard-viewer", "role": "viewer"})
    );
    let r = call(cp.addr, Method::GET, "/api/v1/whoami", None, &[], "").await;
    assert_eq!(r.status, 401);
    let r = call(
        cp.addr,
        Method::GET,
        "/api/v1/whoami",
        Some("nope"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = call(cp.addr, Method::GET, "/api/v1/whoami", Some(&node), &[], "").await;
    assert_eq!(r.status, 403);
    cp.stop().await;
}

fn stats(period_ms: u64, upstreams: &[(&str, u64, u64, u64)]) -> Kind {
    Kind::Stats(pb::StatsReport {
        period_ms,
        version: 0,
        upstreams: upstreams
            .iter()
            .map(|(name, requests, errors, mean_ms)| pb::UpstreamStats {
                upstream: (*name).into(),
                requests: *requests,
                errors: *errors,
                duration_ms_sum: requests * mean_ms,
                ..Default::default()
            })
            .collect(),
    })
}

#[tokio::test]
async fn traffic_sums_the_latest_reports_of_connected_nodes() {
    let cp = start().await;
    seed(&cp).await;
    let mut a = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "dp-a")
        .await
        .expect("a");
    let mut b = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "dp-b")
        .await
        .expect("b");
    a.snapshot().await;
    b.snapshot().await;
    // 200 requests in 2 s with 20 errors at 10 ms; 100 in 1 s at 40 ms.
    a.send(stats(2000, &[("web", 200, 20, 10), ("gone", 3, 0, 1)]))
        .await;
    b.send(stats(1000, &[("web", 100, 0, 40)])).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let t = loop {
        let t = cp.get("/api/v1/traffic").await.json();
        if t["nodes"]["reporting"] == 2 {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(t["nodes"]["connected"], 2);
    assert_eq!(t["version"], 1);
    let names: Vec<&str> = t["upstreams"]
        .as_array()
        .expect("list")
        .iter()
        .map(|u| u["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["web", "api", "gone"],
        "configured first, then others"
    );
    let web = &t["upstreams"][0];
    assert_eq!(web["requests_per_second"], 200.0);
    assert_eq!(web["errors_per_second"], 10.0);
    assert_eq!(web["mean_ms"], 20.0, "(200 × 10 + 100 × 40) / 300");
    assert_eq!(web["nodes"], 2);
    assert_eq!(t["upstreams"][1]["requests_per_second"], 0.0);
    assert_eq!(t["upstreams"][2]["configured"], false);

    // A node that leaves no longer counts.
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = cp.get("/api/v1/traffic").await.json();
        if t["nodes"]["connected"] == 1 {
            assert_eq!(t["upstreams"][0]["requests_per_second"], 100.0, "{t}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a);
    cp.stop().await;
}

/// Opens a stream as `id` and says Hello with `labels`, as a data plane
/// started with `--label` does.
async fn subscribe(cp: &Cp, token: &str, id: &str, labels: &[(&str, &str)]) -> Subscriber {
    Subscriber::connect_labeled(cp.cp.grpc_addr, token, id, labels)
        .await
        .expect("subscribe")
}

/// A fake data plane for the browser test: says Hello with `labels`,
/// applies every snapshot (or refuses one that names `refuse`), reports
/// backend health after each version it applies (backends in `unhealthy`
/// down), and reports traffic every second (under no version, so that the
/// rollout gates leave it out).
struct FakeNode {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl FakeNode {
    async fn start(
        cp: &Cp,
        token: &str,
        id: &'static str,
        labels: &[(&str, &str)],
        refuse: Option<&'static str>,
        unhealthy: &'static [&'static str],
        load: f64,
    ) -> FakeNode {
        let mut s = subscribe(cp, token, id, labels).await;
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            let mut n: u64 = 0;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    msg = s.from_cp.message() => {
                        let Ok(Some(msg)) = msg else { break };
                        if let Some(pb::control_message::Kind::Snapshot(snap)) = msg.kind {
                            apply(&s, &snap, refuse, unhealthy).await;
                        }
                    }
                    _ = ticker.tick() => {
                        n += 1;
                        // A slow wave with a little noise; a few errors, and
                        // bursts of them now and then.
                        let wave = |base: f64, phase: f64| {
                            let x = n as f64 / 4.0 + phase;
                            (base * load * (1.0 + 0.35 * x.sin() + 0.1 * (3.1 * x).cos())).max(0.0) as u64
                        };
                        let web = wave(180.0, 0.0);
                        let api = wave(60.0, 1.7);
                        let web_errors = web * if n % 9 < 2 { 6 } else { 1 } / 100;
                        let api_errors = u64::from(n.is_multiple_of(5));
                        s.send(stats(1000, &[("web", web, web_errors, 12), ("api", api, api_errors, 31)])).await;
                    }
                }
            }
        });
        FakeNode { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn apply(s: &Subscriber, snap: &pb::Snapshot, refuse: Option<&str>, unhealthy: &[&str]) {
    let config =
        isame_proto::Config::from_json(std::str::from_utf8(&snap.config_json).expect("UTF-8"))
            .expect("a valid config");
    let upstreams = config.upstreams.as_slice();
    let bad = refuse.and_then(|r| {
        upstreams.iter().find_map(|u| {
            let i = u.backends.iter().position(|b| b.url == r)?;
            Some(format!("upstreams[{}].backends[{i}].url", u.name))
        })
    });
    if let Some(path) = bad {
        s.send(Kind::Nack(pb::Nack {
            version: snap.version,
            errors: vec![pb::Problem {
                path,
                message: format!(
                    "{}: refused by this node's egress policy",
                    refuse.unwrap_or_default()
                ),
            }],
        }))
        .await;
        return;
    }
    s.ack(snap.version).await;
    let backends = upstreams
        .iter()
        .flat_map(|u| {
            u.backends.iter().map(|b| {
                let down = unhealthy.contains(&b.url.as_str());
                // A backend by host name: two addresses, kept while the
                // node's lookups of it fail.
                let by_name = url::Url::parse(&b.url)
                    .is_ok_and(|u| matches!(u.host(), Some(url::Host::Domain(_))));
                pb::BackendHealth {
                    upstream: u.name.clone(),
                    backend: b.url.clone(),
                    healthy: !down,
                    circuit: if down { "open" } else { "closed" }.into(),
                    ejected: down,
                    by_name,
                    endpoints: if by_name { 2 } else { 0 },
                    healthy_endpoints: if by_name { 2 } else { 0 },
                    dns_error: if by_name {
                        "SERVFAIL".into()
                    } else {
                        String::new()
                    },
                }
            })
        })
        .collect();
    s.send(Kind::Health(pb::HealthReport { backends })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let cp = start().await;
    let v1 = seed(&cp).await;
    let store = cp.cp.configs.store();
    let viewer = app::create_token(store, "dashboard-viewer", Role::Viewer)
        .await
        .expect("viewer");
    let node = app::create_token(store, "edge-nodes", Role::Node)
        .await
        .expect("node");
    let nodes = [
        FakeNode::start(&cp, &node, "edge-1", &[("stage", "canary")], None, &[], 1.0).await,
        FakeNode::start(
            &cp,
            &node,
            "edge-2",
            &[("stage", "main")],
            Some("http://127.0.0.1:3003"),
            &["http://127.0.0.1:3002"],
            0.6,
        )
        .await,
    ];
    for id in ["edge-1", "edge-2"] {
        wait_node(&cp, id, |n| n["version"] == v1).await;
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard/run.sh");
    let mut cmd = Command::new(script);
    cmd.env("ISAME_URL", format!("http://{}", cp.addr))
        .env("ISAME_ADMIN_TOKEN", ADMIN)
        .env("ISAME_VIEWER_TOKEN", &viewer)
        .env("ISAME_NODES", "edge-1,edge-2")
        .env_remove("ISAME_SCREENSHOTS_DIR");
    if std::env::var_os("ISAME_SCREENSHOTS").is_some_and(|v| v == "1") {
        cmd.env(
            "ISAME_SCREENSHOTS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/screenshots"),
        );
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run tests/dashboard/run.sh (needs bash, Node.js and npm)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).expect("RESULT is JSON"))
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}\n{stderr}"));

    // The rollback made from the browser, checked on the server.
    let rollback = result["rollback"].as_u64().expect("rollback version");
    assert_eq!(result["rolled_back_to"], v1);
    let restored = cp.get(&format!("/api/v1/versions/{rollback}")).await.json();
    let original = cp.get(&format!("/api/v1/versions/{v1}")).await.json();
    assert_eq!(restored["rollback_of"], v1);
    assert_eq!(restored["config"], original["config"]);
    assert_eq!(restored["hash"], original["hash"]);
    assert_eq!(restored["message"], result["message"]);
    assert_eq!(restored["author"], app::BOOTSTRAP_TOKEN_NAME);
    let audit = cp.get("/api/v1/audit?limit=100").await.json();
    let entries = audit["entries"].as_array().expect("entries");
    let rolled_back = entries
        .iter()
        .find(|e| e["action"] == "version.rollback")
        .unwrap_or_else(|| panic!("no rollback audited: {audit}"));
    assert_eq!(rolled_back["actor"], app::BOOTSTRAP_TOKEN_NAME);

    // The staged rollout driven from the browser: the next version, paused,
    // resumed, paused (over REST, for the refusal), promoted a stage,
    // aborted and promoted everywhere, each audited under the admin's name.
    let staged = result["staged"].as_u64().expect("staged version");
    assert_eq!(staged, rollback + 1);
    assert_eq!(
        cp.version().await,
        staged,
        "nothing after the staged version"
    );
    let rollout = cp.get(&format!("/api/v1/rollouts/{staged}")).await.json();
    assert_eq!(rollout["state"], "promoted", "{rollout}");
    assert_eq!(rollout["base"], rollback, "{rollout}");
    let target = format!("version {staged}");
    let mut acted: Vec<&Value> = entries
        .iter()
        .filter(|e| e["actor"] == app::BOOTSTRAP_TOKEN_NAME && e["target"] == target.as_str())
        .collect();
    acted.reverse();
    let actions: Vec<&str> = acted
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        [
            "rollout.pause",
            "rollout.resume",
            "rollout.pause",
            "rollout.promote",
            "rollout.abort",
            "rollout.promote",
        ],
        "{audit}"
    );
    let message = result["abort_message"].as_str().expect("abort message");
    let abort = acted[4]["message"].as_str().expect("message");
    assert!(abort.ends_with(&format!(": {message}")), "{abort}");
    for id in ["edge-1", "edge-2"] {
        wait_node(&cp, id, |n| n["version"] == staged).await;
    }
    for n in nodes {
        n.stop().await;
    }
    cp.stop().await;
}
