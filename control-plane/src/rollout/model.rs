//! A rollout as stored: one per committed version, saying which nodes
//! serve that version and which keep the one before (its base), where it
//! is in its policy's stages, and what happened to it.
//!
//! What a node is to serve follows from the newest rollout alone
//! ([`RolloutRecord::target_for`]): while it runs, the nodes of its
//! stages so far serve the new version and every other node the base;
//! once completed (or promoted) every node serves the new version; after a
//! rollback or an abort every node serves the base again.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Going through its stages.
    Running,
    /// Stopped by an operator: no stage is promoted, gates still roll back.
    Paused,
    /// Every stage passed: every node serves the version.
    Completed,
    /// An operator sent the version everywhere, past its gates.
    Promoted,
    /// A gate failed and the stage nodes went back to the base.
    RolledBack,
    /// An operator stopped it and its nodes went back to the base.
    Aborted,
    /// A newer version was committed while it ran; the newer one's rollout
    /// starts from the first stage with the same base.
    Superseded,
}

impl State {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Completed => "completed",
            State::Promoted => "promoted",
            State::RolledBack => "rolled_back",
            State::Aborted => "aborted",
            State::Superseded => "superseded",
        }
    }

    /// The state with this stored name.
    pub fn parse(s: &str) -> Option<State> {
        [
            State::Running,
            State::Paused,
            State::Completed,
            State::Promoted,
            State::RolledBack,
            State::Aborted,
            State::Superseded,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Running or paused: its stages decide who serves what.
    pub fn is_active(self) -> bool {
        matches!(self, State::Running | State::Paused)
    }

    /// The version reached every node.
    pub fn reached_everyone(self) -> bool {
        matches!(self, State::Completed | State::Promoted)
    }
}

/// One entry of a rollout's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix milliseconds.
    pub at: i64,
    /// What happened: `created`, `stage_started`, `stage_passed`,
    /// `gate_failed`, `rolled_back`, `paused`, `resumed`, `promoted`,
    /// `aborted`, `superseded`, `completed`, `waiting`.
    pub kind: String,
    /// In words.
    pub message: String,
}

/// One stage as it went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageProgress {
    /// The policy's name for it.
    pub name: String,
    /// The nodes it moved to the new version, chosen when it started.
    pub members: Vec<String>,
    /// Unix milliseconds.
    pub started_at: i64,
    /// Its bake window starts here (the start, or the last resume).
    pub bake_from: i64,
    /// When it passed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// Per member, the backends of the new config it saw healthy before it
    /// took the new version (`"upstream url"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub healthy_before: BTreeMap<String, Vec<String>>,
    /// The last judgement: `baking`, `waiting_for_traffic`, `passed`,
    /// `failed`, `skipped`.
    pub status: String,
    /// The figures of the last judgement.
    #[serde(default)]
    pub figures: serde_json::Value,
}

/// A failed gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// `nack`, `5xx_rate`, `5xx_ratio`, `p99_ratio`, `p99`, `health`,
    /// `silence`.
    pub gate: String,
    /// In words, with the figures.
    pub message: String,
    /// The figures compared.
    pub figures: serde_json::Value,
    /// The nodes that tripped it.
    pub nodes: Vec<String>,
    /// The stage it failed in.
    pub stage: String,
}

/// Everything about a rollout but its identity, kept as one JSON column.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The stages started so far, in order.
    pub stages: Vec<StageProgress>,
    /// Oldest first.
    pub timeline: Vec<Event>,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// Most timeline entries kept (the oldest go first).
const MAX_EVENTS: usize = 200;

impl Progress {
    /// Adds a timeline entry.
    pub fn event(&mut self, at: i64, kind: &str, message: impl Into<String>) {
        if self.timeline.len() >= MAX_EVENTS {
            self.timeline.remove(0);
        }
        self.timeline.push(Event {
            at,
            kind: kind.to_owned(),
            message: message.into(),
        });
    }
}

/// A stored rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutRecord {
    /// The version it rolls out (one rollout per version).
    pub version: u64,
    /// What nodes outside its stages serve (`None`: nothing came before).
    pub base: Option<u64>,
    /// The policy it follows, canonical JSON (`None`: everywhere at once).
    pub policy: Option<serde_json::Value>,
    /// Where it is.
    pub state: State,
    /// Bumped by every change, which must name the revision it read.
    pub revision: u64,
    /// Its stages, timeline and failure.
    pub progress: Progress,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

