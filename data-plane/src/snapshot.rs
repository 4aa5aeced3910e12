//! The compiled, immutable form of a config that the request path reads.
//!
//! A reload compiles a complete new [`Snapshot`] off the request path and
//! swaps it in with one atomic store ([`Shared::install`]); a request loads the
//! snapshot once when it starts and uses it to the end. Backend state
//! (in-flight counts, and through the backend id the connection pools) is
//! carried into the new snapshot for every backend that did not change.

use crate::backend::{Backend, BackendState, Target, Wire};
use crate::balancer::Balancer;
use crate::client_ip::TrustedProxies;
use crate::conn_timeouts::Timeouts;
use crate::metrics::Metrics;
use crate::middleware::Chain;
use crate::ratelimit::Limiter;
use crate::route::Router;
use crate::{breaker, health, retry, upstream};
use arc_swap::ArcSwap;
use isame_proto::config::{Algorithm, Config, ConfigError, ConfigErrors, ProxyVersion};
use prometheus::{Histogram, IntCounter, IntGauge};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// hyper refuses read buffers smaller than this; heads up to it always parse.
pub const MIN_HEAD_BUFFER: usize = 8192;

/// One upstream, compiled.
#[derive(Debug)]
pub struct UpstreamRt {
    /// Its name (the `upstream` metric label).
    pub name: String,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its backends, in config order.
    pub backends: Vec<Arc<Backend>>,
    /// Balancing state.
    pub balancer: Balancer,
    /// What its consistent hash is keyed on (`consistent_hash` only).
    pub hash_on: Option<isame_proto::config::HashOn>,
    /// Its sticky cookie.
    pub sticky: Option<crate::affinity::StickyRt>,
    /// Longest time to connect to a backend.
    pub connect_timeout: Duration,
    /// How long an idle connection to a backend is kept, in nanoseconds
    /// (0: connections are not reused).
    pub keepalive_nanos: u64,
    /// Longest time to a backend's response headers.
    pub response_timeout: Duration,
    /// `isame_lb_request_duration_seconds{upstream}`.
    pub duration: Histogram,
    /// Its traffic, for the control plane's reports.
    pub traffic: Arc<crate::traffic::Counters>,
    /// Active health checks of its backends.
    pub health: health::Settings,
    /// Its backends' circuit breakers.
    pub breaker: breaker::Settings,
    /// Passive outlier detection.
    pub outlier: crate::outlier::Detector,
    /// Slow start, in nanoseconds (0: off).
    pub slow_start: u64,
    /// When failed requests go again.
    pub retry: retry::Policy,
    /// `isame_lb_retries_total{upstream}`.
    pub retries: IntCounter,
    /// Its per-client rate limit.
    pub rate_limit: Option<Arc<Limiter>>,
    /// `isame_lb_rate_limited_total{upstream}`.
    pub rate_limited: IntCounter,
    /// Protocols its clients may upgrade to, lowercase.
    pub upgrades: Vec<String>,
    /// Longest silence on an upgraded connection.
    pub tunnel_idle_timeout: Duration,
    /// How long a departing backend's requests and tunnels may go on, in
    /// nanoseconds.
    pub drain_nanos: u64,
    /// `isame_lb_tunnels_active{upstream}`.
    pub tunnels_active: IntGauge,
    /// `isame_lb_tunnel_bytes_total{upstream,direction}`, in the order of
    /// [`crate::metrics::TUNNEL_DIRECTIONS`].
    pub tunnel_bytes: [IntCounter; 2],
    /// The PROXY protocol header its backend connections start with.
    pub send_proxy_protocol: Option<ProxyVersion>,
    /// True when some backend is spoken to in HTTP/2 (or may be): only
    /// then can it carry gRPC.
    pub speaks_h2: bool,
    /// `isame_lb_grpc_responses_total{upstream,grpc_status}`.
    pub grpc_statuses: Arc<crate::grpc::Statuses>,
}

impl UpstreamRt {
    /// True when backend `i` may take a request now: not draining, healthy,
    /// not ejected, and its breaker would let a request through.
    pub fn eligible(&self, i: usize, now: u64) -> bool {
        let b = &self.backends[i];
        let s = &b.state;
        !b.drain
            && s.health.is_healthy()
            && !s.outlier.is_ejected(now)
            && s.breaker.may_try(&self.breaker, now)
    }
}

