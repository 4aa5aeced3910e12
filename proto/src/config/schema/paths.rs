//! Field paths (`upstreams[].backends[].weight`): the fields a schema
//! knows, and the fields a config document uses. A node sends the first in
//! its Hello; the control plane compares it with the second before it
//! pushes a version, so a node too old for a field is told so instead of
//! being sent a config it would refuse.

use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

/// Deepest nesting followed (the model nests far less).
const MAX_DEPTH: usize = 32;

/// Every field path the schema `doc` (as [`super::document`] makes it) describes.
pub fn known(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_schema(doc, doc, "", 0, &mut out);
    out
}

/// The field paths the config document `config` uses, read as `doc` describes it.
pub fn used(doc: &Value, config: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk_value(doc, doc, config, "", 0, &mut Cache::default(), &mut out);
    out
}

/// The field paths a config uses that `node_knows` lacks.
pub fn unknown_to(doc: &Value, config: &Value, node_knows: &[String]) -> Vec<String> {
    let knows: BTreeSet<&str> = node_knows.iter().map(String::as_str).collect();
    used(doc, config)
        .into_iter()
        .filter(|p| !knows.contains(p.as_str()))
        .collect()
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// The schema `s` resolves to, alternatives included: every object schema
/// and item schema it may take.
fn alternatives<'a>(doc: &'a Value, s: &'a Value, depth: usize, out: &mut Vec<&'a Value>) {
    if depth > MAX_DEPTH {
        return;
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        if let Some(target) = r
            .strip_prefix("#/$defs/")
            .and_then(|name| doc.get("$defs")?.get(name))
        {
            alternatives(doc, target, depth + 1, out);
        }
        return;
    }
    out.push(s);
    for key in ["anyOf", "oneOf", "allOf"] {
        for alt in s.get(key).and_then(Value::as_array).into_iter().flatten() {
            alternatives(doc, alt, depth + 1, out);
        }
    }
}

fn properties<'a>(alts: &[&'a Value]) -> Vec<(&'a String, &'a Value)> {
    alts.iter()
        .filter_map(|a| a.get("properties").and_then(Value::as_object))
        .flat_map(Map::iter)
        .collect()
}

fn items<'a>(alts: &[&'a Value]) -> Option<&'a Value> {
    alts.iter().find_map(|a| a.get("items"))
}

fn walk_schema(doc: &Value, s: &Value, path: &str, depth: usize, out: &mut Vec<String>) {
    if depth > MAX_DEPTH {
        return;
    }
    let mut alts = Vec::new();
    alternatives(doc, s, 0, &mut alts);
    for (key, sub) in properties(&alts) {
        let p = join(path, key);
        if !out.contains(&p) {
            out.push(p.clone());
            walk_schema(doc, sub, &p, depth + 1, out);
        }
    }
    if let Some(item) = items(&alts) {
        walk_schema(doc, item, &format!("{path}[]"), depth + 1, out);
    }
}

/// What a schema node allows, resolved once per node: a document with
/// thousands of upstreams resolves the upstream schema once, not per item.
#[derive(Default)]
struct Resolved<'a> {
    properties: HashMap<&'a str, &'a Value>,
    items: Option<&'a Value>,
}

/// Schema nodes resolved so far, by address.
#[derive(Default)]
struct Cache<'a>(HashMap<*const Value, Rc<Resolved<'a>>>);

impl<'a> Cache<'a> {
    fn resolve(&mut self, doc: &'a Value, s: &'a Value) -> Rc<Resolved<'a>> {
        let key: *const Value = s;
        if let Some(r) = self.0.get(&key) {
            return r.clone();
        }
        let mut alts = Vec::new();
        alternatives(doc, s, 0, &mut alts);
        let r = Rc::new(Resolved {
            properties: properties(&alts)
                .into_iter()
                .map(|(k, v)| (k.as_str(), v))
                .collect(),
            items: items(&alts),
        });
        self.0.insert(key, r.clone());
        r
    }
}

fn walk_value<'a>(
    doc: &'a Value,
    s: &'a Value,
    v: &Value,
    path: &str,
    depth: usize,
    cache: &mut Cache<'a>,
    out: &mut BTreeSet<String>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::Object(m) => {
            let r = cache.resolve(doc, s);
            // A mapping with free keys (header name to value) is one field.
            if r.properties.is_empty() {
                return;
            }
            for (key, sub) in m {
                let p = join(path, key);
                if let Some(sub_schema) = r.properties.get(key.as_str()) {
                    walk_value(doc, sub_schema, sub, &p, depth + 1, cache, out);
                }
                out.insert(p);
            }
        }
        Value::Array(list) => {
            let r = cache.resolve(doc, s);
            if let Some(item) = r.items {
                let p = format!("{path}[]");
                for x in list {
                    walk_value(doc, item, x, &p, depth + 1, cache, out);
                }
            }
        }
        _ => {}
    }
}
