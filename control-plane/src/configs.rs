//! The current config and the one way it changes: an edit of the newest
//! version is validated, compared with it and committed as a new version.
//!
//! Writers in this process take turns (one lock); the store's unique version
//! number stops a writer in another replica from committing over a version it
//! did not see. Readers get the newest version from a `watch` channel without
//! touching the database; the data-plane streams follow the [`Plan`] (which
//! version each node is to serve, as the newest rollout says) through
//! another.

use crate::metrics::Metrics;
use crate::rollout::model::RolloutRecord;
use crate::rollout::plan::{self, Plan};
use crate::store::{now_ms, DynStore, Material, NewAudit, NewCertificate, NewVersion, StoreError};
use bytes::Bytes;
use isame_proto::config::{diff_values, Change, ChangeOp, ConfigError};
use isame_proto::{pb, Config, ConfigErrors};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{watch, Mutex, OwnedMutexGuard};

/// The newest version as readers see it.
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// 0 before anything was applied.
    pub version: u64,
    /// The config; `None` before anything was applied.
    pub config: Option<Arc<Config>>,
    /// SHA-256 of [`Self::json`].
    pub hash: String,
    /// The config as JSON, ready to send.
    pub json: Bytes,
    /// The snapshot data planes are sent, built once per version.
    pub snapshot: Option<Arc<pb::Snapshot>>,
    /// When this process committed it (for `isame_cp_push_seconds`).
    pub committed_at: Option<tokio::time::Instant>,
    /// The stored certificates it names: name → material id.
    pub certificates: BTreeMap<String, String>,
    /// The config fields it uses (`upstreams[].backends[].weight`), which
    /// a node must know to be sent it.
    pub fields_used: Arc<[String]>,
    /// Its config in pieces and the deltas to it, made when first needed.
    pub wire: Arc<crate::distribution::Wire>,
}

/// The config fields the document `doc` uses.
fn fields_used(doc: &serde_json::Value) -> Arc<[String]> {
    isame_proto::config::schema::paths::used(isame_proto::config::schema::this_build(), doc)
        .into_iter()
        .collect()
}

/// The wire form of a version, with the certificates it names.
fn snapshot_of(
    version: u64,
    hash: &str,
    json: Bytes,
    bound: &BTreeMap<String, String>,
    materials: &[Material],
) -> Result<Arc<pb::Snapshot>, StoreError> {
    let certificates = bound
        .iter()
        .map(|(name, id)| {
            let m = materials.iter().find(|m| m.id == *id).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "version {version}: the material of certificate {name:?} is missing"
                ))
            })?;
            Ok(pb::StoredCertificate {
                name: name.clone(),
                id: id.clone(),
                cert_pem: m.cert_pem.clone(),
                key_pem: m.key_pem.clone(),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Arc::new(pb::Snapshot {
        version,
        hash: hash.to_owned(),
        config_json: json,
        certificates,
        newest_version: version,
    }))
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The result would not be a valid config.
    #[error("invalid config")]
    Invalid(ConfigErrors),
    /// `If-Match` named a version that is no longer the newest.
    #[error("version {current} is the newest, not the one this change was based on")]
    Stale {
        /// The newest version.
        current: u64,
    },
    /// The edit refers to something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The edit would create something that already exists.
    #[error("{0}")]
    Exists(String),
    /// The edit itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a change must match before it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// `If-Match: *`: some version exists.
    Any,
    /// `If-Match: "N"`: version N is the newest.
    Version(u64),
    /// `If-Match: W/"N"`: a weak tag, which never matches (RFC 9110 §13.1.1
    /// compares If-Match strongly).
    Never,
}

/// Who asks for a change, and how it is to be recorded.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    /// Token name.
    pub actor: String,
    /// Client address.
    pub remote_addr: String,
    /// Audit action, e.g. `config.apply`.
    pub action: &'static str,
    /// What is acted on.
    pub target: String,
    /// Why.
    pub message: String,
    /// `If-Match`.
    pub precondition: Option<Precondition>,
    /// Only compute the changes.
    pub dry_run: bool,
    /// For a rollback, the version restored.
    pub rollback_of: Option<u64>,
}

impl ChangeRequest {
    /// The audit entry of this request, with what it changed.
    pub fn into_audit(self, changes: Vec<Change>) -> NewAudit {
        NewAudit {
            actor: self.actor,
            remote_addr: self.remote_addr,
            action: self.action.to_owned(),
            target: self.target,
            message: self.message,
            changes,
        }
    }
}

