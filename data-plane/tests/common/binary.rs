//! The `isame-lb` binary run as a process: `--config FILE` on free ports,
//! one worker, JSON logs read line by line.
// Real processes: wall-clock time is the point.
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_isame-lb");

/// A running `isame-lb` and what it logs.
pub struct Running {
    pub child: Child,
    /// Its proxy address, as it logged it.
    pub proxy: SocketAddr,
    /// What it logged up to the line saying it serves.
    pub startup: Vec<String>,
    /// Its stderr from then on, one line at a time.
    pub logs: mpsc::Receiver<String>,
}

impl Drop for Running {
    /// A process the test did not stop is killed.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `isame-lb --config config` with extra `env` and `args`, and waits
/// until it logs that it serves.
pub fn spawn(config: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--log-format",
            "json",
        ])
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn isame-lb");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, logs) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut startup = Vec::new();
    let proxy = loop {
        let line = logs
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("isame-lb logged its listeners");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        startup.push(line);
        if v["fields"]["message"] == "isame-lb serving" {
            break v["fields"]["proxy"]
                .as_str()
                .expect("proxy addr")
                .parse()
                .expect("addr");
        }
    };
    Running {
        child,
        proxy,
        startup,
        logs,
    }
}
