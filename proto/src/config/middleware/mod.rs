//! Per-route middleware (`routes[].middleware`): the model here (read from
//! YAML/JSON by what `#[derive(Config)]` writes), and the rules it must
//! satisfy in `rules.rs`.
//!
//! Each item is a mapping with exactly one key naming the middleware:
//!
//! ```yaml
//! middleware:
//!   - strip_prefix: /api
//!   - rewrite_path: {from: "^/v1/(.*)$", to: "/v2/$1"}
//!   - request_headers: {set: {X-Env: prod}, add: {X-Tag: a}, remove: [X-Debug]}
//!   - response_headers: {set: {Strict-Transport-Security: "max-age=63072000"}, remove: [Server]}
//!   - redirect: {to: "https://{host}{uri}", status: 301}
//! ```
//!
//! The helpers the data plane needs to run them exactly as they were checked
//! ([`path_regex`], [`redirect_template`]) live here too, so the rules and
//! the behaviour cannot drift apart.

mod rules;

pub use rules::HOP_BY_HOP;

pub(in crate::config) use rules::validate;

use crate::config::field::forms::header_map;
use isame_config_derive::Config;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// One step a route applies to its requests or responses.
#[derive(Debug, Clone, PartialEq, Eq, Config)]
#[config(what = "middleware", example = "strip_prefix: /api")]
pub enum Middleware {
    /// Removes this path prefix, on segment boundaries: `/api` turns
    /// `/api/users` into `/users` and `/api` into `/`.
    StripPrefix(String),
    /// Replaces the path when a regular expression matches it.
    RewritePath(RewritePath),
    /// Changes the request headers sent to the backend.
    #[config(default)]
    RequestHeaders(HeaderEdits),
    /// Changes the response headers sent to the client.
    ResponseHeaders(HeaderEdits),
    /// Answers with a redirect instead of calling the backend.
    Redirect(Redirect),
}

/// `rewrite_path`: like nginx's `rewrite`, when `from` matches the path
/// (anywhere in it, unless anchored with `^` and `$`) the whole path becomes
/// `to`, with `$1`, `${1}` or `${name}` replaced by the captured groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct RewritePath {
    /// A regular expression (Rust `regex` syntax, at most 1024 bytes and
    /// 1 MiB compiled) matched against the path.
    #[config(required)]
    pub from: String,
    /// The new path, starting with `/`: `$1`, `${1}` and `${name}` are the
    /// captured groups, `$$` a literal `$`.
    #[config(required)]
    pub to: String,
}

/// `request_headers` / `response_headers`: headers removed, set (replacing
/// every value) and added (beside existing values). A header name appears in
/// at most one of the three.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct HeaderEdits {
    /// Headers given exactly this value (every value replaced).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_fields"
    )]
    #[config(with = header_map)]
    pub set: Vec<HeaderField>,
    /// Headers given this value beside any they have.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_fields"
    )]
    #[config(with = header_map)]
    pub add: Vec<HeaderField>,
    /// Headers removed, every value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    /// Header name (case-insensitive).
    pub name: String,
    /// Its value.
    pub value: String,
}

/// `redirect`: the client gets `status` with `Location: to`, placeholders
/// filled in; the backend is not called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct Redirect {
    /// Where to: an absolute `http(s)://` URL or a path, with placeholders
    /// (`{scheme}`, `{host}`, `{path}`, `{query}`, `{?query}`, `{uri}`).
    #[config(required)]
    pub to: String,
    /// 301, 302, 303, 307 or 308.
    #[config(default = DEFAULT_REDIRECT_STATUS)]
    pub status: u16,
}

/// Default status of a redirect: temporary, so it can be changed later.
pub const DEFAULT_REDIRECT_STATUS: u16 = 302;
/// Statuses a redirect may answer with.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];
/// Longest `rewrite_path.from`, in bytes.
pub const MAX_REGEX_LEN: usize = 1024;
/// Largest compiled `rewrite_path.from` (the `regex` crate's size limit).
pub const MAX_REGEX_SIZE: usize = 1 << 20;

// By hand: serde's derive would write YAML tags (`!strip_prefix /api`),
// which the reader refuses; a one-key mapping reads back as written.
impl Serialize for Middleware {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match self {
            Middleware::StripPrefix(prefix) => map.serialize_entry(self.name(), prefix)?,
            Middleware::RewritePath(r) => map.serialize_entry(self.name(), r)?,
            Middleware::RequestHeaders(e) | Middleware::ResponseHeaders(e) => {
                map.serialize_entry(self.name(), e)?
            }
            Middleware::Redirect(r) => map.serialize_entry(self.name(), r)?,
        }
        map.end()
    }
}

