//! A structured difference between two configs, for the control plane's change
//! log, `isamectl diff` and the dashboard: what was added, removed, changed or
//! reordered, each at a readable path like `upstreams[api].backends[http://10.0.0.1:8080].weight`.
//!
//! The diff works on each config's JSON form (the REST shape), so values read
//! exactly as an operator writes them (`"30s"`, not nanoseconds). Keyed lists
//! (upstreams and routes by `name`, backends by `url`, `tls.certificates` by
//! `cert_file`) are matched by key, not by position.

use super::Config;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// What happened to one thing between two configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// Only in the new config; `new` holds it.
    Added,
    /// Only in the old config; `old` holds it.
    Removed,
    /// In both with different values; `old` and `new` hold them.
    Changed,
    /// The elements both configs share are in another order; `old` and `new`
    /// hold each side's keys in order.
    Reordered,
}

/// One difference between two configs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// What happened.
    pub op: ChangeOp,
    /// e.g. "upstreams[api]", "upstreams[api].backends[http://10.0.0.1:8080].weight", "health.interval", "routes"
    pub path: String,
    /// The value before, for `removed`, `changed` and `reordered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<serde_json::Value>,
    /// The value after, for `added`, `changed` and `reordered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<serde_json::Value>,
}

/// Lists whose elements are matched by a key field rather than by position:
/// (list path without keys, key field).
const KEYED: [(&str, &str); 5] = [
    ("upstreams", "name"),
    ("routes", "name"),
    ("routes.split", "upstream"),
    ("upstreams.backends", "url"),
    ("tls.certificates", "cert_file"),
];

/// Every difference from `old` to `new`, in a stable, readable order.
///
/// Changes follow the order of fields in `new`; within each object or list,
/// what was removed comes after everything still present, and a list's
/// `reordered` change comes before the changes to its elements.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    diff_from(Some(old), new)
}

/// The same for an optional "before" (None = nothing applied yet: every upstream/route/section shows as added).
pub fn diff_from(old: Option<&Config>, new: &Config) -> Vec<Change> {
    diff_values(old.map(to_value).as_ref(), &to_value(new))
}

/// The same on configs already in their JSON form (`serde_json::to_value`
/// of a [`Config`]), for a caller that needs that form anyway.
pub fn diff_values(old: Option<&Value>, new: &Value) -> Vec<Change> {
    let empty = Value::Object(Map::new());
    let mut out = Vec::new();
    walk(&At::root(), old.unwrap_or(&empty), new, &mut out);
    out
}

fn to_value(config: &Config) -> Value {
    // Every field serializes to a string, number, bool, list or string-keyed
    // map, none of which serde_json can refuse.
    serde_json::to_value(config).expect("a Config always has a JSON form")
}

/// Where the walk is: the path people see, and the same path without list keys
/// (`upstreams.backends`), which tells whether a list is keyed.
struct At {
    path: String,
    schema: String,
}

impl At {
    fn root() -> Self {
        At {
            path: String::new(),
            schema: String::new(),
        }
    }

    fn field(&self, name: &str) -> Self {
        let join = |base: &str| {
            if base.is_empty() {
                name.to_owned()
            } else {
                format!("{base}.{name}")
            }
        };
        At {
            path: join(&self.path),
            schema: join(&self.schema),
        }
    }

    fn element(&self, key: &str) -> Self {
        At {
            path: format!("{}[{key}]", self.path),
            schema: self.schema.clone(),
        }
    }

    /// The key field when this is a keyed list.
    fn key_field(&self) -> Option<&'static str> {
        KEYED
            .iter()
            .find(|(list, _)| *list == self.schema)
            .map(|(_, key)| *key)
    }

    fn push(&self, op: ChangeOp, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
        out.push(Change {
            op,
            path: self.path.clone(),
            old: old.cloned(),
            new: new.cloned(),
        });
    }
}

