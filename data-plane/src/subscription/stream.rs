//! The stream to the control plane: connect (and reconnect with backoff,
//! forever), say Hello, install each snapshot and answer ACK or NACK, and
//! report traffic and backend health at a bounded rate.

use super::backoff::Backoff;
use super::delta::{rebuild, Received};
use super::{cache, Inner};
use isame_proto::pb;
use isame_proto::pb::control_message::Kind as In;
use isame_proto::pb::node_message::Kind as Out;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{interval, Instant, MissedTickBehavior};
use tonic::Code;
use tracing::{debug, error, info, warn};

/// Reconnects forever until `stop` turns true: to the next control-plane
/// address at once after a stream to one ends or fails, and after a
/// jittered, growing delay once every address failed in a row.
pub(super) async fn run(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let urls = &inner.opts.control_planes;
    let mut next = fastrand::usize(..urls.len().max(1));
    let mut failed_in_a_row = 0usize;
    loop {
        let began = Instant::now();
        let url = &urls[next % urls.len()];
        next = next.wrapping_add(1);
        let outcome = tokio::select! {
            r = session(&inner, url) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        inner.state.connected.store(false, Ordering::SeqCst);
        match outcome {
            Ok(()) => info!("control plane closed the stream; reconnecting"),
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ) =>
            {
                error!(
                    reason = status.message(),
                    "the control plane refused this node's token (--token / ISAME_TOKEN); retrying"
                )
            }
            Err(status) => {
                warn!(code = ?status.code(), reason = status.message(), "control plane unreachable; retrying")
            }
        }
        if began.elapsed() > Duration::from_secs(10) {
            backoff.reset();
            failed_in_a_row = 0;
        }
        failed_in_a_row += 1;
        if failed_in_a_row < urls.len() {
            // Another replica may answer at once.
            continue;
        }
        failed_in_a_row = 0;
        let delay = backoff.next_delay();
        debug!(?delay, "next connection attempt");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One connection to `url`, until it ends.
async fn session(inner: &Arc<Inner>, url: &str) -> Result<(), tonic::Status> {
    let opts = &inner.opts;
    let endpoint = super::endpoint(opts, url)
        .map_err(tonic::Status::invalid_argument)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{url}: {e}")))?;
    let mut client = pb::config_discovery_client::ConfigDiscoveryClient::new(channel)
        .max_decoding_message_size(256 << 20);
    let (tx, rx) = mpsc::channel::<pb::NodeMessage>(16);
    let hello = pb::Hello {
        node_id: opts.node_id.clone(),
        hostname: hostname(),
        build_version: env!("CARGO_PKG_VERSION").into(),
        labels: opts.labels.iter().cloned().collect(),
        cached_version: inner.state.version.load(Ordering::SeqCst),
        schema_digest: isame_proto::config::schema::digest().into(),
        config_fields: isame_proto::config::schema::fields().to_vec(),
        deltas: true,
    };
    let _ = tx
        .send(pb::NodeMessage {
            kind: Some(Out::Hello(hello)),
        })
        .await;
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(token) = &opts.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("the token is not valid header text"))?;
        req.metadata_mut().insert("authorization", value);
    }
    let mut inbound = client.subscribe(req).await?.into_inner();
    inner.state.connected.store(true, Ordering::SeqCst);
    info!(control_plane = %url, node = %opts.node_id, "subscribed");
    let mut reports = interval(opts.report_interval);
    reports.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_health: Vec<pb::BackendHealth> = Vec::new();
    let mut last_report = Instant::now();
    // What this stream carried last: the base of the next delta.
    let mut received: Option<Received> = None;
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let Some(msg) = msg? else { return Ok(()) };
                if !on_message(inner, &tx, &mut last_report, &mut received, msg).await {
                    return Ok(());
                }
            }
            _ = reports.tick() => {
                let Some(shared) = report_traffic(inner, &tx, &mut last_report).await else {
                    return Ok(());
                };
                let Some(shared) = shared else { continue };
                let snap = shared.snapshot();
                let health = crate::report::backend_health(&snap, &shared.dns);
                if health != last_health {
                    let report = pb::HealthReport { backends: health.clone() };
                    if tx.send(pb::NodeMessage { kind: Some(Out::Health(report)) }).await.is_err() {
                        return Ok(());
                    }
                    last_health = health;
                }
            }
        }
    }
}

