//! Installing a new config while traffic flows: read, validate, compile off
//! the request path, swap. Anything wrong leaves the running snapshot alone.
//! Also the file watcher of standalone mode.

use crate::snapshot::{Shared, Snapshot};
use isame_proto::config::{Config, ConfigErrors};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The config is invalid or cannot be served here.
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
}

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ReloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReloadError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(Config::from_yaml(&text)?)
}

/// Compiles `config` against the running snapshot and swaps it in; returns
/// the new generation. Counts the outcome in `isame_lb_config_reloads_total`.
/// Host names the config adds are looked up first.
pub async fn apply(
    shared: &Shared,
    config: Result<Config, ReloadError>,
) -> Result<u64, ReloadError> {
    if let Ok(c) = &config {
        shared.dns.prepare(c, &shared.metrics).await;
    }
    let result = config.and_then(|config| {
        let current = shared.snapshot();
        warn_restart_needed(&current.config, &config);
        let next = Snapshot::compile(
            config,
            Some(&current),
            current.generation + 1,
            &shared.metrics,
            &shared.dns,
        )?;
        let generation = next.generation;
        shared.install(next);
        Ok(generation)
    });
    let label = if result.is_ok() { "success" } else { "error" };
    shared
        .metrics
        .config_reloads
        .with_label_values(&[label])
        .inc();
    match &result {
        Ok(g) => info!(config_version = g, "config applied"),
        Err(e) => error!("config rejected, still serving the previous one: {e}"),
    }
    result
}

/// Listening addresses are bound once at start; say so when a reload changes them.
fn warn_restart_needed(old: &Config, new: &Config) {
    let (o, n) = (&old.server, &new.server);
    if (o.address, o.port) != (n.address, n.port) {
        warn!("server.address/server.port changed; the proxy keeps its listener until restarted");
    }
    if (old.metrics.address, old.metrics.port) != (new.metrics.address, new.metrics.port) {
        warn!("metrics.address/metrics.port changed; the admin listener moves on restart");
    }
    if old.tls.enabled != new.tls.enabled || (old.tls.enabled && o.https_port != n.https_port) {
        warn!("tls.enabled/server.https_port changed; the HTTPS listener follows on restart (certificates apply now)");
    }
}

/// Watches `path` and sends a message when the file may have changed. Editors
/// often replace a file by renaming a new one over it, so the directory is
/// watched and events are filtered by file name.
pub fn watch_file(
    path: &Path,
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<RecommendedWatcher> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let name = path.file_name().map(|n| n.to_owned());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if event.kind.is_access() {
                return;
            }
            if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Waits out a burst of file events so one save is one reload.
pub async fn debounce(rx: &mut mpsc::UnboundedReceiver<()>) -> bool {
    if rx.recv().await.is_none() {
        return false;
    }
    loop {
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// Compiles the config in force again because what its host names resolve
/// to changed; the generation stays.
pub fn rebuild(shared: &Shared) {
    let current = shared.snapshot();
    match Snapshot::compile(
        (*current.config).clone(),
        Some(&current),
        current.generation,
        &shared.metrics,
        &shared.dns,
    ) {
        Ok(next) => shared.install(next),
        // It compiled before with other addresses; nothing here depends on them.
        Err(e) => error!(
            "recompiling after a DNS change failed, still serving the previous endpoints: {e}"
        ),
    }
}
