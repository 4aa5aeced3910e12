//! The admin listener: `/metrics` (Prometheus), `/health` (liveness),
//! `/ready` (readiness) and `/status` (what this data plane runs). It runs on
//! the control thread, apart from the workers, so it answers even when they
//! are saturated.

use crate::snapshot::Shared;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Facts about the running proxy that `/status` reports.
#[derive(Debug, Clone)]
pub struct AdminInfo {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where it listens for HTTPS.
    pub https_addr: Option<SocketAddr>,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    /// Worker threads.
    pub workers: usize,
    /// Where the config came from (a file path).
    pub source: String,
    /// When the proxy started.
    pub started: Instant,
}

/// Most admin connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 256;
/// Longest time an admin client may take to send a request's headers, and
/// to keep an idle connection.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves admin requests until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, info: Arc<AdminInfo>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(peer = %peer, "too many admin connections; closing");
            continue;
        };
        let shared = shared.clone();
        let info = info.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req| {
                let resp = respond(&req, &shared, &info);
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(peer = %peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Answers one admin request.
pub fn respond(
    req: &Request<Incoming>,
    shared: &Shared,
    info: &AdminInfo,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "method not allowed"}),
        );
    }
    let snap = shared.snapshot();
    let path = req.uri().path();
    if snap.config.metrics.enabled && path == snap.config.metrics.path {
        shared.metrics.series.prune(&shared.metrics, &snap);
        let mut r = Response::new(Full::new(Bytes::from(shared.metrics.render())));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return r;
    }
    match path {
        "/health" => json_response(StatusCode::OK, json!({"status": "ok"})),
        "/ready" => {
            if shared.draining() {
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"ready": false, "reason": "shutting down"}),
                )
            } else {
                json_response(StatusCode::OK, json!({"ready": true}))
            }
        }
        "/status" => json_response(StatusCode::OK, status(shared, info)),
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

fn status(shared: &Shared, info: &AdminInfo) -> serde_json::Value {
    let snap = shared.snapshot();
    let now = crate::clock::now_nanos();
    let c = &snap.config;
    let upstreams: Vec<_> = snap
        .upstreams
        .iter()
        .zip(&c.upstreams)
        .map(|(u, uc)| {
            let r = c.retry_of(uc);
            json!({
                "name": u.name,
                "algorithm": u.algorithm.as_str(),
                "hash_on": u.hash_on.as_ref().map(isame_proto::config::HashOn::as_string),
                "sticky_cookie": u.sticky.as_ref().map(crate::affinity::StickyRt::name),
                "connect_timeout": isame_proto::config::duration::format(u.connect_timeout),
                "response_timeout": isame_proto::config::duration::format(u.response_timeout),
                "health_checks": u.health.enabled,
                "retries": u.retry.enabled,
                "retry": {
                    "max_attempts": r.max_attempts,
                    "retry_on": r.retry_on,
                    "per_try_timeout": isame_proto::config::duration::format(r.per_try_timeout),
                    "retriable_methods": r.retriable_methods,
                },
                "outlier_detection": u.outlier.settings.enabled,
                "slow_start": isame_proto::config::duration::format(std::time::Duration::from_nanos(u.slow_start)),
                "backends": u.backends.iter().map(|b| json!({
                    "url": b.url,
                    "resolved_from": b.source.as_deref(),
                    "weight": b.weight,
                    "draining": b.drain,
                    "in_flight": b.state.in_flight(),
                    "healthy": b.state.health.is_healthy(),
                    "health_checked": b.state.health.checked(),
                    "last_check": b.state.health.last_result(),
                    "circuit": b.state.breaker.state_name(),
                    "slow_start_share": crate::ramp::progress(&b.state, u.slow_start, now)
                        .map(|p| (p * 100.0).round() / 100.0),
                    "ejected": b.state.outlier.is_ejected(now),
                    "ejected_for": b.state.outlier.ejected_for(now).map(|d| {
                        isame_proto::config::duration::format(std::time::Duration::from_millis(
                            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                        ))
                    }),
                    "ejections": b.state.outlier.total_ejections(),
                    "last_ejection_reason": b.state.outlier.last_reason().map(crate::outlier::Reason::as_str),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let routes: Vec<_> = c
        .routes
        .iter()
        .map(|r| json!({
            "name": r.name,
            "host": r.host,
            "path_prefix": r.path_prefix,
            "upstream": (!r.upstream.is_empty()).then_some(&r.upstream),
            "split": (!r.split.is_empty()).then(|| r.split.iter().map(|s| json!({"upstream": s.upstream, "weight": s.weight})).collect::<Vec<_>>()),
            "retry": r.retry,
            "mirror": r.mirror,
        }))
        .collect();
    json!({
        "service": c.service,
        "version": c.version,
        "config_version": snap.generation,
        "config_source": info.source,
        "uptime_seconds": info.started.elapsed().as_secs(),
        "ready": !shared.draining(),
        "workers": info.workers,
        "listeners": {
            "proxy": info.proxy_addr.to_string(),
            "https": info.https_addr.map(|a| a.to_string()),
            "admin": info.admin_addr.to_string(),
        },
        "active_connections": shared.metrics.active_connections.get(),
        "parked_connections": shared.metrics.parked_connections.get(),
        "upstreams": upstreams,
        "routes": routes,
        "dns": shared.dns.entries().into_iter().map(|(name, e)| json!({
            "name": name,
            "addresses": e.addrs.as_ref().map(|a| a.iter().map(ToString::to_string).collect::<Vec<_>>()),
            "error": e.error,
            "resolved_at": e.resolved_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        })).collect::<Vec<_>>(),
    })
}