/// Everything the request path needs, compiled from one config.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every config installed (`isame_lb_config_version`).
    pub generation: u64,
    /// The config this was compiled from.
    pub config: Arc<Config>,
    /// Upstreams in config order.
    pub upstreams: Vec<UpstreamRt>,
    /// Routing table.
    pub router: Router,
    /// Each route's per-client rate limit, by route index.
    pub route_limits: Vec<Option<Arc<Limiter>>>,
    /// Each route's middleware, by route index.
    pub middleware: Vec<Chain>,
    /// Each route's versions of its upstreams' retry policies, by route
    /// index (none: the upstreams' own apply).
    pub route_retry: Vec<Option<retry::RoutePolicies>>,
    /// Each route's mirror, by route index.
    pub mirrors: Vec<Option<crate::mirror::MirrorRt>>,
    /// Proxies whose forwarding headers are believed.
    pub trusted: TrustedProxies,
    /// Client connection timeouts.
    pub timeouts: Timeouts,
    /// Request heads larger than this get 431.
    pub max_header_bytes: usize,
    /// TLS termination, when enabled.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Answer plain HTTP with a redirect to HTTPS on this port.
    pub redirect_https: Option<u16>,
    /// PROXY protocol on the listeners.
    pub proxy_protocol: Option<Arc<crate::proxy_protocol::Inbound>>,
    /// Some upstream sends PROXY headers, so connections keep the address
    /// their client connected to.
    pub sends_proxy_protocol: bool,
}

