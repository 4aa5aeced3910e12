//! The gRPC stream as a data plane sees it: the newest version at once and
//! after every commit, ACK/NACK in the ledger, authentication, replacement of
//! a node id, quiet nodes disconnected, slow nodes never holding up others.

mod common;

use common::*;
use http::Method;
use isame_proto::pb;
use isame_proto::pb::node_message::Kind;
use std::time::Duration;

#[tokio::test]
async fn snapshots_acks_and_the_ledger() {
    let cp = start().await;
    seed(&cp).await;
    let mut node = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "dp-1")
        .await
        .expect("subscribe");
    let s = node.snapshot().await;
    assert_eq!(s.version, 1, "the newest version comes at once");
    assert_eq!(s.hash, cp.get("/api/v1/versions/1").await.json()["hash"]);
    let config =
        isame_proto::Config::from_json(std::str::from_utf8(&s.config_json).expect("UTF-8"))
            .expect("valid");
    assert_eq!(config.upstreams[0].name, "web");
    node.ack(1).await;
    let n = wait_node(&cp, "dp-1", |n| n["version"] == 1).await;
    assert_eq!(n["connected"], true);
    assert_eq!(n["hostname"], "test-host");
    assert_eq!(n["labels"]["zone"], "a");
    assert_eq!(n["behind"], false);

    // A commit reaches the stream; the node is behind until it ACKs.
    cp.admin(
        Method::PATCH,
        "/api/v1/upstreams/web/backends/127.0.0.1:3001",
        r#"{"weight": 4}"#,
    )
    .await;
    let s = node.snapshot().await;
    assert_eq!(s.version, 2);
    let n = cp.get("/api/v1/nodes/dp-1").await.json();
    assert_eq!(n["behind"], true);
    node.ack(2).await;
    wait_node(&cp, "dp-1", |n| n["version"] == 2 && n["behind"] == false).await;
    let m = call(cp.addr, Method::GET, "/metrics", None, &[], "")
        .await
        .text();
    assert!(m.contains("isame_cp_connected_nodes 1"), "{m}");
    assert!(
        m.contains("isame_cp_push_seconds_count 2"),
        "each commit → ACK measured: {m}"
    );

    // A NACK is recorded with its errors; the node keeps its last version.
    cp.admin(
        Method::PATCH,
        "/api/v1/upstreams/web/backends/127.0.0.1:3001",
        r#"{"weight": 5}"#,
    )
    .await;
    assert_eq!(node.snapshot().await.version, 3);
    node.send(Kind::Nack(pb::Nack {
        version: 3,
        errors: vec![pb::Problem {
            path: "tls.cert_file".into(),
            message: "cannot read /etc/x.pem".into(),
        }],
    }))
    .await;
    let n = wait_node(&cp, "dp-1", |n| n["last_nack"]["version"] == 3).await;
    assert_eq!(n["last_nack"]["errors"][0]["path"], "tls.cert_file");
    assert_eq!(n["version"], 2);

    // Reports land in the ledger.
    node.send(Kind::Health(pb::HealthReport {
        backends: vec![pb::BackendHealth {
            upstream: "web".into(),
            backend: "http://127.0.0.1:3001".into(),
            healthy: false,
            circuit: "open".into(),
            ejected: true,
            ..Default::default()
        }],
    }))
    .await;
    node.send(Kind::Stats(pb::StatsReport {
        upstreams: vec![pb::UpstreamStats {
            upstream: "web".into(),
            requests: 10,
            errors: 1,
            duration_ms_sum: 50,
            ..Default::default()
        }],
        period_ms: 10_000,
        ..Default::default()
    }))
    .await;
    let n = wait_node(&cp, "dp-1", |n| {
        n["traffic"]["upstreams"][0]["requests"] == 10
    })
    .await;
    assert_eq!(n["health"][0]["healthy"], false);
    assert_eq!(n["health"][0]["ejected"], true);
    assert_eq!(n["traffic"]["upstreams"][0]["mean_ms"], 5.0);

    // The fleet view counts nodes per backend, and lists the NACK of the
    // version this node does not run.
    let f = cp.get("/api/v1/fleet").await.json();
    assert_eq!(f["version"], 3);
    assert_eq!(f["nodes"]["connected"], 1);
    assert_eq!(f["nodes"]["behind"], serde_json::json!(["dp-1"]));
    assert_eq!(f["nodes"]["nacked"][0]["version"], 3);
    let web = &f["upstreams"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["backends"][0]["unhealthy_nodes"], 1);
    assert_eq!(web["backends"][0]["healthy_nodes"], 0);
    assert_eq!(web["backends"][0]["ejected_nodes"], 1);
    assert_eq!(web["backends"][1]["reporting_nodes"], 0);
    assert_eq!(web["backends"][0]["dns_failing_nodes"], 0);
    assert!(
        web["backends"][0]["endpoints"].is_null(),
        "not a name: {web}"
    );

    // A backend by host name: how many addresses it has, and nodes whose
    // lookups of it fail.
    let url = web["backends"][1]["url"].as_str().expect("url").to_owned();
    node.send(Kind::Health(pb::HealthReport {
        backends: vec![pb::BackendHealth {
            upstream: "web".into(),
            backend: url,
            healthy: true,
            circuit: "closed".into(),
            by_name: true,
            endpoints: 3,
            healthy_endpoints: 2,
            dns_error: "no answer within 2s".into(),
            ..Default::default()
        }],
    }))
    .await;
    let n = wait_node(&cp, "dp-1", |n| n["health"][0]["by_name"] == true).await;
    assert_eq!(n["health"][0]["dns_error"], "no answer within 2s");
    assert_eq!(n["health"][0]["healthy_endpoints"], 2);
    let f = cp.get("/api/v1/fleet").await.json();
    let b = &f["upstreams"][0]["backends"][1];
    assert_eq!(
        (b["dns_failing_nodes"].as_u64(), b["endpoints"].as_u64()),
        (Some(1), Some(3)),
        "{f}"
    );

    // Closing the stream marks the node disconnected; it stays in the ledger.
    drop(node);
    wait_node(&cp, "dp-1", |n| n["connected"] == false).await;
    cp.stop().await;
}

