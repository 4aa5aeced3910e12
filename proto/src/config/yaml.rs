//! Reads YAML text into the JSON tree that the config reader walks: the one
//! entry point for YAML from a REST body, a watched file or
//! `isame-ctl validate`.
//!
//! It keeps what JSON cannot hold from slipping through unnoticed (`.nan`
//! and `.inf` would otherwise become `null`, and so a default; tags would
//! be lost; a key given twice would silently win), and it bounds what a
//! document may cost, whatever it holds:
//!
//! - the tree is built from a streaming parser's events, one node at a
//!   time, against a budget of nodes and scalar bytes that is relative to
//!   the text's length and absolute ([`Limits`]). An alias is charged the
//!   size of the node it repeats before anything is copied, so an alias
//!   bomb stops at the budget instead of growing memory quadratically;
//! - the parser holds every token of a flow collection that began in block
//!   context until the collection ends, so it may only read a bounded
//!   distance past the last event it produced ([`Limits::look_ahead`]);
//! - a document that starts with `{` is tried as JSON first (JSON is YAML
//!   too), which needs no look-ahead and is faster.
//!
//! Plain scalars resolve by the YAML 1.2 core schema, as `serde_yaml` did
//! (see `scalar.rs`).

use super::errors::{Path, Problems};
use super::ConfigErrors;
use serde_json::{Map, Value};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;

/// Why YAML text is not a document the config reader can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    /// The text is not YAML at all (or too deep).
    #[error("{0}")]
    Syntax(String),
    /// Expanded through its aliases, the document would be larger than
    /// [`Limits`] allows.
    #[error("{0}")]
    TooLarge(String),
    /// It is YAML, but holds values with no JSON form; each with its path.
    #[error("{0}")]
    Content(ConfigErrors),
}

/// How large a document may grow once its aliases are expanded.
///
/// A document without aliases never reaches the relative limits (it has at
/// most one node per byte of text and no more scalar bytes than text), so
/// they only ever refuse documents that repeat themselves through aliases
/// by more than the allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Nodes (scalars, sequences, mappings) allowed per byte of text, on
    /// top of [`Limits::min_nodes`].
    pub nodes_per_byte: usize,
    /// Nodes any document may have, however short.
    pub min_nodes: usize,
    /// Nodes no document may have, however long.
    pub max_nodes: usize,
    /// Scalar bytes (keys and values) allowed per byte of text, on top of
    /// [`Limits::min_scalar_bytes`].
    pub scalar_bytes_per_byte: usize,
    /// Scalar bytes any document may have.
    pub min_scalar_bytes: usize,
    /// Scalar bytes no document may have.
    pub max_scalar_bytes: usize,
    /// How far the parser may read past the last node it produced: bounds
    /// what it holds of one flow collection (`[...]`, `{...}`) that began
    /// in block context.
    pub look_ahead: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            nodes_per_byte: 1,
            min_nodes: 100_000,
            max_nodes: super::json::MAX_NODES,
            scalar_bytes_per_byte: 2,
            min_scalar_bytes: 1 << 20,
            max_scalar_bytes: 64 << 20,
            look_ahead: 512 << 10,
        }
    }
}

impl Limits {
    /// The node and scalar-byte budgets for a text of `len` bytes.
    fn budget(&self, len: usize) -> (usize, usize) {
        let nodes = len
            .saturating_mul(self.nodes_per_byte)
            .saturating_add(self.min_nodes)
            .min(self.max_nodes);
        let bytes = len
            .saturating_mul(self.scalar_bytes_per_byte)
            .saturating_add(self.min_scalar_bytes)
            .min(self.max_scalar_bytes);
        (nodes, bytes)
    }
}

/// Parses YAML text into a JSON tree, within the default [`Limits`].
pub fn parse(text: &str) -> Result<Value, YamlError> {
    parse_with(text, &Limits::default())
}

