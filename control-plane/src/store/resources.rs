//! Which rows of the resource tables (`upstreams`, `backends`, `routes`,
//! `settings`) a commit rewrites: only those of resources that changed. The
//! decision is the same for every database; each backend runs the writes.

use super::rows::{int, json_text};
use super::StoreError;
use isame_proto::config::{Route, Upstream};
use isame_proto::Config;
use std::collections::{HashMap, HashSet};

/// One write to the resource tables.
#[derive(Debug, PartialEq)]
pub(crate) enum ResourceWrite {
    /// An upstream left the config (its backends go with it).
    DeleteUpstream(String),
    /// An upstream is new or changed: its row, then its backends anew.
    PutUpstream {
        name: String,
        position: i64,
        algorithm: &'static str,
        spec: String,
        /// `(url, position, weight, drain)`.
        backends: Vec<(String, i64, i64, bool)>,
    },
    /// A route left the config.
    DeleteRoute(String),
    /// A route is new or changed.
    PutRoute {
        name: String,
        position: i64,
        /// Its upstream (a split's first one; the column is informational).
        upstream: String,
        spec: String,
    },
    /// A global section changed.
    PutSetting { key: &'static str, value: String },
}

/// The writes that bring the tables from `old` to `new`.
pub(crate) fn writes(old: Option<&Config>, new: &Config) -> Result<Vec<ResourceWrite>, StoreError> {
    let mut out = Vec::new();
    let before: HashMap<&str, (usize, &Upstream)> = old
        .map(|c| {
            c.upstreams
                .iter()
                .enumerate()
                .map(|(i, u)| (u.name.as_str(), (i, u)))
                .collect()
        })
        .unwrap_or_default();
    let kept: HashSet<&str> = new.upstreams.iter().map(|u| u.name.as_str()).collect();
    for name in before.keys().filter(|n| !kept.contains(*n)) {
        out.push(ResourceWrite::DeleteUpstream((*name).to_owned()));
    }
    for (i, u) in new.upstreams.iter().enumerate() {
        if before.get(u.name.as_str()) == Some(&(i, u)) {
            continue;
        }
        out.push(ResourceWrite::PutUpstream {
            name: u.name.clone(),
            position: int(i as u64),
            algorithm: u.algorithm.as_str(),
            spec: json_text(u)?,
            backends: u
                .backends
                .iter()
                .enumerate()
                .map(|(j, b)| (b.url.clone(), int(j as u64), i64::from(b.weight), b.drain))
                .collect(),
        });
    }
    let old_routes: HashMap<&str, (usize, &Route)> = old
        .map(|c| {
            c.routes
                .iter()
                .enumerate()
                .map(|(i, r)| (r.name.as_str(), (i, r)))
                .collect()
        })
        .unwrap_or_default();
    let kept: HashSet<&str> = new.routes.iter().map(|r| r.name.as_str()).collect();
    for name in old_routes.keys().filter(|n| !kept.contains(*n)) {
        out.push(ResourceWrite::DeleteRoute((*name).to_owned()));
    }
    for (i, r) in new.routes.iter().enumerate() {
        if old_routes.get(r.name.as_str()) == Some(&(i, r)) {
            continue;
        }
        out.push(ResourceWrite::PutRoute {
            name: r.name.clone(),
            position: int(i as u64),
            upstream: r.split.first().map_or(&r.upstream, |s| &s.upstream).clone(),
            spec: json_text(r)?,
        });
    }
    let settings = settings_of(new)?;
    let old_settings = old.map(settings_of).transpose()?.unwrap_or_default();
    for (key, value) in settings {
        if old_settings.iter().any(|(k, v)| *k == key && *v == value) {
            continue;
        }
        out.push(ResourceWrite::PutSetting { key, value });
    }
    Ok(out)
}

/// The global sections of a config, as `(key, JSON)` rows.
fn settings_of(c: &Config) -> Result<Vec<(&'static str, String)>, StoreError> {
    Ok(vec![
        ("version", json_text(&c.version)?),
        ("service", json_text(&c.service)?),
        ("server", json_text(&c.server)?),
        ("trusted_proxies", json_text(&c.trusted_proxies)?),
        ("health", json_text(&c.health)?),
        ("metrics", json_text(&c.metrics)?),
        ("circuit_breaker", json_text(&c.circuit_breaker)?),
        ("retry", json_text(&c.retry)?),
        ("tls", json_text(&c.tls)?),
    ])
}
