//! The job store of durable delivery (issue 8): every event an action receives becomes a job
//! here, stored before its source is acknowledged, then claimed, attempted, and settled.
//!
//! A job is claimed with a lease and a fencing token. The lease (seconds long, renewed by a
//! heartbeat while a load runs) lets another claimer take a job whose process died; the
//! token makes a claimer that was paused past its lease unable to settle a job it no longer
//! owns: its late result is recorded as a fenced attempt and changes nothing.
//!
//! Times are milliseconds since the Unix epoch, passed in by the caller, so that the rules
//! are tested without clocks.
//!
//! Two databases keep the same operations and rules: [`SqliteStore`], the embedded store of
//! a single node (synchronous, one file), and [`PgStore`], PostgreSQL, for several nodes
//! sharing the work of one set of destinations (async, a small pool, claims that skip rows
//! other nodes are claiming, and `LISTEN`/`NOTIFY` to wake idle nodes when jobs arrive).
//! [`Store`] is the async face the engine uses over whichever one the config names; one
//! test suite runs against both through it.

mod group;
mod job;
mod pg_tls;
mod postgres;
mod sqlite;
mod store;

pub use job::{
    Attempt, ClaimKey, ClaimOnInsert, Claimed, GROUP_MAX, GroupKey, JobFilter, JobId, JobPage,
    JobRecord, JobStatus, JsonText, NewJob, Settlement,
};
pub use pg_tls::PgConnect;
pub use postgres::PgStore;
pub use sqlite::{Durability, SqliteStore};
pub use store::{Store, StoreLocation, Wake, now_ms};

/// What the store could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused an operation.
    #[error("job store {context}: {source}")]
    Sqlite {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        source: rusqlite::Error,
    },
    /// PostgreSQL refused an operation, or the connection was lost during it (twice: a
    /// lost connection is retried once on a new one).
    #[error("job store {context}: {}", postgres::with_causes(.error))]
    Postgres {
        /// What was being done.
        context: &'static str,
        /// The driver's error. Its message is in this one's, with its causes, which
        /// tokio-postgres shows only through `source`.
        error: tokio_postgres::Error,
    },
    /// No connection to PostgreSQL could be had.
    #[error(
        "job store cannot connect to PostgreSQL at {target}: {}",
        postgres::with_causes(.error.as_ref())
    )]
    PostgresUnreachable {
        /// The URL, without its password.
        target: String,
        /// Why (its message and causes are in this one's).
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store URL cannot be used (shown without its password).
    #[error("job store: {0}")]
    InvalidUrl(String),
    /// A file, folder or task the store needs failed.
    #[error("job store: {0}")]
    Io(String),
    /// A stored row held something the store never writes.
    #[error("job store holds an unreadable row: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Self::Sqlite { context, source }
    }
}
