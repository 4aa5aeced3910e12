//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`,
//! so a change that was acknowledged survives a crash or power loss. Its
//! queries are the shared ones of [`super::sql`].

use super::*;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

/// Migrations in `migrations/sqlite/`, embedded in the binary. Migrations
/// a newer build applied are no reason to refuse the database: they only
/// add to the schema, so replicas of the old build keep working (and
/// restarting) next to new ones during a rolling upgrade.
fn migrator() -> sqlx::migrate::Migrator {
    let mut m = sqlx::migrate!("../migrations/sqlite");
    m.set_ignore_missing(true);
    m
}

/// [`Store`] on a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// SQLite tells no other process of a commit: replicas on one file
    /// find new versions by polling.
    notices: Option<tokio::sync::watch::Receiver<u64>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://FILE`)
    /// and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect(url).await?;
        migrator().run(&store.pool).await?;
        Ok(store)
    }

    /// Opens the database without migrating it.
    async fn connect(url: &str) -> Result<Self, StoreError> {
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
        Ok(Self {
            pool,
            notices: None,
        })
    }

    /// A transaction that holds SQLite's write lock from its start. A
    /// deferred one that reads before it writes fails at once
    /// (`SQLITE_BUSY`, no waiting) when another connection wrote in
    /// between; taking the lock first makes it wait for the busy timeout
    /// like any writer instead.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// A ledger write: SQLite has one writer at a time anyway.
    async fn begin_ledger(&self) -> Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_write().await
    }

    async fn close_pool(&self) {
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

/// Applies the migrations this build knows that `url` has not had yet;
/// returns how many ran.
pub async fn migrate(url: &str) -> Result<usize, StoreError> {
    let store = SqliteStore::connect(url).await?;
    let ran = super::run_migrations(&migrator(), &store.pool).await;
    store.close_pool().await;
    ran
}

super::sql::sql_store!(SqliteStore, Sqlite);
super::rollout_sql::rollout_store!(SqliteStore);
