//! The configuration reference (Markdown tables, one per section) made from
//! the published schema, so that it says what the model declares and
//! nothing else.

use super::INHERITS;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};

/// Marks the start of the generated reference in a document.
pub const BEGIN: &str = "<!-- config-reference:begin (generated from the model's doc comments; `isame-lb schema --reference` prints it) -->";
/// Marks its end.
pub const END: &str = "<!-- config-reference:end -->";

/// What a definition is, for the reference.
enum Kind<'a> {
    Section(&'a Value),
    Names(&'a [Value]),
    Shapes(&'a [Value]),
}

fn kind(def: &Value) -> Kind<'_> {
    if let Some(alts) = def.get("oneOf").and_then(Value::as_array) {
        if def.get("type").and_then(Value::as_str) == Some("string") {
            return Kind::Names(alts);
        }
        return Kind::Shapes(alts);
    }
    // A section with a shorthand is `anyOf: [object, string]`.
    let obj = def
        .get("anyOf")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|s| s.get("properties").is_some()))
        .unwrap_or(def);
    Kind::Section(obj)
}

struct Writer<'a> {
    doc: &'a Value,
    /// Definition name → the path it is documented under.
    placed: BTreeMap<String, String>,
    queue: VecDeque<(String, String)>,
    out: String,
}

impl<'a> Writer<'a> {
    fn def(&self, name: &str) -> Option<&'a Value> {
        self.doc.get("$defs")?.get(name)
    }

    /// Where the definition `name` is documented, placing it at `path` the first time.
    fn place(&mut self, name: &str, path: &str) -> String {
        if let Some(p) = self.placed.get(name) {
            return p.clone();
        }
        self.placed.insert(name.to_owned(), path.to_owned());
        self.queue.push_back((name.to_owned(), path.to_owned()));
        path.to_owned()
    }

    /// How a field's type reads, and what to add to its description.
    fn type_text(&mut self, s: &Value, path: &str) -> (String, String) {
        if let Some(name) = reference(s) {
            let Some(def) = self.def(name) else {
                return (name.to_owned(), String::new());
            };
            return match kind(def) {
                Kind::Names(alts) => {
                    let names: Vec<String> = alts
                        .iter()
                        .map(|a| format!("`{}`", text(&a["const"])))
                        .collect();
                    let meaning: Vec<String> = alts
                        .iter()
                        .map(|a| format!("`{}`: {}", text(&a["const"]), text(&a["description"])))
                        .collect();
                    (format!("one of {}", names.join(", ")), meaning.join(" "))
                }
                Kind::Section(_) | Kind::Shapes(_) => {
                    let at = self.place(name, path);
                    (format!("mapping, see `{at}`"), String::new())
                }
            };
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = s.get(key).and_then(Value::as_array) {
                let alts: Vec<&Value> = alts
                    .iter()
                    .filter(|a| a.get("type") != Some(&Value::from("null")))
                    .collect();
                if alts.len() == 1 {
                    return self.type_text(alts[0], path);
                }
                if let Some(r) = alts.iter().find(|a| reference(a).is_some()) {
                    return self.type_text(r, path);
                }
                if let Some(list) = alts.iter().find(|a| a.get("items").is_some()) {
                    let (one, _) = self.type_text(list, path);
                    return (format!("{one}, or one written bare"), String::new());
                }
            }
        }
        if let Some(items) = s.get("items") {
            let (inner, extra) = self.type_text(items, &format!("{path}[]"));
            return (format!("list of {}", plural(&inner)), extra);
        }
        if s.get("additionalProperties").is_some_and(Value::is_object) {
            return ("mapping of name to value".into(), String::new());
        }
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            let shown: Vec<String> = values
                .iter()
                .filter(|v| v.is_string() && !text(v).is_empty())
                .map(|v| format!("`\"{}\"`", text(v)))
                .collect();
            return (format!("one of {}", shown.join(", ")), String::new());
        }
        let types: Vec<&str> = match s.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect(),
            _ => Vec::new(),
        };
        let base = if s.get("pattern").and_then(Value::as_str)
            == Some(crate::config::field::DURATION_PATTERN)
        {
            "duration".to_owned()
        } else if s.get("anyOf").is_some() && types == ["string"] {
            "IP address or CIDR".to_owned()
        } else if s.get("pattern").and_then(Value::as_str) == Some(crate::config::NAME_PATTERN) {
            "name".to_owned()
        } else if types.len() > 1 {
            "string".to_owned()
        } else {
            types.first().copied().unwrap_or("value").to_owned()
        };
        // The full range of the type says nothing a reader needs.
        let whole = |v: &Value| matches!(v.as_u64(), Some(0 | 255 | 65_535 | 4_294_967_295));
        let range = match (s.get("minimum"), s.get("maximum")) {
            (Some(lo), Some(hi)) if !(whole(lo) && whole(hi)) => {
                format!(" {}–{}", text(lo), text(hi))
            }
            _ => String::new(),
        };
        (format!("{base}{range}"), String::new())
    }

    fn section(&mut self, obj: &Value, path: &str) {
        self.out
            .push_str("| field | type | default | description |\n|---|---|---|---|\n");
        let props = obj.get("properties").and_then(Value::as_object);
        for (key, s) in props.into_iter().flatten() {
            let at = join(path, key);
            let (ty, extra) = self.type_text(s, &at);
            let required = obj
                .get("required")
                .and_then(Value::as_array)
                .is_some_and(|r| r.iter().any(|x| x == key));
            let default = if required {
                "required".to_owned()
            } else {
                s.get("default")
                    .map(|d| format!("`{}`", shown(d)))
                    .unwrap_or_default()
            };
            let mut description = text(&s["description"]);
            if s.get(INHERITS).is_some() {
                description.push_str(" Fields left out come from the global section.");
            }
            if !extra.is_empty() {
                description = format!("{description} {extra}");
            }
            self.out.push_str(&format!(
                "| `{key}` | {ty} | {default} | {} |\n",
                cell(&description)
            ));
        }
    }

    fn shapes(&mut self, alts: &[Value], path: &str) {
        self.out
            .push_str("| item | value | description |\n|---|---|---|\n");
        for alt in alts {
            let Some((name, s)) = alt
                .get("properties")
                .and_then(Value::as_object)
                .and_then(|p| p.iter().next())
            else {
                continue;
            };
            let (ty, _) = self.type_text(s, &join(path, name));
            self.out.push_str(&format!(
                "| `{name}` | {ty} | {} |\n",
                cell(&text(&s["description"]))
            ));
        }
    }
}