impl Snapshot {
    /// Compiles `config`, carrying backend state over from `previous`.
    /// Fails, changing nothing, when the config cannot be served here.
    pub fn compile(
        config: Config,
        previous: Option<&Snapshot>,
        generation: u64,
        metrics: &Metrics,
        dns: &crate::dns::Dns,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut carried: HashMap<(&str, String), Arc<BackendState>> = HashMap::new();
        let mut budgets: HashMap<&str, Arc<retry::Budget>> = HashMap::new();
        let mut limits: HashMap<(&str, &str), Arc<Limiter>> = HashMap::new();
        if let Some(prev) = previous {
            for (r, l) in prev.config.routes.iter().zip(&prev.route_limits) {
                if let Some(l) = l {
                    limits.insert(("route", r.name.as_str()), l.clone());
                }
            }
            for u in &prev.upstreams {
                if let Some(l) = &u.rate_limit {
                    limits.insert(("upstream", u.name.as_str()), l.clone());
                }
                budgets.insert(u.name.as_str(), u.retry.budget.clone());
                for b in &u.backends {
                    carried.insert(
                        (u.name.as_str(), identity(&b.target, b.tls.as_ref(), b.wire)),
                        b.state.clone(),
                    );
                }
            }
        }
        let mut problems = Vec::new();
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for (i, u) in config.upstreams.iter().enumerate() {
            let at = format!("upstreams[{i}]");
            // One TLS client setup per upstream, built when a backend needs it.
            let mut client_tls: Option<Option<upstream::ClientTls>> = None;
            let mut backends = Vec::with_capacity(u.backends.len());
            for (j, b) in u.backends.iter().enumerate() {
                let path = format!("upstreams[{i}].backends[{j}].url");
                let target = match Target::parse(&b.url) {
                    Ok(t) => t,
                    Err(e) => {
                        problems.push(ConfigError::new(path, e.to_string()));
                        continue;
                    }
                };
                let tls = if target.tls {
                    let config = client_tls.get_or_insert_with(|| {
                        // Reported once per upstream, not once per backend.
                        upstream::client_config(u.tls.as_ref(), u.protocol, &at)
                            .map_err(|e| problems.push(e))
                            .ok()
                    });
                    let Some(config) = config.clone() else {
                        continue;
                    };
                    let name = match upstream::server_name(u.tls.as_ref(), &target.host, &path) {
                        Ok(n) => n,
                        Err(e) => {
                            problems.push(e);
                            continue;
                        }
                    };
                    Some(upstream::TlsTarget {
                        config: config.config,
                        h2: config.h2,
                        server_name: name,
                        trust: config.trust,
                    })
                } else {
                    None
                };
                let wire = Wire::of(&target, u.protocol);
                // A backend by host name stands for every address the name
                // has (none before its first answer); each is an endpoint.
                let endpoints: Vec<(Target, Option<Arc<str>>)> = if target.addr.is_some() {
                    vec![(target, None)]
                } else {
                    let source: Arc<str> = Arc::from(b.url.as_str());
                    dns.addresses(&target.host)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|ip| (target.at(ip), Some(source.clone())))
                        .collect()
                };
                for (target, source) in endpoints {
                    let url = match (&source, target.addr) {
                        (Some(_), Some(addr)) => {
                            let scheme = b.url.split_once("://").map_or("http", |(s, _)| s);
                            format!("{scheme}://{addr}")
                        }
                        _ => b.url.clone(),
                    };
                    // Two names with a shared address: one endpoint.
                    if source.is_some() && backends.iter().any(|e: &Arc<Backend>| e.url == url) {
                        continue;
                    }
                    let state = carried
                        .get(&(u.name.as_str(), identity(&target, tls.as_ref(), wire)))
                        .cloned()
                        .unwrap_or_else(|| {
                            let s = BackendState::new();
                            // A backend joining a running upstream ramps up
                            // (slow start); the upstream's first backends do not.
                            if upstream_existed(previous, &u.name) {
                                s.ramp_from.store(
                                    crate::clock::now_nanos(),
                                    std::sync::atomic::Ordering::Relaxed,
                                );
                            }
                            s
                        });
                    backends.push(Arc::new(Backend {
                        healthy_gauge: metrics.upstream_healthy.with_label_values(&[&u.name, &url]),
                        circuit_gauge: metrics.circuit_open.with_label_values(&[&u.name, &url]),
                        ejected_gauge: metrics.outlier_ejected.with_label_values(&[&u.name, &url]),
                        url,
                        source,
                        target,
                        weight: b.weight,
                        drain: b.drain,
                        state,
                        tls: tls.clone(),
                        wire,
                    }));
                }
            }
            let speaks_h2 = backends.iter().any(|b| b.wire != Wire::Http1);
            upstreams.push(UpstreamRt {
                speaks_h2,
                grpc_statuses: Arc::new(crate::grpc::Statuses::new(
                    metrics.grpc_responses.clone(),
                    &u.name,
                )),
                name: u.name.clone(),
                algorithm: u.algorithm,
                balancer: Balancer::new(u.algorithm, u.fallback_algorithm(), &backends),
                hash_on: (u.algorithm == Algorithm::ConsistentHash).then(|| u.hash_key()),
                sticky: u.sticky.as_ref().map(|s| {
                    crate::affinity::StickyRt::new(
                        s,
                        &u.name,
                        backends.iter().map(|b| b.url.as_str()),
                    )
                }),
                backends,
                connect_timeout: u.connect_timeout,
                keepalive_nanos: u64::try_from(u.keepalive_timeout.as_nanos()).unwrap_or(u64::MAX),
                response_timeout: u.response_timeout,
                duration: metrics.upstream_duration(&u.name),
                traffic: metrics.traffic.counters(&u.name),
                health: health::Settings {
                    proxy_protocol: u.send_proxy_protocol,
                    ..health::Settings::from_config(config.health_of(u))
                },
                breaker: breaker::Settings::from_config(config.breaker_of(u)),
                slow_start: u64::try_from(u.slow_start.as_nanos()).unwrap_or(u64::MAX),
                outlier: crate::outlier::Detector::new(
                    crate::outlier::Settings::from_config(u.outlier_detection.as_ref()),
                    metrics.outlier_ejections.clone(),
                ),
                retry: {
                    let r = config.retry_of(u);
                    // The budget's history carries over while its settings stay.
                    let budget = budgets
                        .get(u.name.as_str())
                        .filter(|b| b.matches(r.budget_percent, r.budget_min_per_second))
                        .cloned()
                        .unwrap_or_else(|| {
                            Arc::new(retry::Budget::new(
                                r.budget_percent,
                                r.budget_min_per_second,
                            ))
                        });
                    retry::Policy::new(r, budget)
                },
                retries: metrics.retries.with_label_values(&[&u.name]),
                rate_limit: limiter(&limits, ("upstream", &u.name), u.rate_limit.as_ref()),
                rate_limited: metrics.rate_limited.with_label_values(&[&u.name]),
                upgrades: u.upgrades.iter().map(|t| t.to_ascii_lowercase()).collect(),
                tunnel_idle_timeout: u.tunnel_idle_timeout,
                drain_nanos: u64::try_from(u.drain_timeout.as_nanos()).unwrap_or(u64::MAX),
                tunnels_active: metrics.tunnels_active.with_label_values(&[&u.name]),
                tunnel_bytes: crate::metrics::TUNNEL_DIRECTIONS.map(|d| {
                    metrics
                        .tunnel_bytes
                        .with_label_values(&[u.name.as_str(), d])
                }),
                send_proxy_protocol: u.send_proxy_protocol,
            });
        }
        let mut middleware = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            match Chain::compile(&r.middleware, &format!("routes[{i}].middleware")) {
                Ok(chain) => middleware.push(chain),
                Err(e) => problems.push(e),
            }
        }
        let tls = match crate::tls::server_config(&config.tls, std::time::SystemTime::now()) {
            Ok(t) => t,
            Err(mut e) => {
                problems.append(&mut e);
                None
            }
        };
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let router = Router::new(&config.routes, |name| {
            config.upstreams.iter().position(|u| u.name == name)
        });
        let route_retry = config
            .routes
            .iter()
            .map(|r| {
                let over = r.retry.as_ref()?;
                let names = std::iter::once(r.upstream.as_str())
                    .chain(r.split.iter().map(|s| s.upstream.as_str()));
                let targets = upstreams
                    .iter()
                    .enumerate()
                    .filter(|(_, u)| names.clone().any(|n| n == u.name))
                    .map(|(i, u)| (i, &u.retry));
                Some(retry::RoutePolicies::new(over, targets))
            })
            .collect();
        let mirrors = config
            .routes
            .iter()
            .map(|r| {
                let m = r.mirror.as_ref()?;
                let ui = upstreams.iter().position(|u| u.name == m.upstream)?;
                // The route's copies in flight and its share's count carry
                // over a reload, so neither limit restarts.
                let before = previous.and_then(|p| {
                    let i = p.config.routes.iter().position(|pr| pr.name == r.name)?;
                    p.mirrors[i].as_ref()
                });
                Some(crate::mirror::MirrorRt::new(
                    m,
                    &r.name,
                    (ui, &upstreams[ui]),
                    before,
                    &metrics.mirror_requests,
                ))
            })
            .collect();
        let route_limits = config
            .routes
            .iter()
            .map(|r| limiter(&limits, ("route", &r.name), r.rate_limit.as_ref()))
            .collect();
        let s = &config.server;
        let upstreams_send_proxy = upstreams.iter().any(|u| u.send_proxy_protocol.is_some());
        Ok(Snapshot {
            generation,
            router,
            route_limits,
            route_retry,
            mirrors,
            middleware,
            upstreams,
            trusted: TrustedProxies::new(config.trusted_proxies.clone()),
            timeouts: Timeouts {
                header_read: s.read_timeout,
                idle: s.idle_timeout,
                write_stall: s.write_timeout,
            },
            max_header_bytes: s.max_header_bytes as usize,
            redirect_https: (config.tls.enabled && config.tls.redirect_http)
                .then_some(s.https_port),
            tls,
            proxy_protocol: s
                .proxy_protocol
                .as_ref()
                .map(|p| Arc::new(crate::proxy_protocol::Inbound::new(p))),
            sends_proxy_protocol: upstreams_send_proxy,
            config: Arc::new(config),
        })
    }

    /// The size hyper's read buffer is capped at, so larger heads get 431.
    pub fn head_buffer(&self) -> usize {
        self.max_header_bytes.max(MIN_HEAD_BUFFER)
    }

    /// True when the backend id belongs to this snapshot.
    pub fn has_backend(&self, uid: u32) -> bool {
        self.upstreams
            .iter()
            .any(|u| u.backends.iter().any(|b| b.state.uid == uid))
    }
}

