//! The rollout controller: on the replica holding the `jobs` lease (the
//! only one on SQLite), it moves the active rollout along, one decision per
//! tick: start the next stage (choosing its nodes), judge the stage being
//! baked, promote it when it passed, and roll it back when it failed.
//!
//! Every decision is one conditional write of the rollout's row (the
//! revision it read must still be the newest), with its audit entry, so a
//! controller that lost its lease meanwhile, an operator's action or a new
//! commit can never be overwritten; the plan follows each write. The
//! rollout's whole state lives in the database, so a restarted (or
//! another) controller takes up where the last one stopped.
//!
//! Each rollout this controller moves is one OpenTelemetry span, `rollout`
//! (attributes `version`, `base`, and at its end `result` and
//! `failed_gate`), open from when the controller first sees it active to
//! when it ends; every decision is an event in it.

use super::gates::{self, NodeView, Verdict, Window};
use super::model::{RolloutRecord, StageProgress, State};
use super::policy::{self, Policy};
use crate::configs::Configs;
use crate::metrics::Metrics;
use crate::store::{now_ms, NewAudit, NodeRecord, StoreError};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

/// The actor automatic decisions are recorded under.
pub const ACTOR: &str = "rollout-controller";

/// How often figures of a stage being baked are written, when nothing else
/// changed.
const FIGURES_EVERY_MS: i64 = 5_000;

/// Runs the controller while `holder` says this replica holds the jobs
/// lease, until `stop` turns true.
pub async fn run(
    configs: Arc<Configs>,
    metrics: Arc<Metrics>,
    tick: Duration,
    holder: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut plans = configs.subscribe_plan();
    let mut span: Option<(u64, tracing::Span)> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            changed = plans.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
        if !*holder.borrow() {
            continue;
        }
        let plan = configs.plan();
        if let Some(r) = plan.active() {
            if span.as_ref().is_none_or(|(v, _)| *v != r.version) {
                let s = tracing::info_span!(
                    "rollout",
                    otel.kind = "internal",
                    version = r.version,
                    base = r.base,
                    result = tracing::field::Empty,
                    failed_gate = tracing::field::Empty,
                );
                span = Some((r.version, s));
            }
        }
        let current = span
            .as_ref()
            .map_or_else(tracing::Span::none, |(_, s)| s.clone());
        if let Err(e) = step(&configs, &metrics).instrument(current).await {
            tracing::warn!(error = %e, "rollout controller");
        }
        // Close the span of a rollout that is no longer active.
        let plan = configs.plan();
        if let Some((v, s)) = span.take() {
            match plan.rollout.as_ref().filter(|r| r.version == v) {
                Some(r) if r.state.is_active() => span = Some((v, s)),
                Some(r) => {
                    s.record("result", r.state.as_str());
                    if let Some(f) = &r.progress.failure {
                        s.record("failed_gate", f.gate.as_str());
                    }
                }
                None => {
                    s.record("result", "superseded");
                }
            }
        }
    }
}

