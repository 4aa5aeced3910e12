//! Deltas between two versions of a config, as the control plane sends them
//! to data planes (docs/distribution.md).
//!
//! A config's canonical JSON (the control plane's `config_json`) is read as
//! a [`Document`]: its top-level sections in order, with the named lists
//! (`upstreams`, `routes`) split into one item per name. Every piece keeps
//! its exact text, so [`Document::join`] gives back the same bytes and the
//! same [`content_hash`]. [`Document::diff`] lists the pieces that differ
//! between two versions; [`Document::apply`] rebuilds the newer one from the
//! older and that list. The control plane checks every delta it makes by
//! applying it, and the node checks the result's hash, so a delta that does
//! not reproduce the version exactly is never served.

use crate::pb;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// The top-level lists whose items are resources of their own, by `name`.
pub const NAMED_LISTS: [&str; 2] = ["upstreams", "routes"];

/// Why a document could not be read or a delta not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The text is not a JSON object.
    #[error("not a JSON object: {0}")]
    NotObject(String),
    /// The delta changes a piece in a way the base does not allow.
    #[error("{0}")]
    Mismatch(String),
}

/// SHA-256 of a config's JSON and of the stored certificates it names
/// (name → material id), hex: the hash a version is known by. Without
/// certificates it is the hash of the JSON alone.
pub fn content_hash(json: &[u8], certificates: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(json);
    for (name, id) in certificates {
        h.update(format!("\ncertificate {name} {id}"));
    }
    hex(&h.finalize())
}

/// SHA-256 of one resource's JSON, hex.
pub fn resource_hash(json: &str) -> String {
    hex(&Sha256::digest(json.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A config's canonical JSON, in pieces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    key: Arc<str>,
    body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    /// A section as one piece of text.
    Whole(Arc<str>),
    /// A named list: its items in order.
    List(Vec<Item>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    name: Arc<str>,
    json: Arc<str>,
}

/// A top-level object's members in order, each as its text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Members<'a>, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, &'a RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(serde::Deserialize)]
struct Named {
    name: String,
}

/// The items of a named list, or `None` when it is not a list of objects
/// with distinct string names (it then travels as one piece).
fn items_of(text: &str) -> Option<Vec<Item>> {
    let raw: Vec<&RawValue> = serde_json::from_str(text).ok()?;
    let mut seen = HashSet::with_capacity(raw.len());
    let mut items = Vec::with_capacity(raw.len());
    for r in raw {
        let Named { name } = serde_json::from_str(r.get()).ok()?;
        if !seen.insert(name.clone()) {
            return None;
        }
        items.push(Item {
            name: name.into(),
            json: r.get().into(),
        });
    }
    Some(items)
}

fn body_of(key: &str, text: &str) -> Body {
    if NAMED_LISTS.contains(&key) {
        if let Some(items) = items_of(text) {
            return Body::List(items);
        }
    }
    Body::Whole(text.into())
}

impl Body {
    fn text(&self) -> String {
        match self {
            Body::Whole(t) => t.to_string(),
            Body::List(items) => {
                let mut s = String::with_capacity(items.iter().map(|i| i.json.len() + 1).sum());
                join_items(&mut s, items);
                s
            }
        }
    }
}

fn join_items(out: &mut String, items: &[Item]) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item.json);
    }
    out.push(']');
}

impl Document {
    /// Reads a config's canonical JSON (compact, as the control plane
    /// writes it).
    pub fn split(json: &str) -> Result<Document, DeltaError> {
        let Members(members) =
            serde_json::from_str(json).map_err(|e| DeltaError::NotObject(e.to_string()))?;
        let parts = members
            .into_iter()
            .map(|(key, raw)| Part {
                body: body_of(&key, raw.get()),
                key: key.into(),
            })
            .collect();
        Ok(Document { parts })
    }

