//! Per-route middleware: small steps a route applies to a request on its way
//! to the backend, and to the response on its way back.
//!
//! A route's list is compiled once per snapshot into a [`Chain`] (regexes,
//! header names and values, redirect templates are all parsed then), so a
//! request pays only for the work each step does. A route without middleware
//! costs one emptiness check.
//!
//! Order: requests pass the steps in the order written; the first step that
//! answers ([`Flow::Respond`], [`Flow::Reject`]) ends the walk and the backend
//! is not called. Responses pass back, like the layers of an onion, through
//! every step the request passed, in reverse order. That holds for the
//! backend's responses and for the errors the proxy answers itself once the
//! route's middleware ran (502, 503, 504, ...); a request refused before
//! them (no route, rate limited) never entered the chain.
//!
//! Adding a middleware: a file here with a type implementing [`Middleware`],
//! a variant of `isame_proto::config::Middleware` with its reader and rules
//! (`proto/src/config/middleware/`) and protobuf form, and one arm in
//! [`Chain::compile`].

mod headers;
mod redirect;
mod rewrite;
mod strip_prefix;

use crate::error::ProxyError;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Response, Uri};
use isame_proto::config::{self, ConfigError};
use std::fmt;

/// What a middleware sees of a request, and may change.
pub struct RequestParts<'a> {
    /// Method, target and headers as the backend will get them (the proxy's
    /// own forwarding headers are added when the head is written).
    pub head: &'a mut Parts,
    /// `http` or `https`, as the client connected.
    pub scheme: &'static str,
    /// The host the request was routed by, port included when one was sent.
    pub host: Option<&'a str>,
}

impl RequestParts<'_> {
    /// The path, without the query string.
    pub fn path(&self) -> &str {
        self.head.uri.path()
    }

    /// The query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.head.uri.query()
    }

    /// Replaces the path and keeps the query string. `path` becomes the new
    /// target's buffer: give it room for the query to avoid a reallocation.
    pub fn set_path(&mut self, mut path: String) -> Result<(), ProxyError> {
        if let Some(q) = self.head.uri.query() {
            path.push('?');
            path.push_str(q);
        }
        let invalid = || ProxyError::BadRequest("rewritten path is not a valid path");
        let path_and_query = path.try_into().map_err(|_| invalid())?;
        let mut parts = std::mem::take(&mut self.head.uri).into_parts();
        parts.path_and_query = Some(path_and_query);
        // Scheme and authority are the request's own, so they still fit.
        self.head.uri = Uri::from_parts(parts).map_err(|_| invalid())?;
        Ok(())
    }
}

/// What happens to a request after a middleware saw it.
#[derive(Debug)]
pub enum Flow {
    /// On to the next middleware, then the backend.
    Continue,
    /// Answer the client with this response; the backend is not called.
    Respond(Response<Bytes>),
    /// Answer with the proxy's error response for this error.
    Reject(ProxyError),
}

/// One step of a route's middleware. Both phases default to doing nothing.
pub trait Middleware: Send + Sync + fmt::Debug {
    /// Sees the request on its way to the backend, in the order written.
    fn on_request(&self, _req: &mut RequestParts<'_>) -> Flow {
        Flow::Continue
    }

    /// Sees the response headers on their way to the client, in reverse
    /// order, when this step passed the request on.
    fn on_response(&self, _headers: &mut HeaderMap) {}
}

/// How many steps of a chain passed a request on; the response goes back
/// through exactly those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passed(usize);

/// A route's middleware, compiled.
#[derive(Debug, Default)]
pub struct Chain {
    steps: Box<[Box<dyn Middleware>]>,
}

impl Chain {
    /// Compiles a route's list; `at` is its path in the config
    /// (`routes[0].middleware`), for errors.
    pub fn compile(list: &[config::Middleware], at: &str) -> Result<Chain, ConfigError> {
        let mut steps: Vec<Box<dyn Middleware>> = Vec::with_capacity(list.len());
        for (i, m) in list.iter().enumerate() {
            let path = format!("{at}[{i}].{}", m.name());
            let fail = |field: &str| {
                let path = if field.is_empty() {
                    path.clone()
                } else {
                    format!("{path}.{field}")
                };
                move |e: String| ConfigError::new(path, e)
            };
            steps.push(match m {
                config::Middleware::StripPrefix(prefix) => {
                    Box::new(strip_prefix::StripPrefix::new(prefix))
                }
                config::Middleware::RewritePath(r) => {
                    Box::new(rewrite::RewritePath::new(r).map_err(fail("from"))?)
                }
                config::Middleware::RequestHeaders(e) => {
                    Box::new(headers::RequestHeaders::new(e).map_err(fail(""))?)
                }
                config::Middleware::ResponseHeaders(e) => {
                    Box::new(headers::ResponseHeaders::new(e).map_err(fail(""))?)
                }
                config::Middleware::Redirect(r) => {
                    Box::new(redirect::Redirect::new(r).map_err(fail("to"))?)
                }
            });
        }
        Ok(Chain {
            steps: steps.into_boxed_slice(),
        })
    }

