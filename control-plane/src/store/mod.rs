//! Where the control plane keeps its state. Handlers and the change logic see
//! only the [`Store`] trait; [`sqlite::SqliteStore`] is the embedded backend
//! and [`postgres::PostgresStore`] the one several replicas share. Both run
//! the same queries ([`sql`]) on schemas of their own (`migrations/`).

pub mod certs;
pub mod dump;
pub mod postgres;
mod resources;
pub(crate) mod rollout_sql;
mod rows;
mod sql;
pub mod sqlite;

pub(crate) use rows::now_ms;

use async_trait::async_trait;
use isame_proto::config::Change;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::rollout::model::{PolicyRecord, RolloutRecord, Sample};
pub use certs::{material_id, CertificateMeta, Material, NewCertificate};

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed an operation.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Running the embedded migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// Another writer created the version this commit meant to create.
    #[error("version {0} already exists")]
    Conflict(u64),
    /// An import into a store that has versions.
    #[error("the database already holds {0} config versions; import into an empty one")]
    NotEmpty(i64),
    /// A token with this name already exists.
    #[error("a token named {0:?} already exists")]
    DuplicateToken(String),
}

/// A shared store.
pub type DynStore = Arc<dyn Store>;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read and write.
    Admin,
    /// Read only.
    Viewer,
    /// A data plane: subscribes to config (private keys of stored
    /// certificates included); no REST access.
    Node,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Node => "node",
        }
    }

    /// The role with this stored name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            "node" => Some(Role::Node),
            _ => None,
        }
    }
}

/// An API token as stored (the secret itself is never kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Shown in versions and the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// One stored config version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRecord {
    /// Monotonic number, from 1.
    pub version: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Name of the token that made it.
    pub author: String,
    /// Why, in the author's words.
    pub message: String,
    /// SHA-256 of the config JSON.
    pub hash: String,
    /// When this version restored an older one, that one.
    pub rollback_of: Option<u64>,
    /// The full config as JSON text.
    #[serde(skip)]
    pub config: String,
    /// Changes against the version before.
    #[serde(skip)]
    pub changes: Vec<Change>,
    /// The stored certificates it names, each with the material id it
    /// resolved to when committed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub certificates: BTreeMap<String, String>,
}

/// A version to append.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// Must be exactly one more than the newest stored version.
    pub version: u64,
    /// Token name.
    pub author: String,
    /// Why.
    pub message: String,
    /// SHA-256 of `config`.
    pub hash: String,
    /// The full config as JSON text.
    pub config: String,
    /// The config itself, to write the resource tables.
    pub model: Arc<isame_proto::Config>,
    /// The config this one replaces (to update only what changed).
    pub previous: Option<Arc<isame_proto::Config>>,
    /// Changes against the version before.
    pub changes: Vec<Change>,
    /// The version this one restores, for a rollback.
    pub rollback_of: Option<u64>,
    /// The stored certificates it names: name → material id.
    pub certificates: BTreeMap<String, String>,
    /// A certificate stored in the same transaction (its replacement is
    /// what made this version).
    pub certificate: Option<NewCertificate>,
    /// The audit entry written in the same transaction.
    pub audit: NewAudit,
}

/// An audit entry to record.
#[derive(Debug, Clone)]
pub struct NewAudit {
    /// Token name.
    pub actor: String,
    /// The client's address.
    pub remote_addr: String,
    /// What was done, e.g. `config.apply`.
    pub action: String,
    /// What it was done to, e.g. an upstream's name.
    pub target: String,
    /// Why.
    pub message: String,
    /// What changed.
    pub changes: Vec<Change>,
}

/// One audit log entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// Increasing id.
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// Token name.
    pub actor: String,
    /// The client's address.
    pub remote_addr: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// The version it created, if any.
    pub version: Option<u64>,
    /// Why.
    pub message: String,
    /// What changed.
    pub changes: Vec<Change>,
}

/// A data plane in the ledger.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRecord {
    /// Node id given by the data plane.
    pub id: String,
    /// Its host name.
    pub hostname: String,
    /// Its labels.
    pub labels: serde_json::Value,
    /// Its build version.
    pub build: String,
    /// Whether its stream is open.
    pub connected: bool,
    /// The control-plane replica that holds (or last held) its stream.
    pub replica: Option<String>,
    /// Unix milliseconds.
    pub first_seen: i64,
    /// Unix milliseconds.
    pub last_seen: i64,
    /// The newest version it ACKed.
    pub version: Option<u64>,
    /// Its last NACK: `{version, errors}`.
    pub last_nack: Option<serde_json::Value>,
    /// Backends as this node sees them.
    pub health: serde_json::Value,
    /// Recent traffic counters.
    pub traffic: serde_json::Value,
}

