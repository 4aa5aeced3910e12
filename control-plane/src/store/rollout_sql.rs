//! The rollout tables' queries, written once for SQLite and PostgreSQL like
//! those of [`super::sql`]: the policy's revisions, one rollout row per
//! version (created in the version's own transaction by `start_rollout`),
//! and the traffic samples gates judge.

use super::rows::Cols;
use super::StoreError;
use crate::rollout::model::{PolicyRecord, Progress, RolloutRecord, Sample, State};

/// A `rollouts` row.
pub(crate) fn rollout_of(row: &impl Cols) -> Result<RolloutRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("rollout row: {what}"));
    let state = row.text("state")?;
    Ok(RolloutRecord {
        version: u64::try_from(row.int("version")?).map_err(|_| corrupt("negative version"))?,
        base: row.opt_int("base")?.and_then(|b| u64::try_from(b).ok()),
        policy: row
            .opt_text("policy")?
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| corrupt(&format!("policy: {e}")))?,
        state: State::parse(&state).ok_or_else(|| corrupt(&format!("state {state:?}")))?,
        revision: u64::try_from(row.int("revision")?).map_err(|_| corrupt("revision"))?,
        progress: serde_json::from_str::<Progress>(&row.text("progress")?)
            .map_err(|e| corrupt(&format!("progress: {e}")))?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

/// A `rollout_policies` row.
pub(crate) fn policy_of(row: &impl Cols) -> Result<PolicyRecord, StoreError> {
    Ok(PolicyRecord {
        revision: u64::try_from(row.int("revision")?)
            .map_err(|_| StoreError::Corrupt("negative policy revision".into()))?,
        policy: row
            .opt_text("policy")?
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("rollout policy: {e}")))?,
        created_at: row.int("created_at")?,
        author: row.text("author")?,
    })
}

/// A `rollout_samples` row (its `upstreams` column holds the whole
/// [`crate::rollout::model::SampleTraffic`] as JSON).
pub(crate) fn sample_of(row: &impl Cols) -> Result<Sample, StoreError> {
    Ok(Sample {
        rollout: u64::try_from(row.int("rollout")?).unwrap_or(0),
        node: row.text("node")?,
        at: row.int("at")?,
        version: u64::try_from(row.int("version")?).unwrap_or(0),
        traffic: serde_json::from_str(&row.text("upstreams")?)
            .map_err(|e| StoreError::Corrupt(format!("rollout sample: {e}")))?,
    })
}

/// The version nodes outside a new rollout for `version` serve: what the
/// rollout before it left everyone on, or — when versions were committed
/// since without a rollout (by a build from before rollouts) or there is
/// no rollout at all — the version before.
pub(crate) fn base_for(version: u64, prev: Option<&RolloutRecord>) -> Option<u64> {
    match prev {
        Some(p) if p.version + 1 == version => p.stable(),
        _ => version.checked_sub(1).filter(|v| *v > 0),
    }
}

