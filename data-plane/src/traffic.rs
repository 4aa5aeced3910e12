//! What a node reports of its traffic to the control plane: per upstream,
//! the requests that ended, how many of them the client got a 5xx for (or a
//! response cut off by its backend), and their summed durations.
//!
//! Each client request is counted once, when it ends, with the answer its
//! client got: a request that took three tries is one request, and one
//! error at most. These are plain counters, apart from the Prometheus
//! registry; a report takes what they gathered since the last one.

use isame_proto::latency::{self, Histogram, BUCKETS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// One upstream's counters; the request path holds them through its
/// compiled upstream.
#[derive(Debug)]
pub struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    duration_us: AtomicU64,
    /// Requests per latency bucket (656 bytes per upstream).
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            duration_us: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    /// Counts one request that ended after `nanos`; `failed` when its
    /// client got a 5xx or a response cut off by the backend.
    pub fn record(&self, nanos: u64, failed: bool) {
        self.requests.fetch_add(1, Relaxed);
        if failed {
            self.errors.fetch_add(1, Relaxed);
        }
        let micros = nanos / 1_000;
        self.duration_us.fetch_add(micros, Relaxed);
        self.buckets[latency::bucket_of(micros)].fetch_add(1, Relaxed);
    }

    fn take(&self) -> Totals {
        let requests = self.requests.swap(0, Relaxed);
        let mut latency = Histogram::new();
        if requests > 0 {
            for (i, b) in self.buckets.iter().enumerate() {
                let n = b.swap(0, Relaxed);
                if n > 0 {
                    latency.add(i, n);
                }
            }
        }
        Totals {
            requests,
            errors: self.errors.swap(0, Relaxed),
            duration_ms: self.duration_us.swap(0, Relaxed) / 1_000,
            latency,
        }
    }
}

/// What one upstream saw over a report's period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests that ended.
    pub requests: u64,
    /// Of which failed (5xx, or a response cut off by the backend).
    pub errors: u64,
    /// Their durations summed, in milliseconds.
    pub duration_ms: u64,
    /// Their durations, bucketed.
    pub latency: Histogram,
}

/// Every upstream's counters, by name.
#[derive(Debug, Default)]
pub struct Traffic {
    by_upstream: Mutex<HashMap<String, Arc<Counters>>>,
}

impl Traffic {
    /// The counters of `upstream` (the same ones across reloads, while it
    /// is reported on).
    pub fn counters(&self, upstream: &str) -> Arc<Counters> {
        let mut map = self.by_upstream.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(upstream.to_owned()).or_default().clone()
    }

    /// What every upstream gathered since the last call, for the next
    /// report. Upstreams for which `live` is false are reported one last
    /// time and forgotten.
    pub fn take(&self, live: impl Fn(&str) -> bool) -> Vec<(String, Totals)> {
        let mut map = self.by_upstream.lock().unwrap_or_else(|e| e.into_inner());
        let out = map
            .iter()
            .map(|(name, c)| (name.clone(), c.take()))
            .filter(|(_, t)| t.requests > 0)
            .collect();
        map.retain(|name, _| live(name));
        out
    }

    /// Upstreams counted now.
    pub fn len(&self) -> usize {
        self.by_upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// True when no upstream is counted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_takes_what_was_gathered_since_the_last() {
        let t = Traffic::default();
        let web = t.counters("web");
        web.record(2_000_000, false);
        web.record(3_000_000, true);
        assert!(
            Arc::ptr_eq(&web, &t.counters("web")),
            "one set per upstream"
        );
        let first = t.take(|_| true);
        let mut latency = Histogram::new();
        latency.record(2_000);
        latency.record(3_000);
        assert_eq!(
            first,
            [(
                "web".to_owned(),
                Totals {
                    requests: 2,
                    errors: 1,
                    duration_ms: 5,
                    latency,
                }
            )]
        );
        assert!(t.take(|_| true).is_empty(), "nothing new, nothing reported");
    }

    #[test]
    fn upstreams_that_left_are_reported_once_more_and_forgotten() {
        let t = Traffic::default();
        t.counters("old").record(1_000_000, false);
        t.counters("kept");
        let report = t.take(|name| name == "kept");
        assert_eq!(report.len(), 1, "the last requests of `old` still count");
        assert_eq!(t.len(), 1);
    }
}
