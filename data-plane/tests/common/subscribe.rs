//! A control plane in-process (SQLite in a test directory) for tests of
//! subscribed data planes, its REST API, and the node options they use.

use http::{Method, Request};
use http_body_util::Full;
use isame_control_plane::app::{ControlPlane, Options as CpOptions};
use isame_data_plane::subscription;
use isame_testkit::{Client, Reply};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The admin token the control plane starts with (nodes use it too).
pub const TOKEN: &str = "subscribed-test-token-0123456789abcdef";

/// A control plane on `db/cp.db`, gRPC on `grpc` (default: a free port).
pub async fn control_plane(db: &Path, grpc: Option<SocketAddr>) -> ControlPlane {
    let mut o = CpOptions::new(
        format!("sqlite://{}", db.join("cp.db").display()),
        "127.0.0.1:0".parse().expect("addr"),
    );
    o.admin_token = Some(TOKEN.into());
    if let Some(g) = grpc {
        o.grpc_listen = g;
    }
    ControlPlane::start(o).await.expect("control plane")
}

/// One REST request as the admin.
pub async fn api(cp: SocketAddr, method: Method, path: &str, body: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cp")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(bytes::Bytes::from(body.to_owned())))
        .expect("request");
    Client::http1(cp)
        .await
        .expect("connect")
        .send(req)
        .await
        .expect("reply")
}

/// Node `id` following the control plane at gRPC address `cp`, every
/// listener on a free port.
pub fn options(cp: SocketAddr, id: &str, cache: Option<PathBuf>) -> subscription::Options {
    subscription::Options {
        control_planes: vec![format!("http://{cp}")],
        node_id: id.into(),
        token: Some(TOKEN.into()),
        cache_dir: cache,
        labels: vec![("zone".into(), "test".into())],
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        https_listen: Some("127.0.0.1:0".parse().expect("addr")),
        admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
        workers: 1,
        report_interval: Duration::from_millis(200),
        tls: None,
    }
}

/// Waits until `node` serves version `v`; returns its proxy address.
pub async fn serving(node: &subscription::Node, v: u64) -> SocketAddr {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if node
            .state()
            .version
            .load(std::sync::atomic::Ordering::SeqCst)
            == v
        {
            if let Some((proxy, _)) = *node.serving().borrow() {
                return proxy;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node never served version {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The backend (`x-backend`) that answers `GET /` through `proxy`.
pub async fn name_via(proxy: SocketAddr) -> String {
    let r = Client::http1(proxy)
        .await
        .expect("connect")
        .get("/")
        .await
        .expect("reply");
    assert_eq!(r.status, 200);
    r.headers["x-backend"].to_str().expect("name").to_owned()
}