/// One decision on the newest rollout, if it is active.
pub async fn step(configs: &Configs, metrics: &Metrics) -> Result<(), StoreError> {
    let store = configs.store();
    let Some(mut r) = store.latest_rollout().await? else {
        metrics.rollout_stage.set(0);
        return Ok(());
    };
    let Some(policy_doc) = r.policy.clone().filter(|_| r.state.is_active()) else {
        metrics.rollout_stage.set(0);
        metrics.rollout_nodes.reset();
        return Ok(());
    };
    let policy = match policy::parse(&policy_doc) {
        Ok(p) => p,
        Err(e) => {
            // Only a policy that passed this reader is stored; one that no
            // longer does cannot be judged: stop and say why.
            let now = now_ms();
            r.state = State::Aborted;
            r.progress
                .event(now, "aborted", format!("its policy no longer reads: {e}"));
            return decide(configs, metrics, r, "rollout.aborted", "aborted").await;
        }
    };
    let nodes = store.nodes().await?;
    let now = now_ms();
    let Some(idx) = r.progress.stages.len().checked_sub(1) else {
        // Nothing started yet: the first stage.
        return start_next(configs, metrics, r, &policy, &nodes, now).await;
    };
    let stage_def = policy.stages.get(idx).cloned();
    let Some(stage_def) = stage_def else {
        return complete(configs, metrics, r, now).await;
    };
    let progress = &r.progress.stages[idx];
    if progress.finished_at.is_some() {
        // Passed while paused: promote once resumed.
        if r.state == State::Running {
            return start_next(configs, metrics, r, &policy, &nodes, now).await;
        }
        return Ok(());
    }
    let members: HashSet<&str> = r.members();
    metrics.rollout_stage.set(idx as i64 + 1);
    metrics
        .rollout_nodes
        .with_label_values(&["new"])
        .set(members.len() as i64);
    let base_nodes = nodes
        .iter()
        .filter(|n| n.connected && !members.contains(n.id.as_str()))
        .count();
    metrics
        .rollout_nodes
        .with_label_values(&["base"])
        .set(base_nodes as i64);
    let views: Vec<NodeView> = progress
        .members
        .iter()
        .map(|id| view_of(id, nodes.iter().find(|n| n.id == *id)))
        .collect();
    let samples = store.samples(r.version, progress.bake_from).await?;
    let window = Window::of(&samples, &members, r.version, r.base);
    let verdict = gates::judge(
        &policy.gates,
        &stage_def,
        progress,
        r.version,
        &views,
        &window,
        now,
    );
    drop(members);
    let st = &mut r.progress.stages[idx];
    match verdict {
        Verdict::Fail(f) => {
            st.status = "failed".into();
            st.finished_at = Some(now);
            st.figures = f.figures.clone();
            let message = format!(
                "gate {} failed in stage {}: {}; nodes {}; every node back on version {}",
                f.gate,
                f.stage,
                f.message,
                f.nodes.join(", "),
                r.base.unwrap_or(0)
            );
            r.progress
                .event(now, "gate_failed", format!("{}: {}", f.gate, f.message));
            r.progress.event(now, "rolled_back", message);
            r.progress.failure = Some(f);
            r.state = State::RolledBack;
            decide(configs, metrics, r, "rollout.rolled_back", "rolled_back").await
        }
        Verdict::Baking(_, figures) | Verdict::Waiting(figures) if r.state == State::Paused => {
            refresh_figures(configs, r, idx, None, figures, now).await
        }
        Verdict::Baking(_, figures) => {
            refresh_figures(configs, r, idx, Some("baking"), figures, now).await
        }
        Verdict::Waiting(figures) => {
            let fresh = st.status != "waiting_for_traffic";
            if fresh {
                let note = figures["low_traffic"]
                    .as_str()
                    .unwrap_or("too little traffic")
                    .to_owned();
                r.progress
                    .event(now, "waiting", format!("stage {}: {note}", stage_def.name));
            }
            refresh_figures(configs, r, idx, Some("waiting_for_traffic"), figures, now).await
        }
        Verdict::Pass(figures) => {
            st.status = "passed".into();
            st.finished_at = Some(now);
            st.figures = figures;
            let name = st.name.clone();
            r.progress.event(
                now,
                "stage_passed",
                format!("stage {name} passed its gates"),
            );
            if r.state == State::Paused {
                return write(
                    configs,
                    r,
                    Some(audit(&name, "rollout.stage_passed", "stage passed; paused")),
                )
                .await
                .map(drop);
            }
            start_next(configs, metrics, r, &policy, &nodes, now).await
        }
    }
}

/// Writes new figures of stage `idx` when its status changed or they are
/// old enough.
async fn refresh_figures(
    configs: &Configs,
    mut r: RolloutRecord,
    idx: usize,
    status: Option<&str>,
    figures: serde_json::Value,
    now: i64,
) -> Result<(), StoreError> {
    let st = &mut r.progress.stages[idx];
    let changed = status.is_some_and(|s| st.status != s);
    let last = st.figures["at"].as_i64().unwrap_or(0);
    if !changed && now.saturating_sub(last) < FIGURES_EVERY_MS {
        return Ok(());
    }
    if let Some(s) = status {
        st.status = s.into();
    }
    st.figures = figures;
    st.figures["at"] = now.into();
    write(configs, r, None).await.map(drop)
}

