//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
//! so a change that was acknowledged survives a crash or power loss.

use super::*;
use isame_proto::Config;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// Migrations in `migrations/`, embedded in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// [`Store`] on a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://FILE`)
    /// and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn version_of(row: &SqliteRow, with_config: bool) -> Result<VersionRecord, StoreError> {
    let changes: String = row.try_get("changes")?;
    let certificates: String = row.try_get("certificates")?;
    Ok(VersionRecord {
        version: u64::try_from(row.try_get::<i64, _>("version")?)
            .map_err(|_| StoreError::Corrupt("negative version".into()))?,
        created_at: row.try_get("created_at")?,
        author: row.try_get("author")?,
        message: row.try_get("message")?,
        hash: row.try_get("hash")?,
        rollback_of: row
            .try_get::<Option<i64>, _>("rollback_of")?
            .and_then(|v| u64::try_from(v).ok()),
        config: if with_config {
            row.try_get("config")?
        } else {
            String::new()
        },
        changes: serde_json::from_str(&changes)
            .map_err(|e| StoreError::Corrupt(format!("changes: {e}")))?,
        certificates: serde_json::from_str(&certificates)
            .map_err(|e| StoreError::Corrupt(format!("certificates: {e}")))?,
    })
}

fn json_text<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Rewrites the resource tables for what changed from `old` to `new`.
async fn write_resources(
    tx: &mut Transaction<'_, Sqlite>,
    old: Option<&Config>,
    new: &Config,
) -> Result<(), StoreError> {
    let before: HashMap<&str, (usize, &isame_proto::config::Upstream)> = old
        .map(|c| {
            c.upstreams
                .iter()
                .enumerate()
                .map(|(i, u)| (u.name.as_str(), (i, u)))
                .collect()
        })
        .unwrap_or_default();
    for name in before.keys() {
        if !new.upstreams.iter().any(|u| u.name == *name) {
            sqlx::query("DELETE FROM upstreams WHERE name = ?")
                .bind(*name)
                .execute(&mut **tx)
                .await?;
        }
    }
    for (i, u) in new.upstreams.iter().enumerate() {
        if before.get(u.name.as_str()) == Some(&(i, u)) {
            continue;
        }
        sqlx::query(
            "INSERT INTO upstreams (name, position, algorithm, spec) VALUES (?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position,
               algorithm = excluded.algorithm, spec = excluded.spec",
        )
        .bind(&u.name)
        .bind(int(i as u64))
        .bind(u.algorithm.as_str())
        .bind(json_text(u)?)
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM backends WHERE upstream = ?")
            .bind(&u.name)
            .execute(&mut **tx)
            .await?;
        for (j, b) in u.backends.iter().enumerate() {
            sqlx::query(
                "INSERT INTO backends (upstream, url, position, weight, drain) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&u.name)
            .bind(&b.url)
            .bind(int(j as u64))
            .bind(i64::from(b.weight))
            .bind(b.drain)
            .execute(&mut **tx)
            .await?;
        }
    }
    let old_routes: HashMap<&str, (usize, &isame_proto::config::Route)> = old
        .map(|c| {
            c.routes
                .iter()
                .enumerate()
                .map(|(i, r)| (r.name.as_str(), (i, r)))
                .collect()
        })
        .unwrap_or_default();
    for name in old_routes.keys() {
        if !new.routes.iter().any(|r| r.name == *name) {
            sqlx::query("DELETE FROM routes WHERE name = ?")
                .bind(*name)
                .execute(&mut **tx)
                .await?;
        }
    }
    for (i, r) in new.routes.iter().enumerate() {
        if old_routes.get(r.name.as_str()) == Some(&(i, r)) {
            continue;
        }
        sqlx::query(
            "INSERT INTO routes (name, position, upstream, spec) VALUES (?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position,
               upstream = excluded.upstream, spec = excluded.spec",
        )
        .bind(&r.name)
        .bind(int(i as u64))
        // A split's first upstream stands for it (the column is informational).
        .bind(r.split.first().map_or(&r.upstream, |s| &s.upstream))
        .bind(json_text(r)?)
        .execute(&mut **tx)
        .await?;
    }
    let settings = settings_of(new)?;
    let old_settings = old.map(settings_of).transpose()?.unwrap_or_default();
    for (key, value) in settings {
        if old_settings.iter().any(|(k, v)| *k == key && *v == value) {
            continue;
        }
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The global sections of a config, as `(key, JSON)` rows.
fn settings_of(c: &Config) -> Result<Vec<(&'static str, String)>, StoreError> {
    Ok(vec![
        ("version", json_text(&c.version)?),
        ("service", json_text(&c.service)?),
        ("server", json_text(&c.server)?),
        ("trusted_proxies", json_text(&c.trusted_proxies)?),
        ("health", json_text(&c.health)?),
        ("metrics", json_text(&c.metrics)?),
        ("circuit_breaker", json_text(&c.circuit_breaker)?),
        ("retry", json_text(&c.retry)?),
        ("tls", json_text(&c.tls)?),
    ])
}

fn node_of(row: &SqliteRow) -> Result<NodeRecord, StoreError> {
    let json = |col: &str| -> Result<serde_json::Value, StoreError> {
        let text: String = row.try_get(col)?;
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
    };
    let nack: Option<String> = row.try_get("last_nack")?;
    Ok(NodeRecord {
        id: row.try_get("id")?,
        hostname: row.try_get("hostname")?,
        labels: json("labels")?,
        build: row.try_get("build")?,
        connected: row.try_get("connected")?,
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
        version: row
            .try_get::<Option<i64>, _>("version")?
            .and_then(|v| u64::try_from(v).ok()),
        last_nack: nack
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("last_nack: {e}")))?,
        health: json("health")?,
        traffic: json("traffic")?,
    })
}

fn audit_of(row: &SqliteRow) -> Result<AuditRecord, StoreError> {
    let changes: String = row.try_get("changes")?;
    Ok(AuditRecord {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        remote_addr: row.try_get("remote_addr")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        version: row
            .try_get::<Option<i64>, _>("version")?
            .and_then(|v| u64::try_from(v).ok()),
        message: row.try_get("message")?,
        changes: serde_json::from_str(&changes)
            .map_err(|e| StoreError::Corrupt(format!("changes: {e}")))?,
    })
}

pub(super) async fn insert_audit(
    tx: &mut Transaction<'_, Sqlite>,
    a: &NewAudit,
    version: Option<u64>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at, actor, remote_addr, action, target, version, message, changes)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(now_ms())
    .bind(&a.actor)
    .bind(&a.remote_addr)
    .bind(&a.action)
    .bind(&a.target)
    .bind(version.map(int))
    .bind(&a.message)
    .bind(json_text(&a.changes)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

async fn record_node(
    tx: &mut Transaction<'_, Sqlite>,
    id: &str,
    update: &NodeUpdate,
) -> Result<(), StoreError> {
    let now = now_ms();
    let q = match update {
        NodeUpdate::Connected(hello) => {
            sqlx::query(
                "INSERT INTO nodes (id, hostname, labels, build, connected, first_seen, last_seen)
                 VALUES (?, ?, ?, ?, 1, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname,
                   labels = excluded.labels, build = excluded.build, connected = 1,
                   last_seen = excluded.last_seen",
            )
            .bind(id)
            .bind(&hello.hostname)
            .bind(json_text(&hello.labels)?)
            .bind(&hello.build)
            .bind(now)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            return Ok(());
        }
        NodeUpdate::Seen => sqlx::query("UPDATE nodes SET last_seen = ? WHERE id = ?").bind(now),
        NodeUpdate::Ack(v) => {
            sqlx::query("UPDATE nodes SET last_seen = ?, version = ? WHERE id = ?")
                .bind(now)
                .bind(int(*v))
        }
        NodeUpdate::Nack(n) => {
            sqlx::query("UPDATE nodes SET last_seen = ?, last_nack = ? WHERE id = ?")
                .bind(now)
                .bind(json_text(n)?)
        }
        NodeUpdate::Health(h) => {
            sqlx::query("UPDATE nodes SET last_seen = ?, health = ? WHERE id = ?")
                .bind(now)
                .bind(json_text(h)?)
        }
        NodeUpdate::Traffic(t) => {
            sqlx::query("UPDATE nodes SET last_seen = ?, traffic = ? WHERE id = ?")
                .bind(now)
                .bind(json_text(t)?)
        }
        // Not "seen": a stream that timed out was last heard from earlier.
        NodeUpdate::Disconnected => sqlx::query("UPDATE nodes SET connected = 0 WHERE id = ?"),
    };
    q.bind(id).execute(&mut **tx).await?;
    Ok(())
}

const VERSION_COLUMNS: &str =
    "version, created_at, author, message, hash, rollback_of, changes, certificates";

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn head(&self) -> Result<Option<VersionRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS}, config FROM config_versions ORDER BY version DESC LIMIT 1"
        ))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| version_of(&r, true)).transpose()
    }

    async fn version(&self, version: u64) -> Result<Option<VersionRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS}, config FROM config_versions WHERE version = ?"
        ))
        .bind(int(version))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| version_of(&r, true)).transpose()
    }

    async fn versions(&self, page: Page) -> Result<Vec<VersionRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM config_versions WHERE version < ?
             ORDER BY version DESC LIMIT ?"
        ))
        .bind(page.before.unwrap_or(i64::MAX))
        .bind(i64::from(page.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| version_of(r, false)).collect()
    }

    async fn commit(&self, v: NewVersion) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let inserted = sqlx::query(
            "INSERT INTO config_versions
               (version, created_at, author, message, hash, config, changes, rollback_of,
                certificates)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(int(v.version))
        .bind(now_ms())
        .bind(&v.author)
        .bind(&v.message)
        .bind(&v.hash)
        .bind(&v.config)
        .bind(json_text(&v.changes)?)
        .bind(v.rollback_of.map(int))
        .bind(json_text(&v.certificates)?)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict(v.version)),
            other => other?,
        };
        // Versions are appended one at a time: the one before must be the newest.
        let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM config_versions")
            .fetch_one(&mut *tx)
            .await?;
        if newest != int(v.version) {
            return Err(StoreError::Conflict(v.version));
        }
        write_resources(&mut tx, v.previous.as_deref(), &v.model).await?;
        if let Some(c) = &v.certificate {
            super::sqlite_certs::upsert(&mut tx, c).await?;
        }
        insert_audit(&mut tx, &v.audit, Some(v.version)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit(&self, entry: NewAudit) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        insert_audit(&mut tx, &entry, None).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_log(&self, page: Page) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, remote_addr, action, target, version, message, changes
             FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(page.before.unwrap_or(i64::MAX))
        .bind(i64::from(page.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_of).collect()
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query("SELECT name, role FROM tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let role: String = r.try_get("role")?;
            Ok(TokenRecord {
                name: r.try_get("name")?,
                role: Role::parse(&role)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown role {role:?}")))?,
            })
        })
        .transpose()
    }

    async fn has_tokens(&self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tokens)")
            .fetch_one(&self.pool)
            .await?;
        Ok(n != 0)
    }

    async fn create_token(&self, name: &str, role: Role, hash: &str) -> Result<(), StoreError> {
        let r =
            sqlx::query("INSERT INTO tokens (name, role, hash, created_at) VALUES (?, ?, ?, ?)")
                .bind(name)
                .bind(role.as_str())
                .bind(hash)
                .bind(now_ms())
                .execute(&self.pool)
                .await;
        match r {
            Err(e) if is_unique_violation(&e) => Err(StoreError::DuplicateToken(name.into())),
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    async fn ensure_token(&self, name: &str, role: Role, hash: &str) -> Result<(), StoreError> {
        // The bootstrap token keeps its name; setting a new value replaces the old one.
        sqlx::query(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET role = excluded.role, hash = excluded.hash",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_nodes(&self, updates: &[(String, NodeUpdate)]) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        for (id, update) in updates {
            record_node(&mut tx, id, update).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn disconnect_all(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET connected = 0 WHERE connected = 1")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM nodes ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(node_of).collect()
    }

    async fn node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM nodes WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| node_of(&r)).transpose()
    }

    async fn certificates(&self) -> Result<Vec<CertificateMeta>, StoreError> {
        super::sqlite_certs::list(&self.pool).await
    }

    async fn certificate(
        &self,
        name: &str,
    ) -> Result<Option<(CertificateMeta, String)>, StoreError> {
        super::sqlite_certs::one(&self.pool, name).await
    }

    async fn materials(&self, ids: &[String]) -> Result<Vec<Material>, StoreError> {
        super::sqlite_certs::materials(&self.pool, ids).await
    }

    async fn put_certificate(&self, c: NewCertificate, audit: NewAudit) -> Result<(), StoreError> {
        super::sqlite_certs::put(&self.pool, &c, &audit).await
    }

    async fn delete_certificate(&self, name: &str, audit: NewAudit) -> Result<bool, StoreError> {
        super::sqlite_certs::delete(&self.pool, name, &audit).await
    }

    async fn close(&self) {
        // Fold the WAL into the main file while nothing else writes: the
        // close of the last connection would do it too, but only when no
        // other connection of the pool is still closing at that moment.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
        }
        self.pool.close().await;
    }
}

/// A transaction that holds SQLite's write lock from its start. A deferred
/// one that reads before it writes fails at once (`SQLITE_BUSY`, no
/// waiting) when another connection wrote in between; taking the lock
/// first makes it wait for the busy timeout like any writer instead.
pub(super) async fn begin_write(
    pool: &SqlitePool,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}