fn serialize_fields<S: Serializer>(fields: &[HeaderField], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(fields.len()))?;
    for f in fields {
        map.serialize_entry(&f.name, &f.value)?;
    }
    map.end()
}

/// Compiles `rewrite_path.from` with the bounds every config is held to.
pub fn path_regex(from: &str) -> Result<regex::Regex, String> {
    if from.len() > MAX_REGEX_LEN {
        return Err(format!(
            "regular expression is longer than {MAX_REGEX_LEN} bytes"
        ));
    }
    regex::RegexBuilder::new(from)
        .size_limit(MAX_REGEX_SIZE)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => format!(
                "regular expression is too large (compiled size over {} KiB)",
                MAX_REGEX_SIZE >> 10
            ),
            other => format!("not a valid regular expression: {other}"),
        })
}

/// A value a redirect's `to` names in braces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{scheme}`: `http` or `https`, as the client connected.
    Scheme,
    /// `{host}`: the host the request was routed by, without its port.
    Host,
    /// `{path}`: the path, as earlier middleware in the list left it.
    Path,
    /// `{query}`: the query string without `?` (empty when there is none).
    Query,
    /// `{?query}`: `?` and the query string, or nothing when there is none.
    QueryWithMark,
    /// `{uri}`: the path and `{?query}`.
    Uri,
}

impl Placeholder {
    /// Every placeholder with its name as written between braces.
    pub const ALL: [(&'static str, Placeholder); 6] = [
        ("scheme", Placeholder::Scheme),
        ("host", Placeholder::Host),
        ("path", Placeholder::Path),
        ("query", Placeholder::Query),
        ("?query", Placeholder::QueryWithMark),
        ("uri", Placeholder::Uri),
    ];
}

/// A piece of a redirect target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Written as it is.
    Text(&'a str),
    /// Filled in from the request.
    Value(Placeholder),
}

/// Splits a redirect's `to` into text and placeholders. Braces only ever
/// delimit placeholders: a URL has no other use for them.
pub fn redirect_template(to: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = to;
    while !rest.is_empty() {
        let open = rest.find(['{', '}']).unwrap_or(rest.len());
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        rest = &rest[open..];
        if rest.is_empty() {
            break;
        }
        if rest.starts_with('}') {
            return Err("has a '}' without '{'; braces only enclose placeholders".into());
        }
        let Some(close) = rest.find('}') else {
            return Err("has a '{' without '}'".into());
        };
        let name = &rest[1..close];
        let Some((_, p)) = Placeholder::ALL.iter().find(|(n, _)| *n == name) else {
            let known: Vec<String> = Placeholder::ALL
                .iter()
                .map(|(n, _)| format!("{{{n}}}"))
                .collect();
            return Err(format!(
                "unknown placeholder {{{name}}}; expected one of: {}",
                known.join(", ")
            ));
        };
        pieces.push(Piece::Value(*p));
        rest = &rest[close + 1..];
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_into_text_and_placeholders() {
        assert_eq!(
            redirect_template("https://{host}/new{?query}").expect("valid"),
            [
                Piece::Text("https://"),
                Piece::Value(Placeholder::Host),
                Piece::Text("/new"),
                Piece::Value(Placeholder::QueryWithMark),
            ]
        );
        assert_eq!(
            redirect_template("{uri}").expect("valid"),
            [Piece::Value(Placeholder::Uri)]
        );
        assert!(redirect_template("/a{b")
            .unwrap_err()
            .contains("without '}'"));
        assert!(redirect_template("/a}b")
            .unwrap_err()
            .contains("without '{'"));
        assert!(redirect_template("/{port}")
            .unwrap_err()
            .contains("expected one of: {scheme}, {host}"));
    }

    #[test]
    fn oversized_regexes_are_refused() {
        assert!(path_regex(&"a".repeat(MAX_REGEX_LEN + 1))
            .unwrap_err()
            .contains("longer than"));
        assert!(path_regex(r"\w{1000}{1000}")
            .unwrap_err()
            .contains("too large"));
        assert!(path_regex("(").unwrap_err().contains("not a valid"));
    }

    #[test]
    fn serializes_as_a_one_key_mapping() {
        let m = Middleware::RequestHeaders(HeaderEdits {
            set: vec![HeaderField {
                name: "X-Env".into(),
                value: "prod".into(),
            }],
            add: Vec::new(),
            remove: vec!["X-Debug".into()],
        });
        assert_eq!(
            serde_json::to_value(&m).expect("serializes"),
            serde_json::json!({"request_headers": {"set": {"X-Env": "prod"}, "remove": ["X-Debug"]}})
        );
        assert_eq!(
            serde_json::to_value(Middleware::StripPrefix("/api".into())).expect("serializes"),
            serde_json::json!({"strip_prefix": "/api"})
        );
    }
}
