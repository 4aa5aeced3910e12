//! The `isame-lb` binary as operators run it: `validate` exit codes, signals,
//! graceful shutdown.
// These tests time real sockets and processes: wall-clock time is the point.
#![allow(clippy::disallowed_types)]

use isame_testkit::Backend;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::binary::{spawn as spawn_with, Running, BIN};

/// `isame-lb --config config` with nothing else set.
fn spawn(config: &std::path::Path) -> Running {
    spawn_with(config, &[], &[])
}

fn write_config(dir: &tempfile::TempDir, body: &str) -> std::path::PathBuf {
    let path = dir.path().join("isame.yaml");
    std::fs::write(&path, body).expect("write config");
    path
}

#[test]
fn validate_exit_codes_and_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_config(
        &dir,
        "upstreams:\n  - name: web\n    backends: [\"http://127.0.0.1:3000\"]\n",
    );
    let out = Command::new(BIN)
        .arg("validate")
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("valid (1 upstream(s), 1 backend(s), 0 route(s))"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "server:\n  port: 0\nupstreams:\n  - name: web\n    algorithm: fastest\n    backends:\n      - url: ftp://x\n        weight: 0\nextra: 1\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .arg("validate")
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for line in [
        "5 problem(s)",
        "server.port: must be between 1 and 65535",
        "upstreams[0].algorithm: unknown algorithm \"fastest\"",
        "upstreams[0].backends[0].url: scheme must be http, https or h2c",
        "upstreams[0].backends[0].weight: must be between 1 and 1000",
        "extra: unknown field `extra`",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }

    // The schema is fine; the files it names are not: validate checks those too.
    let tls = dir.path().join("tls.yaml");
    std::fs::write(
        &tls,
        "upstreams:\n  - name: web\n    backends: [\"http://127.0.0.1:3000\"]\ntls:\n  enabled: true\n  cert_file: /nonexistent/site.pem\n  key_file: /nonexistent/site.key\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .arg("validate")
        .arg(&tls)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls.cert_file: cannot read /nonexistent/site.pem")
            && err.contains("tls.key_file: cannot read /nonexistent/site.key"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["validate", "/nonexistent/isame.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));

    assert_eq!(
        Command::new(BIN)
            .arg("validate")
            .output()
            .expect("run")
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        Command::new(BIN)
            .arg("--bogus")
            .output()
            .expect("run")
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        Command::new(BIN).output().expect("run").status.code(),
        Some(2),
        "no --config is a usage error"
    );
}

#[test]
fn invalid_config_at_start_exits_1_with_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(&dir, "upstreams:\n  - name: \"\"\n    backends: []\n");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstreams[0].name") && err.contains("upstreams[0].backends"),
        "{err}"
    );
}

/// Sends a signal with the shell's built-in `kill` (no procps needed).
fn signal(child: &Child, sig: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("kill {sig} {}", child.id())])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn wait_for_log(logs: &mpsc::Receiver<String>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = logs
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
        if line.contains(needle) {
            return;
        }
    }
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_0() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backend = rt.block_on(Backend::start("slow"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        &dir,
        &format!(
            "upstreams:\n  - name: web\n    backends: [\"{}\"]\n",
            backend.url()
        ),
    );
    let mut p = spawn(&path);
    let proxy = p.proxy;
    assert!(http_get(proxy, "/")
        .expect("warm-up")
        .starts_with("HTTP/1.1 200"));

    let slow = std::thread::spawn(move || http_get(proxy, "/?delay_ms=1500"));
    std::thread::sleep(Duration::from_millis(400));
    let sent = Instant::now();
    signal(&p.child, "-TERM");
    wait_for_log(&p.logs, "shutting down");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        TcpStream::connect(proxy).is_err(),
        "no new connections after SIGTERM"
    );

    let reply = slow
        .join()
        .expect("thread")
        .expect("slow request completed");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let status = p.child.wait().expect("exit");
    assert_eq!(status.code(), Some(0));
    assert!(sent.elapsed() < Duration::from_secs(10));
}

#[test]
fn sighup_reloads_the_file() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let a = rt.block_on(Backend::start("a"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        &dir,
        &format!(
            "upstreams:\n  - name: web\n    backends: [\"{}\"]\n",
            a.url()
        ),
    );
    let mut p = spawn(&path);
    assert!(http_get(p.proxy, "/").expect("a").contains("x-backend: a"));
    // The file is unchanged, so the watcher stays quiet: only SIGHUP can
    // produce version 2.
    signal(&p.child, "-HUP");
    wait_for_log(&p.logs, "\"config_version\":2");
    assert!(http_get(p.proxy, "/").expect("a").contains("x-backend: a"));
    signal(&p.child, "-INT");
    assert_eq!(p.child.wait().expect("exit").code(), Some(0));
}

#[test]
fn subscribed_mode_flags_and_exit_codes() {
    let code = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("ISAME_TOKEN")
            .output()
            .expect("run")
            .status
            .code()
    };
    // --control-plane needs --node-id; --config and --control-plane exclude each other.
    assert_eq!(code(&["--control-plane", "http://127.0.0.1:1"]), Some(2));
    assert_eq!(code(&["--node-id", "dp-1"]), Some(2));
    assert_eq!(
        code(&[
            "--config",
            "x.yaml",
            "--control-plane",
            "http://127.0.0.1:1",
            "--node-id",
            "a"
        ]),
        Some(2)
    );
    assert_eq!(
        code(&[
            "--control-plane",
            "http://127.0.0.1:1",
            "--node-id",
            "a",
            "--label",
            "novalue"
        ]),
        Some(2)
    );
    assert_eq!(
        code(&[
            "--cert",
            "c.pem",
            "--control-plane",
            "http://127.0.0.1:1",
            "--node-id",
            "a"
        ]),
        Some(2)
    );
    // A URL that cannot be used, or TLS files that do not exist: exit 1 with the reason.
    let out = Command::new(BIN)
        .args([
            "--control-plane",
            "not a url",
            "--node-id",
            "a",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--control-plane"));
    let out = Command::new(BIN)
        .args([
            "--control-plane",
            "https://127.0.0.1:1",
            "--node-id",
            "a",
            "--ca",
            "/nonexistent/ca.pem",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));
}
