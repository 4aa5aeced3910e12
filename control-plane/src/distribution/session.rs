//! One data plane's stream: send it the version the plan says it is to
//! serve, at once and whenever that changes (a commit, a rollout's stage,
//! a rollback; latest wins), record what it reports, and notice when it
//! goes quiet.

use super::node_schema::NodeSchema;
use super::registry::Ticket;
use super::Distribution;
use crate::configs::Current;
use crate::rollout::plan::Plan;
use crate::store::NodeUpdate;
use isame_proto::pb;
use isame_proto::pb::control_message::Kind as Out;
use isame_proto::pb::node_message::Kind as In;
use prost::Message;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tonic::{Status, Streaming};
use tracing::Instrument;

/// Reports a node may send in a burst before the rate limit applies.
const BURST: f64 = 20.0;
/// Reports per second a node may send over time.
const RATE: f64 = 5.0;

/// Snapshots sent but not yet answered that an ACK or NACK may answer
/// without taking from the report budget (more are not kept: a node
/// answers each version it gets, and a flood of answers to versions it was
/// never sent is a flood like any other).
const ANSWERS_OWED: u32 = 8;

/// Why a session ended.
#[derive(Debug)]
enum End {
    Closed,
    Replaced,
    Quiet,
    Flooding,
    /// The node stopped reading: a message could not be handed over in time.
    Stalled,
    Error(Status),
    Gone,
    ShuttingDown,
}

/// One node's stream as this side sees it.
struct Session {
    d: Arc<Distribution>,
    node: String,
    out: mpsc::Sender<Result<pb::ControlMessage, Status>>,
    replaced: tokio::sync::oneshot::Receiver<()>,
    closing: tokio::sync::watch::Receiver<bool>,
    /// The version sent last (0: none), and its hash.
    sent: u64,
    sent_hash: String,
    /// Snapshots sent and not answered yet (at most [`ANSWERS_OWED`]).
    owed: u32,
    /// What the node said it can read, when that may differ from this
    /// build (`None`: the same schema, or a node that did not say).
    reads: Option<NodeSchema>,
    /// The node applies deltas.
    deltas: bool,
    /// The version this stream carried last, which a delta builds on.
    delivered: Option<Arc<Current>>,
}

impl Session {
    /// Hands a message to the stream. Gives up when the node does not take
    /// it within the send timeout (it stopped reading), or when the session
    /// is replaced or the control plane shuts down meanwhile.
    async fn send(&mut self, msg: pb::ControlMessage) -> Result<(), End> {
        let timeout = self.d.options.send_timeout;
        tokio::select! {
            biased;
            _ = &mut self.replaced => Err(End::Replaced),
            _ = self.closing.changed() => Err(End::ShuttingDown),
            sent = tokio::time::timeout(timeout, self.out.send(Ok(msg))) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(End::Gone),
                Err(_) => Err(End::Stalled),
            },
        }
    }

    /// Sends the version `plan` says this node is to serve, if it is not
    /// the one sent last, there is one, and the node can read it.
    async fn send_target(&mut self, plan: &Plan) -> Result<(), End> {
        let cur = plan.target_for(&self.node).clone();
        if cur.version == self.sent && cur.hash == self.sent_hash {
            return Ok(());
        }
        let Some(snapshot) = cur.snapshot.as_ref() else {
            return Ok(());
        };
        if let Some(reads) = &self.reads {
            let unknown = reads.unknown_in(&cur);
            if !unknown.is_empty() {
                // Sending it would only be refused: the node keeps what it
                // serves, and the ledger says why it is behind.
                tracing::warn!(
                    node = %self.node,
                    version = cur.version,
                    build = %reads.build,
                    fields = ?unknown,
                    "not sent: the node cannot read fields this version uses"
                );
                self.sent = cur.version;
                self.sent_hash = cur.hash.clone();
                let refusal = reads.refusal(cur.version, &unknown);
                self.d.ledger.record(&self.node, NodeUpdate::Nack(refusal));
                return Ok(());
            }
        }
        let delta = match &self.delivered {
            Some(base) if self.deltas => cur.delta_from(base),
            _ => None,
        };
        let newest = plan.newest.version.max(cur.version);
        let (kind, msg) = match delta {
            Some(d) => {
                let mut d = d.as_ref().clone();
                d.newest_version = newest;
                ("delta", Out::Delta(d))
            }
            None => {
                let mut snapshot = snapshot.as_ref().clone();
                snapshot.newest_version = newest;
                ("full", Out::Snapshot(snapshot))
            }
        };
        let span = tracing::info_span!(
            "push",
            otel.kind = "producer",
            node = %self.node,
            version = cur.version,
            kind
        );
        let msg = pb::ControlMessage { kind: Some(msg) };
        let bytes = msg.encoded_len() as u64;
        self.send(msg).instrument(span).await?;
        let m = &self.d.metrics;
        m.pushes.with_label_values(&[kind]).inc();
        m.push_bytes.with_label_values(&[kind]).inc_by(bytes);
        self.sent = cur.version;
        self.sent_hash = cur.hash.clone();
        self.delivered = Some(cur);
        self.owed = (self.owed + 1).min(ANSWERS_OWED);
        Ok(())
    }

    /// The node could not apply a delta: it gets the whole snapshot of its
    /// target next.
    async fn resync(&mut self, r: &pb::Resync, plan: &Plan) -> Result<(), End> {
        tracing::warn!(
            node = %self.node,
            version = r.version,
            reason = %clip(&r.reason),
            "the node could not apply a delta; sending the whole snapshot"
        );
        self.d.metrics.resyncs.inc();
        self.delivered = None;
        self.sent = 0;
        self.sent_hash.clear();
        self.send_target(plan).await
    }

    /// Tells the node why its stream ends, if there is room; never waits.
    fn farewell(&self, status: Status) {
        let _ = self.out.try_send(Err(status));
    }
}

