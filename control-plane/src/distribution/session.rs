//! One data plane's stream: send it the newest version at once and after
//! every commit (latest wins), record what it reports, and notice when it
//! goes quiet.

use super::registry::Ticket;
use super::Distribution;
use crate::configs::Current;
use crate::store::NodeUpdate;
use isame_proto::pb;
use isame_proto::pb::control_message::Kind as Out;
use isame_proto::pb::node_message::Kind as In;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tonic::{Status, Streaming};

/// Reports a node may send in a burst before the rate limit applies.
const BURST: f64 = 20.0;
/// Reports per second a node may send over time.
const RATE: f64 = 5.0;

/// Why a session ended.
#[derive(Debug)]
enum End {
    Closed,
    Replaced,
    Quiet,
    Flooding,
    Error(Status),
    Gone,
    ShuttingDown,
}

/// Runs one node's session until its stream ends.
pub async fn run(
    d: Arc<Distribution>,
    node: String,
    mut ticket: Ticket,
    mut inbound: Streaming<pb::NodeMessage>,
    out: mpsc::Sender<Result<pb::ControlMessage, Status>>,
) {
    let mut versions = d.configs.subscribe();
    let mut closing = d.closing.subscribe();
    let mut sent = 0u64;
    let mut heartbeat = interval_at(Instant::now() + d.options.heartbeat, d.options.heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tokens = BURST;
    // Reset by every message from the node; when it passes, the node is gone.
    let quiet = tokio::time::sleep(d.options.node_timeout);
    tokio::pin!(quiet);
    let mut refilled = Instant::now();
    let first = versions.borrow_and_update().clone();
    let end = 'session: {
        if first.version > 0 && !send_snapshot(&out, &node, &first, &mut sent).await {
            break 'session End::Gone;
        }
        loop {
            tokio::select! {
                _ = &mut ticket.replaced => break 'session End::Replaced,
                _ = closing.changed() => break 'session End::ShuttingDown,
                changed = versions.changed() => {
                    if changed.is_err() {
                        break 'session End::Gone;
                    }
                    let newest = versions.borrow_and_update().clone();
                    if newest.version > sent && !send_snapshot(&out, &node, &newest, &mut sent).await {
                        break 'session End::Gone;
                    }
                }
                _ = heartbeat.tick() => {
                    let beat = pb::ControlMessage {
                        kind: Some(Out::Heartbeat(pb::Heartbeat { newest_version: sent })),
                    };
                    if out.send(Ok(beat)).await.is_err() {
                        break 'session End::Gone;
                    }
                }
                () = &mut quiet => break 'session End::Quiet,
                msg = inbound.message() => {
                    let msg = match msg {
                        Err(status) => break 'session End::Error(status),
                        Ok(None) => break 'session End::Closed,
                        Ok(Some(m)) => m,
                    };
                    let now = Instant::now();
                    quiet.as_mut().reset(now + d.options.node_timeout);
                    // ACKs and NACKs answer this side's snapshots; only what
                    // the node sends of its own accord is rate limited.
                    if !matches!(msg.kind, Some(In::Ack(_) | In::Nack(_))) {
                        tokens = (tokens + now.duration_since(refilled).as_secs_f64() * RATE).min(BURST);
                        refilled = now;
                        if tokens < 1.0 {
                            break 'session End::Flooding;
                        }
                        tokens -= 1.0;
                    }
                    handle(&d, &node, msg);
                }
            }
        }
    };
    match &end {
        End::Flooding => {
            let _ = out
                .send(Err(Status::resource_exhausted(
                    "reports arrive faster than the control plane accepts",
                )))
                .await;
        }
        End::ShuttingDown => {
            let _ = out
                .send(Err(Status::unavailable(
                    "the control plane is shutting down",
                )))
                .await;
        }
        End::Error(status) => {
            tracing::debug!(node, %status, "the stream failed");
        }
        End::Quiet => {
            let _ = out
                .send(Err(Status::deadline_exceeded(
                    "no report within the node timeout",
                )))
                .await;
        }
        _ => {}
    }
    if d.registry.close(&node, ticket.session) {
        d.metrics.connected_nodes.set(d.registry.len() as i64);
        d.ledger.record(&node, NodeUpdate::Disconnected);
    }
    tracing::info!(node, reason = ?end, "data plane stream ended");
}

