//! Reads YAML text into the JSON tree that the config reader walks, keeping
//! what JSON cannot hold from slipping through unnoticed: `.nan` and `.inf`
//! would otherwise become `null` (and so a default), and tagged values would
//! lose their tag.

use super::errors::{Path, Problems};
use super::ConfigErrors;
use serde_json::{Map, Number, Value};
use serde_yaml_ng::Value as Yaml;

/// Why YAML text is not a document the config reader can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    /// The text is not YAML at all (or too deep, or an alias bomb).
    #[error("{0}")]
    Syntax(String),
    /// It is YAML, but holds values with no JSON form; each with its path.
    #[error("{0}")]
    Content(ConfigErrors),
}

/// Parses YAML text into a JSON tree.
pub fn parse(text: &str) -> Result<Value, YamlError> {
    let yaml: Yaml = serde_yaml_ng::from_str(text).map_err(|e| YamlError::Syntax(e.to_string()))?;
    let mut p = Problems::default();
    let value = convert(yaml, &Path::root(), &mut p);
    if p.0.is_empty() {
        Ok(value)
    } else {
        Err(YamlError::Content(ConfigErrors(p.0)))
    }
}

fn convert(v: Yaml, path: &Path, p: &mut Problems) -> Value {
    match v {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                match n.as_f64().and_then(Number::from_f64) {
                    Some(f) => Value::Number(f),
                    None => {
                        p.add(path, format!("{n} is not a finite number"));
                        Value::Null
                    }
                }
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| convert(item, &path.index(i), p))
                .collect(),
        ),
        Yaml::Mapping(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                let key = match k {
                    Yaml::String(s) => s,
                    Yaml::Bool(b) => b.to_string(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Null => "null".to_owned(),
                    _ => {
                        p.add(path, "mapping keys must be plain strings");
                        continue;
                    }
                };
                let value = convert(v, &path.key(&key), p);
                out.insert(key, value);
            }
            Value::Object(out)
        }
        Yaml::Tagged(t) => {
            p.add(
                path,
                format!("YAML tags are not supported (found {})", t.tag),
            );
            Value::Null
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_documents_convert_like_json() {
        let v = parse("a: 1\nb: [x, 2.5, true, null]\nc: {d: -3}\n").expect("parses");
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": ["x", 2.5, true, null], "c": {"d": -3}})
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
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["upstreams[0].backends[0].weight", "upstreams[1].x", "w"]
        );
    }

    #[test]
    fn syntax_errors_are_reported_as_such() {
        assert!(matches!(parse("a: [1, 2"), Err(YamlError::Syntax(_))));
    }
}
