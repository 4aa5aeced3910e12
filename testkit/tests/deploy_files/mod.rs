//! A model of the deployment files for testkit/tests/compose.rs: the compose
//! file's services, their commands, environment and mounts; the metrics the
//! binaries export; and just enough PromQL reading to check a dashboard.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the workspace")
        .to_path_buf()
}

/// A file's text; panics with its path.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A YAML file as JSON, with anchors, aliases and `<<` merge keys resolved.
pub fn yaml(path: &Path) -> Value {
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    v.apply_merge()
        .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
    serde_json::to_value(v).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A scalar as text (strings without quotes).
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// docker-compose.yml, parsed.
pub struct Compose {
    /// The whole file as JSON.
    pub doc: Value,
}

impl Compose {
    /// Reads docker-compose.yml at the workspace root.
    pub fn load() -> Self {
        Self {
            doc: yaml(&root().join("docker-compose.yml")),
        }
    }

    /// Every service by name.
    pub fn services(&self) -> &serde_json::Map<String, Value> {
        self.doc["services"].as_object().expect("services")
    }

    /// One service; panics when there is none of that name.
    pub fn service(&self, name: &str) -> &Value {
        self.services()
            .get(name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// The argv a service starts: its entrypoint, else its command.
    pub fn argv(&self, name: &str) -> Vec<String> {
        let s = self.service(name);
        let v = if s["entrypoint"].is_null() {
            &s["command"]
        } else {
            &s["entrypoint"]
        };
        match v {
            Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            Value::Array(a) => a.iter().map(text).collect(),
            _ => Vec::new(),
        }
    }

    /// The services that run an Isame binary, with that binary's name.
    pub fn isame_services(&self) -> Vec<(String, String)> {
        self.services()
            .keys()
            .filter_map(|name| {
                let bin = self.argv(name).into_iter().next()?;
                bin.starts_with("isame-").then(|| (name.clone(), bin))
            })
            .collect()
    }

    /// Services running `bin`.
    pub fn running(&self, bin: &str) -> Vec<String> {
        self.isame_services()
            .into_iter()
            .filter(|(_, b)| b == bin)
            .map(|(s, _)| s)
            .collect()
    }

    /// A service's environment variable, as written (before interpolation).
    pub fn env(&self, name: &str, key: &str) -> Option<String> {
        match &self.service(name)["environment"] {
            Value::Object(m) => m.get(key).map(text),
            Value::Array(a) => a
                .iter()
                .map(text)
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_owned)),
            _ => None,
        }
    }

    /// A service's mounts as (source, target); bind mounts have a path source.
    pub fn mounts(&self, name: &str) -> Vec<(String, String)> {
        let Some(vols) = self.service(name)["volumes"].as_array() else {
            return Vec::new();
        };
        vols.iter()
            .map(|v| match v {
                Value::String(s) => {
                    let mut parts = s.splitn(3, ':');
                    let src = parts.next().unwrap_or_default().to_owned();
                    let dst = parts.next().unwrap_or_else(|| panic!("{name}: volume {s}"));
                    (src, dst.to_owned())
                }
                long => (text(&long["source"]), text(&long["target"])),
            })
            .collect()
    }

    /// Where a path inside a service's container comes from in the repository.
    pub fn host_path(&self, name: &str, container_path: &str) -> Option<PathBuf> {
        self.mounts(name).into_iter().find_map(|(src, dst)| {
            if !is_bind(&src) {
                return None;
            }
            let rest = container_path.strip_prefix(&dst)?;
            let host = root().join(&src);
            match rest.strip_prefix('/') {
                _ if rest.is_empty() => Some(host),
                Some(rest) => Some(host.join(rest)),
                None => None,
            }
        })
    }

    /// The value after `flag` in a service's argv (`--flag VALUE` or `--flag=VALUE`).
    pub fn flag(&self, name: &str, flag: &str) -> Option<String> {
        let argv = self.argv(name);
        argv.iter().enumerate().find_map(|(i, a)| {
            if a == flag {
                argv.get(i + 1).cloned()
            } else {
                a.strip_prefix(flag)?.strip_prefix('=').map(str::to_owned)
            }
        })
    }
}

/// Whether a volume source is a host path (a bind mount), not a named volume.
pub fn is_bind(source: &str) -> bool {
    source.starts_with('.') || source.starts_with('/')
}

/// The port of `host:port`.
pub fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or_default()
}

