//! Staged rollouts (docs/rollouts.md): with a policy set, each committed
//! version reaches the nodes of its first stage only, is judged against
//! the nodes still on the version before, and goes on stage by stage or
//! back where it came from.
//!
//! - [`policy`]: the stages and gates, read and checked.
//! - [`model`]: the rollout as stored, and who it says serves what.
//! - [`plan`]: that, with the versions loaded, as the streams follow it.
//! - [`gates`]: the judgement of a stage, pure arithmetic.
//! - [`controller`]: the decisions, on one replica at a time.
//! - [`actions`]: pause, resume, promote, abort.

pub mod actions;
pub mod controller;
pub mod gates;
pub mod model;
pub mod plan;
pub mod policy;