fn walk(at: &At, old: &Value, new: &Value, out: &mut Vec<Change>) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => objects(at, o, n, out),
        (Value::Array(o), Value::Array(n)) => match at.key_field() {
            Some(field) => keyed_lists(at, field, o, n, out),
            None if !same(old, new) => at.push(ChangeOp::Changed, Some(old), Some(new), out),
            None => {}
        },
        _ if !same(old, new) => at.push(ChangeOp::Changed, Some(old), Some(new), out),
        _ => {}
    }
}

fn objects(at: &At, old: &Map<String, Value>, new: &Map<String, Value>, out: &mut Vec<Change>) {
    // Struct fields never move; this catches a route's `headers` written in
    // another order.
    let old_keys: Vec<&str> = old.keys().map(String::as_str).collect();
    let new_keys: Vec<&str> = new.keys().map(String::as_str).collect();
    reordered(at, &old_keys, &new_keys, out);
    for (name, n) in new {
        match old.get(name) {
            // Equal values (in order too) need no walk, and no paths made
            // for it: in a config of thousands of upstreams, one changed.
            Some(o) if same(o, n) => {}
            Some(o) => walk(&at.field(name), o, n, out),
            None => one_sided(&at.field(name), ChangeOp::Added, n, out),
        }
    }
    for (name, o) in old {
        if !new.contains_key(name) {
            one_sided(&at.field(name), ChangeOp::Removed, o, out);
        }
    }
}

/// A field only one side has. A keyed list is left out when empty, so it
/// reads as an empty list and each element shows up on its own.
fn one_sided(at: &At, op: ChangeOp, value: &Value, out: &mut Vec<Change>) {
    let empty = Value::Array(Vec::new());
    let keyed = at
        .key_field()
        .is_some_and(|field| value.as_array().and_then(|l| keys(l, field)).is_some());
    match (op, keyed) {
        (ChangeOp::Added, true) => walk(at, &empty, value, out),
        (ChangeOp::Removed, true) => walk(at, value, &empty, out),
        (ChangeOp::Added, false) => at.push(op, None, Some(value), out),
        _ => at.push(op, Some(value), None, out),
    }
}

fn keyed_lists(at: &At, field: &str, old: &[Value], new: &[Value], out: &mut Vec<Change>) {
    let (Some(old_keys), Some(new_keys)) = (keys(old, field), keys(new, field)) else {
        // Missing or repeated keys: elements cannot be matched, so compare whole.
        let (o, n) = (Value::from(old), Value::from(new));
        if !same(&o, &n) {
            at.push(ChangeOp::Changed, Some(&o), Some(&n), out);
        }
        return;
    };
    reordered(at, &old_keys, &new_keys, out);
    let before: HashMap<&str, &Value> = old_keys.iter().copied().zip(old).collect();
    for (key, n) in new_keys.iter().zip(new) {
        match before.get(key) {
            Some(o) if same(o, n) => {}
            Some(o) => walk(&at.element(key), o, n, out),
            None => at.element(key).push(ChangeOp::Added, None, Some(n), out),
        }
    }
    let after: HashSet<&str> = new_keys.iter().copied().collect();
    for (key, o) in old_keys.iter().zip(old) {
        if !after.contains(key) {
            at.element(key).push(ChangeOp::Removed, Some(o), None, out);
        }
    }
}

/// Each element's key, or None when one is missing, not a string or repeated.
fn keys<'a>(list: &'a [Value], field: &str) -> Option<Vec<&'a str>> {
    let mut seen = HashSet::new();
    list.iter()
        .map(|e| e.get(field)?.as_str().filter(|k| seen.insert(*k)))
        .collect()
}

/// Records a `reordered` change when the keys both sides share are in another order.
fn reordered(at: &At, old: &[&str], new: &[&str], out: &mut Vec<Change>) {
    let (in_old, in_new): (HashSet<&str>, HashSet<&str>) =
        (old.iter().copied().collect(), new.iter().copied().collect());
    let shared_old = old.iter().filter(|k| in_new.contains(*k));
    let shared_new = new.iter().filter(|k| in_old.contains(*k));
    if !shared_old.eq(shared_new) {
        let list = |keys: &[&str]| Value::from(keys.to_vec());
        at.push(ChangeOp::Reordered, Some(&list(old)), Some(&list(new)), out);
    }
}

