//! `rewrite_path`: replaces the path when a regular expression matches it,
//! like nginx's `rewrite` (without its flags).

use super::{Flow, Middleware, RequestParts};
use isame_proto::config::{middleware::path_regex, RewritePath as Config};
use regex::Regex;

/// When `from` matches the path (anywhere in it, unless anchored), the whole
/// path becomes `to` with `$1`, `${1}`, `${name}` replaced by the groups
/// captured (`$$` is a `$`). The query string is kept; a path `from` does
/// not match passes unchanged.
#[derive(Debug)]
pub struct RewritePath {
    from: Regex,
    to: Box<str>,
}

impl RewritePath {
    /// Compiles `from`, with the same bounds validation applied.
    pub fn new(c: &Config) -> Result<Self, String> {
        Ok(Self {
            from: path_regex(&c.from)?,
            to: c.to.as_str().into(),
        })
    }

    /// The new path for `path`, when `from` matches it.
    fn rewrite(&self, path: &str, room: usize) -> Option<String> {
        let caps = self.from.captures(path)?;
        let mut out = String::with_capacity(self.to.len() + room);
        caps.expand(&self.to, &mut out);
        Some(out)
    }
}

impl Middleware for RewritePath {
    fn on_request(&self, req: &mut RequestParts<'_>) -> Flow {
        let room = req.path().len() + req.query().map_or(0, |q| q.len() + 1);
        let Some(path) = self.rewrite(req.path(), room) else {
            return Flow::Continue;
        };
        match req.set_path(path) {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Reject(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(from: &str, to: &str, path: &str) -> Option<String> {
        RewritePath::new(&Config {
            from: from.into(),
            to: to.into(),
        })
        .expect("compiles")
        .rewrite(path, 0)
    }

    #[test]
    fn the_whole_path_becomes_the_replacement() {
        assert_eq!(
            rewrite("^/v1/(.*)$", "/v2/$1", "/v1/users/7").as_deref(),
            Some("/v2/users/7")
        );
        assert_eq!(
            rewrite("^/(?P<id>[0-9]+)/(.*)$", "/items/${id}/${2}x", "/42/a/b").as_deref(),
            Some("/items/42/a/bx")
        );
        // Unanchored: a match anywhere replaces the whole path, as in nginx.
        assert_eq!(rewrite("old", "/new", "/a/old/b").as_deref(), Some("/new"));
        assert_eq!(rewrite("^/v1/", "/v2/", "/v2/x"), None);
        assert_eq!(rewrite("^/(.*)$", "/$$/$1", "/x").as_deref(), Some("/$/x"));
    }
}
