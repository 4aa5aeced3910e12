//! Reading stored rows back, the same for every database: the columns are
//! read through [`Cols`], which each backend's row type implements, and the
//! JSON columns are parsed here once.

use super::{AuditRecord, CertificateMeta, NodeRecord, StoreError, VersionRecord};
use sqlx::Row;

/// Typed column access on one row, whatever the database.
pub(crate) trait Cols {
    /// A 64-bit integer column.
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    /// A nullable integer column.
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    /// A text column.
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    /// A nullable text column.
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    /// A boolean column (an integer 0/1 in SQLite).
    fn flag(&self, col: &str) -> Result<bool, sqlx::Error>;
}

macro_rules! cols_for {
    ($row:ty) => {
        impl Cols for $row {
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(col)
            }
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
            fn flag(&self, col: &str) -> Result<bool, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}

cols_for!(sqlx::sqlite::SqliteRow);
cols_for!(sqlx::postgres::PgRow);

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A value as stored JSON text.
pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A count or number as the databases store it.
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn json_col<T: serde::de::DeserializeOwned>(row: &impl Cols, col: &str) -> Result<T, StoreError> {
    let text = row.text(col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

fn version_number(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

/// A `config_versions` row; its config only when `with_config`.
pub(crate) fn version_of(row: &impl Cols, with_config: bool) -> Result<VersionRecord, StoreError> {
    Ok(VersionRecord {
        version: u64::try_from(row.int("version")?)
            .map_err(|_| StoreError::Corrupt("negative version".into()))?,
        created_at: row.int("created_at")?,
        author: row.text("author")?,
        message: row.text("message")?,
        hash: row.text("hash")?,
        rollback_of: version_number(row.opt_int("rollback_of")?),
        config: if with_config {
            row.text("config")?
        } else {
            String::new()
        },
        changes: json_col(row, "changes")?,
        certificates: json_col(row, "certificates")?,
    })
}

/// A `nodes` row.
pub(crate) fn node_of(row: &impl Cols) -> Result<NodeRecord, StoreError> {
    Ok(NodeRecord {
        id: row.text("id")?,
        hostname: row.text("hostname")?,
        labels: json_col(row, "labels")?,
        build: row.text("build")?,
        connected: row.flag("connected")?,
        replica: row.opt_text("replica")?,
        first_seen: row.int("first_seen")?,
        last_seen: row.int("last_seen")?,
        version: version_number(row.opt_int("version")?),
        last_nack: row
            .opt_text("last_nack")?
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("last_nack: {e}")))?,
        health: json_col(row, "health")?,
        traffic: json_col(row, "traffic")?,
    })
}

/// An `audit` row.
pub(crate) fn audit_of(row: &impl Cols) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        id: row.int("id")?,
        at: row.int("at")?,
        actor: row.text("actor")?,
        remote_addr: row.text("remote_addr")?,
        action: row.text("action")?,
        target: row.text("target")?,
        version: version_number(row.opt_int("version")?),
        message: row.text("message")?,
        changes: json_col(row, "changes")?,
    })
}

/// A `certificates` row (what the API shows; never the key).
pub(crate) fn meta_of(row: &impl Cols) -> Result<CertificateMeta, StoreError> {
    Ok(CertificateMeta {
        name: row.text("name")?,
        id: row.text("material_id")?,
        fingerprint_sha256: row.text("fingerprint")?,
        subject: row.text("subject")?,
        issuer: row.text("issuer")?,
        names: json_col(row, "names")?,
        not_before: row.int("not_before")?,
        not_after: row.int("not_after")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        updated_by: row.text("updated_by")?,
    })
}