/// Starts the stage after the last one started (skipping stages no node is
/// left for), or completes the rollout after the last.
async fn start_next(
    configs: &Configs,
    metrics: &Metrics,
    mut r: RolloutRecord,
    policy: &Policy,
    nodes: &[NodeRecord],
    now: i64,
) -> Result<(), StoreError> {
    let new_config = configs
        .plan()
        .candidate
        .clone()
        .filter(|c| c.version == r.version);
    loop {
        let idx = r.progress.stages.len();
        let Some(stage) = policy.stages.get(idx) else {
            return complete(configs, metrics, r, now).await;
        };
        let taken: HashSet<&str> = r
            .progress
            .stages
            .iter()
            .flat_map(|s| s.members.iter().map(String::as_str))
            .collect();
        let mut eligible: Vec<&NodeRecord> = nodes
            .iter()
            .filter(|n| n.connected && !taken.contains(n.id.as_str()))
            .filter(|n| {
                stage
                    .selector
                    .iter()
                    .all(|(k, v)| n.labels[k].as_str() == Some(v.as_str()))
            })
            .collect();
        // A stable order of its own per rollout: the same nodes are not
        // always first.
        eligible.sort_by_key(|n| order_key(r.version, &n.id));
        let want = (eligible.len() * stage.percent as usize).div_ceil(100);
        let members: Vec<String> = eligible.iter().take(want).map(|n| n.id.clone()).collect();
        drop(taken);
        let mut progress = StageProgress {
            name: stage.name.clone(),
            started_at: now,
            bake_from: now,
            status: "baking".into(),
            ..Default::default()
        };
        if members.is_empty() {
            progress.status = "skipped".into();
            progress.finished_at = Some(now);
            r.progress.stages.push(progress);
            r.progress.event(
                now,
                "stage_skipped",
                format!("stage {}: no node left matches it", stage.name),
            );
            continue;
        }
        let backends: HashSet<String> = new_config
            .as_ref()
            .and_then(|c| c.config.as_ref())
            .map(|c| {
                c.upstreams
                    .iter()
                    .flat_map(|u| {
                        u.backends
                            .iter()
                            .map(move |b| format!("{} {}", u.name, b.url))
                    })
                    .collect()
            })
            .unwrap_or_default();
        progress.healthy_before = members
            .iter()
            .filter_map(|id| nodes.iter().find(|n| n.id == *id))
            .map(|n| {
                let healthy = healthy_keys(n)
                    .into_iter()
                    .filter(|k| backends.contains(k))
                    .collect();
                (n.id.clone(), healthy)
            })
            .collect::<BTreeMap<_, _>>();
        let message = format!(
            "stage {} started: {} nodes ({}) take version {}",
            stage.name,
            members.len(),
            members.join(", "),
            r.version
        );
        progress.members = members;
        r.progress.stages.push(progress);
        r.progress.event(now, "stage_started", message.clone());
        metrics.rollout_stage.set(idx as i64 + 1);
        return write(
            configs,
            r,
            Some(audit(&stage.name, "rollout.stage_started", &message)),
        )
        .await
        .map(drop);
    }
}

/// Marks the rollout completed: every node takes its version.
async fn complete(
    configs: &Configs,
    metrics: &Metrics,
    mut r: RolloutRecord,
    now: i64,
) -> Result<(), StoreError> {
    r.state = State::Completed;
    r.progress.event(
        now,
        "completed",
        format!("every stage passed: every node takes version {}", r.version),
    );
    decide(configs, metrics, r, "rollout.completed", "completed").await
}

/// Writes a rollout that ended, counts it and forgets its samples.
async fn decide(
    configs: &Configs,
    metrics: &Metrics,
    r: RolloutRecord,
    action: &str,
    result: &str,
) -> Result<(), StoreError> {
    let message = r
        .progress
        .timeline
        .last()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    let version = r.version;
    if write(
        configs,
        r,
        Some(audit(&format!("version {version}"), action, &message)),
    )
    .await?
    {
        metrics.rollouts.with_label_values(&[result]).inc();
        metrics.rollout_stage.set(0);
        metrics.rollout_nodes.reset();
        tracing::info!(version, result, message, "rollout ended");
        configs.store().forget_samples(version + 1).await?;
    }
    Ok(())
}

/// Writes `r` if nobody changed it since it was read, and makes the plan
/// follow; false when somebody did (the next tick reads it again).
async fn write(
    configs: &Configs,
    r: RolloutRecord,
    audit: Option<NewAudit>,
) -> Result<bool, StoreError> {
    let written = configs.store().update_rollout(&r, audit).await?;
    configs.refresh_plan().await?;
    Ok(written)
}

/// An audit entry of an automatic decision.
pub(crate) fn audit(target: &str, action: &str, message: &str) -> NewAudit {
    NewAudit {
        actor: ACTOR.into(),
        remote_addr: String::new(),
        action: action.into(),
        target: target.into(),
        message: message.into(),
        changes: Vec::new(),
    }
}

/// The ledger's view of a stage member (a node missing from it is silent).
fn view_of(id: &str, n: Option<&NodeRecord>) -> NodeView {
    let Some(n) = n else {
        return NodeView {
            id: id.to_owned(),
            ..Default::default()
        };
    };
    NodeView {
        id: n.id.clone(),
        last_seen: n.last_seen,
        version: n.version,
        nacked: n.last_nack.as_ref().and_then(|v| v["version"].as_u64()),
        nack_errors: n
            .last_nack
            .as_ref()
            .map(|v| v["errors"].clone())
            .unwrap_or_default(),
        healthy: healthy_keys(n).into_iter().collect(),
    }
}

/// The backends `n` reports healthy, as `"upstream url"`.
fn healthy_keys(n: &NodeRecord) -> Vec<String> {
    n.health
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["healthy"].as_bool() == Some(true))
        .filter_map(|b| {
            Some(format!(
                "{} {}",
                b["upstream"].as_str()?,
                b["backend"].as_str()?
            ))
        })
        .collect()
}

/// Where `node` comes in the rollout of `version`'s order.
fn order_key(version: u64, node: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(version.to_be_bytes());
    h.update(node.as_bytes());
    h.finalize().into()
}