/// What a data plane says about itself when its stream opens.
#[derive(Debug, Clone)]
pub struct NodeHello {
    /// Node id given by the data plane.
    pub id: String,
    /// Its host name.
    pub hostname: String,
    /// Its build version.
    pub build: String,
    /// Its labels, a JSON object.
    pub labels: serde_json::Value,
}

/// A change to one node's ledger entry.
#[derive(Debug, Clone)]
pub enum NodeUpdate {
    /// Its stream opened (creating or refreshing its entry).
    Connected(NodeHello),
    /// It was heard from.
    Seen,
    /// It runs this version.
    Ack(u64),
    /// It rejected a version: `{version, errors}`.
    Nack(serde_json::Value),
    /// Backends as it sees them.
    Health(serde_json::Value),
    /// Its recent traffic.
    Traffic(serde_json::Value),
    /// Its stream closed.
    Disconnected,
}

/// A page of a newest-first list: at most `limit` items older than `before`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// Largest number of items.
    pub limit: u32,
    /// Only items with a smaller id/version.
    pub before: Option<i64>,
}

/// Staged rollouts: the policy's revisions, one rollout per version, and
/// the traffic samples its gates judge.
#[async_trait]
pub trait RolloutStore: Send + Sync + 'static {
    /// The newest rollout.
    async fn latest_rollout(&self) -> Result<Option<RolloutRecord>, StoreError>;
    /// The rollout of `version`.
    async fn rollout(&self, version: u64) -> Result<Option<RolloutRecord>, StoreError>;
    /// Rollouts, newest first.
    async fn rollouts(&self, page: Page) -> Result<Vec<RolloutRecord>, StoreError>;
    /// Writes `rec`'s state and progress, and `audit` in the same
    /// transaction, if its revision is still `rec.revision` (false when
    /// another writer changed it first: read it again).
    async fn update_rollout(
        &self,
        rec: &RolloutRecord,
        audit: Option<NewAudit>,
    ) -> Result<bool, StoreError>;
    /// The newest revision of the policy.
    async fn rollout_policy(&self) -> Result<Option<PolicyRecord>, StoreError>;
    /// The policy's revisions, newest first.
    async fn rollout_policies(&self, page: Page) -> Result<Vec<PolicyRecord>, StoreError>;
    /// Stores a new revision of the policy (`None`: no policy), if the
    /// newest is `expected` (when given; [`StoreError::Conflict`] with the
    /// newest otherwise), with its audit entry.
    async fn put_rollout_policy(
        &self,
        policy: Option<serde_json::Value>,
        expected: Option<u64>,
        audit: NewAudit,
    ) -> Result<PolicyRecord, StoreError>;
    /// Keeps traffic samples for a running rollout's gates.
    async fn record_samples(&self, samples: &[Sample]) -> Result<(), StoreError>;
    /// The samples of `rollout` received from `since` (Unix ms) on.
    async fn samples(&self, rollout: u64, since: i64) -> Result<Vec<Sample>, StoreError>;
    /// Deletes the samples of rollouts before `keep_from`; returns how many.
    async fn forget_samples(&self, keep_from: u64) -> Result<u64, StoreError>;
}