#[tokio::test]
async fn streams_need_a_valid_token_and_a_hello() {
    let cp = start().await;
    for token in ["", "not-a-token"] {
        let err = match Subscriber::connect(cp.cp.grpc_addr, token, "dp-x").await {
            Err(e) => e,
            Ok(_) => panic!("{token:?} accepted"),
        };
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    }
    // Snapshots carry private keys: viewer tokens may not subscribe, node
    // tokens may, and node tokens have no REST access.
    let store = cp.cp.configs.store();
    let viewer = isame_control_plane::app::create_token(
        store,
        "dashboard",
        isame_control_plane::store::Role::Viewer,
    )
    .await
    .expect("viewer");
    let node = isame_control_plane::app::create_token(
        store,
        "edge",
        isame_control_plane::store::Role::Node,
    )
    .await
    .expect("node token");
    let err = match Subscriber::connect(cp.cp.grpc_addr, &viewer, "dp-v").await {
        Err(e) => e,
        Ok(_) => panic!("a viewer token subscribed"),
    };
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("node token"), "{err}");
    seed(&cp).await;
    let mut s = Subscriber::connect(cp.cp.grpc_addr, &node, "dp-n")
        .await
        .expect("a node token subscribes");
    assert_eq!(s.snapshot().await.version, cp.version().await);
    for path in ["/api/v1/config", "/api/v1/certificates"] {
        let r = call(cp.addr, Method::GET, path, Some(&node), &[], "").await;
        assert_eq!(r.status, 403, "{path}: {}", r.text());
    }
    drop(s);
    for bad in ["", "has space", &"x".repeat(200)] {
        let err = match Subscriber::connect(cp.cp.grpc_addr, ADMIN, bad).await {
            Err(e) => e,
            Ok(mut s) => match s.from_cp.message().await {
                Err(e) => e,
                Ok(m) => panic!("{bad:?} accepted: {m:?}"),
            },
        };
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}: {err}");
    }
    wait_node(&cp, "dp-n", |_| true).await;
    let ids: Vec<serde_json::Value> = cp.get("/api/v1/nodes").await.json()["nodes"]
        .as_array()
        .map(|n| n.iter().map(|n| n["id"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        ids,
        [serde_json::json!("dp-n")],
        "only the node token's stream"
    );
    cp.stop().await;
}

#[tokio::test]
async fn a_second_stream_with_the_same_id_replaces_the_first() {
    let cp = start().await;
    seed(&cp).await;
    let mut first = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "dp-1")
        .await
        .expect("first");
    first.snapshot().await;
    let mut second = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "dp-1")
        .await
        .expect("second");
    second.snapshot().await;
    // The first stream ends.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = first.from_cp.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "the replaced stream was closed");
    second.ack(1).await;
    let n = wait_node(&cp, "dp-1", |n| n["version"] == 1).await;
    assert_eq!(
        n["connected"], true,
        "the old stream's end does not disconnect the node"
    );
    let m = call(cp.addr, Method::GET, "/metrics", None, &[], "")
        .await
        .text();
    assert!(m.contains("isame_cp_connected_nodes 1"), "{m}");
    cp.stop().await;
}

