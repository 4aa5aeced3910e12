//! A throwaway PostgreSQL server for tests: Debian's `postgresql` package
//! (installed by `testkit/scripts/ensure-postgres.sh` when missing), a
//! cluster made by `initdb` in a temporary directory, served on a free
//! loopback port, and gone when the test process ends.
//!
//! The server runs under a small shell supervisor whose standard input is a
//! pipe from the test process: `stop` and `start` lines stop and restart
//! the server (a test of a database restart), and the end of the pipe
//! (the test process exited, however it ended) stops the server and
//! removes its directory. As root, the cluster belongs to the `postgres`
//! user, because PostgreSQL refuses to run as root.
//!
//! [`shared`] is one server per test process, with a fresh database per
//! [`Postgres::create_database`]; [`Postgres::start`] is a server of the
//! caller's own.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The role tests connect as (trusted on loopback).
pub const USER: &str = "isame";

/// A running PostgreSQL server.
pub struct Postgres {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    control: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    _child: Child,
}

static SHARED: OnceLock<Postgres> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The server of this test process, started on first use.
pub fn shared() -> &'static Postgres {
    SHARED.get_or_init(Postgres::start)
}

/// What the supervisor runs: `$1` bin dir, `$2` data dir, `$3` port.
const SUPERVISOR: &str = r#"
bin=$1; data=$2; port=$3
serve() {
    "$bin/postgres" -D "$data" -h 127.0.0.1 -p "$port" -k "$data" \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
        -c max_connections=300 -c shared_buffers=32MB \
        >>"$data/server.log" 2>&1 &
    pid=$!
}
serve
echo started
while read -r cmd; do
    case "$cmd" in
        stop) kill -INT "$pid"; wait "$pid"; echo stopped ;;
        start) serve; echo started ;;
    esac
done
kill -QUIT "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$data"
"#;

impl Postgres {
    /// Installs PostgreSQL if needed, makes a cluster and starts it.
    /// Panics with the reason when it cannot (a test cannot go on).
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let owner = owner();
        static N: AtomicU32 = AtomicU32::new(0);
        let data = std::env::temp_dir().join(format!(
            "isame-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir(&data).expect("create the PostgreSQL data directory");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&data, Some(uid), Some(gid))
                .expect("give the data directory to the postgres user");
        }
        let out = as_owner(Command::new(bin.join("initdb")), owner)
            .args(["--no-sync", "--auth=trust", "--encoding=UTF8", "--locale=C"])
            .args(["--username", USER, "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut child = as_owner(Command::new("sh"), owner)
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("isame-postgres")
            .arg(&bin)
            .arg(&data)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the PostgreSQL supervisor");
        let stdin = child.stdin.take().expect("supervisor stdin");
        let stdout = BufReader::new(child.stdout.take().expect("supervisor stdout"));
        let pg = Postgres {
            port,
            bin,
            data,
            control: Mutex::new((stdin, stdout)),
            _child: child,
        };
        pg.expect_line("started");
        pg.wait_ready();
        pg
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database; its URL.
    pub fn create_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", USER, "-p"])
            .arg(self.port.to_string())
            .arg(&name)
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// Stops the server (a fast shutdown: clients are cut off).
    pub fn stop(&self) {
        self.command("stop");
        self.expect_line("stopped");
    }

    /// Starts the stopped server again, on the same port and data.
    pub fn resume(&self) {
        self.command("start");
        self.expect_line("started");
        self.wait_ready();
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }

    fn command(&self, cmd: &str) {
        let mut c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(c.0, "{cmd}").expect("talk to the PostgreSQL supervisor");
        c.0.flush().expect("talk to the PostgreSQL supervisor");
    }

    fn expect_line(&self, want: &str) {
        let mut c = self.control.lock().unwrap_or_else(|e| e.into_inner());
        let mut line = String::new();
        c.1.read_line(&mut line)
            .expect("hear from the PostgreSQL supervisor");
        assert_eq!(line.trim(), want, "PostgreSQL supervisor: {}", self.log());
    }

    /// Waits until the server takes queries.
    fn wait_ready(&self) {
        for _ in 0..300 {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", USER, "-p"])
                .arg(self.port.to_string())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("PostgreSQL did not start in 30 s: {}", self.log());
    }
}

/// The directory of PostgreSQL's programs, installing the package first
/// when there is none.
fn bin_dir() -> PathBuf {
    if let Some(dir) = find_bin_dir() {
        return dir;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ensure-postgres.sh");
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .expect("run ensure-postgres.sh");
    assert!(status.success(), "PostgreSQL could not be installed");
    find_bin_dir().expect("PostgreSQL's programs after installing it")
}

/// The newest `/usr/lib/postgresql/N/bin` with a server, or `ISAME_PG_BIN`.
fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ISAME_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// As root: the `postgres` user's uid and gid.
fn owner() -> Option<(u32, u32)> {
    let me = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((
        id("-u").expect("a postgres user (made by Debian's package)"),
        id("-g").expect("the postgres user's group"),
    ))
}

fn as_owner(mut cmd: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
        cmd.env("HOME", "/tmp");
    }
    cmd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
