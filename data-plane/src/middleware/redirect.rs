//! `redirect`: answers with a redirect built from a template, without
//! calling the backend.

use super::{Flow, Middleware, RequestParts};
use crate::error::ProxyError;
use crate::route::host_without_port;
use bytes::Bytes;
use http::header::{HeaderValue, LOCATION};
use http::{Response, StatusCode};
use isame_proto::config::middleware::{redirect_template, Piece, Placeholder};
use isame_proto::config::Redirect as Config;

/// A part of the target, parsed once.
#[derive(Debug)]
enum Part {
    Text(Box<str>),
    Value(Placeholder),
}

/// Answers `status` with `Location` filled in from the request: `{scheme}`,
/// `{host}` (without port), `{path}` (as earlier steps left it), `{query}`
/// (without `?`), `{?query}` (with `?`, or nothing) and `{uri}` (path and
/// `{?query}`). The body is empty.
#[derive(Debug)]
pub struct Redirect {
    parts: Box<[Part]>,
    text_len: usize,
    status: StatusCode,
}

impl Redirect {
    /// Parses the template.
    pub fn new(c: &Config) -> Result<Self, String> {
        let parts: Box<[Part]> = redirect_template(&c.to)?
            .into_iter()
            .map(|p| match p {
                Piece::Text(t) => Part::Text(t.into()),
                Piece::Value(v) => Part::Value(v),
            })
            .collect();
        let text_len = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Value(_) => 0,
            })
            .sum();
        Ok(Self {
            parts,
            text_len,
            status: StatusCode::from_u16(c.status)
                .ok()
                .filter(StatusCode::is_redirection)
                .ok_or_else(|| format!("{} is not a redirect status", c.status))?,
        })
    }

    /// The `Location` for a request, or why there is none.
    fn location(&self, req: &RequestParts<'_>) -> Result<HeaderValue, ProxyError> {
        let (path, query) = (req.path(), req.query());
        let mut out =
            String::with_capacity(self.text_len + path.len() + query.map_or(0, str::len) + 64);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Value(Placeholder::Scheme) => out.push_str(req.scheme),
                Part::Value(Placeholder::Host) => {
                    let host = req
                        .host
                        .ok_or(ProxyError::BadRequest("no host to redirect to"))?;
                    out.push_str(host_without_port(host));
                }
                Part::Value(Placeholder::Path) => out.push_str(path),
                Part::Value(Placeholder::Query) => out.push_str(query.unwrap_or("")),
                Part::Value(Placeholder::QueryWithMark) => push_query(&mut out, query),
                Part::Value(Placeholder::Uri) => {
                    out.push_str(path);
                    push_query(&mut out, query);
                }
            }
        }
        // A relative target must stay on this site: a request path such as
        // `//evil.example/x` would otherwise make `//evil.example/x`, which
        // browsers read as another host.
        if out.starts_with('/') && out[1..].starts_with(['/', '\\']) {
            let rest = out.trim_start_matches(['/', '\\']).to_owned();
            out.clear();
            out.push('/');
            out.push_str(&rest);
        }
        HeaderValue::try_from(out)
            .map_err(|_| ProxyError::BadRequest("redirect target is not a valid header value"))
    }
}

fn push_query(out: &mut String, query: Option<&str>) {
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
}

impl Middleware for Redirect {
    fn on_request(&self, req: &mut RequestParts<'_>) -> Flow {
        match self.location(req) {
            Ok(location) => {
                let mut resp = Response::new(Bytes::new());
                *resp.status_mut() = self.status;
                resp.headers_mut().insert(LOCATION, location);
                Flow::Respond(resp)
            }
            Err(e) => Flow::Reject(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(to: &str, target: &str, host: Option<&str>) -> Result<String, ProxyError> {
        let r = Redirect::new(&Config {
            to: to.into(),
            status: 301,
        })
        .expect("valid");
        let (mut head, ()) = http::Request::get(target)
            .body(())
            .expect("request")
            .into_parts();
        let req = RequestParts {
            head: &mut head,
            scheme: "https",
            host,
        };
        r.location(&req)
            .map(|v| v.to_str().unwrap_or("?").to_owned())
    }

    #[test]
    fn placeholders_are_filled_from_the_request() {
        let host = Some("Shop.example:8443");
        let all = "{scheme}|{host}|{path}|{query}|{?query}|{uri}";
        assert_eq!(
            location(all, "/a/b?x=1&y=2", host).expect("fills"),
            "https|Shop.example|/a/b|x=1&y=2|?x=1&y=2|/a/b?x=1&y=2"
        );
        assert_eq!(
            location(all, "/a", host).expect("fills"),
            "https|Shop.example|/a|||/a"
        );
        assert_eq!(
            location("https://[::1]{uri}", "/", Some("[::1]:80")).expect("fills"),
            "https://[::1]/"
        );
    }

    #[test]
    fn a_host_placeholder_needs_a_host() {
        assert!(matches!(
            location("https://{host}/", "/", None),
            Err(ProxyError::BadRequest(_))
        ));
        assert_eq!(
            location("/fixed", "/", None).expect("no host needed"),
            "/fixed"
        );
    }

    #[test]
    fn relative_targets_stay_on_this_site() {
        for (target, expected) in [
            ("//evil.example/x", "/evil.example/x"),
            ("/\\evil.example", "/evil.example"),
            ("///a?b=1", "/a?b=1"),
            ("/ok", "/ok"),
        ] {
            assert_eq!(
                location("{uri}", target, None).expect("fills"),
                expected,
                "{target}"
            );
        }
        // An absolute target keeps the path as it is: the host is fixed.
        assert_eq!(
            location("https://shop.example{path}", "//x", None).expect("fills"),
            "https://shop.example//x"
        );
    }
}
