//! The certificate store's tables in SQLite (`migrations/0003_certificates.sql`).

use super::sqlite::insert_audit;
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

/// Writes a certificate's material (once per content) and points its name
/// at it.
pub async fn upsert(
    tx: &mut Transaction<'_, Sqlite>,
    c: &NewCertificate,
) -> Result<(), StoreError> {
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
    Ok(())
}

/// Stores a certificate with its audit entry.
pub async fn put(
    pool: &SqlitePool,
    c: &NewCertificate,
    audit: &NewAudit,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    upsert(&mut tx, c).await?;
    insert_audit(&mut tx, audit, None).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes a name with its audit entry.
pub async fn delete(pool: &SqlitePool, name: &str, audit: &NewAudit) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let gone = sqlx::query("DELETE FROM certificates WHERE name = ?")
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    if gone {
        insert_audit(&mut tx, audit, None).await?;
        tx.commit().await?;
    }
    Ok(gone)
}
