//! Metric series of backends and upstreams that left the config.
//!
//! Series are labelled by upstream and backend, so a fleet whose backends
//! come and go (autoscaling, deploys) would grow its series, and the worker
//! caches of counter handles, without bound. When a backend or an upstream
//! leaves, its series stay for one more scrape (so the last counts are
//! seen), then are removed; without scrapes, after [`RETIRED_FOR`]. Worker
//! caches drop a departed backend's handles on their next sweep, and a
//! request still finishing on it counts no more (it cannot bring a removed
//! series back).

use crate::clock;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// How long a departed backend's series stay when nothing scrapes them.
pub const RETIRED_FOR: Duration = Duration::from_secs(300);

/// The `{method,status}` series created for one backend.
#[derive(Debug)]
struct Created {
    upstream: String,
    backend: String,
    combos: FxHashSet<(&'static str, u16)>,
}

/// Something that left the config, whose series go after a scrape.
#[derive(Debug)]
enum Leaving {
    Backend { uid: u32 },
    Upstream { name: String },
}

#[derive(Debug)]
struct Retired {
    what: Leaving,
    /// The number of scrapes when it left.
    scrapes: u64,
    /// When it left (clock nanoseconds).
    at: u64,
}

/// Book-keeping of per-backend series.
#[derive(Debug, Default)]
pub struct Series {
    created: Mutex<FxHashMap<u32, Created>>,
    retired: Mutex<Vec<Retired>>,
    scrapes: AtomicU64,
}

impl Series {
    /// Notes that backend `uid` has a `requests_total` series for this
    /// method and status.
    pub fn note(&self, uid: u32, upstream: &str, backend: &str, method: &'static str, status: u16) {
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        created
            .entry(uid)
            .or_insert_with(|| Created {
                upstream: upstream.to_owned(),
                backend: backend.to_owned(),
                combos: FxHashSet::default(),
            })
            .combos
            .insert((method, status));
    }

    /// Counts a scrape.
    pub fn scraped(&self) {
        self.scrapes.fetch_add(1, Relaxed);
    }

    /// Marks what `previous` had and `next` has not as leaving.
    pub fn retire(&self, previous: &Snapshot, next: &Snapshot) {
        let live: FxHashSet<u32> = next
            .upstreams
            .iter()
            .flat_map(|u| u.backends.iter().map(|b| b.state.uid))
            .collect();
        let scrapes = self.scrapes.load(Relaxed);
        let at = clock::now_nanos();
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        for u in &previous.upstreams {
            for b in &u.backends {
                if !live.contains(&b.state.uid) {
                    b.state.retire();
                    retired.push(Retired {
                        what: Leaving::Backend { uid: b.state.uid },
                        scrapes,
                        at,
                    });
                }
            }
            if !next.upstreams.iter().any(|n| n.name == u.name) {
                retired.push(Retired {
                    what: Leaving::Upstream {
                        name: u.name.clone(),
                    },
                    scrapes,
                    at,
                });
            }
        }
    }

    /// Removes the series of what left before the last scrape (or longer
    /// than [`RETIRED_FOR`] ago), unless `current` uses the same labels again.
    pub fn prune(&self, m: &Metrics, current: &Snapshot) {
        let scrapes = self.scrapes.load(Relaxed);
        let now = clock::now_nanos();
        let due = |r: &Retired| {
            r.scrapes < scrapes || now.saturating_sub(r.at) >= RETIRED_FOR.as_nanos() as u64
        };
        let mut gone = Vec::new();
        {
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            retired.retain_mut(|r| {
                if due(r) {
                    gone.push(std::mem::replace(&mut r.what, Leaving::Backend { uid: 0 }));
                    false
                } else {
                    true
                }
            });
        }
        for what in gone {
            match what {
                Leaving::Backend { uid } => {
                    let created = self
                        .created
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&uid);
                    let Some(c) = created else { continue };
                    if let Some(uid) = uid_of(current, &c.upstream, &c.backend) {
                        // The same labels serve a backend of the new config
                        // (its identity changed, not its URL): the series
                        // stay, and become that backend's to remove.
                        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
                        created
                            .entry(uid)
                            .or_insert_with(|| Created {
                                upstream: c.upstream.clone(),
                                backend: c.backend.clone(),
                                combos: FxHashSet::default(),
                            })
                            .combos
                            .extend(c.combos);
                        continue;
                    }
                    for (method, status) in c.combos {
                        let status = status.to_string();
                        let _ = m.requests.remove_label_values(&[
                            c.upstream.as_str(),
                            c.backend.as_str(),
                            method,
                            status.as_str(),
                        ]);
                    }
                    for reason in crate::outlier::REASONS {
                        let _ = m.outlier_ejections.remove_label_values(&[
                            c.upstream.as_str(),
                            c.backend.as_str(),
                            reason.as_str(),
                        ]);
                    }
                }
                Leaving::Upstream { name } => {
                    if current.upstreams.iter().any(|u| u.name == name) {
                        continue;
                    }
                    let _ = m.duration.remove_label_values(&[&name]);
                    let _ = m.retries.remove_label_values(&[&name]);
                    let _ = m.rate_limited.remove_label_values(&[&name]);
                    let _ = m.tunnels_active.remove_label_values(&[&name]);
                    for direction in crate::metrics::TUNNEL_DIRECTIONS {
                        let _ = m
                            .tunnel_bytes
                            .remove_label_values(&[name.as_str(), direction]);
                    }
                    for status in crate::grpc::STATUS_LABELS {
                        let _ = m
                            .grpc_responses
                            .remove_label_values(&[name.as_str(), status]);
                    }
                    for kind in crate::error::KINDS {
                        let _ = m.errors.remove_label_values(&[name.as_str(), kind]);
                    }
                }
            }
        }
    }

    /// Backends with series noted, and entries waiting to be removed.
    pub fn sizes(&self) -> (usize, usize) {
        (
            self.created.lock().map(|c| c.len()).unwrap_or(0),
            self.retired.lock().map(|r| r.len()).unwrap_or(0),
        )
    }
}

/// The id of the backend `url` of `upstream` in `s`, if it has one.
fn uid_of(s: &Snapshot, upstream: &str, url: &str) -> Option<u32> {
    s.upstreams
        .iter()
        .filter(|u| u.name == upstream)
        .flat_map(|u| &u.backends)
        .find(|b| b.url == url)
        .map(|b| b.state.uid)
}