/// The reference of the schema `doc`, between [`BEGIN`] and [`END`].
pub fn markdown(doc: &Value) -> String {
    let mut w = Writer {
        doc,
        placed: BTreeMap::new(),
        queue: VecDeque::new(),
        out: String::new(),
    };
    w.out.push_str(BEGIN);
    w.out.push_str("\n\n#### The document\n\n");
    w.section(doc, "");
    while let Some((name, path)) = w.queue.pop_front() {
        let Some(def) = w.def(&name) else { continue };
        w.out.push_str(&format!("\n#### `{path}`\n\n"));
        let description = text(&def["description"]);
        if !description.is_empty() {
            w.out.push_str(&format!("{description}\n\n"));
        }
        match kind(def) {
            Kind::Section(obj) => {
                if def.get("anyOf").is_some() {
                    w.out.push_str(
                        "A bare string stands for a mapping with only its first field.\n\n",
                    );
                }
                w.section(obj, &path)
            }
            Kind::Shapes(alts) => {
                w.out.push_str(
                    "Each item is a mapping with exactly one key, naming what it does:\n\n",
                );
                w.shapes(alts, &path)
            }
            Kind::Names(_) => {}
        }
    }
    w.out.push('\n');
    w.out.push_str(END);
    w.out
}

fn reference(s: &Value) -> Option<&str> {
    s.get("$ref")?.as_str()?.strip_prefix("#/$defs/")
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A default as a YAML file would write it.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "[]".into(),
        Value::Array(items) => {
            let inner: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => format!("\"{s}\""),
                    other => other.to_string(),
                })
                .collect();
            format!("[{}]", inner.join(", "))
        }
        other => other.to_string(),
    }
}

fn plural(t: &str) -> String {
    match t {
        "string" => "strings".into(),
        "IP address or CIDR" => "IP addresses or CIDRs".into(),
        other => other.to_owned(),
    }
}

/// Text safe inside a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace("\n\n", " ")
        .replace('\n', " ")
}