/// The control plane's persistent state.
#[async_trait]
pub trait Store: RolloutStore + Send + Sync + 'static {
    /// True when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The newest version, with its config.
    async fn head(&self) -> Result<Option<VersionRecord>, StoreError>;
    /// The newest version's number (0 before the first), cheaply.
    async fn newest_version(&self) -> Result<u64, StoreError>;
    /// One version, with its config.
    async fn version(&self, version: u64) -> Result<Option<VersionRecord>, StoreError>;
    /// Versions, newest first (without their configs).
    async fn versions(&self, page: Page) -> Result<Vec<VersionRecord>, StoreError>;
    /// Appends a version, rewrites the resources it changed and records the
    /// audit entry, and starts the version's rollout (superseding one that
    /// is active), all in one transaction. [`StoreError::Conflict`] when
    /// `v.version` already exists.
    async fn commit(&self, v: NewVersion) -> Result<RolloutRecord, StoreError>;
    /// Records an audit entry that created no version.
    async fn audit(&self, entry: NewAudit) -> Result<(), StoreError>;
    /// Audit entries, newest first.
    async fn audit_log(&self, page: Page) -> Result<Vec<AuditRecord>, StoreError>;
    /// The token with this hash.
    async fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// True when at least one token exists.
    async fn has_tokens(&self) -> Result<bool, StoreError>;
    /// Stores a token's hash under a new name.
    async fn create_token(&self, name: &str, role: Role, hash: &str) -> Result<(), StoreError>;
    /// Makes sure a token with this hash exists (the bootstrap admin token).
    async fn ensure_token(&self, name: &str, role: Role, hash: &str) -> Result<(), StoreError>;
    /// Records changes to the node ledger made by `replica` (the one that
    /// holds these nodes' streams), in order, in one transaction. Every
    /// update but `Disconnected` also refreshes the node's `last_seen`;
    /// `Disconnected` applies only while the node is still `replica`'s.
    async fn record_nodes(
        &self,
        replica: &str,
        updates: &[(String, NodeUpdate)],
    ) -> Result<(), StoreError>;
    /// Marks the nodes `replica` held disconnected (at its start: no
    /// stream survives a restart).
    async fn disconnect_replica(&self, replica: &str) -> Result<(), StoreError>;
    /// Records that `replica` (started at `started_at`, Unix ms) is alive.
    async fn heartbeat(&self, replica: &str, started_at: i64) -> Result<(), StoreError>;
    /// Forgets replicas not heard from since `silent_since` (Unix ms) and
    /// marks the nodes they held disconnected; returns how many nodes.
    async fn reap_replicas(&self, silent_since: i64) -> Result<u64, StoreError>;
    /// Takes or renews the lease `name` for `holder` for `ttl_ms`; false
    /// while another holder's lease is unexpired.
    async fn take_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError>;
    /// Gives the lease up, if `holder` has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// Who holds the lease now.
    async fn lease_holder(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Every node in the ledger.
    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;
    /// One node.
    async fn node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError>;
    /// Every stored certificate, by name.
    async fn certificates(&self) -> Result<Vec<CertificateMeta>, StoreError>;
    /// One stored certificate, with its PEM chain.
    async fn certificate(
        &self,
        name: &str,
    ) -> Result<Option<(CertificateMeta, String)>, StoreError>;
    /// Material by id (those that exist).
    async fn materials(&self, ids: &[String]) -> Result<Vec<Material>, StoreError>;
    /// Stores a certificate that the newest version does not name, with its
    /// audit entry, in one transaction ([`StoreError::Conflict`] when it
    /// does: another writer's version this process has not seen).
    async fn put_certificate(&self, c: NewCertificate, audit: NewAudit) -> Result<(), StoreError>;
    /// Removes a name and the material no version used (the rest stays so
    /// that those versions can be sent again); false when there was none;
    /// [`StoreError::Conflict`] when the newest version names it.
    async fn delete_certificate(&self, name: &str, audit: NewAudit) -> Result<bool, StoreError>;
    /// Everything kept but the node ledger, as one document.
    async fn export(&self) -> Result<dump::Dump, StoreError>;
    /// Loads an exported store into this one, in one transaction: refused
    /// ([`StoreError::NotEmpty`]) when this one has versions already.
    /// Tokens of the same name are replaced by the dump's.
    async fn import(&self, dump: dump::Dump) -> Result<(), StoreError>;
    /// Numbers of versions other processes committed, as the database
    /// announces them (`None`: it does not; poll [`Self::newest_version`]).
    fn version_notices(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Flushes and closes the database.
    async fn close(&self);
}

/// Runs the migrations `url` has not had; returns how many ran.
pub(crate) async fn run_migrations<DB>(
    migrator: &sqlx::migrate::Migrator,
    pool: &sqlx::Pool<DB>,
) -> Result<usize, StoreError>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    use sqlx::migrate::Migrate;
    let applied = || async {
        let mut conn = pool.acquire().await?;
        conn.ensure_migrations_table().await?;
        Ok::<_, StoreError>(conn.list_applied_migrations().await?.len())
    };
    let before = applied().await?;
    migrator.run(pool).await?;
    Ok(applied().await?.saturating_sub(before))
}
