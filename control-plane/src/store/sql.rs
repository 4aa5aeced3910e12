//! The store's queries, written once for SQLite and PostgreSQL.
//!
//! Both databases read the same SQL: numbered parameters (`$1`), `ON
//! CONFLICT ... DO UPDATE`, `TRUE`/`FALSE`, and JSON kept as text. What
//! differs is how a write transaction begins (SQLite takes its write lock,
//! PostgreSQL an advisory lock that orders config writers across replicas),
//! which each backend's store type provides as `begin_write` and
//! `begin_ledger`, and its migrations. sqlx's types are per database, so the
//! code is instantiated per backend by `sql_store!`
//! rather than made generic over sqlx's traits.

/// Implements [`Store`](super::Store) for `$store`, a type with a `pool`
/// field of `sqlx::Pool<$db>`, `begin_write`, `begin_ledger` and
/// `close_pool` methods and a `notices` field.
macro_rules! sql_store {
    ($store:ty, $db:ty) => {
        use $crate::store::resources::{self, ResourceWrite};
        use $crate::store::rows::{audit_of, int, json_text, meta_of, node_of, now_ms, version_of};

        type Tx<'a> = sqlx::Transaction<'a, $db>;

        const VERSION_COLUMNS: &str =
            "version, created_at, author, message, hash, rollback_of, changes, certificates";

        const META_COLUMNS: &str = "name, material_id, fingerprint, subject, issuer, names, \
             not_before, not_after, created_at, updated_at, updated_by";

        fn is_unique_violation(e: &sqlx::Error) -> bool {
            matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
        }

        async fn insert_audit(
            tx: &mut Tx<'_>,
            a: &NewAudit,
            version: Option<u64>,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO audit (at, actor, remote_addr, action, target, version, message, changes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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

        async fn write_resources(
            tx: &mut Tx<'_>,
            old: Option<&isame_proto::Config>,
            new: &isame_proto::Config,
        ) -> Result<(), StoreError> {
            for w in resources::writes(old, new)? {
                match w {
                    ResourceWrite::DeleteUpstream(name) => {
                        sqlx::query("DELETE FROM upstreams WHERE name = $1")
                            .bind(name)
                            .execute(&mut **tx)
                            .await?;
                    }
                    ResourceWrite::PutUpstream { name, position, algorithm, spec, backends } => {
                        sqlx::query(
                            "INSERT INTO upstreams (name, position, algorithm, spec)
                             VALUES ($1, $2, $3, $4)
                             ON CONFLICT (name) DO UPDATE SET position = excluded.position,
                               algorithm = excluded.algorithm, spec = excluded.spec",
                        )
                        .bind(&name)
                        .bind(position)
                        .bind(algorithm)
                        .bind(spec)
                        .execute(&mut **tx)
                        .await?;
                        sqlx::query("DELETE FROM backends WHERE upstream = $1")
                            .bind(&name)
                            .execute(&mut **tx)
                            .await?;
                        for (url, position, weight, drain) in backends {
                            sqlx::query(
                                "INSERT INTO backends (upstream, url, position, weight, drain)
                                 VALUES ($1, $2, $3, $4, $5)",
                            )
                            .bind(&name)
                            .bind(url)
                            .bind(position)
                            .bind(weight)
                            .bind(drain)
                            .execute(&mut **tx)
                            .await?;
                        }
                    }
                    ResourceWrite::DeleteRoute(name) => {
                        sqlx::query("DELETE FROM routes WHERE name = $1")
                            .bind(name)
                            .execute(&mut **tx)
                            .await?;
                    }
                    ResourceWrite::PutRoute { name, position, upstream, spec } => {
                        sqlx::query(
                            "INSERT INTO routes (name, position, upstream, spec)
                             VALUES ($1, $2, $3, $4)
                             ON CONFLICT (name) DO UPDATE SET position = excluded.position,
                               upstream = excluded.upstream, spec = excluded.spec",
                        )
                        .bind(name)
                        .bind(position)
                        .bind(upstream)
                        .bind(spec)
                        .execute(&mut **tx)
                        .await?;
                    }
                    ResourceWrite::PutSetting { key, value } => {
                        sqlx::query(
                            "INSERT INTO settings (key, value) VALUES ($1, $2)
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        )
                        .bind(key)
                        .bind(value)
                        .execute(&mut **tx)
                        .await?;
                    }
                }
            }
            Ok(())
        }

        async fn record_node(
            tx: &mut Tx<'_>,
            replica: &str,
            id: &str,
            update: &NodeUpdate,
        ) -> Result<(), StoreError> {
            let now = now_ms();
            // A report from a node this replica holds (`$3`) makes it
            // connected again when a replica that took this one for dead
            // had marked it lost; a node that moved elsewhere is left alone.
            let q = match update {
                NodeUpdate::Connected(hello) => {
                    sqlx::query(
                        "INSERT INTO nodes
                           (id, hostname, labels, build, connected, replica, first_seen, last_seen)
                         VALUES ($1, $2, $3, $4, TRUE, $5, $6, $6)
                         ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname,
                           labels = excluded.labels, build = excluded.build, connected = TRUE,
                           replica = excluded.replica, last_seen = excluded.last_seen",
                    )
                    .bind(id)
                    .bind(&hello.hostname)
                    .bind(json_text(&hello.labels)?)
                    .bind(&hello.build)
                    .bind(replica)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                    return Ok(());
                }
                NodeUpdate::Seen => sqlx::query(
                    "UPDATE nodes SET last_seen = $2,
                       connected = (connected OR COALESCE(replica = $3, FALSE)) WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .bind(replica),
                NodeUpdate::Ack(v) => sqlx::query(
                    "UPDATE nodes SET last_seen = $2,
                       connected = (connected OR COALESCE(replica = $3, FALSE)),
                       version = $4 WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .bind(replica)
                .bind(int(*v)),
                NodeUpdate::Nack(n) => sqlx::query(
                    "UPDATE nodes SET last_seen = $2,
                       connected = (connected OR COALESCE(replica = $3, FALSE)),
                       last_nack = $4 WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .bind(replica)
                .bind(json_text(n)?),
                NodeUpdate::Health(h) => sqlx::query(
                    "UPDATE nodes SET last_seen = $2,
                       connected = (connected OR COALESCE(replica = $3, FALSE)),
                       health = $4 WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .bind(replica)
                .bind(json_text(h)?),
                NodeUpdate::Traffic(t) => sqlx::query(
                    "UPDATE nodes SET last_seen = $2,
                       connected = (connected OR COALESCE(replica = $3, FALSE)),
                       traffic = $4 WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .bind(replica)
                .bind(json_text(t)?),
                // Not "seen": a stream that timed out was last heard from
                // earlier. Only the replica that holds the node's stream
                // may say it closed: a node that moved to another replica
                // stays connected there.
                NodeUpdate::Disconnected => sqlx::query(
                    "UPDATE nodes SET connected = FALSE WHERE id = $1 AND replica = $2",
                )
                .bind(id)
                .bind(replica),
            };
            q.execute(&mut **tx).await?;
            Ok(())
        }

        /// Removes material `id` when neither a name nor any version
        /// refers to it: a key that was never served leaves the database
        /// with its name. (A key some version served stays, so that the
        /// version can be sent again.)
        async fn purge_unused(tx: &mut Tx<'_>, id: &str) -> Result<(), StoreError> {
            // Ids are hex, so a substring match on the versions' JSON is
            // exact (and `%`/`_` never occur in them).
            sqlx::query(
                "DELETE FROM certificate_material WHERE id = $1
                   AND NOT EXISTS (SELECT 1 FROM certificates WHERE material_id = $1)
                   AND NOT EXISTS (SELECT 1 FROM config_versions
                                   WHERE certificates LIKE '%\"' || $1 || '\"%')",
            )
            .bind(id)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// Writes a certificate's material (once per content) and points
        /// its name at it.
        async fn upsert_certificate(tx: &mut Tx<'_>, c: &NewCertificate) -> Result<(), StoreError> {
            let replaced: Option<String> =
                sqlx::query_scalar("SELECT material_id FROM certificates WHERE name = $1")
                    .bind(&c.meta.name)
                    .fetch_optional(&mut **tx)
                    .await?;
            sqlx::query(
                "INSERT INTO certificate_material (id, cert_pem, key_pem) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&c.material.id)
            .bind(&c.material.cert_pem)
            .bind(&c.material.key_pem)
            .execute(&mut **tx)
            .await?;
            sqlx::query(&format!(
                "INSERT INTO certificates ({META_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
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
            .bind(json_text(&c.meta.names)?)
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

        /// Refuses, with the newest version, when that version names
        /// `name`: a change to it must come with a version (another writer
        /// on the same database may have made one this process has not
        /// seen).
        async fn unused_by_head(tx: &mut Tx<'_>, name: &str) -> Result<(), StoreError> {
            let head: Option<(i64, String)> = sqlx::query_as(
                "SELECT version, certificates FROM config_versions ORDER BY version DESC LIMIT 1",
            )
            .fetch_optional(&mut **tx)
            .await?;
            if let Some((version, certificates)) = head {
                let named: std::collections::BTreeMap<String, String> =
                    serde_json::from_str(&certificates)
                        .map_err(|e| StoreError::Corrupt(format!("certificates: {e}")))?;
                if named.contains_key(name) {
                    return Err(StoreError::Conflict(u64::try_from(version).unwrap_or(0)));
                }
            }
            Ok(())
        }

        #[async_trait::async_trait]
        impl Store for $store {
            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn head(&self) -> Result<Option<VersionRecord>, StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT {VERSION_COLUMNS}, config FROM config_versions
                     ORDER BY version DESC LIMIT 1"
                ))
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| version_of(&r, true)).transpose()
            }

            async fn newest_version(&self) -> Result<u64, StoreError> {
                let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM config_versions")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
            }

            async fn version(&self, version: u64) -> Result<Option<VersionRecord>, StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT {VERSION_COLUMNS}, config FROM config_versions WHERE version = $1"
                ))
                .bind(int(version))
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| version_of(&r, true)).transpose()
            }

            async fn versions(&self, page: Page) -> Result<Vec<VersionRecord>, StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT {VERSION_COLUMNS} FROM config_versions WHERE version < $1
                     ORDER BY version DESC LIMIT $2"
                ))
                .bind(page.before.unwrap_or(i64::MAX))
                .bind(i64::from(page.limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|r| version_of(r, false)).collect()
            }

            async fn commit(&self, v: NewVersion) -> Result<RolloutRecord, StoreError> {
                let mut tx = self.begin_write().await?;
                let inserted = sqlx::query(
                    "INSERT INTO config_versions
                       (version, created_at, author, message, hash, config, changes, rollback_of,
                        certificates)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
                    Err(e) if is_unique_violation(&e) => {
                        return Err(StoreError::Conflict(v.version))
                    }
                    other => other?,
                };
                // Versions are appended one at a time: the one before must
                // be the newest.
                let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM config_versions")
                    .fetch_one(&mut *tx)
                    .await?;
                if newest != int(v.version) {
                    return Err(StoreError::Conflict(v.version));
                }
                write_resources(&mut tx, v.previous.as_deref(), &v.model).await?;
                if let Some(c) = &v.certificate {
                    upsert_certificate(&mut tx, c).await?;
                }
                insert_audit(&mut tx, &v.audit, Some(v.version)).await?;
                let rollout = start_rollout(&mut tx, v.version, v.rollback_of.is_some()).await?;
                tx.commit().await?;
                Ok(rollout)
            }

            async fn audit(&self, entry: NewAudit) -> Result<(), StoreError> {
                let mut tx = self.begin_ledger().await?;
                insert_audit(&mut tx, &entry, None).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn audit_log(&self, page: Page) -> Result<Vec<AuditRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, at, actor, remote_addr, action, target, version, message, changes
                     FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(page.before.unwrap_or(i64::MAX))
                .bind(i64::from(page.limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(audit_of).collect()
            }

            async fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
                let row: Option<(String, String)> =
                    sqlx::query_as("SELECT name, role FROM tokens WHERE hash = $1")
                        .bind(hash)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(|(name, role)| {
                    Ok(TokenRecord {
                        role: Role::parse(&role)
                            .ok_or_else(|| StoreError::Corrupt(format!("unknown role {role:?}")))?,
                        name,
                    })
                })
                .transpose()
            }

            async fn has_tokens(&self) -> Result<bool, StoreError> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n != 0)
            }

            async fn create_token(&self, name: &str, role: Role, hash: &str) -> Result<(), StoreError> {
                let r = sqlx::query(
                    "INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4)",
                )
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
                // The bootstrap token keeps its name; setting a new value
                // replaces the old one.
                sqlx::query(
                    "INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4)
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

            async fn record_nodes(
                &self,
                replica: &str,
                updates: &[(String, NodeUpdate)],
            ) -> Result<(), StoreError> {
                let mut tx = self.begin_ledger().await?;
                for (id, update) in updates {
                    record_node(&mut tx, replica, id, update).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn disconnect_replica(&self, replica: &str) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE nodes SET connected = FALSE WHERE connected = TRUE AND replica = $1",
                )
                .bind(replica)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn heartbeat(&self, replica: &str, started_at: i64) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO replicas (id, started_at, last_seen) VALUES ($1, $2, $3)
                     ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
                )
                .bind(replica)
                .bind(started_at)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn reap_replicas(&self, silent_since: i64) -> Result<u64, StoreError> {
                let mut tx = self.begin_ledger().await?;
                let nodes = sqlx::query(
                    "UPDATE nodes SET connected = FALSE WHERE connected = TRUE AND (
                       replica IS NULL
                       OR replica NOT IN (SELECT id FROM replicas WHERE last_seen >= $1))",
                )
                .bind(silent_since)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query("DELETE FROM replicas WHERE last_seen < $1")
                    .bind(silent_since)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(nodes)
            }

            async fn take_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
                let now = now_ms();
                let taken = sqlx::query(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                       expires_at = excluded.expires_at
                     WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
                )
                .bind(name)
                .bind(holder)
                .bind(now.saturating_add(ttl_ms))
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(taken == 1)
            }

            async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                    .bind(name)
                    .bind(holder)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn lease_holder(&self, name: &str) -> Result<Option<String>, StoreError> {
                let holder: Option<String> = sqlx::query_scalar(
                    "SELECT holder FROM leases WHERE name = $1 AND expires_at >= $2",
                )
                .bind(name)
                .bind(now_ms())
                .fetch_optional(&self.pool)
                .await?;
                Ok(holder)
            }

            async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
                let rows = sqlx::query("SELECT * FROM nodes ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(node_of).collect()
            }

            async fn node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
                let row = sqlx::query("SELECT * FROM nodes WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| node_of(&r)).transpose()
            }

            async fn certificates(&self) -> Result<Vec<CertificateMeta>, StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT {META_COLUMNS} FROM certificates ORDER BY name"
                ))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(meta_of).collect()
            }

            async fn certificate(
                &self,
                name: &str,
            ) -> Result<Option<(CertificateMeta, String)>, StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT {META_COLUMNS}, m.cert_pem FROM certificates
                     JOIN certificate_material m ON m.id = material_id WHERE name = $1"
                ))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| {
                    let pem: String = sqlx::Row::try_get(&r, "cert_pem")?;
                    Ok((meta_of(&r)?, pem))
                })
                .transpose()
            }

            async fn materials(&self, ids: &[String]) -> Result<Vec<Material>, StoreError> {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let row: Option<(String, String, String)> = sqlx::query_as(
                        "SELECT id, cert_pem, key_pem FROM certificate_material WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                    if let Some((id, cert_pem, key_pem)) = row {
                        out.push(Material { id, cert_pem, key_pem });
                    }
                }
                Ok(out)
            }

            async fn put_certificate(&self, c: NewCertificate, audit: NewAudit) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                unused_by_head(&mut tx, &c.meta.name).await?;
                upsert_certificate(&mut tx, &c).await?;
                insert_audit(&mut tx, &audit, None).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete_certificate(&self, name: &str, audit: NewAudit) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                unused_by_head(&mut tx, name).await?;
                let material: Option<String> =
                    sqlx::query_scalar("SELECT material_id FROM certificates WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await?;
                let gone = sqlx::query("DELETE FROM certificates WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                if gone {
                    if let Some(id) = material {
                        purge_unused(&mut tx, &id).await?;
                    }
                    insert_audit(&mut tx, &audit, None).await?;
                    tx.commit().await?;
                }
                Ok(gone)
            }

            async fn export(&self) -> Result<$crate::store::dump::Dump, StoreError> {
                use $crate::store::dump::*;
                let mut tx = self.pool.begin().await?;
                let versions: Vec<DumpVersion> = sqlx::query_as(&format!(
                    "SELECT {VERSION_COLUMNS}, config FROM config_versions ORDER BY version"
                ))
                .fetch_all(&mut *tx)
                .await?;
                let certificate_material: Vec<DumpMaterial> =
                    sqlx::query_as("SELECT id, cert_pem, key_pem FROM certificate_material ORDER BY id")
                        .fetch_all(&mut *tx)
                        .await?;
                let certificates: Vec<DumpCertificate> = sqlx::query_as(&format!(
                    "SELECT {META_COLUMNS} FROM certificates ORDER BY name"
                ))
                .fetch_all(&mut *tx)
                .await?;
                let tokens: Vec<DumpToken> =
                    sqlx::query_as("SELECT name, role, hash, created_at FROM tokens ORDER BY id")
                        .fetch_all(&mut *tx)
                        .await?;
                let audit: Vec<DumpAudit> = sqlx::query_as(
                    "SELECT at, actor, remote_addr, action, target, version, message, changes
                     FROM audit ORDER BY id",
                )
                .fetch_all(&mut *tx)
                .await?;
                let rollout_policies: Vec<DumpPolicy> = sqlx::query_as(
                    "SELECT revision, created_at, author, policy FROM rollout_policies ORDER BY revision",
                )
                .fetch_all(&mut *tx)
                .await?;
                let rollouts: Vec<DumpRollout> = sqlx::query_as(
                    "SELECT version, base, policy, state, revision, progress, created_at, updated_at
                     FROM rollouts ORDER BY version",
                )
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Dump {
                    format: FORMAT.into(),
                    versions,
                    certificate_material,
                    certificates,
                    tokens,
                    audit,
                    rollout_policies,
                    rollouts,
                })
            }

            async fn import(&self, dump: $crate::store::dump::Dump) -> Result<(), StoreError> {
                if dump.format != $crate::store::dump::FORMAT {
                    return Err(StoreError::Corrupt(format!(
                        "not an export of this store: format {:?}",
                        dump.format
                    )));
                }
                let mut tx = self.begin_write().await?;
                let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM config_versions")
                    .fetch_one(&mut *tx)
                    .await?;
                if have > 0 {
                    return Err(StoreError::NotEmpty(have));
                }
                for m in &dump.certificate_material {
                    sqlx::query(
                        "INSERT INTO certificate_material (id, cert_pem, key_pem) VALUES ($1, $2, $3)
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&m.id)
                    .bind(&m.cert_pem)
                    .bind(&m.key_pem)
                    .execute(&mut *tx)
                    .await?;
                }
                let mut versions: Vec<_> = dump.versions.iter().collect();
                versions.sort_by_key(|v| v.version);
                for v in &versions {
                    sqlx::query(
                        "INSERT INTO config_versions
                           (version, created_at, author, message, hash, config, changes,
                            rollback_of, certificates)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(v.version)
                    .bind(v.created_at)
                    .bind(&v.author)
                    .bind(&v.message)
                    .bind(&v.hash)
                    .bind(&v.config)
                    .bind(&v.changes)
                    .bind(v.rollback_of)
                    .bind(&v.certificates)
                    .execute(&mut *tx)
                    .await?;
                }
                for c in &dump.certificates {
                    sqlx::query(&format!(
                        "INSERT INTO certificates ({META_COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                         ON CONFLICT (name) DO UPDATE SET material_id = excluded.material_id,
                           fingerprint = excluded.fingerprint, subject = excluded.subject,
                           issuer = excluded.issuer, names = excluded.names,
                           not_before = excluded.not_before, not_after = excluded.not_after,
                           created_at = excluded.created_at, updated_at = excluded.updated_at,
                           updated_by = excluded.updated_by"
                    ))
                    .bind(&c.name)
                    .bind(&c.material_id)
                    .bind(&c.fingerprint)
                    .bind(&c.subject)
                    .bind(&c.issuer)
                    .bind(&c.names)
                    .bind(c.not_before)
                    .bind(c.not_after)
                    .bind(c.created_at)
                    .bind(c.updated_at)
                    .bind(&c.updated_by)
                    .execute(&mut *tx)
                    .await?;
                }
                for t in &dump.tokens {
                    sqlx::query("DELETE FROM tokens WHERE name = $1 OR hash = $2")
                        .bind(&t.name)
                        .bind(&t.hash)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&t.name)
                    .bind(&t.role)
                    .bind(&t.hash)
                    .bind(t.created_at)
                    .execute(&mut *tx)
                    .await?;
                }
                for a in &dump.audit {
                    sqlx::query(
                        "INSERT INTO audit
                           (at, actor, remote_addr, action, target, version, message, changes)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(a.at)
                    .bind(&a.actor)
                    .bind(&a.remote_addr)
                    .bind(&a.action)
                    .bind(&a.target)
                    .bind(a.version)
                    .bind(&a.message)
                    .bind(&a.changes)
                    .execute(&mut *tx)
                    .await?;
                }
                for p in &dump.rollout_policies {
                    sqlx::query(
                        "INSERT INTO rollout_policies (revision, created_at, author, policy)
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(p.revision)
                    .bind(p.created_at)
                    .bind(&p.author)
                    .bind(&p.policy)
                    .execute(&mut *tx)
                    .await?;
                }
                for r in &dump.rollouts {
                    sqlx::query(
                        "INSERT INTO rollouts
                           (version, base, policy, state, revision, progress, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(r.version)
                    .bind(r.base)
                    .bind(&r.policy)
                    .bind(&r.state)
                    .bind(r.revision)
                    .bind(&r.progress)
                    .bind(r.created_at)
                    .bind(r.updated_at)
                    .execute(&mut *tx)
                    .await?;
                }
                // The resource tables describe the newest version.
                if let Some(head) = versions.last() {
                    let doc: serde_json::Value = serde_json::from_str(&head.config).map_err(|e| {
                        StoreError::Corrupt(format!("version {} is not JSON: {e}", head.version))
                    })?;
                    let (config, _) = isame_proto::Config::from_value_lenient(&doc);
                    write_resources(&mut tx, None, &config).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            fn version_notices(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
                self.notices.clone()
            }

            async fn close(&self) {
                self.close_pool().await;
            }
        }
    };
}

pub(crate) use sql_store;
