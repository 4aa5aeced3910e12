//! The request path, in order: route → rate-limit → plan forwarding headers
//! → the route's middleware → pick backend → forward → respond (back through
//! the middleware) → record. One snapshot is loaded when a request starts
//! and used until its response ends.

use crate::body::{ClientBody, ProxyBody, ReqBody};
use crate::conn_timeouts::ConnState;
use crate::error::ProxyError;
use crate::finish::Finish;
use crate::forwarding::{self, Forwarded};
use crate::host::{self, RequestHost};
use crate::middleware::{Flow, RequestParts};
use crate::ratelimit::Decision;
use crate::snapshot::{Shared, Snapshot, MIN_HEAD_BUFFER};
use crate::tunnel::Tunnel;
use crate::{affinity, client_ip, clock, dispatch, grpc, mirror, observe, upgrade};
use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER, TRANSFER_ENCODING, UPGRADE,
};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::warn;

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// What a client connection knows, shared by its requests.
pub struct ConnCtx {
    /// The proxy's shared state.
    pub shared: Arc<Shared>,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The peer's IP as a header value, made once per connection.
    pub peer_value: HeaderValue,
    /// `http` or `https`.
    pub proto: &'static str,
    /// Timeout bookkeeping of the connection.
    pub state: Arc<ConnState>,
    /// An upgraded backend connection, left by the request answered `101`
    /// for the connection's driver to relay once hyper has written it.
    pub tunnel: Mutex<Option<Box<Tunnel>>>,
    /// The address the client connected to, kept when some upstream sends
    /// PROXY headers (or a PROXY header named it).
    pub local: Option<SocketAddr>,
}

impl Drop for ConnCtx {
    /// Backend connections that spoke for this client connection close
    /// with it.
    fn drop(&mut self) {
        if let Some(local) = self.local {
            crate::pool::forget(&(self.peer, local));
        }
    }
}

