//! The access log: one line per request, in the same shape as the process's
//! other log lines (`--log-format text|json`, target `isame::access`), but
//! formatted here, into a buffer each worker thread reuses, rather than
//! through `tracing`'s general formatter, which costs more per request than
//! the whole proxying does (docs/BENCHMARKS.md). Each worker collects its
//! lines and hands them in batches (at 32 KiB, every 250 ms, and when the
//! worker stops) to the process's one background log writer, so they never
//! interleave with other lines, never block a worker, and cost one write for
//! many requests.

use isame_telemetry::{LineWriter, LogFormat};
use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One request, as logged.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// The client (as `trusted_proxies` defines it).
    pub client: IpAddr,
    /// Request method.
    pub method: &'a str,
    /// Host asked for.
    pub host: &'a str,
    /// Path and query.
    pub target: &'a str,
    /// Status sent (499: the client left first).
    pub status: u16,
    /// Upstream, empty when the request was not routed.
    pub upstream: &'a str,
    /// Backend URL, empty when none was tried.
    pub backend: &'a str,
    /// Attempts after the first.
    pub retries: u32,
    /// Response body bytes sent.
    pub bytes: u64,
    /// From the request's arrival to its end.
    pub nanos: u64,
    /// Trace id, empty when none.
    pub trace_id: &'a str,
}

struct Sink {
    format: LogFormat,
    writer: LineWriter,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Lines waiting in a worker past this size are handed over at once.
const BATCH_BYTES: usize = 32 * 1024;

/// How often each worker hands over what it collected ([`flush_every`]).
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Per worker thread: its clone of the writer, the lines not yet handed
/// over, and the formatted second of the last timestamp.
struct Local {
    writer: LineWriter,
    pending: Vec<u8>,
    second: u64,
    second_text: String,
}

impl Local {
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.writer.write_line(&self.pending);
            self.pending.clear();
        }
    }
}

impl Drop for Local {
    /// A worker that ends hands over its last lines.
    fn drop(&mut self) {
        self.flush();
    }
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Sends access-log lines to `writer`, formatted as `format`. The first
/// call wins; without one, [`write`] drops lines.
pub fn install(format: LogFormat, writer: LineWriter) {
    let _ = SINK.set(Sink { format, writer });
}

/// Logs one request.
pub fn write(e: &Entry<'_>) {
    let Some(sink) = SINK.get() else {
        return;
    };
    LOCAL.with(|cell| {
        let mut slot = cell.borrow_mut();
        let local = slot.get_or_insert_with(|| Local {
            writer: sink.writer.clone(),
            pending: Vec::with_capacity(BATCH_BYTES + 1024),
            second: u64::MAX,
            second_text: String::new(),
        });
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if now.as_secs() != local.second {
            local.second = now.as_secs();
            let full = humantime::format_rfc3339_seconds(UNIX_EPOCH + now).to_string();
            local.second_text = full.trim_end_matches('Z').to_owned();
        }
        let micros = now.subsec_micros();
        match sink.format {
            LogFormat::Text => text(&mut local.pending, &local.second_text, micros, e),
            LogFormat::Json => json(&mut local.pending, &local.second_text, micros, e),
        }
        if local.pending.len() >= BATCH_BYTES {
            local.flush();
        }
    });
}

/// Hands this thread's collected lines to the writer.
pub fn flush() {
    LOCAL.with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut() {
            if let Some(local) = slot.as_mut() {
                local.flush();
            }
        }
    });
}

/// Runs on each worker: hands over its lines every [`FLUSH_EVERY`], so a
/// quiet worker's last lines are not held back.
pub async fn flush_every() {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        flush();
    }
}

/// `1.234` milliseconds from nanoseconds, without floating point.
fn millis(out: &mut Vec<u8>, nanos: u64) {
    let micros = nanos / 1_000;
    let _ = write!(out, "{}.{:03}", micros / 1_000, micros % 1_000);
}

