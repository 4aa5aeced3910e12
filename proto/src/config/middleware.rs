//! Per-route middleware (`routes[].middleware`): the model, how an item is
//! read from YAML/JSON, and the rules it must satisfy.
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

use super::decode::{kind, Decode, Obj};
use super::errors::{Path, Problems};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;

/// One step a route applies to its requests or responses (`routes[].middleware[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Middleware {
    /// Removes this path prefix, on segment boundaries: `/api` turns
    /// `/api/users` into `/users` and `/api` into `/`.
    StripPrefix(String),
    /// Replaces the path when a regular expression matches it.
    RewritePath(RewritePath),
    /// Changes the request headers sent to the backend.
    RequestHeaders(HeaderEdits),
    /// Changes the response headers sent to the client.
    ResponseHeaders(HeaderEdits),
    /// Answers with a redirect instead of calling the backend.
    Redirect(Redirect),
}

/// `rewrite_path`: like nginx's `rewrite`, when `from` matches the path
/// (anywhere in it, unless anchored with `^` and `$`) the whole path becomes
/// `to`, with `$1`, `${1}` or `${name}` replaced by the captured groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RewritePath {
    /// A regular expression (Rust `regex` syntax) matched against the path.
    pub from: String,
    /// The new path; `$$` writes a literal `$`.
    pub to: String,
}

/// `request_headers` / `response_headers`: headers removed, set (replacing
/// every value) and added (beside existing values). A header name appears in
/// at most one of the three.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderEdits {
    /// Headers given exactly this value.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_fields"
    )]
    pub set: Vec<HeaderField>,
    /// Headers given this value in addition to any they have.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_fields"
    )]
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
/// filled in (see [`Placeholder`]); the backend is not called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// Where to: an absolute `http(s)://` URL or a path, with placeholders.
    pub to: String,
    /// 301, 302, 303, 307 or 308.
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

impl Middleware {
    /// Every middleware by its config name, in the order the docs list them.
    pub const NAMES: [&'static str; 5] = [
        "strip_prefix",
        "rewrite_path",
        "request_headers",
        "response_headers",
        "redirect",
    ];

    /// The config name, e.g. `strip_prefix`.
    pub fn name(&self) -> &'static str {
        match self {
            Middleware::StripPrefix(_) => "strip_prefix",
            Middleware::RewritePath(_) => "rewrite_path",
            Middleware::RequestHeaders(_) => "request_headers",
            Middleware::ResponseHeaders(_) => "response_headers",
            Middleware::Redirect(_) => "redirect",
        }
    }
}

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