impl ConnCtx {
    /// Context for a connection accepted from `peer` (the client a PROXY
    /// header named, if any) on `local`.
    pub fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        proto: &'static str,
        state: Arc<ConnState>,
    ) -> Self {
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer.ip(), Into::into),
            v4 => v4,
        };
        let peer_value = HeaderValue::try_from(ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            shared,
            peer: SocketAddr::new(ip, peer.port()),
            peer_value,
            proto,
            state,
            tunnel: Mutex::new(None),
            local,
        }
    }

    /// The client connection as a PROXY header sent to a backend names it.
    /// A connection accepted before a reload made some upstream send PROXY
    /// headers did not keep its local address: the listener's stands in.
    pub fn origin(&self, snap: &Snapshot) -> crate::upstream::Origin {
        let local = self.local.unwrap_or_else(|| {
            let s = &snap.config.server;
            let port = if self.proto == "https" {
                s.https_port
            } else {
                s.port
            };
            SocketAddr::new(s.address, port)
        });
        (self.peer, local)
    }

    /// The upgraded connection left by a `101` answer, if any.
    pub fn take_tunnel(&self) -> Option<Box<Tunnel>> {
        self.tunnel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Who asked, as the proxy's own answers need to know it.
#[derive(Clone, Copy)]
struct Caller {
    /// The client's address (see [`crate::client_ip`]).
    ip: IpAddr,
    /// The gRPC call the request is, if it is one: the proxy's own answers
    /// to it are gRPC-shaped.
    grpc: Option<grpc::Call>,
}

/// Serves one request. Never fails: every problem becomes a short JSON response.
pub async fn handle(
    req: Request<Incoming>,
    cx: Arc<ConnCtx>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = clock::now_nanos();
    cx.state.request_started(
        req.version() == Version::HTTP_2,
        keeps_alive(&req),
        !req.body().is_end_stream(),
    );
    let mut finish = Finish::new(cx.state.clone(), start);
    let snap = cx.shared.snapshot();
    let client = client_ip::client_ip(cx.peer.ip(), req.headers(), &snap.trusted);
    let caller = Caller {
        ip: client,
        grpc: grpc::call(req.headers()),
    };
    finish.observe(observe::start(&req, client));

    let host = match check(&req, &snap) {
        Ok(host) => host,
        Err(e) => return Ok(reply(&cx, &snap, caller, None, e, finish)),
    };
    if let (Some(o), Some(h)) = (finish.observation(), &host) {
        o.host(h.as_str());
    }
    let host_name = host.as_ref().map(RequestHost::name);
    if let (Some(port), "http") = (snap.redirect_https, cx.proto) {
        return Ok(match redirect_to_https(host_name, port, req.uri()) {
            Some(resp) => {
                finish.status(resp.status());
                resp.map(|()| ProxyBody::full(Bytes::new(), Some(finish)))
            }
            None => reply(
                &cx,
                &snap,
                caller,
                None,
                ProxyError::BadRequest("no host to redirect to"),
                finish,
            ),
        });
    }
    let Some(found) = snap.router.pick(host_name, req.uri().path(), req.headers()) else {
        return Ok(reply(&cx, &snap, caller, None, ProxyError::NoRoute, finish));
    };
    let ui = found.upstream;
    let up = &snap.upstreams[ui];
    // The route's limit, then the upstream's.
    let limits = found
        .route
        .and_then(|r| snap.route_limits[r].as_deref())
        .into_iter()
        .chain(up.rate_limit.as_deref());
    for limiter in limits {
        if let Decision::Deny { retry_after } = limiter.check(client, start) {
            up.rate_limited.inc();
            let e = ProxyError::RateLimited {
                limit: limiter.limit,
                retry_after,
            };
            return Ok(reply(&cx, &snap, caller, Some(ui), e, finish));
        }
    }
    if let Some(o) = finish.observation() {
        o.routed(
            found.route.map(|r| snap.config.routes[r].name.as_str()),
            &snap,
            ui,
        );
    }
    let (mut parts, body) = req.into_parts();
    // Before the forwarding plan, which drops the headers `Connection` names.
    let upgrade = if body.is_end_stream() {
        upgrade::requested(parts.version, &parts.headers, &up.upgrades)
    } else {
        None
    };
    let mut rewrite = forwarding::forward_request(
        &mut parts.headers,
        &Forwarded {
            peer: cx.peer.ip(),
            peer_value: &cx.peer_value,
            proto: cx.proto,
            trusted: &snap.trusted,
            host: host.as_ref().map(|h| &h.value),
            host_from_target: host.as_ref().is_some_and(|h| h.from_target),
        },
    );
    if let Some(protocols) = upgrade {
        rewrite.set_upgrade(protocols);
    }
    if up.send_proxy_protocol.is_some() {
        rewrite.set_origin(cx.origin(&snap));
    }
    // After the forwarding plan, so that a header a middleware sets is not
    // taken for one the client's `Connection` named. Once, before any try.
    let chain = found
        .route
        .map(|r| &snap.middleware[r])
        .filter(|c| !c.is_empty());
    let mut passed = None;
    if let Some(chain) = chain {
        let (p, flow) = chain.request(&mut RequestParts {
            head: &mut parts,
            scheme: cx.proto,
            host: host.as_ref().map(RequestHost::as_str),
        });
        // An answer goes back through the steps before the one that gave it.
        match flow {
            Flow::Continue => passed = Some(p),
            Flow::Respond(resp) => {
                finish.status(resp.status());
                let mut resp = resp.map(|b| ProxyBody::full(b, Some(finish)));
                chain.response(p, resp.headers_mut());
                return Ok(resp);
            }
            Flow::Reject(e) => {
                let mut resp = reply(&cx, &snap, caller, Some(ui), e, finish);
                chain.response(p, resp.headers_mut());
                return Ok(resp);
            }
        }
    }
    finish.set_upstream(snap.clone(), ui);
    // The backend's trace parent is this request's span (after the
    // middleware, which may not remove it).
    if let Some(o) = finish.observation() {
        o.propagate(&mut parts.headers);
    }
    if caller.grpc.is_some() && !up.speaks_h2 {
        let e = ProxyError::Upstream(crate::upstream::UpstreamError::NeedsHttp2);
        return Ok(reply(&cx, &snap, caller, Some(ui), e, finish));
    }
    let out = dispatch::Outgoing {
        parts: &parts,
        rewrite: &rewrite,
        start,
        // A gRPC stream may pause as long as a tunnel.
        client_stall: if caller.grpc.is_some() {
            up.tunnel_idle_timeout
        } else {
            snap.timeouts.header_read
        },
        grpc: caller.grpc,
        retry: found
            .route
            .and_then(|r| snap.route_retry[r].as_ref())
            .and_then(|p| p.get(ui))
            .unwrap_or(&up.retry),
    };
    let affinity = if up.hash_on.is_some() || up.sticky.is_some() {
        affinity::of(up.hash_on.as_ref(), up.sticky.as_ref(), &parts, client)
    } else {
        affinity::Affinity::default()
    };
    let mut body = ReqBody::Stream(ClientBody::new(body, cx.state.clone()));
    // Upgrades are not copied: a tunnel cannot go to two places.
    let mirror = found
        .route
        .and_then(|r| Some((r, snap.mirrors[r].as_ref()?)));
    if let (Some((route, m)), None) = (mirror, rewrite.upgrade()) {
        let source = mirror::Source {
            snap: &snap,
            route,
            shared: &cx.shared,
            client,
            origin: cx.origin(&snap),
            client_stall: out.client_stall,
            grpc: caller.grpc,
        };
        // Boxed: inline, its state would make every request's future that
        // much larger, mirrored or not.
        body = match Box::pin(mirror::copy(m, &source, &parts, &rewrite, body)).await {
            Ok(b) => b,
            Err(e) => return Ok(reply(&cx, &snap, caller, Some(ui), e, finish)),
        };
    }
    let mut dispatched =
        dispatch::dispatch(up, &out, &affinity, body, &mut finish, &cx.shared.metrics).await;
    if let (Some(sticky), Ok(d)) = (&up.sticky, &mut dispatched) {
        sticky.set(d.backend, &affinity, &mut d.head.headers);
    }
    let mut resp = match dispatched {
        Ok(d) if d.head.status == StatusCode::SWITCHING_PROTOCOLS => {
            switch_protocols(&cx, &snap, caller, ui, d, finish)
        }
        Ok(d) => {
            finish.status(d.head.status);
            let mut resp = Response::new(ProxyBody::upstream(d.body, finish));
            *resp.status_mut() = d.head.status;
            *resp.headers_mut() = d.head.headers;
            resp
        }
        Err(e) => reply(&cx, &snap, caller, Some(ui), e, finish),
    };
    if let (Some(chain), Some(passed)) = (chain, passed) {
        chain.response(passed, resp.headers_mut());
    }
    Ok(resp)
}

/// The `101` answer to an upgrade request; the backend connection is left
/// on the client connection, whose driver relays the two once hyper has
/// written this (see [`crate::tunnel`]).
fn switch_protocols(
    cx: &ConnCtx,
    snap: &Arc<Snapshot>,
    caller: Caller,
    ui: usize,
    mut d: dispatch::Dispatched,
    mut finish: Finish,
) -> Response<ProxyBody> {
    let (Some(conn), Some(protocol)) = (d.body.take_upgraded(), d.head.upgrade.take()) else {
        let e = ProxyError::Upstream(crate::upstream::UpstreamError::Protocol(
            "protocol upgrade without its connection".into(),
        ));
        return reply(cx, snap, caller, Some(ui), e, finish);
    };
    finish.status(StatusCode::SWITCHING_PROTOCOLS);
    finish.switched();
    let mut resp = Response::new(ProxyBody::full(Bytes::new(), None));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = d.head.headers;
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut().insert(UPGRADE, protocol);
    let tunnel = Box::new(Tunnel::new(*conn, finish, &snap.upstreams[ui]));
    *cx.tunnel.lock().unwrap_or_else(PoisonError::into_inner) = Some(tunnel);
    resp
}

/// The client's answer when the proxy itself must respond: short JSON, or
/// a trailers-only answer to a gRPC call.
fn reply(
    cx: &ConnCtx,
    snap: &Snapshot,
    caller: Caller,
    upstream: Option<usize>,
    e: ProxyError,
    mut finish: Finish,
) -> Response<ProxyBody> {
    let upstream_name = upstream.map_or("", |u| snap.upstreams[u].name.as_str());
    cx.shared
        .metrics
        .errors
        .with_label_values(&[upstream_name, e.kind()])
        .inc();
    if e.status().is_server_error() {
        warn!(
            client = %caller.ip,
            upstream = upstream_name,
            error = %e,
            "request failed"
        );
    }
    let mut resp = if caller.grpc.is_some() {
        // gRPC carries the outcome in `grpc-status`; HTTP says 200.
        let code = grpc::code_for(e.status());
        match upstream {
            Some(u) => snap.upstreams[u].grpc_statuses.count_code(code),
            None => grpc::count_code(&cx.shared.metrics.grpc_responses, "", code),
        }
        finish.status(StatusCode::OK);
        let mut resp = Response::new(ProxyBody::full(Bytes::new(), Some(finish)));
        *resp.headers_mut() = grpc::answer_headers(code, e.summary());
        resp
    } else {
        finish.status(e.status());
        let mut resp = Response::new(ProxyBody::full(e.body(), Some(finish)));
        *resp.status_mut() = e.status();
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp
    };
    if let ProxyError::RateLimited { limit, retry_after } = &e {
        // Whole seconds, rounded up: a client that waits this long gets through.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let h = resp.headers_mut();
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
        h.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(*limit));
        h.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(0u32));
        h.insert(RATELIMIT_RESET.clone(), HeaderValue::from(secs));
    }
    if e.closes_connection() {
        cx.state.closes();
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// `308 Permanent Redirect` to the same URL over HTTPS on `port`, for a
/// request to the (validated) host `name`.
fn redirect_to_https(name: Option<&str>, port: u16, uri: &http::Uri) -> Option<Response<()>> {
    let host = name?;
    let port = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = HeaderValue::try_from(format!("https://{host}{port}{target}")).ok()?;
    let mut resp = Response::new(());
    *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut().insert(http::header::LOCATION, location);
    Some(resp)
}

/// Refuses requests the proxy must not relay, and finds the host asked for
/// (see [`crate::host`]).
fn check(req: &Request<Incoming>, snap: &Snapshot) -> Result<Option<RequestHost>, ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    if snap.max_header_bytes < MIN_HEAD_BUFFER && head_size(req) > snap.max_header_bytes {
        return Err(ProxyError::HeadTooLarge);
    }
    if let Some(te) = req.headers().get(TRANSFER_ENCODING) {
        // Only chunked framing can be re-framed for the backend; hyper has
        // already undone it. Other codings would reach the backend unlabelled.
        let chunked_only = req.headers().get_all(TRANSFER_ENCODING).iter().count() == 1
            && te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked");
        if !chunked_only {
            return Err(ProxyError::NotImplemented("transfer coding not supported"));
        }
    }
    host::of(req).map_err(|e| ProxyError::BadRequest(e.reason()))
}

/// True when an HTTP/1.1 request lets its connection carry another after it
/// (no `Connection: close`). HTTP/1.0 connections are never kept idle
/// between requests by the proxy's own choice (see [`crate::connection`]).
fn keeps_alive(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && !req.headers().get_all(CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        })
}

/// Approximate size of the request head: request line plus header lines.
fn head_size(req: &Request<Incoming>) -> usize {
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + 12;
    req.headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}