    /// True when the route has no middleware.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Passes the request through each step in order until one answers.
    /// Returns how many passed it on, and [`Flow::Continue`] when all did.
    pub fn request(&self, req: &mut RequestParts<'_>) -> (Passed, Flow) {
        for (i, step) in self.steps.iter().enumerate() {
            match step.on_request(req) {
                Flow::Continue => {}
                answer => return (Passed(i), answer),
            }
        }
        (Passed(self.steps.len()), Flow::Continue)
    }

    /// Passes response headers back through the steps that passed the
    /// request on, last first.
    pub fn response(&self, passed: Passed, headers: &mut HeaderMap) {
        for step in self.steps[..passed.0].iter().rev() {
            step.on_response(headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isame_proto::config::{HeaderEdits, HeaderField, Redirect, RewritePath};

    fn parts(target: &str) -> Parts {
        http::Request::get(target)
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    fn set(name: &str, value: &str) -> HeaderEdits {
        HeaderEdits {
            set: vec![HeaderField {
                name: name.into(),
                value: value.into(),
            }],
            ..HeaderEdits::default()
        }
    }

    #[test]
    fn an_answer_stops_the_walk_and_only_earlier_steps_see_the_response() {
        let chain = Chain::compile(
            &[
                config::Middleware::ResponseHeaders(set("x-first", "1")),
                config::Middleware::StripPrefix("/api".into()),
                config::Middleware::Redirect(Redirect {
                    to: "/moved{path}".into(),
                    status: 308,
                }),
                config::Middleware::ResponseHeaders(set("x-after", "1")),
            ],
            "routes[0].middleware",
        )
        .expect("compiles");
        let mut head = parts("/api/x?q=1");
        let (passed, flow) = chain.request(&mut RequestParts {
            head: &mut head,
            scheme: "http",
            host: Some("a.example"),
        });
        assert_eq!(passed, Passed(2));
        let Flow::Respond(mut resp) = flow else {
            panic!("redirect answers: {flow:?}")
        };
        assert_eq!(resp.status(), 308);
        assert_eq!(resp.headers()["location"], "/moved/x");
        chain.response(passed, resp.headers_mut());
        assert!(resp.headers().contains_key("x-first"));
        assert!(!resp.headers().contains_key("x-after"));
    }

    #[test]
    fn responses_pass_back_in_reverse_order() {
        let chain = Chain::compile(
            &[
                config::Middleware::ResponseHeaders(set("x-v", "outer")),
                config::Middleware::ResponseHeaders(set("x-v", "inner")),
            ],
            "routes[0].middleware",
        )
        .expect("compiles");
        let mut head = parts("/");
        let (passed, flow) = chain.request(&mut RequestParts {
            head: &mut head,
            scheme: "http",
            host: None,
        });
        assert!(matches!(flow, Flow::Continue));
        let mut h = HeaderMap::new();
        chain.response(passed, &mut h);
        assert_eq!(h["x-v"], "outer", "the first written has the last word");
    }

    #[test]
    fn set_path_keeps_the_query_and_the_authority() {
        let mut head = parts("http://a.example/old?x=1&y");
        let mut req = RequestParts {
            head: &mut head,
            scheme: "http",
            host: None,
        };
        req.set_path("/new/path".into()).expect("valid");
        assert_eq!(head.uri.to_string(), "http://a.example/new/path?x=1&y");
        let mut head = parts("/old");
        let mut req = RequestParts {
            head: &mut head,
            scheme: "http",
            host: None,
        };
        req.set_path("/new".into()).expect("valid");
        assert!(req.set_path("/a b".into()).is_err());
        assert_eq!(
            head.uri.to_string(),
            "/new",
            "a failed rewrite changes nothing"
        );
    }

    #[test]
    fn compile_errors_carry_the_path() {
        let err = Chain::compile(
            &[
                config::Middleware::StripPrefix("/a".into()),
                config::Middleware::RewritePath(RewritePath {
                    from: "(".into(),
                    to: "/".into(),
                }),
            ],
            "routes[3].middleware",
        )
        .unwrap_err();
        assert_eq!(err.path, "routes[3].middleware[1].rewrite_path.from");
    }
}
