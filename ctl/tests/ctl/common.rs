//! What the tests share: a real control plane on 127.0.0.1:0 over a
//! temporary SQLite file (its own runtime, so tests stay synchronous), the
//! built `isame-ctl` run as a process, and a node subscribed over gRPC.

use isame_control_plane::app::{self, ControlPlane, Options};
use isame_control_plane::store::Role;
use isame_proto::pb;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// The bootstrap admin token.
pub const ADMIN: &str = "ctl-test-admin-token-0123456789abcdef";

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_isame-ctl");

/// A small valid config: upstreams `web` (two backends) and `api`, route `api`.
pub const BASE: &str = "\
service: test
upstreams:
  - name: web
    algorithm: weighted_round_robin
    backends:
      - url: http://127.0.0.1:3001
      - url: http://127.0.0.1:3002
        weight: 2
  - name: api
    backends:
      - http://127.0.0.1:4001
routes:
  - name: api
    path_prefix: /api
    upstream: api
health:
  enabled: false
";

/// What a run of `isame-ctl` did.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Panics unless the exit code is `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, code, "exit code of a run that printed\n{self}");
        self
    }

    /// Standard output as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Standard output as YAML.
    #[track_caller]
    pub fn yaml(&self) -> Value {
        serde_yaml_ng::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not YAML ({e}):\n{}", self.stdout))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `isame-ctl` with nothing of the caller's environment that it reads:
/// no ISAME_* variables, no proxies, and HOME and XDG_CONFIG_HOME in
/// `home` so that no real user's config file is read.
pub fn command(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    for var in [
        "ISAME_SERVER",
        "ISAME_TOKEN",
        "ISAME_CTL_CONFIG",
        "NO_COLOR",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        c.env_remove(var);
    }
    c.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .stdin(Stdio::null());
    c
}

/// Runs a prepared command.
pub fn run(mut c: Command) -> Run {
    let out = c.output().expect("isame-ctl runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running control plane, and a temporary folder for its database, the
/// files tests write and the HOME of the runs.
pub struct Cp {
    /// Where its REST API listens.
    pub addr: SocketAddr,
    /// Where data planes subscribe.
    pub grpc: SocketAddr,
    cp: Option<ControlPlane>,
    /// The runtime the control plane (and subscribed nodes) run on.
    pub rt: tokio::runtime::Runtime,
    /// Database, files, HOME.
    pub dir: TempDir,
}

impl Cp {
    /// Starts a control plane with the bootstrap admin token.
    pub fn start() -> Cp {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let url = format!("sqlite://{}", dir.path().join("isame.db").display());
        let mut options = Options::new(url, "127.0.0.1:0".parse().expect("addr"));
        options.admin_token = Some(ADMIN.into());
        options.shutdown_timeout = Duration::from_secs(1);
        let cp = rt
            .block_on(ControlPlane::start(options))
            .expect("control plane starts");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        Cp {
            addr: cp.api_addr,
            grpc: cp.grpc_addr,
            cp: Some(cp),
            rt,
            dir,
        }
    }

    /// The REST API's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The HOME of the runs.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `isame-ctl` pointed at this control plane by the environment, with `token`.
    pub fn command_as(&self, token: Option<&str>, args: &[&str]) -> Command {
        let mut c = command(&self.home());
        c.env("ISAME_SERVER", self.url()).args(args);
        if let Some(t) = token {
            c.env("ISAME_TOKEN", t);
        }
        c
    }

    /// Runs `isame-ctl ARGS` as the admin.
    pub fn ctl(&self, args: &[&str]) -> Run {
        run(self.command_as(Some(ADMIN), args))
    }

    /// Runs `isame-ctl ARGS` with `token` (or none).
    pub fn ctl_as(&self, token: Option<&str>, args: &[&str]) -> Run {
        run(self.command_as(token, args))
    }

    /// Writes `text` to a file in the temporary folder; returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path.display().to_string()
    }

    /// Applies [`BASE`] as version 1.
    pub fn seed(&self) {
        let f = self.file("base.yaml", BASE);
        self.ctl(&["apply", "-f", &f]).expect(0);
    }

    /// A new token with `role`.
    pub fn token(&self, name: &str, role: Role) -> String {
        let cp = self.cp.as_ref().expect("running");
        self.rt
            .block_on(app::create_token(cp.configs.store(), name, role))
            .expect("token")
    }

    /// Subscribes a node the way a data plane does.
    pub fn subscribe(&self, node_id: &str) -> Node {
        self.subscribe_with(node_id, &[("zone", "a")])
    }

    /// Subscribes a node with these labels.
    pub fn subscribe_with(&self, node_id: &str, labels: &[(&str, &str)]) -> Node {
        let grpc = self.grpc;
        let id = node_id.to_owned();
        let labels: std::collections::HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (to_cp, from_cp) = self.rt.block_on(async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
                .expect("endpoint")
                .connect()
                .await
                .expect("gRPC connects");
            let mut client = pb::config_discovery_client::ConfigDiscoveryClient::new(channel);
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            tx.send(pb::NodeMessage {
                kind: Some(pb::node_message::Kind::Hello(pb::Hello {
                    node_id: id,
                    hostname: "test-host".into(),
                    build_version: "test".into(),
                    labels,
                    cached_version: 0,
                    schema_digest: isame_proto::config::schema::digest().into(),
                    config_fields: isame_proto::config::schema::fields().to_vec(),
                    deltas: false,
                })),
            })
            .await
            .expect("queue hello");
            let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {ADMIN}").parse().expect("metadata"),
            );
            let stream = client
                .subscribe(req)
                .await
                .expect("subscribed")
                .into_inner();
            (tx, stream)
        });
        Node {
            to_cp,
            from_cp,
            rt: self.rt.handle().clone(),
        }
    }
}

impl Drop for Cp {
    fn drop(&mut self) {
        if let Some(cp) = self.cp.take() {
            self.rt.block_on(cp.shutdown());
        }
    }
}

/// A data plane reduced to its stream.
pub struct Node {
    to_cp: tokio::sync::mpsc::Sender<pb::NodeMessage>,
    from_cp: tonic::Streaming<pb::ControlMessage>,
    rt: tokio::runtime::Handle,
}

impl Node {
    /// The version of the next snapshot, skipping heartbeats.
    pub fn snapshot(&mut self) -> u64 {
        let from_cp = &mut self.from_cp;
        self.rt.block_on(async {
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(10), from_cp.message())
                    .await
                    .expect("a message in time")
                    .expect("stream ok")
                    .expect("stream open");
                if let Some(pb::control_message::Kind::Snapshot(s)) = msg.kind {
                    return s.version;
                }
            }
        })
    }

    /// Sends one message.
    pub fn send(&self, kind: pb::node_message::Kind) {
        self.rt
            .block_on(self.to_cp.send(pb::NodeMessage { kind: Some(kind) }))
            .expect("send");
    }

    /// ACKs `version`.
    pub fn ack(&self, version: u64) {
        self.send(pb::node_message::Kind::Ack(pb::Ack { version }));
    }
}

/// Runs `args` until `ok` holds for the JSON it prints (10 s at most).
#[track_caller]
pub fn wait_for(cp: &Cp, args: &[&str], ok: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let r = cp.ctl(args);
        if r.code == 0 {
            let v = r.json();
            if ok(&v) {
                return v;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("never got there: {}", cp.ctl(args));
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
