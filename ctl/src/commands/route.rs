//! `route split NAME UPSTREAM=WEIGHT...`: a route's split in one command,
//! read, changed and written back as one new version, refused (412) when
//! another change landed in between.

use super::resources::write_of;
use super::{outcome, Ctx};
use crate::cli::Route;
use crate::client::{segment, Body};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use ureq::http::Method;

/// Runs one route action.
pub fn run(ctx: &Ctx, action: &Route) -> Result<()> {
    let Route::Split {
        name,
        shares,
        write,
    } = action;
    // The version first: if the route changes after this read, the write
    // names an older version and is refused rather than lost.
    let version = ctx.client.get("/fleet")?["version"]
        .as_u64()
        .context("the control plane did not say which version is the newest")?;
    let path = format!("/routes/{}", segment(name));
    let mut route = ctx.client.get(&path)?;
    let Value::Object(fields) = &mut route else {
        anyhow::bail!("the control plane's route {name:?} is not an object");
    };
    fields.remove("upstream");
    fields.insert(
        "split".into(),
        Value::Array(
            shares
                .iter()
                .map(|(upstream, weight)| json!({"upstream": upstream, "weight": weight}))
                .collect(),
        ),
    );
    let mut w = write_of(write);
    w.if_version = Some(version);
    let (_, answer) = ctx
        .client
        .write(Method::PUT, &path, Some(Body::json(&route)), &w)?;
    outcome(ctx, &answer)
}