/// `host:port` of a URL such as `http://control-plane:7071`.
pub fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default()
}

/// Runs deploy/check-compose.sh on a compose file.
pub fn check_compose(file: &Path) -> std::process::Output {
    Command::new(root().join("deploy/check-compose.sh"))
        .arg(file)
        .output()
        .expect("run deploy/check-compose.sh")
}

/// `cargo metadata` of the workspace.
pub fn cargo_metadata(args: &[&str]) -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(args)
        .current_dir(root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata JSON")
}

/// `major.minor` of a version such as `1.88` or `1.88.0`.
pub fn minor(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// What the binaries export, read from the source that registers it.
pub struct Exported {
    /// Every `isame_*` metric name.
    pub names: BTreeSet<String>,
    /// Those that are histograms (queried as `_bucket`, `_sum`, `_count`).
    pub histograms: BTreeSet<String>,
    /// Every label name of those metrics.
    pub labels: BTreeSet<String>,
}

impl Exported {
    /// Reads the data plane's and the control plane's metrics modules.
    pub fn read() -> Self {
        let mut e = Exported {
            names: BTreeSet::new(),
            histograms: BTreeSet::new(),
            labels: BTreeSet::new(),
        };
        for file in ["data-plane/src/metrics.rs", "control-plane/src/metrics.rs"] {
            let src = read(&root().join(file));
            for (i, _) in src.match_indices("\"isame_") {
                let name = src[i + 1..].split('"').next().unwrap_or_default();
                if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    e.names.insert(name.to_owned());
                }
            }
            for (i, m) in src.match_indices("HistogramOpts::new(") {
                let rest = src[i + m.len()..].trim_start();
                if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                    e.histograms.insert(name.to_owned());
                }
            }
            // Label lists are the only `&["...", ...]` arrays in these files.
            for (i, _) in src.match_indices("&[\"") {
                let list = src[i + 2..].split(']').next().unwrap_or_default();
                let names = list.split(',').map(|l| l.trim().trim_matches('"'));
                e.labels
                    .extend(names.filter(|l| !l.is_empty()).map(str::to_owned));
            }
        }
        e
    }

    /// Whether a series name can be queried: a plain metric, or a
    /// histogram's `_bucket`, `_sum` or `_count`.
    pub fn has_series(&self, name: &str) -> bool {
        (self.names.contains(name) && !self.histograms.contains(name))
            || ["_bucket", "_sum", "_count"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|h| self.histograms.contains(h))
            })
    }
}

fn is_ident(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'
}

/// Identifiers in a PromQL expression (metric names, functions, keywords,
/// label names), outside quoted strings.
pub fn identifiers(expr: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote) = (Vec::new(), String::new(), None);
    for ch in expr.chars() {
        if quote.is_none() && is_ident(ch) {
            cur.push(ch);
            continue;
        }
        if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => {}
            None if matches!(ch, '"' | '\'' | '`') => quote = Some(ch),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Label names listed after `by`, `without`, `on` and `ignoring`.
pub fn grouping_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kw in ["by", "without", "on", "ignoring"] {
        for (i, _) in expr.match_indices(kw) {
            let before = expr[..i].chars().next_back();
            let Some(list) = expr[i + kw.len()..].trim_start().strip_prefix('(') else {
                continue;
            };
            if before.is_some_and(is_ident) {
                continue;
            }
            let list = list.split(')').next().unwrap_or_default();
            out.extend(
                list.split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    out
}

/// Every panel of a dashboard's panel list, rows' nested panels included.
pub fn panels(list: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in list.as_array().into_iter().flatten() {
        out.push(p);
        out.extend(panels(&p["panels"]));
    }
    out
}