#[tokio::test]
async fn quiet_nodes_are_disconnected() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = start_with(dir, Some(ADMIN), |o| {
        o.distribution.node_timeout = Duration::from_millis(300);
        o.distribution.heartbeat = Duration::from_millis(100);
    })
    .await;
    seed(&cp).await;
    let mut node = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "dp-q")
        .await
        .expect("subscribe");
    node.snapshot().await;
    // Heartbeats arrive while the node says nothing; then it is cut off.
    let mut beats = 0;
    let status = loop {
        match node.from_cp.message().await {
            Ok(Some(pb::ControlMessage {
                kind: Some(pb::control_message::Kind::Heartbeat(h)),
            })) => {
                assert_eq!(h.newest_version, 1);
                beats += 1;
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("closed without a status"),
            Err(s) => break s,
        }
    };
    assert!(beats >= 1, "heartbeats were sent");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status}");
    wait_node(&cp, "dp-q", |n| n["connected"] == false).await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_gets_the_newest_version_and_holds_up_nobody() {
    let cp = start().await;
    // Snapshots large enough (about 100 KB each) that the transport's buffers
    // fill up well before thirty of them are sent.
    apply_big_config(&cp).await;
    let mut slow = Subscriber::connect_with_window(cp.cp.grpc_addr, ADMIN, "slow", Some(65_535))
        .await
        .expect("slow");
    let mut fast = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "fast")
        .await
        .expect("fast");
    assert_eq!(fast.snapshot().await.version, 1);
    // The slow node reads nothing while 30 versions are committed.
    for w in 2..=31u32 {
        let r = cp
            .admin(
                Method::PATCH,
                "/api/v1/upstreams/web/backends/127.0.0.1:3001",
                &format!("{{\"weight\": {w}}}"),
            )
            .await;
        assert_eq!(r.status, 200);
        // The fast node sees each one promptly.
        assert_eq!(fast.snapshot().await.version, u64::from(w));
    }
    // When the slow node reads, it gets a few queued versions and then the
    // newest, not all thirty.
    let mut seen = Vec::new();
    loop {
        let v = slow.snapshot().await.version;
        seen.push(v);
        if v == 31 {
            break;
        }
    }
    assert!(seen.len() < 20, "latest wins: {seen:?}");
    assert_eq!(seen[0], 1);
    cp.stop().await;
}

#[tokio::test]
async fn acks_are_never_rate_limited_but_report_floods_are() {
    let cp = start().await;
    seed(&cp).await;
    let mut node = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "busy")
        .await
        .expect("subscribe");
    node.snapshot().await;
    node.ack(1).await;
    // Many quick commits, each ACKed: the stream stays up.
    for w in 2..=40u32 {
        cp.admin(
            Method::PATCH,
            "/api/v1/upstreams/web/backends/127.0.0.1:3001",
            &format!("{{\"weight\": {w}}}"),
        )
        .await;
        let s = node.snapshot().await;
        node.ack(s.version).await;
    }
    wait_node(&cp, "busy", |n| {
        n["version"] == 40 && n["connected"] == true
    })
    .await;
    // A node that floods reports is cut off.
    let status = flood(&mut node, Kind::Stats(pb::StatsReport::default()), 200).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    wait_node(&cp, "busy", |n| n["connected"] == false).await;
    cp.stop().await;
}

