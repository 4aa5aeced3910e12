//! How a config document is read: every value through [`Field`], every
//! section through the code `#[derive(Config)]` writes from the model's
//! declarations. Nothing stops at the first problem: each is recorded with
//! its path, a value that cannot be read keeps its default, and the rest of
//! the document is still checked.

pub(crate) mod forms;
mod values;

pub(crate) use super::errors::Path;
use super::errors::Problems;
use super::schema::{Defs, Named};
use serde_json::{Map, Value};
use std::any::Any;
pub(crate) use values::DURATION_PATTERN;

/// A value read from one place in a config document.
pub(crate) trait Field: Sized {
    /// Reads the value at `at`; `None` when it cannot be read, with the
    /// problem recorded.
    fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Self>;
    /// The JSON Schema of what [`Field::read`] accepts.
    fn schema(defs: &mut Defs) -> Value;
    /// The value as a config writes it (defaults in the schema and the reference).
    fn to_json(&self) -> Value;
}

/// A mapping of named fields (a struct of the model).
pub(crate) trait Section: Field + Named + Default + Clone + 'static {
    /// The fields it may have, as a config names them.
    const FIELDS: &'static [&'static str];
    /// Reads the fields of `o`; fields left out keep `base`'s values.
    fn read_over(base: &Self, o: &Obj<'_>, r: &mut Reader) -> Self;
}

/// The state of one read: the problems found so far, and the sections that
/// later sections of the same type inherit from.
#[derive(Default)]
pub(crate) struct Reader {
    pub(crate) problems: Problems,
    bases: Vec<Box<dyn Any>>,
}

impl Reader {
    /// Records a problem at `at` with the document's shape (every rule the
    /// reader checks is one the schema states).
    pub(crate) fn add(&mut self, at: &Path, message: impl Into<String>) {
        self.problems
            .0
            .push(super::ConfigError::schema(at.as_str(), message));
    }

    /// Records a problem at `at` with a rule the schema cannot state.
    pub(crate) fn add_rule(&mut self, at: &Path, message: impl Into<String>) {
        self.problems.add(at, message);
    }

    /// Offers `v` as the base of inheriting sections of its type.
    pub(crate) fn share<T: Clone + 'static>(&mut self, v: &T) {
        self.bases.retain(|b| !b.is::<T>());
        self.bases.push(Box::new(v.clone()));
    }

    fn base<T: 'static>(&self) -> Option<&T> {
        self.bases.iter().find_map(|b| b.downcast_ref::<T>())
    }
}

/// A mapping being read, its keys checked against the fields it may have.
pub(crate) struct Obj<'a> {
    map: Option<&'a Map<String, Value>>,
    path: Path,
}

impl<'a> Obj<'a> {
    /// Opens a mapping whose keys must be among `fields`; `None` stands for
    /// an empty one.
    pub(crate) fn open(
        map: Option<&'a Map<String, Value>>,
        path: &Path,
        fields: &[&str],
        r: &mut Reader,
    ) -> Self {
        for key in map.into_iter().flat_map(Map::keys) {
            if !fields.contains(&key.as_str()) {
                r.add(
                    &path.key(key),
                    format!(
                        "unknown field `{key}`; expected one of: {}",
                        fields.join(", ")
                    ),
                );
            }
        }
        Obj {
            map,
            path: path.clone(),
        }
    }

    /// The field's value; `null` counts as absent.
    fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// The field, or `base` when it is absent or cannot be read.
    pub(crate) fn get<T: Field + Clone>(&self, key: &str, base: &T, r: &mut Reader) -> T {
        self.get_with(key, base, r, T::read)
    }

    /// The same, read by `read` instead of the type's own reader.
    pub(crate) fn get_with<T: Clone>(
        &self,
        key: &str,
        base: &T,
        r: &mut Reader,
        read: fn(&Value, &Path, &mut Reader) -> Option<T>,
    ) -> T {
        self.raw(key)
            .and_then(|v| read(v, &self.path.key(key), r))
            .unwrap_or_else(|| base.clone())
    }

    /// A field that must be given.
    pub(crate) fn required<T: Field + Default>(&self, key: &str, r: &mut Reader) -> T {
        let at = self.path.key(key);
        match self.raw(key) {
            None => {
                r.add(&at, "required field is missing");
                T::default()
            }
            Some(v) => T::read(v, &at, r).unwrap_or_default(),
        }
    }

