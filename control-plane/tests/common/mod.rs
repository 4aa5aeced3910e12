//! Shared helpers for the control plane's tests: a control plane on
//! 127.0.0.1:0 over a fresh database, and a small HTTP client.
//!
//! The database is a SQLite file in the test's directory, or with
//! `ISAME_TEST_DATABASE=postgres` a database of its own on the throwaway
//! PostgreSQL server of `isame_testkit::postgres` (one per directory, so a
//! control plane restarted on the same directory finds its data): the same
//! tests run against both stores.
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
        database_url(self.dir.path())
    }

    /// A connection to its database, for looking behind the API.
    pub async fn db(&self) -> Db {
        Db::connect(&self.db_url()).await
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
    start_with(dir, token, |_| {}).await
}

/// Starts a control plane on the database in `dir` with adjusted options.
pub async fn start_with(
    dir: TempDir,
    token: Option<&str>,
    adjust: impl FnOnce(&mut Options),
) -> Cp {
    let url = database_url(dir.path());
    let mut options = Options::new(url, "127.0.0.1:0".parse().expect("addr"));
    options.admin_token = token.map(str::to_owned);
    adjust(&mut options);
    let cp = ControlPlane::start(options)
        .await
        .expect("control plane starts");
    Cp {
        addr: cp.api_addr,
        cp,
        dir,
    }
}

/// True when the tests run on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("ISAME_TEST_DATABASE").as_deref() == Ok("postgres")
}

/// The database of the test directory `dir`.
pub fn database_url(dir: &std::path::Path) -> String {
    static BY_DIR: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    if !on_postgres() {
        return format!("sqlite://{}", dir.join("isame.db").display());
    }
    let mut known = BY_DIR.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, url)) = known.iter().find(|(d, _)| d == dir) {
        return url.clone();
    }
    let url = isame_testkit::postgres::shared().create_database();
    known.push((dir.to_path_buf(), url.clone()));
    url
}