/// Applies a config of 800 upstreams (about 100 KB a snapshot), so that
/// the transport's buffers of a node that reads nothing fill after a few
/// snapshots; its `web` upstream has the backend 127.0.0.1:3001.
async fn apply_big_config(cp: &Cp) {
    let mut big =
        String::from("upstreams:\n  - name: web\n    backends: [http://127.0.0.1:3001]\n");
    for u in 0..800 {
        big.push_str(&format!(
            "  - name: upstream-number-{u}\n    backends: [http://10.1.{}.{}:8080, http://10.2.{}.{}:8080]\n",
            u / 200,
            u % 200,
            u / 200,
            u % 200
        ));
    }
    let r = cp.admin(Method::PUT, "/api/v1/config", &big).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Sends `kind` up to `n` times (until the stream refuses more), then
/// returns the status the control plane ended the stream with.
async fn flood(node: &mut Subscriber, kind: Kind, n: usize) -> tonic::Status {
    for _ in 0..n {
        let msg = pb::NodeMessage {
            kind: Some(kind.clone()),
        };
        if node.to_cp.send(msg).await.is_err() {
            break;
        }
    }
    loop {
        match node.from_cp.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("closed without a status"),
            Err(s) => return s,
        }
    }
}

/// The value of one series in a Prometheus text page (0 when absent).
fn series(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn fleet_metrics_come_from_the_ledger_and_the_reports() {
    let cp = start().await;
    let v = seed(&cp).await;
    let mut a = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "dp-a")
        .await
        .expect("a");
    let mut b = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "dp-b")
        .await
        .expect("b");
    assert_eq!(a.snapshot().await.version, v);
    assert_eq!(b.snapshot().await.version, v);
    a.ack(v).await;
    b.send(Kind::Nack(pb::Nack {
        version: v,
        errors: vec![pb::Problem {
            path: "tls.cert_file".into(),
            message: "missing".into(),
        }],
    }))
    .await;
    for node in [&a, &b] {
        node.send(Kind::Health(pb::HealthReport {
            backends: vec![pb::BackendHealth {
                upstream: "web".into(),
                backend: "http://127.0.0.1:3001".into(),
                healthy: std::ptr::eq(node, &a),
                circuit: "closed".into(),
                ejected: false,
                ..Default::default()
            }],
        }))
        .await;
    }
    // Counted for upstreams the config has; a made-up name creates nothing.
    for upstream in ["web", "web", "made-up"] {
        a.send(Kind::Stats(pb::StatsReport {
            upstreams: vec![pb::UpstreamStats {
                upstream: upstream.into(),
                requests: 10,
                errors: 2,
                duration_ms_sum: 500,
                ..Default::default()
            }],
            period_ms: 5_000,
            ..Default::default()
        }))
        .await;
    }
    let expected = [
        (format!("isame_cp_nodes{{version=\"{v}\"}}"), 1.0),
        ("isame_cp_nodes{version=\"none\"}".to_owned(), 1.0),
        ("isame_cp_nodes_behind".to_owned(), 1.0),
        ("isame_cp_nodes_refusing".to_owned(), 1.0),
        ("isame_cp_nacks_total".to_owned(), 1.0),
        (
            "isame_cp_backend_healthy_nodes{backend=\"http://127.0.0.1:3001\",upstream=\"web\"}"
                .to_owned(),
            1.0,
        ),
        (
            "isame_cp_backend_reporting_nodes{backend=\"http://127.0.0.1:3001\",upstream=\"web\"}"
                .to_owned(),
            2.0,
        ),
        (
            "isame_cp_upstream_requests_total{upstream=\"web\"}".to_owned(),
            20.0,
        ),
        (
            "isame_cp_upstream_errors_total{upstream=\"web\"}".to_owned(),
            4.0,
        ),
        (
            "isame_cp_upstream_request_seconds_total{upstream=\"web\"}".to_owned(),
            1.0,
        ),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = call(cp.addr, Method::GET, "/metrics", None, &[], "")
            .await
            .text();
        if expected.iter().all(|(s, want)| series(&page, s) == *want) {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never matched; got:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!page.contains("made-up"), "{page}");
    // `web` leaves the config: its fleet series go with it, at the next
    // report.
    let r = cp
        .admin(
            Method::PUT,
            "/api/v1/config",
            "upstreams:\n  - name: api\n    backends: [http://127.0.0.1:4001]\nhealth:\n  enabled: false\n",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    a.send(Kind::Stats(pb::StatsReport {
        upstreams: vec![pb::UpstreamStats {
            upstream: "api".into(),
            requests: 1,
            errors: 0,
            duration_ms_sum: 1,
            ..Default::default()
        }],
        period_ms: 5_000,
        ..Default::default()
    }))
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = call(cp.addr, Method::GET, "/metrics", None, &[], "")
            .await
            .text();
        if series(&page, "isame_cp_upstream_requests_total{upstream=\"api\"}") == 1.0 {
            assert!(!page.contains("upstream=\"web\"}"), "{page}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((a, b));
    cp.stop().await;
}

#[tokio::test]
async fn acks_of_versions_never_sent_are_a_flood_too() {
    let cp = start().await;
    seed(&cp).await;
    let mut node = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "acker")
        .await
        .expect("subscribe");
    node.snapshot().await;
    // One snapshot was sent; hundreds of ACKs answer nothing.
    let status = flood(&mut node, Kind::Ack(pb::Ack { version: 1 }), 500).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    wait_node(&cp, "acker", |n| {
        n["connected"] == false && n["version"] == 1
    })
    .await;
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_reading_is_disconnected_and_holds_up_nobody() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = start_with(dir, Some(ADMIN), |o| {
        o.distribution.send_timeout = Duration::from_millis(500);
    })
    .await;
    // About 100 KB a snapshot: the transport's buffers of a node that reads
    // nothing fill after a few.
    apply_big_config(&cp).await;
    let stuck = Subscriber::connect_with_window(cp.cp.grpc_addr, ADMIN, "stuck", Some(65_535))
        .await
        .expect("stuck");
    let mut fast = Subscriber::connect(cp.cp.grpc_addr, ADMIN, "fast")
        .await
        .expect("fast");
    assert_eq!(fast.snapshot().await.version, 1);
    wait_node(&cp, "stuck", |n| n["connected"] == true).await;
    // Commits keep coming; `stuck` never reads, but keeps its stream open
    // and even keeps reporting (so it never goes quiet).
    let mut w = 2u32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = cp
            .admin(
                Method::PATCH,
                "/api/v1/upstreams/web/backends/127.0.0.1:3001",
                &format!("{{\"weight\": {w}}}"),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            fast.snapshot().await.version,
            u64::from(w),
            "the fast node keeps up"
        );
        let _ = stuck.to_cp.try_send(pb::NodeMessage {
            kind: Some(Kind::Stats(pb::StatsReport::default())),
        });
        let n = cp.get("/api/v1/nodes/stuck").await.json();
        if n["connected"] == false {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a node that reads nothing is never let go: {n}"
        );
        w += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = call(cp.addr, Method::GET, "/metrics", None, &[], "")
        .await
        .text();
    assert!(m.contains("isame_cp_connected_nodes 1"), "{m}");
    drop(stuck);
    cp.stop().await;
}

#[tokio::test]
async fn a_node_too_old_for_a_field_is_not_sent_the_version_and_is_told_why() {
    let cp = start().await;
    seed(&cp).await;
    // A build that predates `drain`: every version it can read reaches it.
    let older: Vec<String> = isame_proto::config::schema::fields()
        .iter()
        .filter(|f| *f != "upstreams[].backends[].drain")
        .cloned()
        .collect();
    let mut node = Subscriber::connect_reading(cp.cp.grpc_addr, ADMIN, "old-1", None, older)
        .await
        .expect("subscribe");
    assert_eq!(node.snapshot().await.version, 1);
    node.ack(1).await;

    // Version 2 drains a backend: the node would not understand it.
    cp.admin(
        Method::PATCH,
        "/api/v1/upstreams/web/backends/127.0.0.1:3001",
        r#"{"drain": true}"#,
    )
    .await;
    let n = wait_node(&cp, "old-1", |n| n["last_nack"]["version"] == 2).await;
    assert_eq!(n["last_nack"]["by"], "control-plane");
    assert_eq!(
        n["last_nack"]["errors"][0]["path"],
        "upstreams[].backends[].drain"
    );
    let message = n["last_nack"]["errors"][0]["message"]
        .as_str()
        .unwrap_or("");
    assert!(message.contains("upgrade"), "{message}");
    assert_eq!(n["version"], 1, "it keeps serving what it has");
    let fleet = cp.get("/api/v1/fleet").await.json();
    assert_eq!(fleet["nodes"]["nacked"][0]["id"], "old-1", "{fleet}");

    // Version 3 no longer uses the field: it is sent.
    cp.admin(
        Method::PATCH,
        "/api/v1/upstreams/web/backends/127.0.0.1:3001",
        r#"{"drain": false}"#,
    )
    .await;
    let s = tokio::time::timeout(Duration::from_secs(10), node.snapshot())
        .await
        .expect("version 3 in time");
    assert_eq!(s.version, 3, "version 2 was never sent");
    cp.stop().await;
}