/// A value for a text line: printable ASCII as is, anything else (and `\`
/// itself, so that an escape cannot be forged) as `\xNN`: a header cannot
/// forge a line break or a terminal escape.
fn text_value(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        if (0x21..0x7f).contains(&b) && b != b'\\' {
            out.push(b);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

fn text(out: &mut Vec<u8>, second: &str, micros: u32, e: &Entry<'_>) {
    let _ = write!(
        out,
        "{second}.{micros:06}Z  INFO isame::access: request client={} method=",
        e.client
    );
    text_value(out, e.method);
    out.extend_from_slice(b" host=");
    text_value(out, e.host);
    out.extend_from_slice(b" target=");
    text_value(out, e.target);
    let _ = write!(out, " status={} upstream=", e.status);
    text_value(out, e.upstream);
    out.extend_from_slice(b" backend=");
    text_value(out, e.backend);
    let _ = write!(out, " retries={} bytes={} duration_ms=", e.retries, e.bytes);
    millis(out, e.nanos);
    out.extend_from_slice(b" trace_id=");
    text_value(out, e.trace_id);
    out.push(b'\n');
}

/// A JSON string.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn json(out: &mut Vec<u8>, second: &str, micros: u32, e: &Entry<'_>) {
    let _ = write!(
        out,
        "{{\"timestamp\":\"{second}.{micros:06}Z\",\"level\":\"INFO\",\"fields\":{{\"message\":\"request\",\"client\":\"{}\",\"method\":",
        e.client
    );
    json_str(out, e.method);
    out.extend_from_slice(b",\"host\":");
    json_str(out, e.host);
    out.extend_from_slice(b",\"target\":");
    json_str(out, e.target);
    let _ = write!(out, ",\"status\":{},\"upstream\":", e.status);
    json_str(out, e.upstream);
    out.extend_from_slice(b",\"backend\":");
    json_str(out, e.backend);
    let _ = write!(
        out,
        ",\"retries\":{},\"bytes\":{},\"duration_ms\":",
        e.retries, e.bytes
    );
    millis(out, e.nanos);
    out.extend_from_slice(b",\"trace_id\":");
    json_str(out, e.trace_id);
    out.extend_from_slice(b"},\"target\":\"isame::access\"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            client: IpAddr::from([10, 0, 0, 7]),
            method: "GET",
            host: "shop.test",
            target: "/a b\"\\\u{1b}[31m",
            status: 200,
            upstream: "web",
            backend: "http://10.0.0.1:80",
            retries: 1,
            bytes: 1234,
            nanos: 1_234_567,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
        }
    }

    #[test]
    fn json_lines_parse_and_keep_every_field() {
        let mut out = Vec::new();
        json(&mut out, "2026-11-26T03:04:05", 42, &entry());
        let v: serde_json::Value = serde_json::from_slice(&out).expect("one JSON line");
        assert!(out.ends_with(b"}\n"));
        assert_eq!(v["timestamp"], "2026-11-26T03:04:05.000042Z");
        assert_eq!(v["target"], "isame::access");
        let f = &v["fields"];
        assert_eq!(f["target"], "/a b\"\\\u{1b}[31m");
        assert_eq!(f["status"], 200);
        assert_eq!(f["retries"], 1);
        assert_eq!(f["bytes"], 1234);
        assert_eq!(f["duration_ms"], 1.234);
        assert_eq!(f["client"], "10.0.0.7");
        assert_eq!(f["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn text_lines_are_one_line_with_control_bytes_escaped() {
        let mut out = Vec::new();
        text(&mut out, "2026-11-26T03:04:05", 42, &entry());
        let line = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            line,
            "2026-11-26T03:04:05.000042Z  INFO isame::access: request client=10.0.0.7 method=GET \
             host=shop.test target=/a\\x20b\"\\x5c\\x1b[31m status=200 upstream=web \
             backend=http://10.0.0.1:80 retries=1 bytes=1234 duration_ms=1.234 \
             trace_id=4bf92f3577b34da6a3ce929d0e0e4736\n"
        );
    }
}
