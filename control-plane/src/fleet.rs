//! The fleet as a whole, from the node ledger: which version each connected
//! node runs, who is behind or refused a version, and how many nodes see each
//! backend healthy. `GET /fleet` and the fleet metrics read the same summary.

use crate::configs::Current;
use crate::store::NodeRecord;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

/// A connected node whose last NACK is for a version newer than it runs.
#[derive(Debug, Clone)]
pub struct Refusal<'a> {
    /// Node id.
    pub id: &'a str,
    /// The version it refused.
    pub version: u64,
    /// Its errors, as recorded.
    pub errors: &'a serde_json::Value,
}

/// One backend of the newest config, as the connected nodes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth<'a> {
    /// Upstream name.
    pub upstream: &'a str,
    /// Backend URL.
    pub url: &'a str,
    /// Nodes that see it healthy.
    pub healthy: u32,
    /// Nodes that see it unhealthy.
    pub unhealthy: u32,
    /// Nodes whose outlier detection keeps it out of rotation.
    pub ejected: u32,
    /// For a backend by host name: nodes whose last lookup of it failed
    /// (they keep serving the addresses they had).
    pub dns_failing: u32,
    /// For a backend by host name: the most endpoints a node resolved it to.
    pub endpoints: Option<u32>,
}

/// What the connected nodes say of one backend, counted.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    healthy: u32,
    unhealthy: u32,
    ejected: u32,
    dns_failing: u32,
    endpoints: Option<u32>,
}

/// The fleet at a glance.
#[derive(Debug, Clone)]
pub struct Summary<'a> {
    /// The newest version.
    pub newest: u64,
    /// Every node in the ledger.
    pub total: usize,
    /// Connected nodes.
    pub connected: usize,
    /// Connected nodes by the version they run (`None`: none ACKed yet).
    pub by_version: BTreeMap<Option<u64>, usize>,
    /// Connected nodes not on the version they are to serve (the newest,
    /// or what a staged rollout keeps them on).
    pub behind: Vec<&'a str>,
    /// Connected nodes that refused a version newer than the one they run.
    pub refused: Vec<Refusal<'a>>,
    /// Every backend of the newest config, in config order.
    pub backends: Vec<BackendHealth<'a>>,
}

/// Summarizes `nodes` against the newest version `cur`, each node being
/// behind when it does not run `target(node)`.
pub fn summarize<'a>(
    nodes: &'a [NodeRecord],
    cur: &'a Current,
    target: &dyn Fn(&str) -> u64,
) -> Summary<'a> {
    let connected: Vec<&NodeRecord> = nodes.iter().filter(|n| n.connected).collect();
    let mut by_version = BTreeMap::new();
    for n in &connected {
        *by_version.entry(n.version).or_insert(0) += 1;
    }
    let behind = connected
        .iter()
        .filter(|n| n.version != Some(target(&n.id)))
        .map(|n| n.id.as_str())
        .collect();
    let refused = connected
        .iter()
        .filter_map(|n| {
            let nack = n.last_nack.as_ref()?;
            let version = nack["version"].as_u64()?;
            // A NACK of a version older than the one the node now runs is history.
            n.version.is_none_or(|ok| ok < version).then(|| Refusal {
                id: &n.id,
                version,
                errors: &nack["errors"],
            })
        })
        .collect();
    let mut seen: HashMap<(&str, &str), Seen> = HashMap::new();
    for n in &connected {
        for b in n.health.as_array().into_iter().flatten() {
            let (Some(u), Some(url)) = (b["upstream"].as_str(), b["backend"].as_str()) else {
                continue;
            };
            let e = seen.entry((u, url)).or_default();
            if b["healthy"].as_bool() == Some(true) {
                e.healthy += 1;
            } else {
                e.unhealthy += 1;
            }
            if b["ejected"].as_bool() == Some(true) {
                e.ejected += 1;
            }
            if b["dns_error"].is_string() {
                e.dns_failing += 1;
            }
            if b["by_name"].as_bool() == Some(true) {
                let n = u32::try_from(b["endpoints"].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
                e.endpoints = Some(e.endpoints.map_or(n, |m| m.max(n)));
            }
        }
    }
    let backends = cur
        .config
        .iter()
        .flat_map(|c| c.upstreams.iter())
        .flat_map(|u| u.backends.iter().map(move |b| (u, b)))
        .map(|(u, b)| {
            let Seen {
                healthy,
                unhealthy,
                ejected,
                dns_failing,
                endpoints,
            } = seen
                .get(&(u.name.as_str(), b.url.as_str()))
                .copied()
                .unwrap_or_default();
            BackendHealth {
                upstream: &u.name,
                url: &b.url,
                healthy,
                unhealthy,
                ejected,
                dns_failing,
                endpoints,
            }
        })
        .collect();
    Summary {
        newest: cur.version,
        total: nodes.len(),
        connected: connected.len(),
        by_version,
        behind,
        refused,
        backends,
    }
}

/// The upstream names of the newest version, kept per version: traffic
/// reports are counted only for these, so a node cannot create metric
/// series at will, and the series of an upstream that left the config go
/// with it.
#[derive(Debug, Default)]
pub struct KnownUpstreams(Mutex<(u64, HashSet<String>)>);

impl KnownUpstreams {
    /// Runs `f` on the names of the newest known version's upstreams, under
    /// the set's lock. When `cur` is newer than the set, the set moves to it
    /// first and `left` is called with each name it no longer has (an
    /// older `cur`, read before a commit, never moves it back).
    pub fn with<R>(
        &self,
        cur: &Current,
        mut left: impl FnMut(&str),
        f: impl FnOnce(&HashSet<String>) -> R,
    ) -> R {
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cur.version > cached.0 || (cur.version == 0 && cached.1.is_empty()) {
            let names: HashSet<String> = cur
                .config
                .iter()
                .flat_map(|c| c.upstreams.iter().map(|u| u.name.clone()))
                .collect();
            for gone in cached.1.difference(&names) {
                left(gone);
            }
            *cached = (cur.version, names);
        }
        f(&cached.1)
    }
}
