//! The certificate store's tables in SQLite (`migrations/0003_certificates.sql`).

use super::sqlite::{begin_write, insert_audit};
use super::{CertificateMeta, Material, NewAudit, NewCertificate, StoreError};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, Sqlite, Transaction};

const META_COLUMNS: &str = "name, material_id, fingerprint, subject, issuer, names, \
     not_before, not_after, created_at, updated_at, updated_by";

fn meta_of(row: &SqliteRow) -> Result<CertificateMeta, StoreError> {
    let names: String = row.try_get("names")?;
    Ok(CertificateMeta {
        name: row.try_get("name")?,
        id: row.try_get("material_id")?,
        fingerprint_sha256: row.try_get("fingerprint")?,
        subject: row.try_get("subject")?,
        issuer: row.try_get("issuer")?,
        names: serde_json::from_str(&names)
            .map_err(|e| StoreError::Corrupt(format!("certificate names: {e}")))?,
        not_before: row.try_get("not_before")?,
        not_after: row.try_get("not_after")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
    })
}

/// Every certificate's metadata, by name.
pub async fn list(pool: &SqlitePool) -> Result<Vec<CertificateMeta>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {META_COLUMNS} FROM certificates ORDER BY name"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(meta_of).collect()
}

/// One certificate's metadata and PEM chain.
pub async fn one(
    pool: &SqlitePool,
    name: &str,
) -> Result<Option<(CertificateMeta, String)>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {META_COLUMNS}, m.cert_pem FROM certificates
         JOIN certificate_material m ON m.id = material_id WHERE name = ?"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?;
    row.map(|r| Ok((meta_of(&r)?, r.try_get("cert_pem")?)))
        .transpose()
}

/// Material by id.
pub async fn materials(pool: &SqlitePool, ids: &[String]) -> Result<Vec<Material>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row =
            sqlx::query("SELECT id, cert_pem, key_pem FROM certificate_material WHERE id = ?")
                .bind(id)
                .fetch_optional(pool)
                .await?;
        if let Some(r) = row {
            out.push(Material {
                id: r.try_get("id")?,
                cert_pem: r.try_get("cert_pem")?,
                key_pem: r.try_get("key_pem")?,
            });
        }
    }
    Ok(out)
}

/// Removes material `id` when neither a name nor any version refers to it:
/// a key that was never served leaves the database with its name. (A key
/// some version served stays, so that the version can be sent again.)
async fn purge_unused(tx: &mut Transaction<'_, Sqlite>, id: &str) -> Result<(), StoreError> {
    // Ids are hex, so a substring match on the versions' JSON is exact.
    sqlx::query(
        "DELETE FROM certificate_material WHERE id = ?1
           AND NOT EXISTS (SELECT 1 FROM certificates WHERE material_id = ?1)
           AND NOT EXISTS (SELECT 1 FROM config_versions
                           WHERE instr(certificates, '\"' || ?1 || '\"') > 0)",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a certificate's material (once per content) and points its name
/// at it.
pub async fn upsert(
    tx: &mut Transaction<'_, Sqlite>,
    c: &NewCertificate,
) -> Result<(), StoreError> {
    let replaced: Option<String> =
        sqlx::query_scalar("SELECT material_id FROM certificates WHERE name = ?")
            .bind(&c.meta.name)
            .fetch_optional(&mut **tx)
            .await?;
    sqlx::query(
        "INSERT INTO certificate_material (id, cert_pem, key_pem) VALUES (?, ?, ?)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&c.material.id)
    .bind(&c.material.cert_pem)
    .bind(&c.material.key_pem)
    .execute(&mut **tx)
    .await?;
    let names =
        serde_json::to_string(&c.meta.names).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(&format!(
        "INSERT INTO certificates ({META_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET material_id = excluded.material_id,
           fingerprint = excluded.fingerprint, subject = excluded.subject,
           issuer = excluded.issuer, names = excluded.names,
           not_before = excluded.not_before, not_after = excluded.not_after,
           updated_at = excluded.updated_at, updated_by = excluded.updated_by"
    ))
    .bind(&c.meta.name)
    .bind(&c.material.id)
    .bind(&c.meta.fingerprint_sha256)
    .bind(&c.meta.subject)
    .bind(&c.meta.issuer)
    .bind(names)
    .bind(c.meta.not_before)
    .bind(c.meta.not_after)
    .bind(c.meta.created_at)
    .bind(c.meta.updated_at)
    .bind(&c.meta.updated_by)
    .execute(&mut **tx)
    .await?;
    if let Some(old) = replaced.filter(|old| *old != c.material.id) {
        purge_unused(tx, &old).await?;
    }
    Ok(())
}

/// Refuses, with the newest version, when that version names `name`: a
/// change to it must come with a version (another writer on the same
/// database may have made one this process has not seen).
async fn unused_by_head(tx: &mut Transaction<'_, Sqlite>, name: &str) -> Result<(), StoreError> {
    let head: Option<(i64, String)> = sqlx::query_as(
        "SELECT version, certificates FROM config_versions ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&mut **tx)
    .await?;
    if let Some((version, certificates)) = head {
        let named: std::collections::BTreeMap<String, String> = serde_json::from_str(&certificates)
            .map_err(|e| StoreError::Corrupt(format!("certificates: {e}")))?;
        if named.contains_key(name) {
            return Err(StoreError::Conflict(u64::try_from(version).unwrap_or(0)));
        }
    }
    Ok(())
}

/// Stores a certificate with its audit entry; [`StoreError::Conflict`] when
/// the newest version names it.
pub async fn put(
    pool: &SqlitePool,
    c: &NewCertificate,
    audit: &NewAudit,
) -> Result<(), StoreError> {
    let mut tx = begin_write(pool).await?;
    unused_by_head(&mut tx, &c.meta.name).await?;
    upsert(&mut tx, c).await?;
    insert_audit(&mut tx, audit, None).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes a name with its audit entry, and its material when no version
/// used it; [`StoreError::Conflict`] when the newest version names it.
pub async fn delete(pool: &SqlitePool, name: &str, audit: &NewAudit) -> Result<bool, StoreError> {
    let mut tx = begin_write(pool).await?;
    unused_by_head(&mut tx, name).await?;
    let material: Option<String> =
        sqlx::query_scalar("SELECT material_id FROM certificates WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    let gone = sqlx::query("DELETE FROM certificates WHERE name = ?")
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    if gone {
        if let Some(id) = material {
            purge_unused(&mut tx, &id).await?;
        }
        insert_audit(&mut tx, audit, None).await?;
        tx.commit().await?;
    }
    Ok(gone)
}
