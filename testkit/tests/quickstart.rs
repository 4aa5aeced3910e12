//! The README's run command (`./run.sh`), run without a terminal: it starts
//! the control plane, two data planes and three backends, the proxies
//! balance as examples/quickstart.yaml says, a change made with isame-ctl
//! reaches both data planes, and SIGINT stops everything with exit 0.
//!
//! It uses the debug binaries `cargo test --workspace` has built (through
//! `ISAME_BIN_DIR`) and the script's fixed ports: 7070-7071, 8080-8081,
//! 9090-9091 and 3001-3003 must be free.

use isame_testkit::client;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tokio::time::Instant;

const BINARIES: [&str; 4] = ["isame-lb", "isame-echo", "isame-control-plane", "isame-ctl"];

/// `target/debug`, where this test binary's `deps/` directory lives.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/debug")
        .to_owned();
    for b in BINARIES {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: build the binaries first (cargo build --bins; cargo test --workspace does)",
            dir.join(b).display()
        );
    }
    dir
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

/// The script in a process group of its own: whatever happens to the test,
/// the group (the script and everything it started) is stopped at the end,
/// with SIGKILL if SIGTERM is not enough within 10 s.
struct Script(Child);

impl Script {
    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.0.id())])
            .status();
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            // The script is gone; make sure nothing it started stayed.
            self.signal_group("-KILL");
            return;
        }
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group("-KILL");
        let _ = self.0.wait();
    }
}

/// Which backend answered each of `n` requests to `path` on `proxy`.
async fn spread(proxy: SocketAddr, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = client::get(proxy, path).await.expect("proxied request");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let backend = r.headers["x-backend"].to_str().expect("name").to_owned();
        *seen.entry(backend).or_insert(0) += 1;
    }
    seen
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn ctl(bin: &std::path::Path, token: &str, args: &[&str]) -> String {
    let out = Command::new(bin.join("isame-ctl"))
        .args(args)
        .env("ISAME_SERVER", "http://127.0.0.1:7070")
        .env("ISAME_TOKEN", token)
        .env("NO_COLOR", "1")
        .output()
        .expect("isame-ctl runs");
    assert!(
        out.status.success(),
        "isame-ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until every node runs the newest version.
fn converged(bin: &std::path::Path, token: &str, nodes: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&ctl(bin, token, &["-o", "json", "status"])).expect("json");
        let current = status["nodes"]["nodes"].as_array().map_or(0, |all| {
            all.iter()
                .filter(|n| n["connected"] == true && n["behind"] == false)
                .count()
        });
        if current == nodes {
            return;
        }
        assert!(Instant::now() < deadline, "fleet never converged: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_serves_follows_changes_and_stops_cleanly() {
    let bin = bin_dir();
    let state = tempfile::tempdir().expect("state dir");
    let mut child = Command::new("bash")
        .arg(repo().join("run.sh"))
        .env("ISAME_BIN_DIR", &bin)
        .env("ISAME_DEMO_DIR", state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("run.sh starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut script = Script(child);

    // The script prints what to try once everything answers. The pipe is
    // read to its end even after the test stops listening, so the script
    // never dies of SIGPIPE while it stops its processes.
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("run.sh never got ready; it printed {printed:#?}"));
        let done = line.contains("Ctrl-C stops everything");
        printed.push(line);
        if done {
            break;
        }
    }
    let text = printed.join("\n");
    for hint in [
        "localhost:8080",
        "localhost:9090/metrics",
        "isame-ctl status",
        "isame-ctl apply",
    ] {
        assert!(text.contains(hint), "{hint:?} not in:\n{text}");
    }
    let admin = std::fs::read_to_string(state.path().join("admin-token")).expect("admin token");

    // Both data planes serve the quickstart config.
    let (lb1, lb2): (SocketAddr, SocketAddr) = (
        "127.0.0.1:8080".parse().expect("addr"),
        "127.0.0.1:8081".parse().expect("addr"),
    );
    converged(&bin, &admin, 2);
    let weighted = counts(&[("backend-1", 3), ("backend-2", 2), ("backend-3", 1)]);
    assert_eq!(spread(lb1, "/hello", 6).await, weighted);
    assert_eq!(spread(lb2, "/hello", 6).await, weighted);
    let api = spread(lb2, "/api/users", 4).await;
    assert_eq!(api.keys().collect::<Vec<_>>(), ["backend-2", "backend-3"]);

    // A change made with isame-ctl reaches both data planes.
    ctl(
        &bin,
        &admin,
        &[
            "backend",
            "weight",
            "web",
            "127.0.0.1:3002",
            "5",
            "-m",
            "test",
        ],
    );
    converged(&bin, &admin, 2);
    let reweighted = counts(&[("backend-1", 3), ("backend-2", 5), ("backend-3", 1)]);
    assert_eq!(spread(lb1, "/hello", 9).await, reweighted);
    assert_eq!(spread(lb2, "/hello", 9).await, reweighted);

    // The example rollout policy (with shorter bake times): the next change
    // reaches demo-1, the canary, first, then demo-2; `rollout status
    // --watch` follows it to the end.
    let example = std::fs::read_to_string(repo().join("examples/rollouts/policy.yaml"))
        .expect("example policy");
    let quick = example
        .replace("bake: 30s", "bake: 1s")
        .replace("bake: 10s", "bake: 0s");
    assert_ne!(quick, example, "the example's bake times changed");
    let policy = state.path().join("policy.yaml");
    std::fs::write(&policy, quick).expect("write policy");
    let policy = policy.to_str().expect("path");
    ctl(&bin, &admin, &["rollout", "policy", "set", "-f", policy]);
    ctl(
        &bin,
        &admin,
        &["backend", "weight", "web", "127.0.0.1:3002", "4"],
    );
    let done = ctl(&bin, &admin, &["rollout", "status", "--watch"]);
    assert!(done.contains("reached every node (completed)"), "{done}");
    let r: serde_json::Value =
        serde_json::from_str(&ctl(&bin, &admin, &["-o", "json", "rollout", "status"]))
            .expect("json");
    assert_eq!(
        r["stages"][0]["members"],
        serde_json::json!(["demo-1"]),
        "{r}"
    );
    assert_eq!(
        r["stages"][1]["members"],
        serde_json::json!(["demo-2"]),
        "{r}"
    );
    converged(&bin, &admin, 2);
    let four = counts(&[("backend-1", 3), ("backend-2", 4), ("backend-3", 1)]);
    assert_eq!(spread(lb1, "/hello", 8).await, four);
    assert_eq!(spread(lb2, "/hello", 8).await, four);

    // SIGINT (to the script alone, as a terminal's Ctrl-C would reach it
    // first) stops everything, cleanly.
    let pid = script.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = script.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "run.sh did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "run.sh exited with {status}");
    for port in [7070, 7071, 8080, 8081, 9090, 9091, 3001, 3002, 3003] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open after the quickstart stopped"
        );
    }
}