/// What a change did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// The newest version after the change (the current one for a dry run or
    /// a change that changed nothing).
    pub version: u64,
    /// Whether a version was created.
    pub created: bool,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// What changed (or would change).
    pub changes: Vec<Change>,
}

/// The current config and its writers.
pub struct Configs {
    store: DynStore,
    current: Arc<watch::Sender<Arc<Current>>>,
    plan: Arc<watch::Sender<Arc<Plan>>>,
    writer: Arc<Mutex<()>>,
    metrics: Arc<Metrics>,
}

/// SHA-256 of a config's JSON and of the certificates it names, hex.
pub use isame_proto::delta::content_hash;

/// Error for a config that cannot be written as JSON (not expected to happen).
fn unserializable(e: serde_json::Error) -> ChangeError {
    ChangeError::Store(StoreError::Corrupt(format!("config not serializable: {e}")))
}

impl Configs {
    /// Loads the newest version from the store.
    pub async fn load(store: DynStore, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let current = match store.head().await? {
            None => Current::default(),
            Some(v) => current_of(&store, v).await?,
        };
        metrics.config_version.set(current.version as i64);
        let current = Arc::new(current);
        let rollout = store.latest_rollout().await?;
        let plan = plan::build(&store, &Plan::default(), current.clone(), rollout).await?;
        let (tx, _) = watch::channel(current);
        Ok(Self {
            store,
            current: Arc::new(tx),
            plan: Arc::new(watch::channel(Arc::new(plan)).0),
            writer: Arc::new(Mutex::new(())),
            metrics,
        })
    }

    /// Who is to serve what now.
    pub fn plan(&self) -> Arc<Plan> {
        self.plan.borrow().clone()
    }

    /// A receiver that sees every new plan (latest wins).
    pub fn subscribe_plan(&self) -> watch::Receiver<Arc<Plan>> {
        self.plan.subscribe()
    }

    /// Reads the newest rollout again (a controller or another replica
    /// changed it) and makes the plan follow it.
    pub(crate) async fn refresh_plan(&self) -> Result<(), StoreError> {
        let rollout = self.store.latest_rollout().await?;
        self.adopt(rollout).await
    }

    /// Makes `rollout` (the newest) the plan's.
    pub(crate) async fn adopt(&self, rollout: Option<RolloutRecord>) -> Result<(), StoreError> {
        adopt(&self.store, &self.plan, self.current(), rollout).await
    }

    /// The newest version.
    pub fn current(&self) -> Arc<Current> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every new version (latest wins).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Current>> {
        self.current.subscribe()
    }

    /// The store behind this.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// Applies `edit` to the newest config and commits the result as a new
    /// version, unless it is invalid, identical, stale or a dry run.
    pub async fn change<F>(&self, req: ChangeRequest, edit: F) -> Result<Outcome, ChangeError>
    where
        F: FnOnce(Option<&Config>) -> Result<Config, ChangeError>,
    {
        let turn = self.turn().await;
        self.change_in_turn(turn, req, edit, None).await
    }

    /// Reloads the newest version from the database (another writer on the
    /// same database made it) and makes it the one readers see; returns its
    /// number.
    pub(crate) async fn catch_up(&self) -> Result<u64, StoreError> {
        let newest = match self.store.head().await? {
            Some(rec) => {
                let age = now_ms().saturating_sub(rec.created_at).max(0);
                let committed = tokio::time::Instant::now()
                    .checked_sub(std::time::Duration::from_millis(age as u64));
                Current {
                    committed_at: committed,
                    ..current_of(&self.store, rec).await?
                }
            }
            None => Current::default(),
        };
        let v = newest.version;
        publish(&self.current, &self.metrics, newest);
        self.refresh_plan().await?;
        Ok(self.current().version.max(v))
    }

    /// The writer's turn: changes to the config and to the certificate
    /// store are made one at a time.
    pub(crate) async fn turn(&self) -> OwnedMutexGuard<()> {
        self.writer.clone().lock_owned().await
    }

