//! Fields written in a form of their own, named by `#[config(with = ...)]`.

use super::{kind, Field, Path, Reader};
use crate::config::schema::Defs;
use crate::config::HeaderField;
use serde_json::{json, Value};

/// A label YAML may have typed as a number or a boolean (`version: 1.0`).
pub(crate) mod label {
    use super::*;

    pub(crate) fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                r.add(at, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    pub(crate) fn schema(_: &mut Defs) -> Value {
        json!({"type": ["string", "number", "boolean"]})
    }

    pub(crate) fn to_json(s: &str) -> Value {
        Value::String(s.to_owned())
    }
}

/// `tls.min_version`: `"1.2"` or `"1.3"` (YAML reads a bare `1.2` as a
/// number); empty stands for the default, as the original plan wrote it.
pub(crate) mod tls_version {
    use super::*;

    pub(crate) fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<String> {
        label::read(v, at, r).filter(|s| !s.is_empty())
    }

    pub(crate) fn schema(_: &mut Defs) -> Value {
        json!({"enum": ["1.2", "1.3", 1.2, 1.3, ""]})
    }

    pub(crate) fn to_json(s: &str) -> Value {
        Value::String(s.to_owned())
    }
}

/// Statuses counted as healthy: a list of codes, ranges and classes, or a
/// single one written bare.
pub(crate) mod statuses {
    use super::*;

    pub(crate) fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Vec<String>> {
        match v {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| label::read(item, &at.index(i), r))
                .collect(),
            other => label::read(other, at, r).map(|s| vec![s]),
        }
    }

    pub(crate) fn schema(_: &mut Defs) -> Value {
        let one = json!({"type": ["string", "integer"]});
        json!({"anyOf": [one.clone(), {"type": "array", "items": one}]})
    }

    pub(crate) fn to_json(list: &[String]) -> Value {
        json!(list)
    }
}

/// Header names mapped to values (`{X-Env: prod}`), kept in the order written.
pub(crate) mod header_map {
    use super::*;

    pub(crate) fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Vec<HeaderField>> {
        match v {
            Value::Object(m) => Some(
                m.iter()
                    .filter_map(|(name, value)| {
                        String::read(value, &at.key(name), r).map(|value| HeaderField {
                            name: name.clone(),
                            value,
                        })
                    })
                    .collect(),
            ),
            other => {
                r.add(
                    at,
                    format!("expected a mapping of name to value, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub(crate) fn schema(_: &mut Defs) -> Value {
        json!({"type": "object", "additionalProperties": {"type": "string"}})
    }

    pub(crate) fn to_json(fields: &[HeaderField]) -> Value {
        Value::Object(
            fields
                .iter()
                .map(|f| (f.name.clone(), Value::String(f.value.clone())))
                .collect(),
        )
    }
}

/// `trusted_proxies`: a list of CIDRs or addresses. An item that cannot be
/// read keeps its place as `0.0.0.0/32`, which trusts no real peer (a
/// config read leniently must never widen trust).
pub(crate) mod trusted {
    use super::*;
    use ipnet::IpNet;
    use std::net::{IpAddr, Ipv4Addr};

    pub(crate) fn read(v: &Value, at: &Path, r: &mut Reader) -> Option<Vec<IpNet>> {
        let Value::Array(items) = v else {
            r.add(at, format!("expected a list, found {}", kind(v)));
            return None;
        };
        Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    IpNet::read(item, &at.index(i), r)
                        .unwrap_or_else(|| IpNet::from(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
                })
                .collect(),
        )
    }

    pub(crate) fn schema(defs: &mut Defs) -> Value {
        <Vec<IpNet> as Field>::schema(defs)
    }

    pub(crate) fn to_json(list: &[IpNet]) -> Value {
        Value::Array(list.iter().map(Field::to_json).collect())
    }
}