/// Sends the version `cur` holds; false when the node is gone.
#[tracing::instrument(name = "push", skip_all, fields(otel.kind = "producer", node = node, version = cur.version))]
async fn send_snapshot(
    out: &mpsc::Sender<Result<pb::ControlMessage, Status>>,
    node: &str,
    cur: &Arc<Current>,
    sent: &mut u64,
) -> bool {
    let Some(snapshot) = cur.snapshot.as_ref() else {
        return true;
    };
    let msg = pb::ControlMessage {
        kind: Some(Out::Snapshot(snapshot.as_ref().clone())),
    };
    if out.send(Ok(msg)).await.is_err() {
        return false;
    }
    *sent = cur.version;
    true
}

/// Records one message from a node.
fn handle(d: &Distribution, node: &str, msg: pb::NodeMessage) {
    let update = match msg.kind {
        None | Some(In::Hello(_)) => NodeUpdate::Seen,
        Some(In::Ack(a)) => {
            let cur = d.configs.current();
            if a.version > cur.version {
                tracing::warn!(
                    node,
                    version = a.version,
                    "ACK of a version that does not exist"
                );
                NodeUpdate::Seen
            } else {
                if a.version == cur.version {
                    if let Some(at) = cur.committed_at {
                        d.metrics.push_seconds.observe(at.elapsed().as_secs_f64());
                    }
                }
                tracing::debug!(node, version = a.version, "ACK");
                NodeUpdate::Ack(a.version)
            }
        }
        Some(In::Nack(n)) => {
            let errors: Vec<_> = n
                .errors
                .iter()
                .take(100)
                .map(|e| json!({"path": clip(&e.path), "message": clip(&e.message)}))
                .collect();
            tracing::warn!(node, version = n.version, errors = errors.len(), "NACK");
            d.metrics.nacks.inc();
            NodeUpdate::Nack(json!({
                "version": n.version,
                "errors": errors,
                "at": crate::api::rfc3339(crate::store::sqlite::now_ms()),
            }))
        }
        Some(In::Health(h)) => NodeUpdate::Health(
            h.backends
                .iter()
                .take(10_000)
                .map(|b| {
                    json!({
                        "upstream": clip(&b.upstream),
                        "backend": clip(&b.backend),
                        "healthy": b.healthy,
                        "circuit": clip(&b.circuit),
                    })
                })
                .collect(),
        ),
        Some(In::Stats(s)) => {
            count_traffic(d, &s);
            NodeUpdate::Traffic(json!({
            "period_ms": s.period_ms,
            "at": crate::api::rfc3339(crate::store::sqlite::now_ms()),
            "upstreams": s.upstreams.iter().take(10_000).map(|u| json!({
                "upstream": clip(&u.upstream),
                "requests": u.requests,
                "errors": u.errors,
                "mean_ms": if u.requests == 0 { 0.0 } else { u.duration_ms_sum as f64 / u.requests as f64 },
            })).collect::<Vec<_>>(),
            }))
        }
    };
    d.ledger.record(node, update);
}

/// Adds a node's traffic report to the fleet's counters, for the upstreams
/// the newest config has (a report cannot create series of its own).
fn count_traffic(d: &Distribution, s: &pb::StatsReport) {
    let known = d.known.of(&d.configs.current());
    let m = &d.metrics;
    for u in &s.upstreams {
        if u.requests == 0 || !known.contains(&u.upstream) {
            continue;
        }
        let label = [u.upstream.as_str()];
        m.upstream_requests
            .with_label_values(&label)
            .inc_by(u.requests);
        m.upstream_errors.with_label_values(&label).inc_by(u.errors);
        m.upstream_seconds
            .with_label_values(&label)
            .inc_by(u.duration_ms_sum as f64 / 1000.0);
    }
}

/// A peer-supplied string, cut to a sane length.
fn clip(s: &str) -> String {
    s.chars().take(1024).collect()
}