/// A direct connection to a test database, either kind.
pub enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    pub async fn connect(url: &str) -> Db {
        if url.starts_with("sqlite:") {
            Db::Sqlite(sqlx::SqlitePool::connect(url).await.expect("sqlite"))
        } else {
            Db::Postgres(sqlx::PgPool::connect(url).await.expect("postgres"))
        }
    }

    /// Rows of a query without parameters.
    pub async fn fetch<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        match self {
            Db::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await,
            Db::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first column of the one row of a query.
    pub async fn one<T>(&self, sql: &str) -> T
    where
        (T,): for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        let mut rows = self.fetch::<(T,)>(sql).await;
        assert_eq!(rows.len(), 1, "{sql}");
        rows.remove(0).0
    }

    /// Runs a statement.
    pub async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match self {
            Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
            Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
        }
    }

    pub async fn close(self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
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

/// A PATCH as `token` that may fail (a server being killed): `None` when
/// it got no answer.
pub async fn try_patch(
    addr: SocketAddr,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Option<Reply> {
    try_call(addr, Method::PATCH, path, token, headers, body).await
}

/// A request as `token` that may fail (a server restarting): `None` when
/// it got no answer.
pub async fn try_call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Option<Reply> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).ok()?;
    let mut client = Client::http1(addr).await.ok()?;
    client.send(req).await.ok()
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

/// A data plane reduced to its stream: sends what the test says, and hands
/// over what the control plane sends.
pub struct Subscriber {
    pub to_cp: tokio::sync::mpsc::Sender<isame_proto::pb::NodeMessage>,
    pub from_cp: tonic::Streaming<isame_proto::pb::ControlMessage>,
}

impl Subscriber {
    /// Opens a stream with `token` and says Hello as `node_id`.
    pub async fn connect(
        addr: SocketAddr,
        token: &str,
        node_id: &str,
    ) -> Result<Subscriber, tonic::Status> {
        Self::connect_with_window(addr, token, node_id, None).await
    }

    /// The same, with HTTP/2 flow-control windows of `window` bytes (a
    /// small window makes a node that does not read fall behind quickly).
    pub async fn connect_with_window(
        addr: SocketAddr,
        token: &str,
        node_id: &str,
        window: Option<u32>,
    ) -> Result<Subscriber, tonic::Status> {
        Self::connect_reading(
            addr,
            token,
            node_id,
            window,
            isame_proto::config::schema::fields().to_vec(),
        )
        .await
    }

    /// The same, for a node that says it reads only `fields` (a build
    /// older than this one).
    pub async fn connect_reading(
        addr: SocketAddr,
        token: &str,
        node_id: &str,
        window: Option<u32>,
        fields: Vec<String>,
    ) -> Result<Subscriber, tonic::Status> {
        let hello = Self::hello(node_id, fields, &[("zone", "a")]);
        Self::open(addr, token, hello, window).await
    }

    /// Opens a stream as a node with `labels` (what rollout stages select).
    pub async fn connect_labeled(
        addr: SocketAddr,
        token: &str,
        node_id: &str,
        labels: &[(&str, &str)],
    ) -> Result<Subscriber, tonic::Status> {
        let fields = isame_proto::config::schema::fields().to_vec();
        Self::open(addr, token, Self::hello(node_id, fields, labels), None).await
    }

    /// Opens a stream as a node with `labels` that applies deltas
    /// (`Hello.deltas`).
    pub async fn connect_with_deltas(
        addr: SocketAddr,
        token: &str,
        node_id: &str,
        labels: &[(&str, &str)],
    ) -> Result<Subscriber, tonic::Status> {
        let fields = isame_proto::config::schema::fields().to_vec();
        let hello = isame_proto::pb::Hello {
            deltas: true,
            ..Self::hello(node_id, fields, labels)
        };
        Self::open(addr, token, hello, None).await
    }

    fn hello(
        node_id: &str,
        fields: Vec<String>,
        labels: &[(&str, &str)],
    ) -> isame_proto::pb::Hello {
        let digest = if fields == isame_proto::config::schema::fields() {
            isame_proto::config::schema::digest().to_owned()
        } else {
            "an-older-schema".to_owned()
        };
        isame_proto::pb::Hello {
            node_id: node_id.into(),
            hostname: "test-host".into(),
            build_version: "test".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            cached_version: 0,
            schema_digest: digest,
            config_fields: fields,
            deltas: false,
        }
    }

    async fn open(
        addr: SocketAddr,
        token: &str,
        hello: isame_proto::pb::Hello,
        window: Option<u32>,
    ) -> Result<Subscriber, tonic::Status> {
        use isame_proto::pb;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .initial_stream_window_size(window)
            .initial_connection_window_size(window)
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = pb::config_discovery_client::ConfigDiscoveryClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tx.send(pb::NodeMessage {
            kind: Some(pb::node_message::Kind::Hello(hello)),
        })
        .await
        .expect("queue hello");
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("metadata"),
        );
        let from_cp = client.subscribe(req).await?.into_inner();
        Ok(Subscriber { to_cp: tx, from_cp })
    }

    /// The next snapshot, skipping heartbeats.
    pub async fn snapshot(&mut self) -> isame_proto::pb::Snapshot {
        match self.push().await {
            isame_proto::pb::control_message::Kind::Snapshot(s) => s,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    /// The next snapshot or delta, skipping heartbeats.
    pub async fn push(&mut self) -> isame_proto::pb::control_message::Kind {
        loop {
            let msg =
                tokio::time::timeout(std::time::Duration::from_secs(10), self.from_cp.message())
                    .await
                    .expect("a message in time")
                    .expect("stream ok")
                    .expect("stream open");
            match msg.kind {
                Some(isame_proto::pb::control_message::Kind::Heartbeat(_)) | None => {}
                Some(kind) => return kind,
            }
        }
    }

    /// Sends one message.
    pub async fn send(&self, kind: isame_proto::pb::node_message::Kind) {
        self.to_cp
            .send(isame_proto::pb::NodeMessage { kind: Some(kind) })
            .await
            .expect("send");
    }

    /// ACKs `version`.
    pub async fn ack(&self, version: u64) {
        self.send(isame_proto::pb::node_message::Kind::Ack(
            isame_proto::pb::Ack { version },
        ))
        .await;
    }
}

/// Polls `GET /api/v1/nodes/{id}` until `ok` holds for it.
pub async fn wait_node(cp: &Cp, id: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = cp.get(&format!("/api/v1/nodes/{id}")).await;
        if r.status == 200 {
            let v = r.json();
            if ok(&v) {
                return v;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {id} never got there: {}",
            r.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A free port on 127.0.0.1 (for a process that takes its address as a flag).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Waits up to 20 s until the control-plane process `child` answers
/// `/healthz` on `addr`; kills it and fails the test otherwise.
pub async fn wait_healthy(addr: SocketAddr, child: &mut std::process::Child) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(mut c) = isame_testkit::Client::http1(addr).await {
            if c.get("/healthz").await.is_ok_and(|r| r.status == 200) {
                return;
            }
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("control plane did not come up");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