/// Parses YAML text into a JSON tree, within `limits`.
pub fn parse_with(text: &str, limits: &Limits) -> Result<Value, YamlError> {
    // JSON is YAML too, and a config may well be written in it: a JSON
    // document reads faster through a JSON reader, and without the
    // look-ahead limit (see `Chars`) that a large flow collection meets.
    if text.trim_start().starts_with('{') {
        if let Ok(value) = super::json::parse(text) {
            return Ok(value);
        }
    }
    let (nodes, bytes) = limits.budget(text.len());
    let mut b = Builder {
        stack: Vec::new(),
        root: None,
        documents: 0,
        anchors: HashMap::new(),
        budget: Budget {
            nodes_left: nodes,
            bytes_left: bytes,
            nodes,
            bytes,
        },
        problems: Problems::default(),
    };
    let read = Rc::new(Cell::new(Read {
        pulled: 0,
        allowed: limits.look_ahead,
        cut: false,
    }));
    let mut parser = Parser::new(Chars {
        inner: text.chars(),
        read: read.clone(),
    });
    loop {
        let next = parser.next_token();
        let mut r = read.get();
        if r.cut {
            return Err(YamlError::TooLarge(format!(
                "a single scalar or flow collection ([...] or {{...}}) is longer than {} bytes; \
                 write long lists in block style, or send the document as JSON",
                limits.look_ahead
            )));
        }
        let (event, _) = next.map_err(|e| YamlError::Syntax(e.to_string()))?;
        // The parser may read ahead of this event by `look_ahead` more.
        r.allowed = r.pulled.saturating_add(limits.look_ahead);
        read.set(r);
        if matches!(event, Event::StreamEnd) {
            break;
        }
        b.event(event)?;
    }
    if b.problems.0.is_empty() {
        Ok(b.root.unwrap_or(Value::Null))
    } else {
        Err(YamlError::Content(ConfigErrors(b.problems.0)))
    }
}

/// How far the parser has read the text, and how far it may.
#[derive(Debug, Clone, Copy)]
struct Read {
    pulled: usize,
    allowed: usize,
    /// The parser wanted more than it was allowed: the text was cut there.
    cut: bool,
}

/// The text as the parser reads it. The parser holds every token of a flow
/// collection that might turn out to be a mapping key until the collection
/// ends, whatever its length (about a hundred bytes per token); so it may
/// only read so far ahead of the last event it produced. Past that, the
/// text ends for it, and the document is refused as too large.
struct Chars<'a> {
    inner: std::str::Chars<'a>,
    read: Rc<Cell<Read>>,
}

impl Iterator for Chars<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let mut r = self.read.get();
        if r.pulled >= r.allowed {
            r.cut = true;
            self.read.set(r);
            return None;
        }
        let c = self.inner.next()?;
        r.pulled += c.len_utf8();
        self.read.set(r);
        Some(c)
    }
}

/// How deep sequences and mappings may nest.
const MAX_DEPTH: usize = 128;

/// What is left of a document's allowance.
struct Budget {
    nodes_left: usize,
    bytes_left: usize,
    nodes: usize,
    bytes: usize,
}

impl Budget {
    /// Takes `nodes` nodes and `bytes` scalar bytes, or says the document
    /// is too large.
    fn take(&mut self, nodes: usize, bytes: usize) -> Result<(), YamlError> {
        if nodes > self.nodes_left || bytes > self.bytes_left {
            return Err(YamlError::TooLarge(format!(
                "the document expands through its aliases beyond {} nodes or {} bytes of text",
                self.nodes, self.bytes
            )));
        }
        self.nodes_left -= nodes;
        self.bytes_left -= bytes;
        Ok(())
    }

    /// Nodes and bytes taken so far.
    fn used(&self) -> (usize, usize) {
        (self.nodes - self.nodes_left, self.bytes - self.bytes_left)
    }
}

/// A node an alias may repeat, with what it cost to read.
struct Anchored {
    value: Value,
    nodes: usize,
    bytes: usize,
}

/// A sequence or mapping being read.
struct Frame {
    kind: Kind,
    /// Its anchor id (0: none).
    anchor: usize,
    /// Budget used when it opened, to size it for its anchor.
    used_at_open: (usize, usize),
    /// Its tag, when it had one (the node then reads as null, with a
    /// problem), and how many problems there were when it opened.
    tagged: Option<(String, usize)>,
}

enum Kind {
    Seq(Vec<Value>),
    /// The mapping so far and, once a key was read, that key (`None` for a
    /// key that is not a plain scalar).
    Map(Map<String, Value>, Option<Option<String>>),
}

/// Builds the tree from parser events, one node at a time.
struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    documents: usize,
    anchors: HashMap<usize, Anchored>,
    budget: Budget,
    problems: Problems,
}

