//! The store for several replicas: PostgreSQL, reached with
//! `--database-url postgres://…`. Its queries are the shared ones of
//! [`super::sql`]; what is its own:
//!
//! - config writes take a transaction-scoped advisory lock first, so that
//!   writers on different replicas take turns as SQLite's writers do (and a
//!   certificate change cannot slip between reading the newest version and
//!   writing);
//! - a trigger `NOTIFY`s `isame_versions` with the number of every
//!   committed version, which [`PostgresStore::version_notices`] passes on,
//!   so that every replica hears of a commit made on any of them. A lost
//!   connection is re-established with backoff; replicas also poll, so a
//!   notification lost meanwhile (or a pooler that drops `LISTEN`) only
//!   delays a version. Changes of rollouts notify `isame_rollouts`, passed
//!   on through the same receiver.

use super::*;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, Postgres};
use std::time::Duration;
use tokio::sync::watch;

/// Migrations in `migrations/postgres/`, embedded in the binary. Migrations
/// a newer build applied are no reason to refuse the database: they only
/// add to the schema, so replicas of the old build keep working (and
/// restarting) next to new ones during a rolling upgrade.
fn migrator() -> sqlx::migrate::Migrator {
    let mut m = sqlx::migrate!("../migrations/postgres");
    m.set_ignore_missing(true);
    m
}

/// The advisory lock config writers hold (any number the application
/// owns: "isame" in ASCII).
const WRITER_LOCK: i64 = 0x69_73_61_6d_65;

/// The channel the version trigger notifies.
pub const CHANNEL: &str = "isame_versions";
/// The channel every change of a rollout notifies.
pub const ROLLOUT_CHANNEL: &str = "isame_rollouts";

/// [`Store`] on a PostgreSQL database.
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    notices: Option<watch::Receiver<u64>>,
    listener: tokio::task::AbortHandle,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://USER:PASSWORD@HOST:PORT/DATABASE`),
    /// brings the schema up to date and starts listening for commits.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = connect(url).await?;
        migrator().run(&pool).await?;
        let (tx, rx) = watch::channel(0);
        let listener = tokio::spawn(listen(pool.clone(), tx)).abort_handle();
        Ok(Self {
            pool,
            notices: Some(rx),
            listener,
        })
    }

    /// A config write: it waits for the writers of every replica before it.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITER_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A ledger write: row locks are enough.
    async fn begin_ledger(&self) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    async fn close_pool(&self) {
        self.listener.abort();
        self.pool.close().await;
    }
}

async fn connect(url: &str) -> Result<PgPool, StoreError> {
    Ok(PgPoolOptions::new()
        .max_connections(8)
        // A database that does not answer makes requests fail in seconds
        // (503), not queue for the default 30.
        .acquire_timeout(Duration::from_secs(3))
        .connect(url)
        .await?)
}

/// Applies the migrations this build knows that `url` has not had yet;
/// returns how many ran.
pub async fn migrate(url: &str) -> Result<usize, StoreError> {
    let pool = connect(url).await?;
    let ran = super::run_migrations(&migrator(), &pool).await;
    pool.close().await;
    ran
}

/// Passes every notified version number on to `tx`, reconnecting with
/// backoff when the connection is lost. A reconnect also sends, so that
/// followers look for what was committed while nobody listened.
async fn listen(pool: PgPool, tx: watch::Sender<u64>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen_all([CHANNEL, ROLLOUT_CHANNEL]).await {
                Ok(()) => {
                    backoff = Duration::from_millis(200);
                    tx.send_modify(|_| {});
                    loop {
                        match l.try_recv().await {
                            Ok(Some(n)) => {
                                if let Ok(v) = n.payload().parse::<u64>() {
                                    tx.send_modify(|latest| *latest = (*latest).max(v));
                                }
                            }
                            // The connection was lost (and is re-made by the
                            // next call); notifications in between are gone.
                            Ok(None) => {
                                tracing::warn!("LISTEN connection lost; reconnecting");
                                tx.send_modify(|_| {});
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "LISTEN {CHANNEL} failed"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot connect to listen for commits"),
        }
        if pool.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

super::sql::sql_store!(PostgresStore, Postgres);
super::rollout_sql::rollout_store!(PostgresStore);