    /// The document's text: for a document read by [`Self::split`], the
    /// same bytes it was read from.
    pub fn join(&self) -> String {
        let len: usize = self
            .parts
            .iter()
            .map(|p| {
                p.key.len()
                    + 4
                    + match &p.body {
                        Body::Whole(t) => t.len(),
                        Body::List(items) => {
                            items.iter().map(|i| i.json.len() + 1).sum::<usize>() + 2
                        }
                    }
            })
            .sum();
        let mut s = String::with_capacity(len + 2);
        s.push('{');
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&serde_json::Value::from(&*p.key).to_string());
            s.push(':');
            match &p.body {
                Body::Whole(t) => s.push_str(t),
                Body::List(items) => join_items(&mut s, items),
            }
        }
        s.push('}');
        s
    }

    /// How many resources the document has (sections, and the items of its
    /// named lists).
    pub fn resources(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match &p.body {
                Body::Whole(_) => 1,
                Body::List(items) => items.len(),
            })
            .sum()
    }

    /// The resources that take `self` to `new`, and those `new` no longer
    /// has; `None` when [`Self::apply`] of them would not give `new` exactly
    /// (items that only moved, for instance): then only a whole snapshot
    /// will do.
    pub fn diff(&self, new: &Document) -> Option<(Vec<pb::Resource>, Vec<pb::ResourceKey>)> {
        let old: HashMap<&str, &Part> = self.parts.iter().map(|p| (&*p.key, p)).collect();
        let mut upserts = Vec::new();
        let mut removed = Vec::new();
        for (i, p) in new.parts.iter().enumerate() {
            match old.get(&*p.key).map(|o| &o.body) {
                Some(body) if *body == p.body => {}
                Some(Body::List(before)) if matches!(p.body, Body::List(_)) => {
                    let Body::List(after) = &p.body else {
                        continue;
                    };
                    let was: HashMap<&str, &str> =
                        before.iter().map(|i| (&*i.name, &*i.json)).collect();
                    let now: HashSet<&str> = after.iter().map(|i| &*i.name).collect();
                    for (j, item) in after.iter().enumerate() {
                        if was.get(&*item.name) != Some(&&*item.json) {
                            upserts.push(resource(&p.key, &item.name, j, &item.json));
                        }
                    }
                    for item in before.iter().filter(|i| !now.contains(&*i.name)) {
                        removed.push(pb::ResourceKey {
                            section: p.key.to_string(),
                            name: item.name.to_string(),
                        });
                    }
                }
                _ => upserts.push(resource(&p.key, "", i, &p.body.text())),
            }
        }
        let keys: HashSet<&str> = new.parts.iter().map(|p| &*p.key).collect();
        for p in self.parts.iter().filter(|p| !keys.contains(&*p.key)) {
            removed.push(pb::ResourceKey {
                section: p.key.to_string(),
                name: String::new(),
            });
        }
        match self.apply(&upserts, &removed) {
            Ok(rebuilt) if rebuilt == *new => Some((upserts, removed)),
            _ => None,
        }
    }

    /// The document `resources` and `removed` make of this one. Every
    /// resource's hash is checked; a removal of something that is not
    /// here, or a position past the end, is an error.
    pub fn apply(
        &self,
        resources: &[pb::Resource],
        removed: &[pb::ResourceKey],
    ) -> Result<Document, DeltaError> {
        for r in resources {
            if resource_hash(&r.json) != r.hash {
                return Err(DeltaError::Mismatch(format!(
                    "{} does not match its hash",
                    label(&r.section, &r.name)
                )));
            }
        }
        let (sections, items): (Vec<&pb::Resource>, Vec<&pb::Resource>) =
            resources.iter().partition(|r| r.name.is_empty());
        let gone_sections: HashSet<&str> = removed
            .iter()
            .filter(|k| k.name.is_empty())
            .map(|k| k.section.as_str())
            .collect();
        let replaced: HashSet<&str> = sections.iter().map(|r| r.section.as_str()).collect();
        for s in &gone_sections {
            if !self.parts.iter().any(|p| &*p.key == *s) {
                return Err(DeltaError::Mismatch(format!(
                    "removes section {s:?}, which the base does not have"
                )));
            }
        }
        let mut parts: Vec<Part> = self
            .parts
            .iter()
            .filter(|p| !gone_sections.contains(&*p.key) && !replaced.contains(&*p.key))
            .cloned()
            .collect();
        let mut sections = sections;
        sections.sort_by_key(|r| r.index);
        for r in sections {
            let at = r.index as usize;
            if at > parts.len() {
                return Err(past_the_end(&r.section, "", at));
            }
            parts.insert(
                at,
                Part {
                    key: r.section.as_str().into(),
                    body: body_of(&r.section, &r.json),
                },
            );
        }
        let mut by_section: BTreeMap<&str, (Vec<&pb::Resource>, HashSet<&str>)> = BTreeMap::new();
        for r in items {
            by_section.entry(&r.section).or_default().0.push(r);
        }
        for k in removed.iter().filter(|k| !k.name.is_empty()) {
            by_section.entry(&k.section).or_default().1.insert(&k.name);
        }
        for (section, (mut upserts, gone)) in by_section {
            let Some(Part {
                body: Body::List(list),
                ..
            }) = parts.iter_mut().find(|p| &*p.key == section)
            else {
                return Err(DeltaError::Mismatch(format!(
                    "changes items of {section:?}, which is not a named list in the base"
                )));
            };
            let names: HashSet<&str> = list.iter().map(|i| &*i.name).collect();
            if let Some(missing) = gone.iter().find(|n| !names.contains(**n)) {
                return Err(DeltaError::Mismatch(format!(
                    "removes {}, which the base does not have",
                    label(section, missing)
                )));
            }
            let moved: HashSet<&str> = upserts.iter().map(|r| r.name.as_str()).collect();
            list.retain(|i| !gone.contains(&*i.name) && !moved.contains(&*i.name));
            upserts.sort_by_key(|r| r.index);
            for r in upserts {
                let at = r.index as usize;
                if at > list.len() {
                    return Err(past_the_end(section, &r.name, at));
                }
                list.insert(
                    at,
                    Item {
                        name: r.name.as_str().into(),
                        json: r.json.as_str().into(),
                    },
                );
            }
        }
        Ok(Document { parts })
    }
}

fn resource(section: &str, name: &str, index: usize, json: &str) -> pb::Resource {
    pb::Resource {
        section: section.to_owned(),
        name: name.to_owned(),
        index: u32::try_from(index).unwrap_or(u32::MAX),
        hash: resource_hash(json),
        json: json.to_owned(),
    }
}

fn label(section: &str, name: &str) -> String {
    if name.is_empty() {
        format!("section {section:?}")
    } else {
        format!("{section}[{name}]")
    }
}

fn past_the_end(section: &str, name: &str, at: usize) -> DeltaError {
    DeltaError::Mismatch(format!(
        "puts {} at position {at}, past the end",
        label(section, name)
    ))
}

#[cfg(test)]
#[path = "delta_tests.rs"]
mod tests;
