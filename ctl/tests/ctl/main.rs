//! `isame-ctl` as operators and scripts run it: the built binary against a
//! real control plane started in this process.

mod common;

mod apply;
mod fleet;
mod resources;
mod rollout;
mod settings;