    /// A required whole number within bounds.
    pub(crate) fn required_ranged<T: Field + Copy + Default + Into<u64>>(
        &self,
        key: &str,
        r: &mut Reader,
        min: Option<u64>,
        max: Option<u64>,
    ) -> T {
        if self.raw(key).is_none() {
            r.add(&self.path.key(key), "required field is missing");
            return T::default();
        }
        self.ranged(key, &T::default(), r, min, max)
    }

    /// A whole number within bounds.
    pub(crate) fn ranged<T: Field + Copy + Into<u64>>(
        &self,
        key: &str,
        base: &T,
        r: &mut Reader,
        min: Option<u64>,
        max: Option<u64>,
    ) -> T {
        let Some(v) = self.raw(key) else { return *base };
        let at = self.path.key(key);
        let Some(n) = T::read(v, &at, r) else {
            return *base;
        };
        let (lo, hi) = (min.unwrap_or(0), max.unwrap_or(u64::MAX));
        let x: u64 = n.into();
        if (lo..=hi).contains(&x) {
            n
        } else {
            r.add(&at, format!("must be between {lo} and {hi}, found {x}"));
            *base
        }
    }

    /// A section whose fields left out come from the shared section of
    /// its type (an upstream's `health` from the global `health`).
    pub(crate) fn inherited<T: Section>(&self, key: &str, r: &mut Reader) -> Option<T> {
        let v = self.raw(key)?;
        let base = r.base::<T>().cloned().unwrap_or_default();
        read_section(v, &self.path.key(key), r, &base, None)
    }
}

/// Reads a section over `base`. `null` is an empty mapping; a string is
/// read by `shorthand` when the section has one.
pub(crate) fn read_section<T: Section>(
    v: &Value,
    at: &Path,
    r: &mut Reader,
    base: &T,
    shorthand: Option<fn(String) -> T>,
) -> Option<T> {
    let map = match (v, shorthand) {
        (Value::Object(m), _) => Some(m),
        (Value::Null, _) => None,
        (Value::String(s), Some(short)) => return Some(short(s.clone())),
        (other, _) => {
            r.add(at, format!("expected a mapping, found {}", kind(other)));
            return None;
        }
    };
    let o = Obj::open(map, at, T::FIELDS, r);
    Some(T::read_over(base, &o, r))
}

/// Reads one of `names` (an enum of unit variants).
pub(crate) fn read_name<T: Clone>(
    v: &Value,
    at: &Path,
    r: &mut Reader,
    what: &str,
    names: &[(&str, T)],
) -> Option<T> {
    let s = String::read(v, at, r)?;
    match names.iter().find(|(n, _)| *n == s) {
        Some((_, t)) => Some(t.clone()),
        None => {
            let known: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
            r.add(
                at,
                format!(
                    "unknown {what} {s:?}; expected one of: {}",
                    known.join(", ")
                ),
            );
            None
        }
    }
}

/// Opens a mapping with exactly one key, one of `names` (an enum of
/// one-field variants): the key, its value and the value's path.
pub(crate) fn one_key<'v>(
    v: &'v Value,
    at: &Path,
    r: &mut Reader,
    what: &str,
    example: &str,
    names: &'static [&'static str],
) -> Option<(&'static str, &'v Value, Path)> {
    let m = match v {
        Value::Object(m) if m.len() == 1 => m,
        Value::Object(m) => {
            let found = if m.is_empty() {
                "none".to_owned()
            } else {
                m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            };
            r.add(
                at,
                format!(
                    "a {what} is a mapping with exactly one key naming it (e.g. `{example}`); found {found}"
                ),
            );
            return None;
        }
        other => {
            r.add(
                at,
                format!(
                    "expected a mapping with one key naming the {what} (e.g. `{example}`), found {}",
                    kind(other)
                ),
            );
            return None;
        }
    };
    let (key, value) = m.iter().next()?;
    match names.iter().find(|n| **n == key) {
        Some(name) => Some((name, value, at.key(key))),
        None => {
            r.add(
                at,
                format!(
                    "unknown {what} `{key}`; expected one of: {}",
                    names.join(", ")
                ),
            );
            None
        }
    }
}

/// A value's JSON form through its `Serialize` (which the canonical JSON uses).
pub(crate) fn serialized<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// How a person calls the kind of a JSON value.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
