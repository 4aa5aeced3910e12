//! Writes what nodes report to the store in batches: one transaction (one
//! fsync) per batch instead of one per message, so that a hundred nodes
//! ACKing the same version cost one disk write, and no stream ever waits
//! on the database.
//!
//! What waits to be written is bounded however fast nodes report or however
//! slow the database is: updates coalesce per node into the node's newest
//! state (the newest ACK, NACK, health and traffic report, whether it is
//! connected), so a node holds at most one of each; and at most
//! [`MAX_NODES`] nodes wait at once.
//!
//! Traffic samples for a running rollout's gates do not coalesce (each
//! covers its own period); at most [`MAX_SAMPLES`] wait, and more are
//! dropped and counted (a gate then judges fewer requests, never wrong
//! ones).

use crate::store::{DynStore, NodeHello, NodeUpdate, Sample};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Longest a report waits before it is written.
const LINGER: Duration = Duration::from_millis(25);
/// Most nodes whose updates wait to be written; updates of further nodes
/// are dropped (and logged) until the writer catches up.
pub const MAX_NODES: usize = 100_000;
/// Most rollout samples waiting to be written.
pub const MAX_SAMPLES: usize = 10_000;

/// One node's newest state, waiting to be written.
#[derive(Debug, Default)]
struct Pending {
    /// Its newest Hello, when its stream opened meanwhile.
    hello: Option<NodeHello>,
    ack: Option<u64>,
    nack: Option<serde_json::Value>,
    health: Option<serde_json::Value>,
    traffic: Option<serde_json::Value>,
    seen: bool,
    /// The last connection event was a disconnect.
    disconnected: bool,
}

impl Pending {
    fn merge(&mut self, update: NodeUpdate) {
        match update {
            NodeUpdate::Connected(h) => {
                self.hello = Some(h);
                self.disconnected = false;
            }
            NodeUpdate::Disconnected => self.disconnected = true,
            NodeUpdate::Seen => self.seen = true,
            NodeUpdate::Ack(v) => self.ack = Some(v),
            NodeUpdate::Nack(n) => self.nack = Some(n),
            NodeUpdate::Health(h) => self.health = Some(h),
            NodeUpdate::Traffic(t) => self.traffic = Some(t),
        }
    }

    /// The updates that bring the node's entry to this state, in an order
    /// that does so: its row first, a disconnect last.
    fn into_updates(self, node: &str, out: &mut Vec<(String, NodeUpdate)>) {
        let mut push = |u| out.push((node.to_owned(), u));
        if let Some(h) = self.hello {
            push(NodeUpdate::Connected(h));
        }
        let mut seen = self.seen;
        if let Some(v) = self.ack {
            push(NodeUpdate::Ack(v));
            seen = false;
        }
        if let Some(n) = self.nack {
            push(NodeUpdate::Nack(n));
            seen = false;
        }
        if let Some(h) = self.health {
            push(NodeUpdate::Health(h));
            seen = false;
        }
        if let Some(t) = self.traffic {
            push(NodeUpdate::Traffic(t));
            seen = false;
        }
        if seen {
            push(NodeUpdate::Seen);
        }
        if self.disconnected {
            push(NodeUpdate::Disconnected);
        }
    }
}

#[derive(Default)]
struct Queue {
    /// Node ids in the order their first pending update arrived.
    order: Vec<String>,
    by_node: HashMap<String, Pending>,
    dropped: u64,
    samples: Vec<Sample>,
    dropped_samples: u64,
}

/// The queue into the ledger writer.
#[derive(Clone)]
pub struct Ledger {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
}

impl Ledger {
    /// Starts the writer task, which records updates as `replica`'s.
    pub fn start(store: DynStore, replica: String) -> Ledger {
        let ledger = Ledger {
            queue: Arc::default(),
            wake: Arc::new(Notify::new()),
        };
        tokio::spawn(write(store, replica, ledger.clone()));
        ledger
    }