/// True when `previous` had an upstream named `name`.
fn upstream_existed(previous: Option<&Snapshot>, name: &str) -> bool {
    previous.is_some_and(|p| p.upstreams.iter().any(|u| u.name == name))
}

/// The limiter for a `rate_limit` section: the previous one while its
/// settings stay (clients keep their counts across a reload), else a new one.
fn limiter(
    previous: &HashMap<(&str, &str), Arc<Limiter>>,
    key: (&str, &str),
    rl: Option<&isame_proto::config::RateLimit>,
) -> Option<Arc<Limiter>> {
    let rl = rl.filter(|r| r.enabled)?;
    let settings = crate::ratelimit::Settings::from_config(rl);
    Some(
        previous
            .get(&key)
            .filter(|l| l.same_settings(settings))
            .cloned()
            .unwrap_or_else(|| Arc::new(Limiter::new(settings))),
    )
}

/// What makes two backends "the same" across a reload: everything a
/// connection to it depends on (scheme, host and port, and for TLS the name
/// verified and what is trusted). A backend that keeps its identity keeps
/// its state: health, breaker, in-flight count and, through its id, its
/// pooled connections and health probe; any change starts afresh.
fn identity(t: &Target, tls: Option<&upstream::TlsTarget>, wire: Wire) -> String {
    let scheme = match (t.tls, wire) {
        (true, Wire::Http1) => "https",
        (true, Wire::Http2) => "https+h2",
        (true, Wire::Auto) => "https+alpn",
        (false, Wire::Http1) => "http",
        (false, _) => "h2c",
    };
    // An endpoint of a name is known by its address too.
    let at = match t.addr {
        Some(a) if t.host.parse::<std::net::IpAddr>().is_err() => format!("@{a}"),
        _ => String::new(),
    };
    match tls {
        Some(tls) => format!("{scheme}://{}{at};{}", t.authority, tls.identity()),
        None => format!("{scheme}://{}{at}", t.authority),
    }
}

