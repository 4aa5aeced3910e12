//! Reading a `routes[].middleware[]` item from the YAML/JSON tree.

use super::{HeaderEdits, HeaderField, Middleware, Redirect, RewritePath, DEFAULT_REDIRECT_STATUS};
use crate::config::decode::{kind, Decode, Obj};
use crate::config::errors::{Path, Problems};
use serde_json::Value;

/// Reads one `routes[].middleware[]` item. An item that is not a one-key
/// mapping naming a known middleware is reported at its own path and read as
/// an empty `request_headers`, whose own complaint that path covers.
pub(in crate::config) fn decode(v: &Value, path: &Path, p: &mut Problems) -> Middleware {
    let unreadable = || Middleware::RequestHeaders(HeaderEdits::default());
    let m = match v {
        Value::Object(m) if m.len() == 1 => m,
        Value::Object(m) => {
            let found = if m.is_empty() {
                "none".to_owned()
            } else {
                m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            };
            p.add(
                path,
                format!(
                    "a middleware is a mapping with exactly one key naming it (e.g. `strip_prefix: /api`); found {found}"
                ),
            );
            return unreadable();
        }
        other => {
            p.add(
                path,
                format!(
                    "expected a mapping with one key naming the middleware (e.g. `strip_prefix: /api`), found {}",
                    kind(other)
                ),
            );
            return unreadable();
        }
    };
    let Some((name, value)) = m.iter().next() else {
        return unreadable();
    };
    let at = path.key(name);
    match name.as_str() {
        "strip_prefix" => Middleware::StripPrefix(String::read(value).unwrap_or_else(|e| {
            p.add(&at, e);
            String::new()
        })),
        "rewrite_path" => {
            let o = Obj::open(value, &at, &["from", "to"], p);
            Middleware::RewritePath(RewritePath {
                from: o.req("from", p),
                to: o.req("to", p),
            })
        }
        "request_headers" => Middleware::RequestHeaders(edits(value, &at, p)),
        "response_headers" => Middleware::ResponseHeaders(edits(value, &at, p)),
        "redirect" => {
            let o = Obj::open(value, &at, &["to", "status"], p);
            Middleware::Redirect(Redirect {
                to: o.req("to", p),
                status: o.get("status", DEFAULT_REDIRECT_STATUS, p),
            })
        }
        other => {
            p.add(
                path,
                format!(
                    "unknown middleware `{other}`; expected one of: {}",
                    Middleware::NAMES.join(", ")
                ),
            );
            unreadable()
        }
    }
}

fn edits(v: &Value, path: &Path, p: &mut Problems) -> HeaderEdits {
    let o = Obj::open(v, path, &["set", "add", "remove"], p);
    let fields = |key: &str, p: &mut Problems| -> Vec<HeaderField> {
        let at = path.key(key);
        match v.get(key).filter(|v| !v.is_null()) {
            None => Vec::new(),
            Some(Value::Object(m)) => m
                .iter()
                .filter_map(|(name, value)| match String::read(value) {
                    Ok(value) => Some(HeaderField {
                        name: name.clone(),
                        value,
                    }),
                    Err(e) => {
                        p.add(&at.key(name), e);
                        None
                    }
                })
                .collect(),
            Some(other) => {
                p.add(
                    &at,
                    format!(
                        "expected a mapping of header name to value, found {}",
                        kind(other)
                    ),
                );
                Vec::new()
            }
        }
    };
    HeaderEdits {
        set: fields("set", p),
        add: fields("add", p),
        remove: o.get("remove", Vec::new(), p),
    }
}
