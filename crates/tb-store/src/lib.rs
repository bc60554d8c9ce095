//! The job store of durable delivery (issue 8): every event an action receives becomes a job
//! here, stored before its source is acknowledged, then claimed, attempted, and settled.
//!
//! A job is claimed with a lease and a fencing token. The lease (seconds long, renewed by a
//! heartbeat while a load runs) lets another claimer take a job whose process died; the
//! token makes a claimer that was paused past its lease unable to settle a job it no longer
//! owns: its late result is recorded as a fenced attempt and changes nothing.
//!
//! Times are milliseconds since the Unix epoch, passed in by the caller, so that the rules
//! are tested without clocks. [`SqliteStore`] is the embedded store; PostgreSQL, for several
//! nodes sharing work, will keep the same operations.

mod job;
mod sqlite;
mod store;

pub use job::{
    Attempt, Claimed, JobFilter, JobId, JobPage, JobRecord, JobStatus, NewJob, Settlement,
};
pub use sqlite::{Durability, SqliteStore};
pub use store::{Store, StoreLocation, now_ms};

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
