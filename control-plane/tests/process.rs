//! The real binary: acknowledged changes survive `kill -9`, SIGTERM drains
//! and exits 0, `token create` prints a working token once, exit codes.
#![allow(clippy::disallowed_types)]
// Children are handed back to the tests, which kill and wait for them.
#![allow(clippy::zombie_processes)]

mod common;

use common::{base_config, call, free_addr, wait_healthy};
use http::Method;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_isame-control-plane");
const TOKEN: &str = "process-test-admin-token-0123456789abcdef";

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("isame.db").display())
}

async fn spawn(dir: &Path, addr: SocketAddr) -> Child {
    let mut child = Command::new(BIN)
        .args([
            "--database-url",
            &db_url(dir),
            "--api-listen",
            &addr.to_string(),
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .env("ISAME_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_healthy(addr, &mut child).await;
    child
}

async fn put(
    addr: SocketAddr,
    path: &str,
    method: Method,
    body: String,
) -> (u16, serde_json::Value) {
    let r = call(addr, method, path, Some(TOKEN), &[], body).await;
    let status = r.status.as_u16();
    (status, serde_json::from_slice(&r.body).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("dir");
    let addr = free_addr();
    let mut child = spawn(dir.path(), addr).await;
    let (status, _) = put(
        addr,
        "/api/v1/config",
        Method::PUT,
        base_config().to_string(),
    )
    .await;
    assert_eq!(status, 200);
    // Writers change a weight over and over; remember the newest acknowledged version.
    let acked = Arc::new(AtomicU64::new(1));
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let weight = 1 + (i * 2 + w) % 900;
                let r = call(
                    addr,
                    Method::PATCH,
                    "/api/v1/upstreams/web/backends/127.0.0.1:3001",
                    Some(TOKEN),
                    &[],
                    format!("{{\"weight\": {weight}}}"),
                );
                let r = match tokio::time::timeout(Duration::from_secs(5), r).await {
                    Ok(r) => r,
                    Err(_) => break,
                };
                if r.status == 200 {
                    if let Some(v) = serde_json::from_slice::<serde_json::Value>(&r.body)
                        .ok()
                        .and_then(|b| b["version"].as_u64())
                    {
                        acked.fetch_max(v, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    let acked_at_kill = acked.load(Ordering::SeqCst);
    for w in writers {
        w.abort();
    }
    assert!(
        acked_at_kill > 5,
        "writes went through before the kill: {acked_at_kill}"
    );

    let mut child = spawn(dir.path(), addr).await;
    let versions = call(
        addr,
        Method::GET,
        "/api/v1/versions?limit=1",
        Some(TOKEN),
        &[],
        "",
    )
    .await
    .json();
    let newest = versions["versions"][0]["version"]
        .as_u64()
        .expect("version");
    assert!(
        newest >= acked_at_kill,
        "version {newest} < acknowledged {acked_at_kill}"
    );
    // The config served is the newest version's, byte for byte.
    let config = call(addr, Method::GET, "/api/v1/config", Some(TOKEN), &[], "").await;
    assert_eq!(config.headers["etag"], format!("\"{newest}\"").as_str());
    let stored = call(
        addr,
        Method::GET,
        &format!("/api/v1/versions/{newest}"),
        Some(TOKEN),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(config.json(), stored["config"]);
    child.kill().expect("kill");
    let _ = child.wait();

    let pool = sqlx::SqlitePool::connect(&db_url(dir.path()))
        .await
        .expect("open");
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .expect("check");
    assert_eq!(check, "ok");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .expect("mode");
    assert_eq!(mode, "wal");
    pool.close().await;
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().expect("dir");
    let addr = free_addr();
    let mut child = spawn(dir.path(), addr).await;
    let (status, _) = put(
        addr,
        "/api/v1/config",
        Method::PUT,
        base_config().to_string(),
    )
    .await;
    assert_eq!(status, 200);
    // A write is half sent when SIGTERM arrives; it still completes.
    let body = base_config().replace("3002", "3003");
    let head = format!(
        "PUT /api/v1/config HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/yaml\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(&body.as_bytes()[..20]).await.expect("part");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(child.try_wait().expect("wait").is_none(), "still draining");
    conn.write_all(&body.as_bytes()[20..]).await.expect("rest");
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).await.expect("reply");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, Some(0));
    // Closing the database checkpointed the WAL into the main file.
    let wal = dir.path().join("isame.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "WAL left behind after a clean shutdown"
    );
    let pool = sqlx::SqlitePool::connect(&db_url(dir.path()))
        .await
        .expect("open");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM config_versions")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(n, 2, "the drained write was committed");
    pool.close().await;
}

#[tokio::test]
async fn token_create_prints_a_working_token_once() {
    let dir = tempfile::tempdir().expect("dir");
    let create = |name: &str, role: &str| {
        Command::new(BIN)
            .args([
                "--database-url",
                &db_url(dir.path()),
                "token",
                "create",
                "--name",
                name,
                "--role",
                role,
            ])
            .output()
            .expect("run")
    };
    let out = create("ci", "admin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(token.starts_with("isame_") && token.len() > 40, "{token}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("only this once"));
    let again = create("ci", "viewer");
    assert_eq!(
        again.status.code(),
        Some(1),
        "a second token named ci is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = create("ci2", "owner");
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown role is a usage error"
    );

    let addr = free_addr();
    let mut child = spawn(dir.path(), addr).await;
    let r = call(
        addr,
        Method::PUT,
        "/api/v1/config",
        Some(&token),
        &[],
        base_config(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = call(
        addr,
        Method::GET,
        "/api/v1/versions/1",
        Some(&token),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(v["author"], "ci");
    child.kill().expect("kill");
    let _ = child.wait();
}

#[test]
fn exit_codes() {
    let dir = tempfile::tempdir().expect("dir");
    let usage = Command::new(BIN)
        .arg("--no-such-flag")
        .output()
        .expect("run");
    assert_eq!(usage.status.code(), Some(2));
    let exposed = Command::new(BIN)
        .args([
            "--database-url",
            &db_url(dir.path()),
            "--api-listen",
            "0.0.0.0:0",
        ])
        .env_remove("ISAME_ADMIN_TOKEN")
        .output()
        .expect("run");
    assert_eq!(exposed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&exposed.stderr).contains("refusing to serve"));
    let pg = Command::new(BIN)
        .args(["--database-url", "mysql://user:pw@db/isame"])
        .output()
        .expect("run");
    assert_eq!(pg.status.code(), Some(1));
    let err = String::from_utf8_lossy(&pg.stderr);
    assert!(
        err.contains("unsupported database URL") && !err.contains("pw"),
        "{err}"
    );
    let unwritable = Command::new(BIN)
        .args([
            "--database-url",
            "sqlite:///proc/isame/none.db",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run");
    assert_eq!(unwritable.status.code(), Some(1));
    // gRPC TLS: the client CA needs a certificate; missing files are named.
    let usage = Command::new(BIN)
        .args(["--grpc-client-ca", "ca.pem"])
        .output()
        .expect("run");
    assert_eq!(usage.status.code(), Some(2));
    let missing = Command::new(BIN)
        .args([
            "--database-url",
            &db_url(dir.path()),
            "--api-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--grpc-tls-cert",
            "/nonexistent/cp.pem",
            "--grpc-tls-key",
            "/nonexistent/cp.key",
        ])
        .env("ISAME_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/cp.pem"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_brings_the_schema_up_to_date_once() {
    let dir = tempfile::tempdir().expect("dir");
    let sqlite = db_url(dir.path());
    let postgres = isame_testkit::postgres::shared().create_database();
    for (url, steps) in [(sqlite.as_str(), "6"), (postgres.as_str(), "2")] {
        let migrate = || {
            Command::new(BIN)
                .args(["--database-url", url, "migrate"])
                .output()
                .expect("run")
        };
        let first = migrate();
        assert!(first.status.success(), "{url}: {:?}", first);
        let said = String::from_utf8_lossy(&first.stderr);
        assert!(
            said.contains(&format!("({steps} migrations applied)")),
            "{said}"
        );
        let again = migrate();
        assert!(again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("(0 migrations applied)"));
        // A newer build migrated further: this one still migrates (nothing)
        // and starts, as an old replica must during a rolling upgrade.
        let db = common::Db::connect(url).await;
        let checksum = if url.starts_with("sqlite") {
            "X'00'"
        } else {
            "'\\x00'::bytea"
        };
        db.execute(&format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99999999, 'from a newer build', TRUE, {checksum}, 0)"
        ))
        .await
        .expect("a newer build's migration");
        db.close().await;
        let older = migrate();
        assert!(older.status.success(), "{url}: {older:?}");
        let addr = free_addr();
        let mut child = Command::new(BIN)
            .args(["--database-url", url, "--api-listen", &addr.to_string()])
            .args(["--grpc-listen", "127.0.0.1:0"])
            .env("ISAME_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        wait_healthy(addr, &mut child).await;
        let _ = child.kill();
        let _ = child.wait();
    }
    let down = Command::new(BIN)
        .args([
            "--database-url",
            "postgres://isame@127.0.0.1:1/none",
            "migrate",
        ])
        .output()
        .expect("run");
    assert_eq!(down.status.code(), Some(1), "an unreachable database fails");
}