/// Reads one `routes[].middleware[]` item. An item that is not a one-key
/// mapping naming a known middleware is reported at its own path and read as
/// an empty `request_headers`, whose own complaint that path covers.
pub(super) fn decode(v: &Value, path: &Path, p: &mut Problems) -> Middleware {
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

/// Which way a header edit works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

/// Checks one route's middleware list.
pub(super) fn validate(list: &[Middleware], path: &Path, p: &mut Problems) {
    for (i, m) in list.iter().enumerate() {
        let at = path.index(i).key(m.name());
        match m {
            Middleware::StripPrefix(prefix) => {
                if plain_path(prefix, &at, p) {
                    if prefix == "/" {
                        p.add(&at, "stripping \"/\" would change nothing");
                    } else if prefix.ends_with('/') {
                        p.add(
                            &at,
                            format!(
                                "write the prefix without a trailing '/': {:?} strips itself and what follows a '/'",
                                prefix.trim_end_matches('/')
                            ),
                        );
                    }
                }
            }
            Middleware::RewritePath(r) => rewrite(r, &at, p),
            Middleware::RequestHeaders(e) => edits_rules(e, Side::Request, &at, p),
            Middleware::ResponseHeaders(e) => edits_rules(e, Side::Response, &at, p),
            Middleware::Redirect(r) => redirect(r, &at, p),
        }
    }
}

/// A path as a request carries it: starts with '/', visible ASCII (anything
/// else is percent-encoded), no '?' or '#'. True when it is one.
fn plain_path(s: &str, path: &Path, p: &mut Problems) -> bool {
    if !s.starts_with('/') {
        p.add(path, format!("{s:?} must start with '/'"));
        false
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    {
        p.add(
            path,
            format!(
                "{s:?} must be a plain path: visible ASCII (percent-encode the rest), no spaces, '?' or '#'"
            ),
        );
        false
    } else {
        true
    }
}

fn rewrite(r: &RewritePath, path: &Path, p: &mut Problems) {
    let re = if r.from.is_empty() {
        p.add(&path.key("from"), "must not be empty");
        None
    } else {
        path_regex(&r.from)
            .map_err(|e| p.add(&path.key("from"), e))
            .ok()
    };
    let to = path.key("to");
    if !plain_path(&r.to, &to, p) {
        return;
    }
    if let Err(e) = replacement_refs(&r.to, re.as_ref()) {
        p.add(&to, e);
    }
}

/// Checks the `$` references of a replacement the way `regex`'s
/// `Captures::expand` reads them: `$$`, `${name}`, and `$name` taking the
/// longest run of letters, digits and '_'. With `re`, each must name one of
/// its groups.
fn replacement_refs(to: &str, re: Option<&regex::Regex>) -> Result<(), String> {
    let mut rest = to;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let (name, written) = if let Some(r) = rest.strip_prefix('$') {
            rest = r;
            continue;
        } else if let Some(r) = rest.strip_prefix('{') {
            let Some(end) = r.find('}') else {
                return Err("has a \"${\" without '}'".into());
            };
            let name = &r[..end];
            rest = &r[end + 1..];
            (name, format!("${{{name}}}"))
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            rest = &rest[end..];
            (name, format!("${name}"))
        };
        if name.is_empty() {
            return Err(
                "has a '$' that names no group; write $1 or ${name} for a group, $$ for a '$'"
                    .into(),
            );
        }
        let Some(re) = re else { continue };
        let exists = match name.parse::<usize>() {
            Ok(n) => n < re.captures_len(),
            Err(_) => re.capture_names().flatten().any(|n| n == name),
        };
        if !exists {
            let digits = name.bytes().take_while(u8::is_ascii_digit).count();
            let hint = if digits > 0 && digits < name.len() {
                format!(
                    "; write ${{{}}}{} for group {} followed by {:?}",
                    &name[..digits],
                    &name[digits..],
                    &name[..digits],
                    &name[digits..]
                )
            } else {
                String::new()
            };
            return Err(format!(
                "{written} names no group of `from` (it has {} numbered group(s){}){hint}",
                re.captures_len() - 1,
                match re.capture_names().flatten().collect::<Vec<_>>() {
                    names if names.is_empty() => String::new(),
                    names => format!(" and named {}", names.join(", ")),
                }
            ));
        }
    }
    Ok(())
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): each connection's own, managed by
/// the proxy in both directions.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
];

/// Client-address headers the proxy writes or passes only from trusted proxies.
const FORWARDING: [&str; 6] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
];

