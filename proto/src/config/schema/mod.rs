//! The JSON Schema of the config, made from the model's declarations (see
//! `#[derive(Config)]`): published for editors and the control plane's
//! OpenAPI document, turned into the configuration reference
//! ([`reference`]) and into the list of fields a node can read ([`paths`]).

pub mod paths;
pub mod reference;

use super::Config;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The `$id` of the published schema.
pub const SCHEMA_ID: &str = "https://isame.dev/schema/isame.schema.json";

/// A type with an entry of its own in the schema's definitions.
pub(crate) trait Named {
    /// Its name among the definitions.
    const NAME: &'static str;
    /// Its schema.
    fn describe(defs: &mut Defs) -> Value;
}

/// The definitions gathered while a schema is made.
pub struct Defs {
    prefix: &'static str,
    defs: Map<String, Value>,
}

impl Defs {
    fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            defs: Map::new(),
        }
    }

    /// A reference to `T`'s definition, described the first time.
    pub(crate) fn reference<T: Named>(&mut self) -> Value {
        if !self.defs.contains_key(T::NAME) {
            // Taken before describing, so that a type met again inside
            // itself is a reference, not an endless descent.
            self.defs.insert(T::NAME.to_owned(), Value::Null);
            let schema = T::describe(self);
            self.defs.insert(T::NAME.to_owned(), schema);
        }
        json!({"$ref": format!("{}{}", self.prefix, T::NAME)})
    }
}

/// One field of a section, as the derive describes it.
pub(crate) struct Prop {
    pub name: &'static str,
    pub doc: &'static str,
    pub schema: Value,
    pub default: Option<Value>,
    pub required: bool,
    /// Fields left out come from the global section of the same type.
    pub inherit: bool,
}

/// Key marking a section whose fields left out come from the global one.
pub const INHERITS: &str = "x-isame-inherits";

/// The schema of a section: a mapping of exactly these fields. With a
/// `shorthand`, a bare string stands for a mapping with only that field.
pub(crate) fn object(doc: &str, shorthand: Option<&str>, props: Vec<Prop>) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut short = None;
    for p in props {
        let mut s = p.schema;
        if Some(p.name) == shorthand {
            short = Some(s.clone());
        }
        if p.required {
            required.push(p.name);
        } else {
            // `null` stands for "left out" (a key with nothing after it in YAML).
            s = nullable(s);
        }
        let o = as_object(&mut s);
        if !p.doc.is_empty() {
            o.insert("description".into(), Value::String(p.doc.into()));
        }
        if let Some(d) = p.default {
            o.insert("default".into(), d);
        }
        if p.inherit {
            o.insert(INHERITS.into(), Value::Bool(true));
        }
        properties.insert(p.name.into(), s);
    }
    let mut obj = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
    });
    if !required.is_empty() {
        obj["required"] = json!(required);
    }
    let mut out = match short {
        Some(s) => json!({"anyOf": [obj, s]}),
        None => obj,
    };
    if !doc.is_empty() {
        as_object(&mut out).insert("description".into(), Value::String(doc.into()));
    }
    out
}

/// The schema of a choice of names, each with its description.
pub(crate) fn names(doc: &str, names: &[(&str, &str)]) -> Value {
    let one_of: Vec<Value> = names
        .iter()
        .map(|(n, d)| json!({"const": n, "description": d}))
        .collect();
    json!({"description": doc, "type": "string", "oneOf": one_of})
}

/// The schema of a choice of shapes: a mapping with one key naming it.
pub(crate) fn one_key(doc: &str, variants: Vec<(&str, &str, Value)>) -> Value {
    let one_of: Vec<Value> = variants
        .into_iter()
        .map(|(name, d, mut s)| {
            as_object(&mut s).insert("description".into(), Value::String(d.into()));
            json!({
                "type": "object",
                "properties": {name: s},
                "required": [name],
                "additionalProperties": false,
            })
        })
        .collect();
    json!({"description": doc, "oneOf": one_of})
}

/// `s` with the bounds of a whole number, where given.
pub(crate) fn bounded(mut s: Value, min: Option<u64>, max: Option<u64>) -> Value {
    if let Some(o) = s.as_object_mut() {
        if let Some(m) = min {
            o.insert("minimum".into(), json!(m));
        }
        if let Some(m) = max {
            o.insert("maximum".into(), json!(m));
        }
    }
    s
}

/// `s` with a pattern its strings must match, where given.
pub(crate) fn patterned(mut s: Value, pattern: Option<&str>) -> Value {
    if let (Some(o), Some(p)) = (s.as_object_mut(), pattern) {
        o.insert("pattern".into(), Value::String(p.into()));
    }
    s
}

/// A default worth showing: not "nothing", and not a whole section (its
/// fields show their own).
pub(crate) fn shown(v: Value) -> Option<Value> {
    (!v.is_null() && !v.is_object()).then_some(v)
}

fn nullable(s: Value) -> Value {
    match s {
        Value::Object(mut o) if o.get("type").is_some_and(Value::is_string) => {
            let t = o.remove("type").unwrap_or(Value::Null);
            o.insert("type".into(), json!([t, "null"]));
            Value::Object(o)
        }
        Value::Object(mut o) if o.get("type").is_some_and(Value::is_array) => {
            if let Some(Value::Array(types)) = o.get_mut("type") {
                types.push(json!("null"));
            }
            Value::Object(o)
        }
        other => json!({"anyOf": [other, {"type": "null"}]}),
    }
}

fn as_object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({"allOf": [v.take()]});
    }
    match v {
        Value::Object(o) => o,
        _ => unreachable!("made an object above"),
    }
}

/// The published JSON Schema of a config document.
pub fn document() -> Value {
    let mut defs = Defs::new("#/$defs/");
    let root = <Config as Named>::describe(&mut defs);
    let mut doc = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Isame configuration",
    });
    if let (Value::Object(d), Value::Object(r)) = (&mut doc, root) {
        d.extend(r);
        d.insert("$defs".into(), Value::Object(defs.defs));
    }
    doc
}

/// The config's definitions for an OpenAPI document's
/// `components.schemas`, `Config` (the whole document) among them.
pub fn components() -> Map<String, Value> {
    let mut defs = Defs::new("#/components/schemas/");
    defs.reference::<Config>();
    defs.defs
}

/// The published schema's text, as `schema/isame.schema.json` holds it.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

struct Published {
    document: Value,
    digest: String,
    fields: Vec<String>,
}

fn published() -> &'static Published {
    static PUBLISHED: OnceLock<Published> = OnceLock::new();
    PUBLISHED.get_or_init(|| {
        let document = document();
        let digest = Sha256::digest(document_text().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let fields = paths::known(&document);
        Published {
            document,
            digest,
            fields,
        }
    })
}

/// This build's schema, made once.
pub fn this_build() -> &'static Value {
    &published().document
}

/// SHA-256 (hex) of this build's schema text: builds with equal digests
/// read the same configs.
pub fn digest() -> &'static str {
    &published().digest
}

/// Every field path this build reads (`upstreams[].backends[].weight`).
pub fn fields() -> &'static [String] {
    &published().fields
}