    /// Queues one update of `node`, merged into what waits for it.
    pub fn record(&self, node: &str, update: NodeUpdate) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let q = &mut *q;
        let full = q.by_node.len() >= MAX_NODES;
        match q.by_node.get_mut(node) {
            Some(p) => p.merge(update),
            None if full => {
                q.dropped += 1;
                return;
            }
            None => {
                let mut p = Pending::default();
                p.merge(update);
                q.by_node.insert(node.to_owned(), p);
                q.order.push(node.to_owned());
            }
        }
        self.wake.notify_one();
    }

    /// Queues one traffic sample of a running rollout.
    pub fn sample(&self, sample: Sample) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.samples.len() >= MAX_SAMPLES {
            q.dropped_samples += 1;
            return;
        }
        q.samples.push(sample);
        drop(q);
        self.wake.notify_one();
    }

    /// Takes the samples waiting, and how many were dropped.
    fn take_samples(&self) -> (Vec<Sample>, u64) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        (
            std::mem::take(&mut q.samples),
            std::mem::take(&mut q.dropped_samples),
        )
    }

    /// Takes everything waiting, as updates in order.
    fn take(&self) -> (Vec<(String, NodeUpdate)>, u64) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let q = &mut *q;
        let mut out = Vec::with_capacity(q.by_node.len());
        for node in q.order.drain(..) {
            if let Some(p) = q.by_node.remove(&node) {
                p.into_updates(&node, &mut out);
            }
        }
        (out, std::mem::take(&mut q.dropped))
    }
}

async fn write(store: DynStore, replica: String, ledger: Ledger) {
    loop {
        ledger.wake.notified().await;
        // Let the reports of a burst (a hundred ACKs of one commit) gather.
        tokio::time::sleep(LINGER).await;
        let (batch, dropped) = ledger.take();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "node reports dropped: too many nodes waiting to be recorded"
            );
        }
        if !batch.is_empty() {
            if let Err(e) = store.record_nodes(&replica, &batch).await {
                tracing::warn!(error = %e, updates = batch.len(), "cannot record node reports");
            }
        }
        let (samples, dropped) = ledger.take_samples();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "rollout samples dropped: too many waiting to be recorded"
            );
        }
        if let Err(e) = store.record_samples(&samples).await {
            tracing::warn!(error = %e, samples = samples.len(), "cannot record rollout samples");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: &str) -> NodeHello {
        NodeHello {
            id: id.into(),
            hostname: "h".into(),
            build: "b".into(),
            labels: serde_json::json!({}),
        }
    }

    fn kinds(updates: &[(String, NodeUpdate)]) -> Vec<String> {
        updates
            .iter()
            .map(|(n, u)| {
                let k = match u {
                    NodeUpdate::Connected(_) => "connected".to_owned(),
                    NodeUpdate::Seen => "seen".to_owned(),
                    NodeUpdate::Ack(v) => format!("ack {v}"),
                    NodeUpdate::Nack(_) => "nack".to_owned(),
                    NodeUpdate::Health(_) => "health".to_owned(),
                    NodeUpdate::Traffic(_) => "traffic".to_owned(),
                    NodeUpdate::Disconnected => "disconnected".to_owned(),
                };
                format!("{n}: {k}")
            })
            .collect()
    }

    #[test]
    fn updates_coalesce_into_each_nodes_newest_state() {
        let mut p = Pending::default();
        p.merge(NodeUpdate::Connected(hello("a")));
        for v in 1..=1000 {
            p.merge(NodeUpdate::Ack(v));
            p.merge(NodeUpdate::Traffic(serde_json::json!({"n": v})));
            p.merge(NodeUpdate::Seen);
        }
        p.merge(NodeUpdate::Disconnected);
        let mut out = Vec::new();
        p.into_updates("a", &mut out);
        assert_eq!(
            kinds(&out),
            [
                "a: connected",
                "a: ack 1000",
                "a: traffic",
                "a: disconnected"
            ]
        );
    }

    #[test]
    fn the_last_connection_event_wins() {
        let mut p = Pending::default();
        p.merge(NodeUpdate::Connected(hello("a")));
        p.merge(NodeUpdate::Disconnected);
        p.merge(NodeUpdate::Connected(hello("a")));
        p.merge(NodeUpdate::Seen);
        let mut out = Vec::new();
        p.into_updates("a", &mut out);
        assert_eq!(kinds(&out), ["a: connected", "a: seen"]);
    }
}