impl RolloutRecord {
    /// The version every node outside its stages serves: the base while it
    /// runs or after it was stopped, the version once it reached everyone.
    pub fn stable(&self) -> Option<u64> {
        if self.state.reached_everyone() {
            Some(self.version)
        } else {
            self.base
        }
    }

    /// The nodes on the new version while it is active.
    pub fn members(&self) -> HashSet<&str> {
        if !self.state.is_active() {
            return HashSet::new();
        }
        self.progress
            .stages
            .iter()
            .flat_map(|s| s.members.iter().map(String::as_str))
            .collect()
    }

    /// The version `node` is to serve.
    pub fn target_for(&self, node: &str, members: &HashSet<&str>) -> Option<u64> {
        if members.contains(node) {
            Some(self.version)
        } else {
            self.stable()
        }
    }
}

/// A rollout policy as stored: each change is a new revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyRecord {
    /// 1, 2, 3 ...
    pub revision: u64,
    /// The policy, canonical JSON; `None` after it was removed.
    pub policy: Option<serde_json::Value>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Token name.
    pub author: String,
}

/// What one node served over one report period, kept while a rollout runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The rollout it was taken during.
    pub rollout: u64,
    /// Node id.
    pub node: String,
    /// Unix milliseconds, when the control plane received it.
    pub at: i64,
    /// The version the node served over the period.
    pub version: u64,
    /// What it served.
    pub traffic: SampleTraffic,
}

/// Most upstreams a sample keeps counts of (the busiest; the totals count
/// every upstream).
pub const MAX_SAMPLE_UPSTREAMS: usize = 256;

/// A sample's figures: totals, one latency histogram over every upstream,
/// and requests and 5xx of the busiest upstreams.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleTraffic {
    /// Requests that ended.
    pub requests: u64,
    /// Of which 5xx (or cut off by the backend).
    pub errors: u64,
    /// The first latency bucket counted.
    pub latency_first: u32,
    /// Counts from that bucket on (`isame_proto::latency`).
    pub latency: Vec<u64>,
    /// At most [`MAX_SAMPLE_UPSTREAMS`], busiest first.
    pub upstreams: Vec<UpstreamSample>,
}

/// One upstream's share of a [`Sample`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamSample {
    /// Upstream name.
    pub upstream: String,
    /// Requests that ended.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
}

impl SampleTraffic {
    /// The figures of a node's traffic report.
    pub fn of(report: &isame_proto::pb::StatsReport) -> Self {
        let mut t = SampleTraffic::default();
        let mut latency = isame_proto::latency::Histogram::new();
        let mut upstreams = Vec::new();
        for u in report.upstreams.iter().filter(|u| u.requests > 0) {
            let errors = u.errors.min(u.requests);
            t.requests = t.requests.saturating_add(u.requests);
            t.errors = t.errors.saturating_add(errors);
            let counts = &u.latency[..u.latency.len().min(isame_proto::latency::BUCKETS)];
            latency.add_compact(u.latency_first, counts);
            upstreams.push(UpstreamSample {
                upstream: u.upstream.chars().take(128).collect(),
                requests: u.requests,
                errors,
            });
        }
        upstreams.sort_by_key(|u| std::cmp::Reverse(u.requests));
        upstreams.truncate(MAX_SAMPLE_UPSTREAMS);
        (t.latency_first, t.latency) = latency.compact();
        t.upstreams = upstreams;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isame_proto::pb;

    #[test]
    fn a_sample_keeps_totals_one_histogram_and_the_busiest_upstreams() {
        let report = pb::StatsReport {
            upstreams: (0..300u64)
                .map(|i| pb::UpstreamStats {
                    upstream: format!("u{i}"),
                    requests: i,
                    // A hostile count: more errors than requests.
                    errors: if i == 299 { 1_000 } else { 0 },
                    latency_first: 3,
                    latency: vec![i; 500],
                    ..Default::default()
                })
                .collect(),
            period_ms: 1000,
            version: 4,
        };
        let t = SampleTraffic::of(&report);
        assert_eq!(t.requests, (0..300).sum::<u64>());
        assert_eq!(t.errors, 299, "errors are capped at requests");
        assert_eq!(t.upstreams.len(), MAX_SAMPLE_UPSTREAMS);
        assert_eq!(t.upstreams[0].upstream, "u299");
        assert!(t.upstreams.iter().all(|u| u.requests > 0));
        assert!(
            t.latency.len() + t.latency_first as usize <= isame_proto::latency::BUCKETS,
            "buckets past the last are dropped"
        );
    }
}
