//! Config problems, each tied to the path of the field it is about.

use std::fmt;

/// One problem with a config, e.g. `upstreams[0].backends[1].url: scheme must be http, https or h2c`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    /// Where the problem is, in the config's own field names (`""` for the document itself).
    pub path: String,
    /// What is wrong, for a person to read.
    pub message: String,
    /// Whether the published JSON Schema states the rule broken.
    pub kind: ProblemKind,
}

/// Which kind of rule a problem breaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// One the published JSON Schema states (a type, a bound, a pattern, a
    /// required or unknown field): an editor using the schema shows it too.
    Schema,
    /// One the schema cannot state: across fields (a route naming an unknown
    /// upstream), or about what a value means (a URL, a regular expression,
    /// a file that must exist).
    #[default]
    Rule,
}

impl ConfigError {
    /// A problem at `path` with a rule beyond the schema.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            kind: ProblemKind::Rule,
        }
    }

    /// A problem at `path` with the document's shape, as the schema states it.
    pub fn schema(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ProblemKind::Schema,
            ..Self::new(path, message)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one config, in the order they were found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(transparent)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A list holding a single problem.
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![ConfigError::new(path, message)])
    }

    /// The problems, in order.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no problem.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} problem{} in config", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// A field path under construction: `upstreams[0].backends[1].url`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn root() -> Self {
        Self(String::new())
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        if self.0.is_empty() {
            Self(key.to_owned())
        } else {
            Self(format!("{}.{key}", self.0))
        }
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Collects problems while a config is read or checked.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<ConfigError>);

impl Problems {
    pub(crate) fn add(&mut self, path: &Path, message: impl Into<String>) {
        self.0.push(ConfigError::new(path.as_str(), message));
    }
}