/// Handles one message from the control plane: a snapshot, or a delta
/// (made into one, or answered with a resync), is installed and answered.
/// `false` when the stream is gone.
async fn on_message(
    inner: &Arc<Inner>,
    tx: &mpsc::Sender<pb::NodeMessage>,
    last_report: &mut Instant,
    received: &mut Option<Received>,
    msg: pb::ControlMessage,
) -> bool {
    let snapshot = match msg.kind {
        Some(In::Snapshot(s)) => {
            *received = Received::of(&s);
            s
        }
        Some(In::Delta(d)) => match rebuild(received.as_ref(), &d) {
            Ok((s, next)) => {
                debug!(
                    version = d.version,
                    base = d.base_version,
                    resources = d.resources.len(),
                    "delta"
                );
                *received = Some(next);
                s
            }
            Err(reason) => {
                warn!(version = d.version, %reason, "cannot apply the delta; asking for the whole snapshot");
                *received = None;
                let ask = pb::Resync {
                    version: d.version,
                    reason,
                };
                let msg = pb::NodeMessage {
                    kind: Some(Out::Resync(ask)),
                };
                return tx.send(msg).await.is_ok();
            }
        },
        Some(In::Heartbeat(h)) => {
            debug!(
                newest = h.newest_version,
                target = h.target_version,
                "heartbeat"
            );
            return true;
        }
        None => return true,
    };
    install(inner, tx, last_report, &snapshot).await
}

/// Reports what was served so far under the version it was served under
/// (when `s` is another), installs `s` and answers it. `false` when the
/// stream is gone.
async fn install(
    inner: &Arc<Inner>,
    tx: &mpsc::Sender<pb::NodeMessage>,
    last_report: &mut Instant,
    s: &pb::Snapshot,
) -> bool {
    if s.version != inner.state.version.load(Ordering::SeqCst)
        && report_traffic(inner, tx, last_report).await.is_none()
    {
        return false;
    }
    let reply = answer(inner, s).await;
    tx.send(reply).await.is_ok()
}

/// Sends the traffic counted since the last report, with the version it
/// was served under. `None` when the stream is gone; `Some(None)` when
/// nothing is served yet (the report is sent anyway: it is also the
/// node's heartbeat).
async fn report_traffic(
    inner: &Arc<Inner>,
    tx: &mpsc::Sender<pb::NodeMessage>,
    last_report: &mut Instant,
) -> Option<Option<Arc<crate::snapshot::Shared>>> {
    let proxy = inner.proxy.lock().await;
    let Some(p) = proxy.as_ref() else {
        drop(proxy);
        let beat = pb::NodeMessage {
            kind: Some(Out::Stats(pb::StatsReport::default())),
        };
        return tx.send(beat).await.ok().map(|()| None);
    };
    let shared = p.shared().clone();
    drop(proxy);
    let snap = shared.snapshot();
    let taken = shared
        .metrics
        .traffic
        .take(|name| snap.upstreams.iter().any(|u| u.name == name));
    let period = last_report.elapsed();
    *last_report = Instant::now();
    let stats = pb::StatsReport {
        upstreams: taken
            .into_iter()
            .map(|(upstream, t)| {
                let (latency_first, latency) = t.latency.compact();
                pb::UpstreamStats {
                    upstream,
                    requests: t.requests,
                    errors: t.errors,
                    duration_ms_sum: t.duration_ms,
                    latency_first,
                    latency,
                }
            })
            .collect(),
        period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
        version: inner.state.version.load(Ordering::SeqCst),
    };
    let msg = pb::NodeMessage {
        kind: Some(Out::Stats(stats)),
    };
    tx.send(msg).await.ok().map(|()| Some(shared))
}

/// Installs a snapshot and says how it went.
async fn answer(inner: &Arc<Inner>, s: &pb::Snapshot) -> pb::NodeMessage {
    let current = inner.state.version.load(Ordering::SeqCst);
    let same_content = *inner.state.hash.lock().unwrap_or_else(|e| e.into_inner()) == s.hash;
    // Already serving it (a reconnect, or the cache). The hash matters too: a
    // control plane started on a new database numbers its versions afresh.
    if s.version == current && s.version != 0 && same_content {
        return pb::NodeMessage {
            kind: Some(Out::Ack(pb::Ack { version: s.version })),
        };
    }
    match inner.install(s).await {
        Ok(()) => {
            info!(version = s.version, "config version installed");
            if let Some(dir) = &inner.opts.cache_dir {
                let (dir, snap) = (dir.clone(), s.clone());
                match tokio::task::spawn_blocking(move || cache::save(&dir, &snap)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "cannot write the snapshot cache"),
                    Err(e) => warn!(error = %e, "cannot write the snapshot cache"),
                }
            }
            pb::NodeMessage {
                kind: Some(Out::Ack(pb::Ack { version: s.version })),
            }
        }
        Err(errors) => {
            warn!(version = s.version, %errors, "config version refused; still serving the previous one");
            pb::NodeMessage {
                kind: Some(Out::Nack(pb::Nack {
                    version: s.version,
                    errors: errors
                        .iter()
                        .map(|e| pb::Problem {
                            path: e.path.clone(),
                            message: e.message.clone(),
                        })
                        .collect(),
                })),
            }
        }
    }
}

/// This host's name, for the ledger.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}