/// Implements the rollout queries for `$store` (see [`super::sql`]); the
/// `Tx` alias and helpers of `sql_store!` must be in scope.
macro_rules! rollout_store {
    ($store:ty) => {
        use $crate::rollout::model::{PolicyRecord, RolloutRecord, Sample, State};
        use $crate::store::rollout_sql::{base_for, policy_of, rollout_of, sample_of};

        const ROLLOUT_COLUMNS: &str =
            "version, base, policy, state, revision, progress, created_at, updated_at";

        /// The newest rollout, read inside `tx`.
        async fn latest_rollout_in(tx: &mut Tx<'_>) -> Result<Option<RolloutRecord>, StoreError> {
            let row = sqlx::query(&format!(
                "SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY version DESC LIMIT 1"
            ))
            .fetch_optional(&mut **tx)
            .await?;
            row.map(|r| rollout_of(&r)).transpose()
        }

        /// Writes a rollout's state and progress over revision `rec.revision`
        /// (false when another writer changed it first).
        async fn write_rollout(tx: &mut Tx<'_>, rec: &RolloutRecord) -> Result<bool, StoreError> {
            let done = sqlx::query(
                "UPDATE rollouts SET state = $1, progress = $2, revision = revision + 1,
                   updated_at = $3 WHERE version = $4 AND revision = $5",
            )
            .bind(rec.state.as_str())
            .bind(json_text(&rec.progress)?)
            .bind(now_ms())
            .bind(int(rec.version))
            .bind(int(rec.revision))
            .execute(&mut **tx)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        /// Creates the rollout of the version `version` being committed in
        /// `tx`: staged when a policy is set and there is a base to keep
        /// serving (a rollback of the config goes everywhere at once: it
        /// restores a version that was served). An active rollout before it
        /// is superseded.
        async fn start_rollout(
            tx: &mut Tx<'_>,
            version: u64,
            rollback: bool,
        ) -> Result<RolloutRecord, StoreError> {
            let now = now_ms();
            let prev = latest_rollout_in(tx).await?;
            let base = base_for(version, prev.as_ref());
            if let Some(mut p) = prev.filter(|p| p.state.is_active()) {
                p.state = State::Superseded;
                p.progress.event(
                    now,
                    "superseded",
                    format!(
                        "version {version} was committed; its rollout starts from the first stage"
                    ),
                );
                write_rollout(tx, &p).await?;
            }
            let policy: Option<Option<String>> = sqlx::query_scalar(
                "SELECT policy FROM rollout_policies ORDER BY revision DESC LIMIT 1",
            )
            .fetch_optional(&mut **tx)
            .await?;
            let policy: Option<serde_json::Value> = policy
                .flatten()
                .map(|t| serde_json::from_str(&t))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("rollout policy: {e}")))?;
            let (state, message) = match (&policy, base) {
                (None, _) => (
                    State::Completed,
                    "no rollout policy: sent to every node at once".to_owned(),
                ),
                (Some(_), None) => (
                    State::Completed,
                    "the first version: sent to every node at once".to_owned(),
                ),
                (Some(_), Some(_)) if rollback => (
                    State::Completed,
                    "a rollback restores a version that was served: sent to every node at once"
                        .to_owned(),
                ),
                (Some(_), Some(b)) => (
                    State::Running,
                    format!("staged rollout; other nodes keep version {b}"),
                ),
            };
            let mut rec = RolloutRecord {
                version,
                base,
                policy: policy.filter(|_| state == State::Running),
                state,
                revision: 1,
                progress: Default::default(),
                created_at: now,
                updated_at: now,
            };
            rec.progress.event(now, "created", message);
            sqlx::query(&format!(
                "INSERT INTO rollouts ({ROLLOUT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .bind(int(version))
            .bind(base.map(int))
            .bind(rec.policy.as_ref().map(json_text).transpose()?)
            .bind(rec.state.as_str())
            .bind(1i64)
            .bind(json_text(&rec.progress)?)
            .bind(now)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            Ok(rec)
        }

        #[async_trait::async_trait]
        impl $crate::store::RolloutStore for $store {
            async fn latest_rollout(&self) -> Result<Option<RolloutRecord>, StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY version DESC LIMIT 1"
                ))
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| rollout_of(&r)).transpose()
            }

            async fn rollout(&self, version: u64) -> Result<Option<RolloutRecord>, StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE version = $1"
                ))
                .bind(int(version))
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| rollout_of(&r)).transpose()
            }

            async fn rollouts(&self, page: Page) -> Result<Vec<RolloutRecord>, StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE version < $1
                     ORDER BY version DESC LIMIT $2"
                ))
                .bind(page.before.unwrap_or(i64::MAX))
                .bind(i64::from(page.limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(rollout_of).collect()
            }

            async fn update_rollout(
                &self,
                rec: &RolloutRecord,
                audit: Option<NewAudit>,
            ) -> Result<bool, StoreError> {
                let mut tx = self.begin_ledger().await?;
                if !write_rollout(&mut tx, rec).await? {
                    return Ok(false);
                }
                if let Some(a) = &audit {
                    insert_audit(&mut tx, a, None).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn rollout_policy(&self) -> Result<Option<PolicyRecord>, StoreError> {
                let row = sqlx::query(
                    "SELECT revision, created_at, author, policy FROM rollout_policies
                     ORDER BY revision DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| policy_of(&r)).transpose()
            }

            async fn rollout_policies(&self, page: Page) -> Result<Vec<PolicyRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT revision, created_at, author, policy FROM rollout_policies
                     WHERE revision < $1 ORDER BY revision DESC LIMIT $2",
                )
                .bind(page.before.unwrap_or(i64::MAX))
                .bind(i64::from(page.limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(policy_of).collect()
            }

            async fn put_rollout_policy(
                &self,
                policy: Option<serde_json::Value>,
                expected: Option<u64>,
                audit: NewAudit,
            ) -> Result<PolicyRecord, StoreError> {
                let mut tx = self.begin_write().await?;
                let newest: Option<i64> =
                    sqlx::query_scalar("SELECT MAX(revision) FROM rollout_policies")
                        .fetch_one(&mut *tx)
                        .await?;
                let newest = newest.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                if expected.is_some_and(|e| e != newest) {
                    return Err(StoreError::Conflict(newest));
                }
                let rec = PolicyRecord {
                    revision: newest + 1,
                    policy,
                    created_at: now_ms(),
                    author: audit.actor.clone(),
                };
                sqlx::query(
                    "INSERT INTO rollout_policies (revision, created_at, author, policy)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(int(rec.revision))
                .bind(rec.created_at)
                .bind(&rec.author)
                .bind(rec.policy.as_ref().map(json_text).transpose()?)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, &audit, None).await?;
                tx.commit().await?;
                Ok(rec)
            }

            async fn record_samples(&self, samples: &[Sample]) -> Result<(), StoreError> {
                if samples.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin_ledger().await?;
                for s in samples {
                    sqlx::query(
                        "INSERT INTO rollout_samples (rollout, node, at, version, upstreams)
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(int(s.rollout))
                    .bind(&s.node)
                    .bind(s.at)
                    .bind(int(s.version))
                    .bind(json_text(&s.traffic)?)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn samples(&self, rollout: u64, since: i64) -> Result<Vec<Sample>, StoreError> {
                let rows = sqlx::query(
                    "SELECT rollout, node, at, version, upstreams FROM rollout_samples
                     WHERE rollout = $1 AND at >= $2 ORDER BY at",
                )
                .bind(int(rollout))
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(sample_of).collect()
            }

            async fn forget_samples(&self, keep_from: u64) -> Result<u64, StoreError> {
                let done = sqlx::query("DELETE FROM rollout_samples WHERE rollout < $1")
                    .bind(int(keep_from))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use rollout_store;
