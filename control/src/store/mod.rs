//! The control plane's store: campaigns, batch rows (with their lease fields and
//! per-domain progress), final per-recipient rows, tokens, uploads and the event
//! outbox, in an embedded SQLite file (one node) or a PostgreSQL database (a
//! fleet, several control-plane processes).
//!
//! One store, two databases: every query is written once, in the SQL both
//! understand, and run through sqlx's Any driver (runtime-checked queries, no
//! macros); the few differences (auto-numbered keys, the connection setup) are
//! in [`Backend`]. The same test suite runs against both.
//!
//! Layout: [`schema`] (the versioned migrations), [`tokens`], [`campaigns`]
//! (campaign rows, tags, rejected rows), [`batches`] (batch rows, progress and
//! final recipient rows), [`uploads`], [`events`] (the outbox), [`engagements`]
//! (unsubscribes, clicks and opens over the web links; tracked links),
//! [`webhooks`] (the endpoints events are pushed to, and their place in the
//! outbox), [`lists`] (lists, members, subscribe requests),
//! [`suppression_log`] (the fleet's suppression changes).

pub mod batches;
pub mod campaigns;
pub mod engagements;
pub mod events;
pub mod holds;
pub mod leases;
pub mod lists;
pub mod outcome_lines;
pub mod schema;
pub mod suppression_log;
pub mod tokens;
pub mod uploads;
pub mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor, Row};

/// Which database a store is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file (WAL mode), the embedded default.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn of(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    /// A column of bytes.
    fn blob(self) -> &'static str {
        match self {
            Backend::Sqlite => "BLOB",
            Backend::Postgres => "BYTEA",
        }
    }

    /// After a migration copied the events table with its ids: PostgreSQL's
    /// sequence set past them (SQLite numbers from the largest id anyway).
    fn reseed_events(self) -> &'static str {
        match self {
            Backend::Sqlite => "SELECT 1",
            Backend::Postgres => {
                "SELECT setval(pg_get_serial_sequence('events', 'id'), COALESCE((SELECT MAX(id) FROM events), 0) + 1, false)"
            }
        }
    }

    /// An auto-numbered primary key column.
    fn serial(self) -> &'static str {
        match self {
            Backend::Sqlite => "INTEGER PRIMARY KEY",
            Backend::Postgres => "BIGSERIAL PRIMARY KEY",
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open the store {url}: {reason}")]
    Open {
        /// The database URL, without any password.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The database was made by a newer volley.
    #[error("the store {url} has schema version {found}, newer than this volley's {supported}: run the volley that upgraded it (or a newer one)")]
    TooNew {
        /// The database URL, without any password.
        url: String,
        /// Its schema version.
        found: i64,
        /// The newest this binary knows.
        supported: i64,
    },
    /// A query failed.
    #[error("store: {what}: {source}")]
    Query {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A stored value is not what it should be.
    #[error("store: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the failure is a unique-key conflict (a row that exists).
    pub fn is_conflict(&self) -> bool {
        match self {
            StoreError::Query {
                source: sqlx::Error::Database(db),
                ..
            } => db.is_unique_violation(),
            _ => false,
        }
    }
}

/// Attaches what was being done to a driver error.
pub(crate) trait Context<T> {
    fn what(self, what: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn what(self, what: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Query { what, source })
    }
}

/// The control plane's store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
}

/// `url` with any password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// The URL of the SQLite store in a spool: `SPOOL/control.db`.
pub fn sqlite_url(spool_root: &Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        spool_root.join("control.db").display()
    )
}

/// Unix seconds as RFC 3339 (UTC), to the second.
pub fn rfc3339(at: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(at.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Opens the database at `url` (`sqlite://PATH?mode=rwc` or
    /// `postgres://USER@HOST:PORT/DB`) and applies the migrations it lacks. A
    /// database whose schema is newer than this binary's is refused.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let shown = redact(url);
        let open_error = |reason: String| StoreError::Open {
            url: shown.clone(),
            reason,
        };
        let backend = Backend::of(url).ok_or_else(|| {
            open_error("the URL must start with sqlite:// or postgres://".to_owned())
        })?;
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| open_error(e.to_string()))?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                // One writer at a time anyway; readers share the WAL.
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Writers wait for each other instead of failing; WAL
                        // lets readers run beside the writer. FULL sync: a
                        // committed row survives a power loss too.
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        let store = Store {
            pool,
            backend,
            url: shown,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The database URL, without any password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs one SQL statement as it is: for tests that need to put the store in
    /// a state the API cannot (a schema from a newer volley).
    #[doc(hidden)]
    pub async fn debug_execute(&self, sql: &str) -> Result<(), StoreError> {
        sqlx::query(sql)
            .execute(&self.pool)
            .await
            .what("run a statement")?;
        Ok(())
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that reads before it writes: on SQLite it takes the
    /// write lock at once (a deferred transaction that read first fails with
    /// `SQLITE_BUSY_SNAPSHOT` when another writer committed meanwhile).
    pub(crate) async fn begin_write(
        &self,
        what: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut tx = self.pool.begin().await.what(what)?;
        if self.backend == Backend::Sqlite {
            sqlx::query("UPDATE volley_schema SET applied_at = applied_at WHERE version < 0")
                .execute(&mut *tx)
                .await
                .what(what)?;
        }
        Ok(tx)
    }

    /// The schema version of the database (0: none yet).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let exists = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'volley_schema'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'volley_schema' AND table_schema = current_schema()"
            }
        };
        let count: i64 = sqlx::query(exists)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .what("read the schema version")?;
        if count == 0 {
            return Ok(0);
        }
        sqlx::query("SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM volley_schema")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .what("read the schema version")
    }

    /// Applies the migrations the database lacks, each in one transaction (a
    /// crash leaves it at the previous version). Two processes starting at once
    /// on one PostgreSQL: the second waits for the first's lock.
    async fn migrate(&self) -> Result<(), StoreError> {
        let supported = schema::current();
        let mut tx = self.pool.begin().await.what("begin a migration")?;
        if self.backend == Backend::Postgres {
            // Serialises concurrent migrations for the transaction's length.
            sqlx::query("SELECT pg_advisory_xact_lock(7340031)")
                .execute(&mut *tx)
                .await
                .what("lock the schema")?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS volley_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .what("create the schema table")?;
        let found: i64 =
            sqlx::query("SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM volley_schema")
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get(0))
                .what("read the schema version")?;
        if found > supported {
            return Err(StoreError::TooNew {
                url: self.url.clone(),
                found,
                supported,
            });
        }
        for (version, sql) in schema::MIGRATIONS {
            if *version <= found {
                continue;
            }
            let sql = sql
                .replace("{serial}", self.backend.serial())
                .replace("{blob}", self.backend.blob())
                .replace("{reseed_events}", self.backend.reseed_events());
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .what("apply a migration")?;
            }
            sqlx::query("INSERT INTO volley_schema (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(now())
                .execute(&mut *tx)
                .await
                .what("record a migration")?;
            tracing::info!(version, store = %self.url, "store schema migrated");
        }
        tx.commit().await.what("commit a migration")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        let table = [
            (
                "postgres://u:secret@127.0.0.9:5433/db",
                "postgres://u:***@127.0.0.9:5433/db",
            ),
            ("postgres://u@127.0.0.9/db", "postgres://u@127.0.0.9/db"),
            (
                "sqlite:///x/control.db?mode=rwc",
                "sqlite:///x/control.db?mode=rwc",
            ),
        ];
        for (url, shown) in table {
            assert_eq!(redact(url), shown);
        }
    }
}