/// Why `name` (lower case) may not be edited on `side`, if it may not.
fn reserved(name: &str, side: Side) -> Option<String> {
    if HOP_BY_HOP.contains(&name) {
        return Some("is a hop-by-hop header: the proxy manages it on each connection".into());
    }
    if name == "content-length" {
        return Some("is set by the proxy from the body's framing".into());
    }
    if side == Side::Request {
        if name == "host" {
            return Some("is the host the request was routed by and is passed on as it is".into());
        }
        if FORWARDING.contains(&name) {
            return Some(
                "is written by the proxy from the client's address (see trusted_proxies)".into(),
            );
        }
    }
    None
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn edits_rules(e: &HeaderEdits, side: Side, path: &Path, p: &mut Problems) {
    if e.set.is_empty() && e.add.is_empty() && e.remove.is_empty() {
        p.add(path, "set, add or remove at least one header");
    }
    let mut seen = HashSet::new();
    let mut name_rules = |name: &str, at: &Path, p: &mut Problems| {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            p.add(at, format!("{name:?} is not a valid header name"));
            return;
        }
        let lower = name.to_ascii_lowercase();
        if let Some(why) = reserved(&lower, side) {
            p.add(at, format!("{name} {why}"));
        } else if !seen.insert(lower) {
            p.add(
                at,
                "header named more than once (set, add and remove take each header once; names are case-insensitive)",
            );
        }
    };
    for (op, fields) in [("set", &e.set), ("add", &e.add)] {
        for f in fields {
            let at = path.key(op).key(&f.name);
            name_rules(&f.name, &at, p);
            if !f
                .value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
            {
                p.add(&at, "value may only contain visible ASCII, spaces and tabs");
            } else if f.value.trim_matches([' ', '\t']).len() != f.value.len() {
                p.add(&at, "value must not start or end with spaces or tabs");
            }
        }
    }
    for (i, name) in e.remove.iter().enumerate() {
        name_rules(name, &path.key("remove").index(i), p);
    }
}

fn redirect(r: &Redirect, path: &Path, p: &mut Problems) {
    if !REDIRECT_STATUSES.contains(&r.status) {
        p.add(
            &path.key("status"),
            format!(
                "{} is not a redirect status; expected one of: 301, 302, 303, 307, 308",
                r.status
            ),
        );
    }
    let at = path.key("to");
    if r.to.is_empty() {
        p.add(&at, "must not be empty");
        return;
    }
    let pieces = match redirect_template(&r.to) {
        Ok(pieces) => pieces,
        Err(e) => {
            p.add(&at, format!("{:?} {e}", r.to));
            return;
        }
    };
    let mut sample = String::new();
    for piece in &pieces {
        match piece {
            Piece::Text(t) => {
                if !t.bytes().all(|b| b.is_ascii_graphic()) {
                    p.add(
                        &at,
                        format!(
                            "{:?} may only contain visible ASCII without spaces (percent-encode the rest)",
                            r.to
                        ),
                    );
                    return;
                }
                sample.push_str(t);
            }
            Piece::Value(v) => sample.push_str(match v {
                Placeholder::Scheme => "https",
                Placeholder::Host => "example.com",
                Placeholder::Path => "/p",
                Placeholder::Query => "q=1",
                Placeholder::QueryWithMark => "?q=1",
                Placeholder::Uri => "/p?q=1",
            }),
        }
    }
    let relative = sample.starts_with('/') && !sample.starts_with("//");
    // The URL parser forgives `https:///x`; a Location header should not need to.
    let absolute = !sample.contains(":///")
        && url::Url::parse(&sample).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
    if !relative && !absolute {
        p.add(
            &at,
            format!(
                "{:?} must be an absolute http(s) URL such as \"https://{{host}}{{uri}}\" or a path starting with '/'",
                r.to
            ),
        );
    }
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
    fn replacement_references_must_name_groups() {
        let re = path_regex("^/v1/(?P<rest>.*)$").expect("compiles");
        for ok in ["/v2/$1", "/v2/${1}x", "/v2/${rest}", "/v2/$rest", "/$$/$0"] {
            assert_eq!(replacement_refs(ok, Some(&re)), Ok(()), "{ok}");
        }
        let err = replacement_refs("/v2/$1a", Some(&re)).unwrap_err();
        assert!(err.contains("write ${1}a"), "{err}");
        assert!(replacement_refs("/v2/$2", Some(&re))
            .unwrap_err()
            .contains("1 numbered group(s) and named rest"));
        assert!(replacement_refs("/v2/$/", Some(&re))
            .unwrap_err()
            .contains("$$ for a '$'"));
        assert!(replacement_refs("/v2/${1", Some(&re))
            .unwrap_err()
            .contains("without '}'"));
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
