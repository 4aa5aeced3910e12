//! Route matching: which upstream serves a request, by host, path prefix and
//! headers. Routes are tried in the order written; the first match wins. With
//! no routes configured, everything goes to the first upstream.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use isame_proto::config::Route;
use std::sync::{Arc, Mutex, PoisonError};

/// A host pattern, lower-cased.
#[derive(Debug, Clone)]
enum HostMatch {
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches any subdomain, not the apex.
    Suffix(String),
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

/// One compiled route.
#[derive(Debug, Clone)]
struct CompiledRoute {
    host: Option<HostMatch>,
    prefix: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    cookies: Vec<(String, String)>,
    upstream: usize,
    /// A weighted split between upstreams, instead of `upstream`.
    split: Option<Arc<Split>>,
    /// Position of the route in the config's `routes`.
    index: usize,
}

/// A route's split: upstream indices with weights, shared out by smooth
/// weighted round robin (exact over every window of sum(weights) requests).
#[derive(Debug)]
struct Split {
    targets: Vec<(usize, i64)>,
    current: Mutex<Vec<i64>>,
}

impl Split {
    fn pick(&self) -> usize {
        let mut cw = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = 0;
        let mut best = 0;
        for (i, &(_, w)) in self.targets.iter().enumerate() {
            cw[i] += w;
            total += w;
            if cw[i] > cw[best] {
                best = i;
            }
        }
        cw[best] -= total;
        self.targets[best].0
    }
}

/// The routing table of one snapshot.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<CompiledRoute>,
}

/// Strips the port and a trailing dot from a Host value: `Shop.example.:8080` → `Shop.example`.
pub fn host_without_port(host: &str) -> &str {
    let h = if host.starts_with('[') {
        // IPv6 literal: keep it with its brackets, drop a port after them.
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    h.strip_suffix('.').unwrap_or(h)
}

/// True when `path` is under `prefix` on a segment boundary.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/')
}

impl Router {
    /// Compiles routes; `upstream_index` resolves an upstream name (validation
    /// guarantees every name resolves).
    pub fn new(routes: &[Route], upstream_index: impl Fn(&str) -> Option<usize>) -> Self {
        let mut compiled = Vec::with_capacity(routes.len());
        for (index, r) in routes.iter().enumerate() {
            let split = (!r.split.is_empty()).then(|| {
                let targets: Vec<(usize, i64)> = r
                    .split
                    .iter()
                    .filter(|s| s.weight > 0)
                    .filter_map(|s| Some((upstream_index(&s.upstream)?, i64::from(s.weight))))
                    .collect();
                Arc::new(Split {
                    current: Mutex::new(vec![0; targets.len()]),
                    targets,
                })
            });
            let first = split.as_ref().and_then(|s| s.targets.first().map(|t| t.0));
            let Some(upstream) = first.or_else(|| upstream_index(&r.upstream)) else {
                continue;
            };
            compiled.push(CompiledRoute {
                host: r.host.as_ref().map(|h| match h.strip_prefix('*') {
                    Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
                    None => HostMatch::Exact(h.to_ascii_lowercase()),
                }),
                prefix: r.path_prefix.clone().filter(|p| p != "/"),
                headers: r
                    .headers
                    .iter()
                    .filter_map(|h| {
                        Some((
                            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                            HeaderValue::from_str(&h.value).ok()?,
                        ))
                    })
                    .collect(),
                cookies: r
                    .cookies
                    .iter()
                    .map(|c| (c.name.clone(), c.value.clone()))
                    .collect(),
                upstream,
                split,
                index,
            });
        }
        Self { routes: compiled }
    }