/// Runs one node's session until its stream ends.
pub async fn run(
    d: Arc<Distribution>,
    node: String,
    ticket: Ticket,
    reads: Option<NodeSchema>,
    deltas: bool,
    mut inbound: Streaming<pb::NodeMessage>,
    out: mpsc::Sender<Result<pb::ControlMessage, Status>>,
) {
    let mut plans = d.configs.subscribe_plan();
    let mut s = Session {
        closing: d.closing.subscribe(),
        d: d.clone(),
        node,
        out,
        replaced: ticket.replaced,
        sent: 0,
        sent_hash: String::new(),
        owed: 0,
        reads,
        deltas,
        delivered: None,
    };
    let mut heartbeat = interval_at(Instant::now() + d.options.heartbeat, d.options.heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tokens = BURST;
    // Reset by every message from the node; when it passes, the node is gone.
    let quiet = tokio::time::sleep(d.options.node_timeout);
    tokio::pin!(quiet);
    let mut refilled = Instant::now();
    let first = plans.borrow_and_update().clone();
    let end = 'session: {
        if let Err(end) = s.send_target(&first).await {
            break 'session end;
        }
        loop {
            tokio::select! {
                _ = &mut s.replaced => break 'session End::Replaced,
                _ = s.closing.changed() => break 'session End::ShuttingDown,
                changed = plans.changed() => {
                    if changed.is_err() {
                        break 'session End::Gone;
                    }
                    let plan = plans.borrow_and_update().clone();
                    if let Err(end) = s.send_target(&plan).await {
                        break 'session end;
                    }
                }
                _ = heartbeat.tick() => {
                    // A heartbeat only matters on a quiet stream: behind a
                    // message still queued it would just take a slot.
                    if s.out.capacity() < s.out.max_capacity() {
                        continue;
                    }
                    let beat = pb::ControlMessage {
                        kind: Some(Out::Heartbeat(pb::Heartbeat {
                            newest_version: plans.borrow().newest.version.max(s.sent),
                            target_version: s.sent,
                        })),
                    };
                    if let Err(end) = s.send(beat).await {
                        break 'session end;
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
                    // An ACK or NACK that answers a snapshot this side sent
                    // is free; anything else takes from the report budget,
                    // a Resync too (each one costs a whole snapshot).
                    let answer = matches!(msg.kind, Some(In::Ack(_) | In::Nack(_)));
                    if answer && s.owed > 0 {
                        s.owed -= 1;
                    } else {
                        tokens = (tokens + now.duration_since(refilled).as_secs_f64() * RATE).min(BURST);
                        refilled = now;
                        if tokens < 1.0 {
                            break 'session End::Flooding;
                        }
                        tokens -= 1.0;
                    }
                    if let Some(In::Resync(r)) = &msg.kind {
                        d.ledger.record(&s.node, NodeUpdate::Seen);
                        let plan = plans.borrow().clone();
                        if let Err(end) = s.resync(r, &plan).await {
                            break 'session end;
                        }
                        continue;
                    }
                    handle(&d, &s.node, msg);
                }
            }
        }
    };
    match &end {
        End::Flooding => s.farewell(Status::resource_exhausted(
            "reports arrive faster than the control plane accepts",
        )),
        End::ShuttingDown => s.farewell(Status::unavailable("the control plane is shutting down")),
        End::Error(status) => {
            tracing::debug!(node = s.node, %status, "the stream failed");
        }
        End::Quiet => s.farewell(Status::deadline_exceeded(
            "no report within the node timeout",
        )),
        End::Stalled => {
            tracing::warn!(
                node = s.node,
                "the node stopped reading its stream; closing it"
            );
        }
        _ => {}
    }
    if d.registry.close(&s.node, ticket.session) {
        d.metrics.connected_nodes.set(d.registry.len() as i64);
        d.ledger.record(&s.node, NodeUpdate::Disconnected);
    }
    tracing::info!(node = s.node, reason = ?end, "data plane stream ended");
}

/// Records one message from a node.
fn handle(d: &Distribution, node: &str, msg: pb::NodeMessage) {
    let update = match msg.kind {
        None | Some(In::Hello(_) | In::Resync(_)) => NodeUpdate::Seen,
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
                "at": crate::api::rfc3339(crate::store::now_ms()),
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
                        "ejected": b.ejected,
                        "by_name": b.by_name,
                        "endpoints": b.endpoints,
                        "healthy_endpoints": b.healthy_endpoints,
                        "dns_error": (!b.dns_error.is_empty()).then(|| clip(&b.dns_error)),
                    })
                })
                .collect(),
        ),
        Some(In::Stats(s)) => {
            count_traffic(d, &s);
            sample(d, node, &s);
            NodeUpdate::Traffic(json!({
            "period_ms": s.period_ms,
            "at": crate::api::rfc3339(crate::store::now_ms()),
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

/// Keeps a traffic report for the gates of the rollout being staged, if
/// one is.
fn sample(d: &Distribution, node: &str, s: &pb::StatsReport) {
    let plan = d.configs.plan();
    let Some(rollout) = plan.active() else {
        return;
    };
    if s.version == 0 || s.upstreams.iter().all(|u| u.requests == 0) {
        return;
    }
    d.ledger.sample(crate::store::Sample {
        rollout: rollout.version,
        node: node.to_owned(),
        at: crate::store::now_ms(),
        version: s.version,
        traffic: crate::rollout::model::SampleTraffic::of(s),
    });
}

/// Adds a node's traffic report to the fleet's counters, for the upstreams
/// the newest config has (a report cannot create series of its own).
fn count_traffic(d: &Distribution, s: &pb::StatsReport) {
    let m = &d.metrics;
    // Under the known set's lock: a series removed as its upstream leaves
    // cannot be brought back by a report counted at the same time.
    d.known.with(
        &d.configs.current(),
        |gone| {
            let _ = m.upstream_requests.remove_label_values(&[gone]);
            let _ = m.upstream_errors.remove_label_values(&[gone]);
            let _ = m.upstream_seconds.remove_label_values(&[gone]);
        },
        |known| count_known(m, s, known),
    );
}

/// Adds the report's figures of the `known` upstreams to the fleet counters.
fn count_known(
    m: &crate::metrics::Metrics,
    s: &pb::StatsReport,
    known: &std::collections::HashSet<String>,
) {
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