/// State shared by every worker and the admin side of one proxy.
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// The proxy's metrics.
    pub metrics: Metrics,
    /// What backend host names resolve to.
    pub dns: crate::dns::Dns,
    draining: AtomicBool,
}

impl Shared {
    /// Starts serving `first`.
    pub fn new(first: Snapshot, metrics: Metrics, dns: crate::dns::Dns) -> Arc<Self> {
        let first = Arc::new(first);
        publish_gauges(&metrics, None, &first);
        Arc::new(Self {
            snapshot: ArcSwap::new(first),
            metrics,
            dns,
            draining: AtomicBool::new(false),
        })
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Swaps in a new snapshot with one atomic store and updates the gauges.
    pub fn install(&self, next: Snapshot) {
        let next = Arc::new(next);
        let previous = self.snapshot.swap(next.clone());
        set_drain_deadlines(&previous, &next);
        publish_gauges(&self.metrics, Some(&previous), &next);
    }

    /// Marks the proxy as shutting down (`/ready` answers 503).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// True once shutdown began.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Backends that left the rotation (set to drain, or gone from the config)
/// get the time their requests and tunnels are cut; those back in it lose it.
fn set_drain_deadlines(previous: &Snapshot, next: &Snapshot) {
    let now = crate::clock::now_nanos();
    let mut kept = std::collections::HashSet::new();
    for u in &next.upstreams {
        for b in &u.backends {
            kept.insert(b.state.uid);
            if b.drain {
                b.state.cut_from(now.saturating_add(u.drain_nanos));
            } else {
                b.state.uncut();
            }
        }
    }
    for u in &previous.upstreams {
        for b in u.backends.iter().filter(|b| !kept.contains(&b.state.uid)) {
            b.state.cut_from(now.saturating_add(u.drain_nanos));
        }
    }
}

/// Sets the per-config gauges for `next` and drops the series of backends
/// that left the config, which would otherwise linger forever.
fn publish_gauges(m: &Metrics, previous: Option<&Snapshot>, next: &Snapshot) {
    m.config_version
        .set(i64::try_from(next.generation).unwrap_or(i64::MAX));
    for u in &next.upstreams {
        for b in &u.backends {
            b.healthy_gauge.set(i64::from(b.state.health.is_healthy()));
            b.circuit_gauge.set(i64::from(b.state.breaker.is_open()));
            b.ejected_gauge.set(i64::from(
                b.state.outlier.is_ejected(crate::clock::now_nanos()),
            ));
        }
        m.retries.with_label_values(&[&u.name]);
        m.rate_limited.with_label_values(&[&u.name]);
    }
    let Some(previous) = previous else { return };
    m.series.retire(previous, next);
    m.series.prune(m, next);
    for u in &previous.upstreams {
        for b in &u.backends {
            let still = next
                .upstreams
                .iter()
                .any(|n| n.name == u.name && n.backends.iter().any(|nb| nb.url == b.url));
            if !still {
                let _ = m.upstream_healthy.remove_label_values(&[&u.name, &b.url]);
                let _ = m.circuit_open.remove_label_values(&[&u.name, &b.url]);
                let _ = m.outlier_ejected.remove_label_values(&[&u.name, &b.url]);
            }
        }
    }
}
