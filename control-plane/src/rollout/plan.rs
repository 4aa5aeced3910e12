//! What every node is to serve right now: the newest version, the newest
//! rollout, and the loaded versions it names. Streams follow the plan
//! through a `watch` channel of [`crate::configs::Configs`]; each takes
//! [`Plan::target_for`] its node.

use super::model::RolloutRecord;
use crate::configs::Current;
use crate::store::{DynStore, StoreError};
use std::collections::HashSet;
use std::sync::Arc;

/// Who serves what.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The newest committed version.
    pub newest: Arc<Current>,
    /// The newest rollout (`None`: none yet, every node serves the newest).
    pub rollout: Option<Arc<RolloutRecord>>,
    /// What nodes outside the rollout's stages serve.
    pub stable: Arc<Current>,
    /// The rollout's version, while its stages decide who serves it.
    pub candidate: Option<Arc<Current>>,
    /// The nodes on the candidate.
    pub members: HashSet<String>,
}

impl Plan {
    /// Every node on `newest`.
    pub fn everywhere(newest: Arc<Current>) -> Self {
        Plan {
            stable: newest.clone(),
            newest,
            ..Default::default()
        }
    }

    /// The version `node` is to serve.
    pub fn target_for(&self, node: &str) -> &Arc<Current> {
        match &self.candidate {
            Some(c) if self.members.contains(node) => c,
            _ => &self.stable,
        }
    }

    /// Orders plans: a later rollout, a later revision of it, or a newer
    /// version committed without one.
    pub fn key(&self) -> (u64, u64, u64) {
        let (v, r) = self
            .rollout
            .as_ref()
            .map_or((0, 0), |r| (r.version, r.revision));
        (v, r, self.newest.version)
    }

    /// The rollout, when it is staging a version now.
    pub fn active(&self) -> Option<&Arc<RolloutRecord>> {
        self.rollout
            .as_ref()
            .filter(|r| r.state.is_active() && r.policy.is_some())
    }
}

/// Builds the plan for `newest` and `rollout`, reusing the versions `old`
/// has loaded and loading the others from `store`.
pub async fn build(
    store: &DynStore,
    old: &Plan,
    newest: Arc<Current>,
    rollout: Option<RolloutRecord>,
) -> Result<Plan, StoreError> {
    let Some(rollout) = rollout else {
        return Ok(Plan::everywhere(newest));
    };
    if rollout.version < newest.version {
        // Committed by a build from before rollouts: served everywhere.
        return Ok(Plan::everywhere(newest));
    }
    let known = [
        Some(&newest),
        Some(&old.newest),
        Some(&old.stable),
        old.candidate.as_ref(),
    ];
    let load = |v: u64| {
        let hit = known
            .iter()
            .flatten()
            .find(|c| c.version == v)
            .cloned()
            .cloned();
        async move {
            match hit {
                Some(c) => Ok(c),
                None => crate::configs::load_version(store, v).await.map(Arc::new),
            }
        }
    };
    let stable = match rollout.stable() {
        Some(v) => load(v).await?,
        None => Arc::new(Current::default()),
    };
    let (candidate, members) = if rollout.state.is_active() {
        let members = rollout.members().into_iter().map(str::to_owned).collect();
        (Some(load(rollout.version).await?), members)
    } else {
        (None, HashSet::new())
    };
    let newest = if rollout.version > newest.version {
        // Another replica committed it and this one has not loaded it yet.
        load(rollout.version).await?
    } else {
        newest
    };
    Ok(Plan {
        newest,
        rollout: Some(Arc::new(rollout)),
        stable,
        candidate,
        members,
    })
}
