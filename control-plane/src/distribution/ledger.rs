//! Writes what nodes report to the store in batches: one transaction (one
//! fsync) per batch instead of one per message, so that a hundred nodes
//! ACKing the same version cost one disk write, and no stream ever waits
//! on the database.

use crate::store::{DynStore, NodeUpdate};
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest a report waits before it is written.
const LINGER: Duration = Duration::from_millis(25);
/// Largest batch.
const MAX_BATCH: usize = 1000;

/// The queue into the ledger writer.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::UnboundedSender<(String, NodeUpdate)>,
}

impl Ledger {
    /// Starts the writer task.
    pub fn start(store: DynStore) -> Ledger {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(store, rx));
        Ledger { tx }
    }

    /// Queues one update; order per node is kept.
    pub fn record(&self, node: &str, update: NodeUpdate) {
        let _ = self.tx.send((node.to_owned(), update));
    }
}

async fn write(store: DynStore, mut rx: mpsc::UnboundedReceiver<(String, NodeUpdate)>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(u)) => batch.push(u),
                Ok(None) | Err(_) => break,
            }
        }
        if let Err(e) = store.record_nodes(&batch).await {
            tracing::warn!(error = %e, updates = batch.len(), "cannot record node reports");
        }
        batch.clear();
    }
}