    /// [`Self::change`] for a writer that holds its turn, storing
    /// `certificate` in the same transaction as the version.
    pub(crate) async fn change_in_turn<F>(
        &self,
        turn: OwnedMutexGuard<()>,
        req: ChangeRequest,
        edit: F,
        certificate: Option<NewCertificate>,
    ) -> Result<Outcome, ChangeError>
    where
        F: FnOnce(Option<&Config>) -> Result<Config, ChangeError>,
    {
        let mut cur = self.current();
        if matches!(req.precondition, Some(Precondition::Version(v)) if v > cur.version) {
            // The client saw a version this replica has not loaded yet
            // (another replica made it moments ago).
            self.catch_up().await?;
            cur = self.current();
        }
        match req.precondition {
            Some(Precondition::Version(v)) if v != cur.version => {
                return Err(ChangeError::Stale {
                    current: cur.version,
                })
            }
            Some(Precondition::Any) if cur.config.is_none() => {
                return Err(ChangeError::Stale { current: 0 })
            }
            Some(Precondition::Never) => {
                return Err(ChangeError::Stale {
                    current: cur.version,
                })
            }
            _ => {}
        }
        let new = edit(cur.config.as_deref())?;
        let (bound, materials) = self.resolve(&new, certificate.as_ref()).await?;
        let json = serde_json::to_vec(&new).map_err(unserializable)?;
        let hash = content_hash(&json, &bound);
        if cur.config.is_some() && hash == cur.hash {
            return Ok(Outcome {
                version: cur.version,
                created: false,
                dry_run: req.dry_run,
                changes: Vec::new(),
            });
        }
        // The JSON form of both sides, for the diff; the new one also says
        // which fields the version uses.
        let new_value = serde_json::to_value(&new).map_err(unserializable)?;
        let old_value = cur
            .config
            .as_deref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(unserializable)?;
        let mut changes = diff_values(old_value.as_ref(), &new_value);
        drop(old_value);
        for (name, id) in &bound {
            match cur.certificates.get(name) {
                Some(old) if old != id => changes.push(Change {
                    op: ChangeOp::Changed,
                    path: format!("certificates[{name}]"),
                    old: Some(old.clone().into()),
                    new: Some(id.clone().into()),
                }),
                _ => {}
            }
        }
        if req.dry_run {
            return Ok(Outcome {
                version: cur.version,
                created: false,
                dry_run: true,
                changes,
            });
        }
        let version = cur.version + 1;
        let model = Arc::new(new);
        let text = String::from_utf8(json).map_err(|e| {
            ChangeError::Store(StoreError::Corrupt(format!(
                "config JSON is not UTF-8: {e}"
            )))
        })?;
        let commit = NewVersion {
            version,
            author: req.actor.clone(),
            message: req.message.clone(),
            hash: hash.clone(),
            config: text.clone(),
            model: model.clone(),
            previous: cur.config.clone(),
            changes: changes.clone(),
            rollback_of: req.rollback_of,
            certificates: bound.clone(),
            certificate,
            audit: req.into_audit(changes.clone()),
        };
        let used = fields_used(&new_value);
        drop(new_value);
        // One buffer for the version's JSON: what readers get and what
        // every node's snapshot carries.
        let json = Bytes::from(text);
        let next = Current {
            version,
            fields_used: used,
            snapshot: Some(snapshot_of(
                version,
                &hash,
                json.clone(),
                &bound,
                &materials,
            )?),
            config: Some(model),
            hash,
            json,
            committed_at: None,
            certificates: bound,
            wire: Default::default(),
        };
        // The commit and the publication of its result run as one task that
        // holds the writer's turn: a client that hangs up mid-request drops
        // this future, never the half after the commit.
        let store = self.store.clone();
        let current = self.current.clone();
        let plan = self.plan.clone();
        let metrics = self.metrics.clone();
        let task = tokio::spawn(async move {
            let _turn = turn;
            match store.commit(commit).await {
                Ok(rollout) => {
                    let next = Current {
                        committed_at: Some(tokio::time::Instant::now()),
                        ..next
                    };
                    publish(&current, &metrics, next);
                    let newest = current.borrow().clone();
                    adopt(&store, &plan, newest, Some(rollout)).await?;
                    Ok(())
                }
                Err(StoreError::Conflict(_)) => {
                    // Another writer on the same database got there first:
                    // catch up with it, and refuse this change as stale.
                    let newest = match store.head().await? {
                        Some(rec) => current_of(&store, rec).await?,
                        None => Current::default(),
                    };
                    let v = newest.version;
                    publish(&current, &metrics, newest);
                    let newest = current.borrow().clone();
                    adopt(&store, &plan, newest, store.latest_rollout().await?).await?;
                    Err(ChangeError::Stale { current: v })
                }
                Err(e) => Err(e.into()),
            }
        });
        task.await.map_err(|e| {
            ChangeError::Store(StoreError::Corrupt(format!("commit task failed: {e}")))
        })??;
        tracing::info!(version, changes = changes.len(), "config version committed");
        Ok(Outcome {
            version,
            created: true,
            dry_run: false,
            changes,
        })
    }

