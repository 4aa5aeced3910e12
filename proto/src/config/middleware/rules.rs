//! The rules a route's middleware list must satisfy, each reported with its path.

use super::{
    path_regex, redirect_template, HeaderEdits, Middleware, Piece, Placeholder, Redirect,
    RewritePath, REDIRECT_STATUSES,
};
use crate::config::errors::{Path, Problems};
use std::collections::HashSet;

/// Which way a header edit works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

/// Checks one route's middleware list.
pub(in crate::config) fn validate(list: &[Middleware], path: &Path, p: &mut Problems) {
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
/// the proxy in both directions. (The data plane's fast matcher is tested
/// against this list.)
pub const HOP_BY_HOP: [&str; 9] = [
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
}
