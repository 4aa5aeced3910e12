//! `strip_prefix`: removes a path prefix on segment boundaries, so that a
//! backend mounted at `/` can serve a route under `/api`.

use super::{Flow, Middleware, RequestParts};

/// Removes `prefix` from paths that are it or lie under it: with `/api`,
/// `/api/users` becomes `/users`, `/api` and `/api/` become `/`; `/apix`
/// and paths elsewhere pass unchanged. The query string is kept.
#[derive(Debug)]
pub struct StripPrefix {
    prefix: Box<str>,
}

impl StripPrefix {
    /// A step stripping `prefix` (validated: starts with '/', no trailing '/').
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }
}

/// What is left of `path` once `prefix` is stripped, when it applies.
fn strip<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

impl Middleware for StripPrefix {
    fn on_request(&self, req: &mut RequestParts<'_>) -> Flow {
        let Some(rest) = strip(&self.prefix, req.path()) else {
            return Flow::Continue;
        };
        let room = rest.len() + req.query().map_or(0, |q| q.len() + 1);
        let mut path = String::with_capacity(room);
        path.push_str(rest);
        match req.set_path(path) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Reject(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_on_segment_boundaries_only() {
        for (path, stripped) in [
            ("/api", Some("/")),
            ("/api/", Some("/")),
            ("/api/users", Some("/users")),
            ("/api//x", Some("//x")),
            ("/apix", None),
            ("/other/api", None),
            ("/", None),
        ] {
            assert_eq!(strip("/api", path), stripped, "{path}");
        }
        assert_eq!(strip("/a/b", "/a/b/c"), Some("/c"));
        assert_eq!(strip("/a/b", "/a/bc"), None);
    }

    #[test]
    fn keeps_the_query_string() {
        let (mut head, ()) = http::Request::get("/api?x=1")
            .body(())
            .expect("request")
            .into_parts();
        let flow = StripPrefix::new("/api").on_request(&mut RequestParts {
            head: &mut head,
            scheme: "http",
            host: None,
        });
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(head.uri, "/?x=1");
    }
}
