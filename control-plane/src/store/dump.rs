//! A whole store as one JSON document (`isame-control-plane export` and
//! `import`): the version history exactly as stored, certificates with
//! their material, tokens (their hashes; never a secret), the audit log, and
//! the rollout policy's revisions and the rollouts (without them a version
//! that was rolled back would be served everywhere after an import).
//! The node ledger is left out: nodes report themselves again. It moves a
//! control plane from SQLite to PostgreSQL, or between databases.

use serde::{Deserialize, Serialize};

/// What `format` says.
pub const FORMAT: &str = "isame-store-export/1";

/// Everything kept, by table.
#[derive(Debug, Serialize, Deserialize)]
pub struct Dump {
    /// [`FORMAT`].
    pub format: String,
    /// Oldest first.
    pub versions: Vec<DumpVersion>,
    /// Certificate chains and keys by content id.
    pub certificate_material: Vec<DumpMaterial>,
    /// Names and what they point at.
    pub certificates: Vec<DumpCertificate>,
    /// API and node tokens, by hash.
    pub tokens: Vec<DumpToken>,
    /// Oldest first.
    pub audit: Vec<DumpAudit>,
    /// Oldest first (absent from exports of builds before rollouts).
    #[serde(default)]
    pub rollout_policies: Vec<DumpPolicy>,
    /// Oldest first.
    #[serde(default)]
    pub rollouts: Vec<DumpRollout>,
}

/// A `rollout_policies` row.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct DumpPolicy {
    pub revision: i64,
    pub created_at: i64,
    pub author: String,
    pub policy: Option<String>,
}

/// A `rollouts` row.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct DumpRollout {
    pub version: i64,
    pub base: Option<i64>,
    pub policy: Option<String>,
    pub state: String,
    pub revision: i64,
    pub progress: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A `config_versions` row; JSON columns as the text stored.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct DumpVersion {
    pub version: i64,
    pub created_at: i64,
    pub author: String,
    pub message: String,
    pub hash: String,
    pub config: String,
    pub changes: String,
    pub rollback_of: Option<i64>,
    pub certificates: String,
}

/// A `certificate_material` row.
#[derive(Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct DumpMaterial {
    pub id: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for DumpMaterial {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpMaterial")
            .field("id", &self.id)
            .finish()
    }
}

/// A `certificates` row.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct DumpCertificate {
    pub name: String,
    pub material_id: String,
    pub fingerprint: String,
    pub subject: String,
    pub issuer: String,
    pub names: String,
    pub not_before: i64,
    pub not_after: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub updated_by: String,
}

/// A `tokens` row.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct DumpToken {
    pub name: String,
    pub role: String,
    pub hash: String,
    pub created_at: i64,
}

/// An `audit` row (ids are given anew, in the same order).
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct DumpAudit {
    pub at: i64,
    pub actor: String,
    pub remote_addr: String,
    pub action: String,
    pub target: String,
    pub version: Option<i64>,
    pub message: String,
    pub changes: String,
}