impl Builder {
    fn event(&mut self, event: Event) -> Result<(), YamlError> {
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(YamlError::Syntax(
                        "a YAML stream with more than one document is not supported".into(),
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.budget.take(1, text.len())?;
                let value = match tag {
                    Some(tag) => {
                        let path = self.path_here();
                        self.problems.add(&path, tag_problem(&tag));
                        Value::Null
                    }
                    None if style == TScalarStyle::Plain => {
                        match super::scalar::resolve_plain(text) {
                            Ok(v) => v,
                            Err(problem) => {
                                let path = self.path_here();
                                self.problems.add(&path, problem);
                                Value::Null
                            }
                        }
                    }
                    None => Value::String(text),
                };
                if anchor != 0 {
                    self.remember(anchor, &value, 1, value.as_str().map_or(0, str::len))?;
                }
                self.deliver(value)?;
            }
            Event::SequenceStart(anchor, tag) => self.open(Kind::Seq(Vec::new()), anchor, tag)?,
            Event::MappingStart(anchor, tag) => {
                self.open(Kind::Map(Map::new(), None), anchor, tag)?
            }
            Event::SequenceEnd | Event::MappingEnd => self.close()?,
            Event::Alias(id) => {
                let Some(a) = self.anchors.get(&id) else {
                    return Err(YamlError::Syntax(
                        "an alias refers to a node that contains it".into(),
                    ));
                };
                // Charged before anything is copied.
                self.budget.take(a.nodes, a.bytes)?;
                let value = a.value.clone();
                self.deliver(value)?;
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    fn open(&mut self, kind: Kind, anchor: usize, tag: Option<Tag>) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError::Syntax(format!(
                "nested more than {MAX_DEPTH} levels deep"
            )));
        }
        self.budget.take(1, 0)?;
        let tagged = tag.map(|t| (tag_problem(&t), self.problems.0.len()));
        let used = self.budget.used();
        self.stack.push(Frame {
            kind,
            anchor,
            used_at_open: (used.0 - 1, used.1),
            tagged,
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), YamlError> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        let mut value = match frame.kind {
            Kind::Seq(items) => Value::Array(items),
            Kind::Map(map, _) => Value::Object(map),
        };
        if let Some((problem, before)) = frame.tagged {
            // What the tagged node held does not matter: the tag does.
            self.problems.0.truncate(before);
            let path = self.path_here();
            self.problems.add(&path, problem);
            value = Value::Null;
        }
        if frame.anchor != 0 {
            let (nodes, bytes) = self.budget.used();
            let (n0, b0) = frame.used_at_open;
            self.remember(frame.anchor, &value, nodes - n0, bytes - b0)?;
        }
        self.deliver(value)
    }

    /// Keeps a copy of an anchored node for its aliases. The copy is charged
    /// like the node itself: anchors nested in one another would otherwise
    /// keep the same subtree once per level, outside the budget.
    fn remember(
        &mut self,
        anchor: usize,
        value: &Value,
        nodes: usize,
        bytes: usize,
    ) -> Result<(), YamlError> {
        self.budget.take(nodes, bytes)?;
        self.anchors.insert(
            anchor,
            Anchored {
                value: value.clone(),
                nodes,
                bytes,
            },
        );
        Ok(())
    }

    /// Puts a finished node where it belongs: the root, the next item of a
    /// sequence, or a mapping's key or value.
    fn deliver(&mut self, value: Value) -> Result<(), YamlError> {
        let Some(top) = self.stack.last_mut() else {
            self.root = Some(value);
            return Ok(());
        };
        match &mut top.kind {
            Kind::Seq(items) => items.push(value),
            Kind::Map(_, pending @ None) => {
                let key = match value {
                    Value::String(s) => Some(s),
                    Value::Bool(b) => Some(b.to_string()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Null => Some("null".to_owned()),
                    Value::Array(_) | Value::Object(_) => None,
                };
                *pending = Some(key);
                if pending == &Some(None) {
                    let path = self.path_of_stack(self.stack.len());
                    self.problems
                        .add(&path, "mapping keys must be plain strings");
                }
            }
            Kind::Map(map, pending @ Some(_)) => {
                if let Some(Some(key)) = pending.take() {
                    if map.contains_key(&key) {
                        return Err(YamlError::Syntax(format!(
                            "duplicate entry with key {key:?}"
                        )));
                    }
                    map.insert(key, value);
                }
            }
        }
        Ok(())
    }

    /// The path of the node the parser is on now.
    fn path_here(&self) -> Path {
        self.path_of_stack(self.stack.len() + 1)
    }

    /// The path of the first `depth` levels: the root is level 0, each open
    /// frame one more, and the level past the last frame is the position
    /// the next node takes in it.
    fn path_of_stack(&self, depth: usize) -> Path {
        let mut path = Path::root();
        for frame in self.stack.iter().take(depth.saturating_sub(1)) {
            path = match &frame.kind {
                Kind::Seq(items) => path.index(items.len()),
                Kind::Map(_, Some(Some(key))) => path.key(key),
                Kind::Map(_, _) => path,
            };
        }
        path
    }
}

fn tag_problem(tag: &Tag) -> String {
    format!(
        "YAML tags are not supported (found {}{})",
        tag.handle, tag.suffix
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_documents_convert_like_json() {
        let v = parse("a: 1\nb: [x, 2.5, true, null]\nc: {d: -3}\ne: 18446744073709551615\n")
            .expect("parses");
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": ["x", 2.5, true, null], "c": {"d": -3}, "e": u64::MAX})
        );
    }

    #[test]
    fn non_finite_numbers_and_tags_are_problems_with_paths() {
        let err =
            parse("upstreams:\n  - backends:\n      - weight: .nan\n  - x: !custom 3\nw: -.inf\n")
                .expect_err("refused");
        let YamlError::Content(errors) = err else {
            panic!("not a content error: {err}")
        };
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "upstreams[0].backends[0].weight",
                    ".nan is not a finite number"
                ),
                (
                    "upstreams[1].x",
                    "YAML tags are not supported (found !custom)"
                ),
                ("w", "-.inf is not a finite number"),
            ]
        );
    }

    #[test]
    fn streams_and_documents() {
        assert_eq!(parse("").expect("empty"), Value::Null);
        assert_eq!(parse("# only a comment\n").expect("comment"), Value::Null);
        assert_eq!(
            parse("---\na: 1\n...\n").expect("one document"),
            serde_json::json!({"a": 1})
        );
        assert!(matches!(
            parse("a: 1\n---\nb: 2\n"),
            Err(YamlError::Syntax(_))
        ));
        assert!(matches!(parse("a: *nowhere\n"), Err(YamlError::Syntax(_))));
        assert!(matches!(
            parse("a: &x [1, *x]\n"),
            Err(YamlError::Syntax(_))
        ));
        let v = parse("a: |\n  line one\n  line two\nb: >-\n  folded\n  text\n").expect("blocks");
        assert_eq!(
            v,
            serde_json::json!({"a": "line one\nline two\n", "b": "folded text"})
        );
    }

    #[test]
    fn keys_must_be_scalars_and_unique() {
        let v = parse("true: 1\n3: 2\nnull: 3\n").expect("scalar keys");
        assert_eq!(v, serde_json::json!({"true": 1, "3": 2, "null": 3}));
        let err = parse("a:\n  [x, y]: 1\n").expect_err("refused");
        assert!(
            matches!(&err, YamlError::Content(e) if e.0[0].path == "a" && e.0[0].message.contains("plain strings")),
            "{err:?}"
        );
        let err = parse("a: 1\na: 2\n").expect_err("refused");
        assert!(
            err.to_string().contains("duplicate entry with key \"a\""),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_are_reported_as_such() {
        assert!(matches!(parse("a: [1, 2"), Err(YamlError::Syntax(_))));
        let deep = "[".repeat(10_000);
        assert!(matches!(parse(&deep), Err(YamlError::Syntax(_))));
    }

    #[test]
    fn aliases_within_the_allowance_expand() {
        let v = parse("h: &h {path: /health, interval: 5s}\na: *h\nb: *h\n").expect("parses");
        assert_eq!(v["b"]["path"], "/health");
    }

    /// `n` items anchored once and referenced `refs` times.
    fn wide_aliases(n: usize, refs: usize) -> String {
        let mut s = String::from("a: &a [");
        s.push_str(&vec!["x"; n].join(","));
        s.push_str("]\nb: [");
        s.push_str(&vec!["*a"; refs].join(","));
        s.push_str("]\n");
        s
    }

    #[test]
    fn alias_bombs_stop_at_the_budget() {
        // About 50 KB that would expand to 36 million nodes.
        let text = wide_aliases(6_000, 6_000);
        assert!(text.len() < 50_000);
        let err = parse(&text).expect_err("refused");
        assert!(matches!(err, YamlError::TooLarge(_)), "{err:?}");
        assert!(
            err.to_string().contains("expands through its aliases"),
            "{err}"
        );
        // Nested: each level doubles the one before.
        let mut text = String::from("l0: &l0 [x, x]\n");
        for i in 1..64 {
            text.push_str(&format!("l{i}: &l{i} [*l{}, *l{}]\n", i - 1, i - 1));
        }
        let r = parse(&text);
        assert!(matches!(r, Err(YamlError::TooLarge(_))), "{r:?}");
        // A long string repeated through aliases counts by its bytes.
        let text = format!(
            "s: &s \"{}\"\nt: [{}]\n",
            "y".repeat(500_000),
            vec!["*s"; 100].join(",")
        );
        assert!(matches!(parse(&text), Err(YamlError::TooLarge(_))));
    }

    #[test]
    fn limits_are_relative_and_absolute() {
        let l = Limits::default();
        assert_eq!(l.budget(0), (100_000, 1 << 20));
        assert_eq!(l.budget(1_000_000).0, 1_100_000);
        assert_eq!(l.budget(usize::MAX), (2_000_000, 64 << 20));
        let tight = Limits {
            min_nodes: 10,
            nodes_per_byte: 0,
            ..Limits::default()
        };
        assert!(parse_with("[1, 2, 3]", &tight).is_ok());
        assert!(matches!(
            parse_with("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", &tight),
            Err(YamlError::TooLarge(_))
        ));
    }
}
