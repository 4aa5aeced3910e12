//! The admin listener of a subscribed node that has no config yet: it says
//! it is alive but not ready, and why, until the first snapshot arrives.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What `/status` says while waiting.
#[derive(Debug, Clone)]
pub struct WaitingInfo {
    /// The control plane's address.
    pub control_plane: String,
    /// This node's id.
    pub node_id: String,
}

fn answer(path: &str, info: &WaitingInfo) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/health" => (StatusCode::OK, json!({"status": "ok"})),
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false, "reason": "no config yet: waiting for the control plane"}),
        ),
        "/status" => (
            StatusCode::OK,
            json!({
                "state": "waiting",
                "node_id": info.node_id,
                "control_plane": info.control_plane,
                "config_version": 0,
            }),
        ),
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                b"# HELP isame_lb_config_version Config generation in force.\n\
                  # TYPE isame_lb_config_version gauge\nisame_lb_config_version 0\n",
            )));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return r;
        }
        _ => (StatusCode::NOT_FOUND, json!({"error": "not found"})),
    };
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves the waiting answers on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, info: Arc<WaitingInfo>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, say: wait instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let info = info.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let r = answer(req.uri().path(), &info);
                async move { Ok::<_, std::convert::Infallible>(r) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
