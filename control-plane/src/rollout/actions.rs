//! What operators do to a rollout (REST, `isame-ctl rollout …`, the
//! dashboard): pause, resume, promote, abort. Each acts on the newest
//! rollout only (an older one no longer decides what any node serves) and
//! is one conditional write with its audit entry, retried when the
//! controller wrote in between.
//!
//! - `pause`: no stage is promoted until `resume`; gates still judge, and
//!   a failed one still rolls back.
//! - `resume`: the current stage's bake window starts again.
//! - `promote`: the current stage counts as passed and the next starts;
//!   with `all`, or on a rollout that was rolled back or aborted, every
//!   node takes the version at once.
//! - `abort`: every node goes back to the base version.

use super::model::{RolloutRecord, State};
use crate::configs::Configs;
use crate::metrics::Metrics;
use crate::store::{now_ms, NewAudit, StoreError};

/// An operator's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop promoting.
    Pause,
    /// Promote again.
    Resume,
    /// Pass the current stage (`all`: every node at once).
    Promote {
        /// Skip every remaining stage.
        all: bool,
    },
    /// Send every node back to the base.
    Abort,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Promote { .. } => "promote",
            Action::Abort => "abort",
        }
    }
}

/// Why an action was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No such rollout.
    #[error("no rollout for version {0}")]
    NotFound(u64),
    /// The rollout is not in a state the action applies to.
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who acts, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Token name.
    pub name: String,
    /// Client address.
    pub remote_addr: String,
    /// Why, in their words.
    pub message: String,
}

/// Applies `action` to the rollout of `version` (the newest rollout when
/// `None`).
pub async fn act(
    configs: &Configs,
    metrics: &Metrics,
    version: Option<u64>,
    action: Action,
    actor: &Actor,
) -> Result<RolloutRecord, ActionError> {
    let store = configs.store();
    for _ in 0..8 {
        let Some(latest) = store.latest_rollout().await? else {
            return Err(ActionError::NotFound(version.unwrap_or(0)));
        };
        if let Some(v) = version.filter(|v| *v != latest.version) {
            return match store.rollout(v).await? {
                None => Err(ActionError::NotFound(v)),
                Some(_) => Err(ActionError::Conflict(format!(
                    "the rollout of version {v} is over: version {}'s rollout decides what nodes serve",
                    latest.version
                ))),
            };
        }
        let mut r = latest;
        let now = now_ms();
        let who = &actor.name;
        let ended = apply(&mut r, action, now, who)?;
        let summary = r
            .progress
            .timeline
            .last()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        let audit = NewAudit {
            actor: actor.name.clone(),
            remote_addr: actor.remote_addr.clone(),
            action: format!("rollout.{}", action.name()),
            target: format!("version {}", r.version),
            message: if actor.message.is_empty() {
                summary
            } else {
                format!("{summary}: {}", actor.message)
            },
            changes: Vec::new(),
        };
        if store.update_rollout(&r, Some(audit)).await? {
            configs.refresh_plan().await?;
            if let Some(result) = ended {
                metrics.rollouts.with_label_values(&[result]).inc();
                metrics.rollout_stage.set(0);
                store.forget_samples(r.version + 1).await?;
            }
            r.revision += 1;
            return Ok(r);
        }
    }
    Err(ActionError::Conflict(
        "the rollout kept changing; try again".into(),
    ))
}

/// Changes `r` as `action` says; the result name when it ends it.
fn apply(
    r: &mut RolloutRecord,
    action: Action,
    now: i64,
    who: &str,
) -> Result<Option<&'static str>, ActionError> {
    let v = r.version;
    let refuse = |r: &RolloutRecord| {
        Err(ActionError::Conflict(format!(
            "cannot {} the rollout of version {v}: it is {}",
            action.name(),
            r.state.as_str()
        )))
    };
    match (action, r.state) {
        (Action::Pause, State::Running) => {
            r.state = State::Paused;
            r.progress.event(now, "paused", format!("paused by {who}"));
            Ok(None)
        }
        (Action::Resume, State::Paused) => {
            r.state = State::Running;
            if let Some(st) = r
                .progress
                .stages
                .last_mut()
                .filter(|s| s.finished_at.is_none())
            {
                st.bake_from = now;
            }
            r.progress.event(
                now,
                "resumed",
                format!("resumed by {who}; the stage bakes again from now"),
            );
            Ok(None)
        }
        (Action::Promote { all: false }, State::Running | State::Paused)
            if r.progress
                .stages
                .last()
                .is_some_and(|s| s.finished_at.is_none()) =>
        {
            r.state = State::Running;
            if let Some(st) = r.progress.stages.last_mut() {
                st.finished_at = Some(now);
                st.status = "promoted".into();
                let name = st.name.clone();
                r.progress
                    .event(now, "promoted", format!("stage {name} promoted by {who}"));
            }
            Ok(None)
        }
        (
            Action::Promote { .. },
            State::Running | State::Paused | State::RolledBack | State::Aborted,
        ) => {
            r.state = State::Promoted;
            r.progress.event(
                now,
                "promoted",
                format!("promoted by {who}: every node takes version {v}"),
            );
            Ok(Some("promoted"))
        }
        (Action::Abort, State::Running | State::Paused) => {
            r.state = State::Aborted;
            let base = r.base.map_or("none".to_owned(), |b| b.to_string());
            r.progress.event(
                now,
                "aborted",
                format!("aborted by {who}: every node back on version {base}"),
            );
            Ok(Some("aborted"))
        }
        _ => refuse(r),
    }
}