    /// Resolves the stored certificates `config` names (`certificate`, not
    /// yet stored, included): name → material id, and the material. A name
    /// not in the store is a validation error at its path.
    async fn resolve(
        &self,
        config: &Config,
        certificate: Option<&NewCertificate>,
    ) -> Result<(BTreeMap<String, String>, Vec<Material>), ChangeError> {
        let refs = config.certificate_refs();
        if refs.is_empty() {
            return Ok(Default::default());
        }
        let mut bound = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, path) in refs {
            if let Some(c) = certificate.filter(|c| c.meta.name == name) {
                bound.insert(name, c.material.id.clone());
                continue;
            }
            match self.store.certificate(&name).await? {
                // Every node would refuse it: refuse it here, with the path.
                Some((meta, _)) if meta.not_after < now_ms() / 1000 => {
                    problems.push(ConfigError::new(
                        path,
                        format!(
                            "certificate {name:?} expired on {}; upload a renewed one \
                             with PUT /api/v1/certificates/{name}",
                            crate::api::rfc3339(meta.not_after.saturating_mul(1000))
                        ),
                    ));
                }
                Some((meta, _)) => {
                    bound.insert(name, meta.id);
                }
                None => problems.push(ConfigError::new(
                    path,
                    format!(
                        "no certificate named {name:?} in the certificate store \
                         (upload it with PUT /api/v1/certificates/{name})"
                    ),
                )),
            }
        }
        if !problems.is_empty() {
            return Err(ChangeError::Invalid(ConfigErrors(problems)));
        }
        let ids: Vec<String> = bound.values().cloned().collect();
        let mut materials = self.store.materials(&ids).await?;
        materials.extend(certificate.map(|c| c.material.clone()));
        Ok((bound, materials))
    }
}

/// Makes `next` the version readers see, unless they already see it or a
/// newer one (a replica catching up and a commit of this process may
/// publish in either order).
fn publish(current: &watch::Sender<Arc<Current>>, metrics: &Metrics, next: Current) {
    let next = Arc::new(next);
    current.send_if_modified(|cur| {
        if next.version > cur.version {
            *cur = next.clone();
            true
        } else {
            false
        }
    });
    metrics.config_version.set(current.borrow().version as i64);
}

/// Builds the plan of `newest` and `rollout` and publishes it, unless the
/// plan readers see is already as new.
async fn adopt(
    store: &DynStore,
    tx: &watch::Sender<Arc<Plan>>,
    newest: Arc<Current>,
    rollout: Option<RolloutRecord>,
) -> Result<(), StoreError> {
    let old = tx.borrow().clone();
    let next = Arc::new(plan::build(store, &old, newest, rollout).await?);
    tx.send_if_modified(|cur| {
        if next.key() > cur.key() {
            *cur = next.clone();
            true
        } else {
            false
        }
    });
    Ok(())
}

/// Loads stored version `version` as readers see it.
pub(crate) async fn load_version(store: &DynStore, version: u64) -> Result<Current, StoreError> {
    let rec = store
        .version(version)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("version {version} is missing")))?;
    current_of(store, rec).await
}

/// The reader's view of a stored version. A version that no longer passes
/// today's rules (they may have grown stricter since it was stored) still
/// loads, with a warning: the next change has to fix it.
async fn current_of(
    store: &DynStore,
    rec: crate::store::VersionRecord,
) -> Result<Current, StoreError> {
    let doc: serde_json::Value = serde_json::from_str(&rec.config)
        .map_err(|e| StoreError::Corrupt(format!("version {} is not JSON: {e}", rec.version)))?;
    let (config, problems) = Config::from_value_lenient(&doc);
    let json = Bytes::from(rec.config);
    if !problems.is_empty() {
        tracing::warn!(
            version = rec.version,
            problems = %problems,
            "the newest version does not pass today's validation; the next change must fix it"
        );
    }
    let ids: Vec<String> = rec.certificates.values().cloned().collect();
    let materials = if ids.is_empty() {
        Vec::new()
    } else {
        store.materials(&ids).await?
    };
    Ok(Current {
        version: rec.version,
        fields_used: fields_used(&doc),
        snapshot: Some(snapshot_of(
            rec.version,
            &rec.hash,
            json.clone(),
            &rec.certificates,
            &materials,
        )?),
        config: Some(Arc::new(config)),
        hash: rec.hash,
        json,
        committed_at: None,
        certificates: rec.certificates,
        wire: Default::default(),
    })
}
