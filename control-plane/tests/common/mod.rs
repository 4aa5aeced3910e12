//! Shared helpers for the control plane's tests: a control plane on
//! 127.0.0.1:0 over a temporary SQLite file, and a small HTTP client.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use isame_control_plane::app::{ControlPlane, Options};
use isame_testkit::{Client, Reply};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use tempfile::TempDir;

/// The bootstrap admin token the tests start with.
pub const ADMIN: &str = "test-admin-token-0123456789abcdef0123";

/// A running control plane and its database.
pub struct Cp {
    pub cp: ControlPlane,
    pub addr: SocketAddr,
    pub dir: TempDir,
}

impl Cp {
    /// The SQLite file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("isame.db")
    }

    /// The database URL.
    pub fn db_url(&self) -> String {
        format!("sqlite://{}", self.db_path().display())
    }

    /// A request as the bootstrap admin.
    pub async fn admin(&self, method: Method, path: &str, body: &str) -> Reply {
        call(
            self.addr,
            method,
            path,
            Some(ADMIN),
            &[],
            body.as_bytes().to_vec(),
        )
        .await
    }

    /// A GET as the bootstrap admin.
    pub async fn get(&self, path: &str) -> Reply {
        self.admin(Method::GET, path, "").await
    }

    /// The newest version number.
    pub async fn version(&self) -> u64 {
        let r = self.get("/api/v1/versions?limit=1").await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["versions"][0]["version"].as_u64().unwrap_or(0)
    }

    /// Number of audit entries.
    pub async fn audit_len(&self) -> usize {
        let r = self.get("/api/v1/audit?limit=1000").await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["entries"].as_array().map_or(0, Vec::len)
    }

    pub async fn stop(self) -> TempDir {
        self.cp.shutdown().await;
        self.dir
    }
}

/// Starts a control plane with the bootstrap admin token on a fresh database.
pub async fn start() -> Cp {
    let dir = tempfile::tempdir().expect("temp dir");
    start_in(dir, Some(ADMIN)).await
}

/// Starts a control plane on the database in `dir`.
pub async fn start_in(dir: TempDir, token: Option<&str>) -> Cp {
    let url = format!("sqlite://{}", dir.path().join("isame.db").display());
    let mut options = Options::new(url, "127.0.0.1:0".parse().expect("addr"));
    options.admin_token = token.map(str::to_owned);
    let cp = ControlPlane::start(options)
        .await
        .expect("control plane starts");
    Cp {
        addr: cp.api_addr,
        cp,
        dir,
    }
}

/// One request on a new connection.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    req = req.header("host", "localhost");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).expect("request");
    let mut client = Client::http1(addr).await.expect("connect");
    client.send(req).await.expect("response")
}

/// A small valid config with upstreams `web` (two backends) and `api`.
pub fn base_config() -> &'static str {
    "\
service: test
upstreams:
  - name: web
    algorithm: round_robin
    backends:
      - url: http://127.0.0.1:3001
      - url: http://127.0.0.1:3002
  - name: api
    backends:
      - http://127.0.0.1:4001
routes:
  - name: api
    path_prefix: /api
    upstream: api
health:
  enabled: false
"
}

/// Applies [`base_config`] and returns the version it created.
pub async fn seed(cp: &Cp) -> u64 {
    let r = cp.admin(Method::PUT, "/api/v1/config", base_config()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["version"].as_u64().expect("version")
}

/// The current config as JSON.
pub async fn config(cp: &Cp) -> Value {
    let r = cp.get("/api/v1/config").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}
