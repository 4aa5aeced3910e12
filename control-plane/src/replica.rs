//! One control-plane process among several on one database.
//!
//! - **Following**: a version committed by another replica becomes this
//!   one's newest as soon as the database announces it (PostgreSQL's
//!   `NOTIFY`), and at the latest after one poll interval when the
//!   announcement was lost or the database makes none (SQLite).
//! - **Heartbeat**: the replica records that it is alive every
//!   `heartbeat`; one silent for `replica_timeout` is dead.
//! - **Jobs**: work that must run on one replica at a time runs under the
//!   `jobs` lease in the database, renewed every heartbeat and taken over
//!   by another replica once it expires (`lease_ttl` after its holder
//!   died). Today that is forgetting dead replicas and marking the nodes
//!   they held disconnected, so that `/nodes` shows them lost (a node that
//!   reconnected to a live replica is not touched), and the rollout
//!   controller ([`crate::rollout::controller`]).

use crate::configs::Configs;
use crate::metrics::Metrics;
use crate::store::{now_ms, DynStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The lease the periodic jobs run under.
pub const JOBS_LEASE: &str = "jobs";

/// Timing of the replica's background work.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often a replica says it is alive and renews its lease.
    pub heartbeat: Duration,
    /// A replica not heard from for this long is dead: its nodes are
    /// marked disconnected.
    pub replica_timeout: Duration,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How often the newest version is read when no notice came.
    pub poll: Duration,
    /// How often the rollout controller judges the active rollout (it also
    /// acts at once on every change of the plan).
    pub rollout_tick: Duration,
    /// Whether versions committed by other replicas are followed at all
    /// (off only where a replica must stay behind: tests of what a stale
    /// writer gets).
    pub follow: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(2),
            replica_timeout: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            rollout_tick: Duration::from_secs(1),
            follow: true,
        }
    }
}

/// A name for this process: its host name and 48 random bits, so that a
/// restarted replica is a new one.
pub fn new_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "control-plane".into());
    let mut bytes = [0u8; 6];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique enough within one host: the process id and the clock.
        let fallback = u64::from(std::process::id()) << 32 ^ now_ms() as u64;
        bytes.copy_from_slice(&fallback.to_le_bytes()[..6]);
    }
    format!("{host}-{}", crate::tokens::hex(&bytes))
}

/// Makes every version committed elsewhere this process's newest, until
/// `stop` turns true.
pub async fn follow(configs: Arc<Configs>, poll: Duration, mut stop: watch::Receiver<bool>) {
    let mut notices = configs.store().version_notices();
    loop {
        tokio::select! {
            () = notice(&mut notices) => {}
            () = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
        let newest = match configs.store().newest_version().await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the newest version");
                continue;
            }
        };
        if newest > configs.current().version {
            match configs.catch_up().await {
                Ok(v) => tracing::info!(version = v, "version committed by another replica"),
                Err(e) => tracing::warn!(error = %e, "cannot load the newest version"),
            }
        } else if let Err(e) = configs.refresh_plan().await {
            // A rollout may have moved on another replica.
            tracing::warn!(error = %e, "cannot read the newest rollout");
        }
    }
}

/// The next notice, or never when there are none.
async fn notice(notices: &mut Option<watch::Receiver<u64>>) {
    match notices {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *notices = None;
            }
        }
        None => std::future::pending().await,
    }
}

/// Heartbeats, and the jobs while this replica holds their lease, until
/// `stop` turns true; then the lease is given up. `holder` says whether
/// this replica holds it, for the jobs that run on their own.
pub async fn run(
    store: DynStore,
    replica: String,
    options: Options,
    metrics: Arc<Metrics>,
    holder_tx: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let started = now_ms();
    let ttl = i64::try_from(options.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    let timeout = i64::try_from(options.replica_timeout.as_millis()).unwrap_or(i64::MAX);
    let mut holder = false;
    loop {
        if let Err(e) = store.heartbeat(&replica, started).await {
            tracing::warn!(error = %e, "cannot record this replica's heartbeat");
        }
        match store.take_lease(JOBS_LEASE, &replica, ttl).await {
            Ok(held) => {
                if held != holder {
                    tracing::info!(replica, held, "jobs lease");
                }
                holder = held;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the jobs lease");
                holder = false;
            }
        }
        metrics.lease_held.set(i64::from(holder));
        holder_tx.send_if_modified(|h| std::mem::replace(h, holder) != holder);
        if holder {
            match store.reap_replicas(now_ms().saturating_sub(timeout)).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(nodes = n, "nodes of a silent replica marked disconnected"),
                Err(e) => tracing::warn!(error = %e, "cannot check for silent replicas"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(options.heartbeat) => {}
            _ = stop.changed() => break,
        }
    }
    if holder {
        if let Err(e) = store.release_lease(JOBS_LEASE, &replica).await {
            tracing::warn!(error = %e, "cannot give up the jobs lease");
        }
    }
    holder_tx.send_replace(false);
    metrics.lease_held.set(0);
}
