//! Every YAML document up to the control plane's body limit is read in
//! bounded memory and time, whatever its aliases do: measured with an
//! allocator that records the peak of live bytes.
// Wall-clock time of a real parse is what is bounded here.
#![allow(clippy::disallowed_types)]

use isame_proto::config::yaml::{self, YamlError};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Peak;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to the system allocator; only the
// byte counts around it are added.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new > l.size() {
                let now = LIVE.fetch_add(new - l.size(), Relaxed) + new - l.size();
                PEAK.fetch_max(now, Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

/// Tests share the counters: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The control plane's default request body limit.
const BODY_LIMIT: usize = 16 << 20;

/// Parses `text`; returns the result, the peak memory it added and the time.
fn measure(text: &str) -> (Result<serde_json::Value, YamlError>, usize, Duration) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let start = Instant::now();
    let r = yaml::parse(text);
    let took = start.elapsed();
    (r, PEAK.load(Relaxed) - base, took)
}

fn report(name: &str, text: &str) -> Result<serde_json::Value, YamlError> {
    let (r, peak, took) = measure(text);
    let verdict = match &r {
        Ok(_) => "parsed".to_owned(),
        Err(YamlError::TooLarge(_)) => "too large".to_owned(),
        Err(e) => format!(
            "refused: {}",
            e.to_string().chars().take(60).collect::<String>()
        ),
    };
    eprintln!(
        "{name}: {} bytes → {verdict}, peak {:.1} MiB ({:.1}× the text), {:?}",
        text.len(),
        peak as f64 / 1048576.0,
        peak as f64 / text.len() as f64,
        took
    );
    // The bound: a fixed multiple of the text, never a power of it.
    assert!(
        peak <= 64 * text.len() + (64 << 20),
        "{name}: {peak} bytes at peak for {} bytes of text",
        text.len()
    );
    assert!(took < Duration::from_secs(60), "{name}: {took:?}");
    r
}

/// `n` items anchored once, the list referenced `refs` times.
fn wide(n: usize, refs: usize) -> String {
    let mut s = String::with_capacity(2 * n + 3 * refs + 32);
    s.push_str("a: &a [");
    s.push_str(&vec!["x"; n].join(","));
    s.push_str("]\nb: [");
    s.push_str(&vec!["*a"; refs].join(","));
    s.push_str("]\n");
    s
}

#[test]
fn alias_bombs_of_every_size_stop_early() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The attack as reported: about 50 KB.
    let r = report("50 KB wide aliases", &wide(6_000, 6_000));
    assert!(matches!(r, Err(YamlError::TooLarge(_))));
    // The same shape up to the body limit.
    let mut size = 64 << 10;
    while size <= BODY_LIMIT {
        let n = size / 4;
        let text = wide(n, (size - 2 * n) / 3);
        assert!(text.len() <= BODY_LIMIT + 64);
        let r = report(&format!("{} KiB wide aliases", size >> 10), &text);
        assert!(matches!(r, Err(YamlError::TooLarge(_))), "{size}");
        size *= 4;
    }
    // Each level references the one before twice.
    let mut text = String::from("l0: &l0 [x, x]\n");
    for i in 1..40 {
        text.push_str(&format!("l{i}: &l{i} [*l{}, *l{}]\n", i - 1, i - 1));
    }
    assert!(report("nested doubling", &text).is_err());
    // A long scalar repeated.
    let text = format!(
        "s: &s \"{}\"\nt: [{}]\n",
        "y".repeat(BODY_LIMIT / 2),
        vec!["*s"; (BODY_LIMIT / 2) / 3].join(",")
    );
    assert!(matches!(
        report("long scalar aliased", &text),
        Err(YamlError::TooLarge(_))
    ));
    // Anchors nested in one another, each keeping a copy of what it holds
    // for its aliases: 1.4 million nodes in the innermost level (within the
    // budget), held once more per level if the copies were not counted.
    let mut text = String::new();
    for depth in 0..120 {
        text.push_str(&"  ".repeat(depth));
        text.push_str(&format!("- &a{depth}\n"));
    }
    let indent = "  ".repeat(120);
    let line = format!("[{}0]", "0,".repeat(200_000));
    for _ in 0..7 {
        text.push_str(&indent);
        text.push_str("- ");
        text.push_str(&line);
        text.push('\n');
    }
    assert!(matches!(
        report("nested anchors", &text),
        Err(YamlError::TooLarge(_))
    ));
}

#[test]
fn the_largest_plain_documents_are_bounded_too() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The most nodes a body can hold: a flat list of one-letter scalars.
    let mut text = String::with_capacity(BODY_LIMIT);
    text.push('[');
    while text.len() < BODY_LIMIT - 2 {
        text.push_str("x,");
    }
    text.push_str("x]");
    let r = report("flow list at the body limit", &text);
    assert!(
        matches!(r, Err(YamlError::TooLarge(_))),
        "longer than the look-ahead"
    );
    // The same as JSON: more values than a document may hold.
    text.replace_range(
        ..,
        &format!("{{\"a\": [{}0]}}", "0,".repeat(BODY_LIMIT / 2 - 8)),
    );
    let r = report("JSON list at the body limit", &text);
    assert!(r.is_err(), "more nodes than the absolute limit");
    // Block style streams: only the node budget stops it.
    let mut text = String::with_capacity(BODY_LIMIT);
    while text.len() < BODY_LIMIT - 4 {
        text.push_str("- x\n");
    }
    let r = report("block list at the body limit", &text);
    assert!(
        matches!(r, Err(YamlError::TooLarge(_))),
        "more nodes than the absolute limit"
    );
    // A realistic large config: 20,000 upstreams with 10 backends each.
    let mut text = String::from("upstreams:\n");
    for u in 0..20_000 {
        text.push_str(&format!("  - name: u{u}\n    backends:\n"));
        for b in 0..10 {
            text.push_str(&format!(
                "      - url: http://10.{}.{}.{b}:8080\n",
                u / 256,
                u % 256
            ));
        }
    }
    assert!(text.len() < BODY_LIMIT);
    let r = report("20,000 upstreams", &text);
    let tree = r.expect("a large config reads");
    // The same config written as JSON, as `isame-ctl apply -f x.json` sends it.
    let json = serde_json::to_string(&tree).expect("json");
    let r = report("20,000 upstreams as JSON", &json);
    assert_eq!(r.expect("reads"), tree);
}
