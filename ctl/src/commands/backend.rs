//! `backend add|remove|drain|weight`: one backend of one upstream, each a
//! new version. The API names a backend by its URL (percent-encoded here)
//! or its `host:port`.

use super::resources::write_of;
use super::{outcome, Ctx};
use crate::cli::Backend;
use crate::client::{segment, Body};
use anyhow::Result;
use serde_json::json;
use ureq::http::Method;

/// `/upstreams/{upstream}/backends/{backend}`.
fn path(upstream: &str, backend: &str) -> String {
    format!(
        "/upstreams/{}/backends/{}",
        segment(upstream),
        segment(backend)
    )
}

/// Runs one backend action.
pub fn run(ctx: &Ctx, action: &Backend) -> Result<()> {
    let (method, path, body, write) = match action {
        Backend::Add {
            upstream,
            url,
            weight,
            write,
        } => {
            let mut b = json!({"url": url});
            if let Some(w) = weight {
                b["weight"] = json!(w);
            }
            (
                Method::POST,
                format!("/upstreams/{}/backends", segment(upstream)),
                Some(b),
                write,
            )
        }
        Backend::Remove {
            upstream,
            backend,
            write,
        } => (Method::DELETE, path(upstream, backend), None, write),
        Backend::Drain {
            upstream,
            backend,
            undo,
            write,
        } => (
            Method::PATCH,
            path(upstream, backend),
            Some(json!({"drain": !undo})),
            write,
        ),
        Backend::Weight {
            upstream,
            backend,
            weight,
            write,
        } => (
            Method::PATCH,
            path(upstream, backend),
            Some(json!({"weight": weight})),
            write,
        ),
    };
    let (_, answer) = ctx.client.write(
        method,
        &path,
        body.as_ref().map(Body::json),
        &write_of(write),
    )?;
    outcome(ctx, &answer)
}