    /// Where a request goes; `None` when routes exist and none matches.
    pub fn pick(&self, host: Option<&str>, path: &str, headers: &HeaderMap) -> Option<Match> {
        if self.routes.is_empty() {
            return Some(Match {
                upstream: 0,
                route: None,
            });
        }
        let host = host.map(host_without_port);
        self.routes
            .iter()
            .find(|r| {
                r.host
                    .as_ref()
                    .is_none_or(|m| host.is_some_and(|h| m.matches(h)))
                    && r.prefix.as_deref().is_none_or(|p| prefix_matches(p, path))
                    && r.headers
                        .iter()
                        .all(|(n, v)| headers.get_all(n).iter().any(|have| have == v))
                    && r.cookies
                        .iter()
                        .all(|(n, v)| crate::affinity::cookie(headers, n) == Some(v.as_bytes()))
            })
            .map(|r| Match {
                upstream: r.split.as_ref().map_or(r.upstream, |s| s.pick()),
                route: Some(r.index),
            })
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Index of the upstream.
    pub upstream: usize,
    /// Index of the route that matched (none when no routes are configured).
    pub route: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use isame_proto::config::HeaderMatch;

    fn route(
        name: &str,
        host: Option<&str>,
        prefix: Option<&str>,
        headers: &[(&str, &str)],
        upstream: &str,
    ) -> Route {
        Route {
            name: name.into(),
            host: host.map(Into::into),
            path_prefix: prefix.map(Into::into),
            headers: headers
                .iter()
                .map(|(n, v)| HeaderMatch {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            upstream: upstream.into(),
            cookies: Vec::new(),
            split: Vec::new(),
            rate_limit: None,
            retry: None,
            mirror: None,
            middleware: Vec::new(),
        }
    }

    #[test]
    fn a_split_is_exact_over_every_window() {
        use isame_proto::config::Split;
        let mut r = route("s", None, None, &[], "");
        r.split = vec![
            Split {
                upstream: "web".into(),
                weight: 9,
            },
            Split {
                upstream: "canary".into(),
                weight: 1,
            },
            Split {
                upstream: "api".into(),
                weight: 0,
            },
        ];
        let router = router(&[r]);
        let picks: Vec<usize> = (0..100)
            .map(|_| {
                router
                    .pick(None, "/", &HeaderMap::new())
                    .expect("match")
                    .upstream
            })
            .collect();
        for window in picks.chunks(10) {
            assert_eq!(window.iter().filter(|&&u| u == 2).count(), 1, "{picks:?}");
            assert_eq!(window.iter().filter(|&&u| u == 0).count(), 9, "{picks:?}");
        }
    }

    fn router(routes: &[Route]) -> Router {
        let ups = ["web", "api", "canary", "wild"];
        Router::new(routes, |n| ups.iter().position(|u| *u == n))
    }

    #[test]
    fn no_routes_means_first_upstream() {
        assert_eq!(
            router(&[]).pick(None, "/x", &HeaderMap::new()),
            Some(Match {
                upstream: 0,
                route: None
            })
        );
    }

    #[test]
    fn first_match_in_order_wins() {
        let mut canary = HeaderMap::new();
        canary.insert("x-canary", HeaderValue::from_static("1"));
        let r = router(&[
            route("canary", None, Some("/api"), &[("X-Canary", "1")], "canary"),
            route("api", Some("api.example.com"), Some("/api"), &[], "api"),
            route("wild", Some("*.example.com"), None, &[], "wild"),
            route("rest", None, Some("/"), &[], "web"),
        ]);
        let h = HeaderMap::new();
        assert_eq!(
            r.pick(Some("api.example.com"), "/api/users", &canary)
                .map(|x| x.upstream),
            Some(2)
        );
        assert_eq!(
            r.pick(Some("API.Example.com:8080"), "/api", &h)
                .map(|x| x.upstream),
            Some(1)
        );
        assert_eq!(
            r.pick(Some("api.example.com"), "/apix", &h)
                .map(|x| x.upstream),
            Some(3)
        );
        assert_eq!(
            r.pick(Some("img.example.com"), "/a", &h),
            Some(Match {
                upstream: 3,
                route: Some(2)
            })
        );
        assert_eq!(
            r.pick(Some("example.com"), "/a", &h).map(|x| x.upstream),
            Some(0)
        );
        assert_eq!(r.pick(None, "/a", &h).map(|x| x.upstream), Some(0));
    }

    #[test]
    fn unmatched_request_has_no_route() {
        let r = router(&[route("api", None, Some("/api"), &[], "api")]);
        assert_eq!(r.pick(None, "/other", &HeaderMap::new()), None);
        assert_eq!(
            r.pick(None, "/api/", &HeaderMap::new()).map(|x| x.upstream),
            Some(1)
        );
    }

    #[test]
    fn prefix_segments() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(!prefix_matches("/api", "/apiv1"));
        assert!(prefix_matches("/api/", "/api/v1"));
        assert!(!prefix_matches("/api/", "/api"));
    }

    proptest::proptest! {
        #[test]
        fn host_parsing_never_panics(host in "\\PC{0,40}", path in "\\PC{0,40}") {
            let _ = host_without_port(&host);
            let r = router(&[route("a", Some("*.example.com"), Some("/a"), &[], "web")]);
            let _ = r.pick(Some(&host), &path, &HeaderMap::new());
        }
    }

    #[test]
    fn host_ports_are_ignored() {
        assert_eq!(host_without_port("["), "[");
        assert_eq!(host_without_port("[::1"), "[::1");
        assert_eq!(host_without_port("a.example:80"), "a.example");
        assert_eq!(host_without_port("a.example."), "a.example");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("a.example"), "a.example");
    }
}