/// Equality that, unlike `Value`'s, also minds the order of an object's keys.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(vx, vy)| same(vx, vy))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, HeaderMatch, Health};
    use serde_json::json;
    use std::time::Duration;

    const BASE: &str = r#"
upstreams:
  - name: api
    backends:
      - url: "http://10.0.0.1:8080"
        weight: 2
      - url: "http://10.0.0.2:8080"
  - name: web
    backends: ["http://10.0.1.1:8080"]
routes:
  - name: first
    path_prefix: /api
    upstream: api
  - name: second
    upstream: web
"#;

    fn base() -> Config {
        Config::from_yaml(BASE).expect("valid test config")
    }

    fn ops(changes: &[Change]) -> Vec<(ChangeOp, &str)> {
        changes.iter().map(|c| (c.op, c.path.as_str())).collect()
    }

    #[test]
    fn same_config_has_no_changes() {
        assert_eq!(diff(&base(), &base()), vec![]);
    }

    #[test]
    fn backend_added_removed_and_weight_changed() {
        let old = base();
        let mut new = base();
        let api = &mut new.upstreams[0];
        api.backends[0].weight = 5;
        let gone = api.backends.remove(1);
        api.backends.push(Backend {
            url: "http://10.0.0.3:8080".into(),
            ..gone
        });
        let changes = diff(&old, &new);
        assert_eq!(
            ops(&changes),
            vec![
                (
                    ChangeOp::Changed,
                    "upstreams[api].backends[http://10.0.0.1:8080].weight"
                ),
                (
                    ChangeOp::Added,
                    "upstreams[api].backends[http://10.0.0.3:8080]"
                ),
                (
                    ChangeOp::Removed,
                    "upstreams[api].backends[http://10.0.0.2:8080]"
                ),
            ]
        );
        assert_eq!(
            (changes[0].old.clone(), changes[0].new.clone()),
            (Some(json!(2)), Some(json!(5)))
        );
        assert_eq!(changes[1].old, None);
        assert_eq!(
            changes[1].new.as_ref().and_then(|v| v.get("url")),
            Some(&json!("http://10.0.0.3:8080"))
        );
        assert_eq!(
            changes[2].old.as_ref().and_then(|v| v.get("weight")),
            Some(&json!(1))
        );
        assert_eq!(changes[2].new, None);
    }

    #[test]
    fn route_reorder_is_one_change_with_both_orders() {
        let old = base();
        let mut new = base();
        new.routes.reverse();
        let changes = diff(&old, &new);
        assert_eq!(
            changes,
            vec![Change {
                op: ChangeOp::Reordered,
                path: "routes".into(),
                old: Some(json!(["first", "second"])),
                new: Some(json!(["second", "first"])),
            }]
        );
    }

    #[test]
    fn adding_in_the_middle_is_not_a_reorder() {
        let old = base();
        let mut new = base();
        let mut extra = new.routes[0].clone();
        extra.name = "middle".into();
        new.routes.insert(1, extra);
        assert_eq!(
            ops(&diff(&old, &new)),
            vec![(ChangeOp::Added, "routes[middle]")]
        );
    }

    #[test]
    fn global_field_change_reads_as_written() {
        let old = base();
        let mut new = base();
        new.health.interval = Duration::from_secs(10);
        new.trusted_proxies = vec!["10.0.0.0/8".parse().expect("valid net")];
        let changes = diff(&old, &new);
        assert_eq!(
            changes[0],
            Change {
                op: ChangeOp::Added,
                path: "trusted_proxies".into(),
                old: None,
                new: Some(json!(["10.0.0.0/8"])),
            }
        );
        assert_eq!(
            changes[1],
            Change {
                op: ChangeOp::Changed,
                path: "health.interval".into(),
                old: Some(json!("30s")),
                new: Some(json!("10s")),
            }
        );
        assert_eq!(changes.len(), 2);
    }

    #[test]
    fn unkeyed_lists_compare_whole() {
        let old = base();
        let mut new = base();
        new.health.expected_statuses.push("418".into());
        assert_eq!(
            diff(&old, &new),
            vec![Change {
                op: ChangeOp::Changed,
                path: "health.expected_statuses".into(),
                old: Some(json!(["200-399"])),
                new: Some(json!(["200-399", "418"])),
            }]
        );
    }

    #[test]
    fn optional_upstream_section_added_whole() {
        let old = base();
        let mut new = base();
        new.upstreams[1].health = Some(Health {
            path: "/ping".into(),
            ..Health::default()
        });
        let changes = diff(&old, &new);
        assert_eq!(
            ops(&changes),
            vec![(ChangeOp::Added, "upstreams[web].health")]
        );
        let health = changes[0].new.as_ref().expect("added has new");
        assert_eq!(health["path"], json!("/ping"));
        assert_eq!(health["interval"], json!("30s"));
        assert_eq!(
            ops(&diff(&new, &old)),
            vec![(ChangeOp::Removed, "upstreams[web].health")]
        );
    }

    #[test]
    fn from_nothing_everything_is_added() {
        let new = base();
        let changes = diff_from(None, &new);
        assert!(changes
            .iter()
            .all(|c| c.op == ChangeOp::Added && c.old.is_none()));
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "version",
                "service",
                "server",
                "upstreams[api]",
                "upstreams[web]",
                "routes[first]",
                "routes[second]",
                "health",
                "metrics",
                "circuit_breaker",
                "retry",
                "tls",
            ]
        );
        assert_eq!(diff_from(Some(&new), &new), vec![]);
    }

    #[test]
    fn routes_appearing_show_one_by_one() {
        let mut old = base();
        old.routes.clear();
        let changes = diff(&old, &base());
        assert_eq!(
            ops(&changes),
            vec![
                (ChangeOp::Added, "routes[first]"),
                (ChangeOp::Added, "routes[second]")
            ]
        );
        assert_eq!(
            ops(&diff(&base(), &old)),
            vec![
                (ChangeOp::Removed, "routes[first]"),
                (ChangeOp::Removed, "routes[second]")
            ]
        );
    }

    #[test]
    fn new_order_first_then_removed() {
        let old = base();
        let mut new = base();
        new.upstreams.remove(0);
        new.routes.clear();
        new.service = "renamed".into();
        new.tls.min_version = "1.3".into();
        assert_eq!(
            ops(&diff(&old, &new)),
            vec![
                (ChangeOp::Changed, "service"),
                (ChangeOp::Removed, "upstreams[api]"),
                (ChangeOp::Changed, "tls.min_version"),
                (ChangeOp::Removed, "routes[first]"),
                (ChangeOp::Removed, "routes[second]"),
            ]
        );
    }

    #[test]
    fn header_order_counts() {
        let header = |name: &str| HeaderMatch {
            name: name.into(),
            value: "1".into(),
        };
        let mut old = base();
        old.routes[0].headers = vec![header("x-a"), header("x-b")];
        let mut new = old.clone();
        new.routes[0].headers.reverse();
        assert_eq!(
            ops(&diff(&old, &new)),
            vec![(ChangeOp::Reordered, "routes[first].headers")]
        );
    }

    #[test]
    fn repeated_keys_compare_whole() {
        let old = base();
        let mut new = base();
        let copy = new.upstreams[0].backends[0].clone();
        new.upstreams[0].backends.push(copy);
        assert_eq!(
            ops(&diff(&old, &new)),
            vec![(ChangeOp::Changed, "upstreams[api].backends")]
        );
    }

    #[test]
    fn serialized_shape_is_the_rest_contract() {
        let change = Change {
            op: ChangeOp::Added,
            path: "upstreams[api]".into(),
            old: None,
            new: Some(json!({"name": "api"})),
        };
        let text = serde_json::to_string(&change).expect("serializes");
        assert_eq!(
            text,
            r#"{"op":"added","path":"upstreams[api]","new":{"name":"api"}}"#
        );
        let back: Change = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, change);
    }
}
