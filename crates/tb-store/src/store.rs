//! [`Store`]: the job store as the engine uses it, async, over whichever database the
//! config names. SQLite calls are short and synchronous; they run on tokio's blocking threads
//! so they never stall the tasks that move events. PostgreSQL calls are async already.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::job::{
    Attempt, ClaimKey, ClaimOnInsert, Claimed, JobFilter, JobId, JobPage, JobRecord, JobStatus,
    NewJob, claimed_on_insert,
};
use crate::postgres::{PgTarget, redact_url};
use crate::{Durability, PgStore, Settlement, SqliteStore, StoreError};

/// Where the store is, as `[store] url` names it. Its `Debug` and `Display` never show a
/// password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database: the URL as written, password included (never shown).
    Postgres(String),
}

impl StoreLocation {
    /// Reads a store URL: `sqlite://PATH` (a relative path is relative to the working
    /// directory; `sqlite:///abs/path` is absolute), or `postgres://` / `postgresql://`
    /// with libpq's URL options plus `schema=NAME` (default `public`). `None` means the
    /// default, `tightbeam.db` in `data_dir`.
    ///
    /// # Errors
    ///
    /// What would be right, for a URL this build cannot use (shown without its password).
    pub fn parse(url: Option<&str>, data_dir: &Path) -> Result<Self, String> {
        let Some(url) = url else {
            return Ok(Self::Sqlite(data_dir.join("tightbeam.db")));
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "a sqlite URL needs a file, such as \"sqlite://data/tightbeam.db\"".to_owned(),
                );
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            PgTarget::parse(url)?;
            return Ok(Self::Postgres(url.to_owned()));
        }
        Err(format!(
            "store url must start with sqlite:// (such as \"sqlite://data/tightbeam.db\") \
             or postgres://, not `{}`",
            redact_url(url)
        ))
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(formatter, "sqlite://{}", path.display()),
            Self::Postgres(url) => formatter.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => formatter.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(url) => formatter
                .debug_tuple("Postgres")
                .field(&redact_url(url))
                .finish(),
        }
    }
}

/// Why [`Store::wait_for_jobs`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The destination may have new jobs: a node stored or replayed some, or the listener
    /// reconnected and may have missed word of them.
    Notified,
    /// The timeout passed.
    TimedOut,
}

/// The job store, shared by every destination of a process. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// The embedded store.
    Sqlite(Arc<SqliteStore>),
    /// The shared store, for several nodes.
    Postgres(Arc<PgStore>),
}

impl Store {
    /// Opens the store at `location`, creating it (its folder, or its schema and tables) if
    /// need be. `durability` is SQLite's; PostgreSQL's is the server's `synchronous_commit`.
    ///
    /// # Errors
    ///
    /// It cannot be opened: for PostgreSQL, an error naming the server (without the
    /// password) when it cannot be reached.
    pub async fn open(
        location: &StoreLocation,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        match location {
            StoreLocation::Sqlite(path) => {
                let path = path.clone();
                let store = tokio::task::spawn_blocking(move || {
                    if let Some(parent) = path
                        .parent()
                        .filter(|parent| !parent.as_os_str().is_empty())
                    {
                        std::fs::create_dir_all(parent).map_err(|error| {
                            StoreError::Io(format!("cannot create {}: {error}", parent.display()))
                        })?;
                    }
                    SqliteStore::open(&path, durability)
                })
                .await
                .map_err(|error| StoreError::Io(format!("the opening task failed: {error}")))??;
                Ok(Self::Sqlite(Arc::new(store)))
            }
            StoreLocation::Postgres(url) => Ok(Self::Postgres(Arc::new(PgStore::open(url).await?))),
        }
    }

    /// Stores `jobs` in one transaction: all or none. See [`SqliteStore::insert`].
    ///
    /// # Errors
    ///
    /// Nothing is stored.
    pub async fn insert(&self, jobs: Vec<NewJob>, now: i64) -> Result<(), StoreError> {
        self.insert_claiming(jobs, now, None).await.map(drop)
    }

    /// Stores `jobs` in one transaction, the first ones `claim` names claimed by the caller
    /// as they are stored ([`ClaimOnInsert`]); returns those, as [`Store::claim`] would.
    ///
    /// # Errors
    ///
    /// Nothing is stored, nothing claimed.
    pub async fn insert_claiming(
        &self,
        jobs: Vec<NewJob>,
        now: i64,
        claim: Option<ClaimOnInsert>,
    ) -> Result<Vec<Claimed>, StoreError> {
        match self {
            Self::Sqlite(store) => {
                blocking(store, move |store| {
                    store.insert_claiming(&jobs, now, claim)?;
                    Ok(claimed_on_insert(jobs, now, claim))
                })
                .await
            }
            Self::Postgres(store) => {
                store.insert_claiming(&jobs, now, claim).await?;
                Ok(claimed_on_insert(jobs, now, claim))
            }
        }
    }

    /// See [`SqliteStore::claim`] and [`PgStore::claim`].
    ///
    /// # Errors
    ///
    /// Nothing is claimed.
    pub async fn claim(
        &self,
        destination: &str,
        limit: u32,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        match self {
            Self::Sqlite(store) => {
                let destination = destination.to_owned();
                blocking(store, move |store| {
                    store.claim(&destination, limit, now, lease_ms)
                })
                .await
            }
            Self::Postgres(store) => store.claim(destination, limit, now, lease_ms).await,
        }
    }

    /// See [`SqliteStore::heartbeat`]; one answer per claim, in order.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn heartbeat(
        &self,
        claims: Vec<ClaimKey>,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        match self {
            Self::Sqlite(store) => {
                blocking(store, move |store| {
                    claims
                        .iter()
                        .map(|claimed| store.heartbeat(claimed, now, lease_ms))
                        .collect()
                })
                .await
            }
            Self::Postgres(store) => store.heartbeat(&claims, now, lease_ms).await,
        }
    }

    /// See [`SqliteStore::settle`].
    ///
    /// # Errors
    ///
    /// Nothing is settled.
    pub async fn settle(
        &self,
        settled: Vec<(ClaimKey, Settlement, Attempt)>,
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        match self {
            Self::Sqlite(store) => blocking(store, move |store| store.settle(&settled, now)).await,
            Self::Postgres(store) => store.settle(&settled, now).await,
        }
    }

    /// See [`SqliteStore::cancel`].
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn cancel(&self, id: JobId, now: i64) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(store) => blocking(store, move |store| store.cancel(&id, now)).await,
            Self::Postgres(store) => store.cancel(&id, now).await,
        }
    }

    /// See [`SqliteStore::replay`].
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn replay(&self, id: JobId, now: i64) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(store) => blocking(store, move |store| store.replay(&id, now)).await,
            Self::Postgres(store) => store.replay(&id, now).await,
        }
    }

    /// See [`SqliteStore::replay_matching`].
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn replay_matching(&self, filter: JobFilter, now: i64) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(store) => {
                blocking(store, move |store| store.replay_matching(&filter, now)).await
            }
            Self::Postgres(store) => store.replay_matching(&filter, now).await,
        }
    }

    /// See [`SqliteStore::get`].
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        match self {
            Self::Sqlite(store) => blocking(store, move |store| store.get(&id)).await,
            Self::Postgres(store) => store.get(&id).await,
        }
    }

    /// See [`SqliteStore::list`].
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn list(
        &self,
        filter: JobFilter,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<JobPage, StoreError> {
        match self {
            Self::Sqlite(store) => {
                blocking(store, move |store| {
                    store.list(&filter, limit, cursor.as_deref())
                })
                .await
            }
            Self::Postgres(store) => store.list(&filter, limit, cursor.as_deref()).await,
        }
    }

    /// See [`SqliteStore::delete`].
    ///
    /// # Errors
    ///
    /// The transaction failed.
    pub async fn delete(&self, id: JobId) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(store) => blocking(store, move |store| store.delete(&id)).await,
            Self::Postgres(store) => store.delete(&id).await,
        }
    }

    /// See [`SqliteStore::prune_succeeded`].
    ///
    /// # Errors
    ///
    /// The transaction failed.
    pub async fn prune_succeeded(
        &self,
        destination: &str,
        before: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(store) => {
                let destination = destination.to_owned();
                blocking(store, move |store| {
                    store.prune_succeeded(&destination, before, limit)
                })
                .await
            }
            Self::Postgres(store) => store.prune_succeeded(destination, before, limit).await,
        }
    }

    /// See [`SqliteStore::counts`].
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn counts(&self, destination: &str) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        match self {
            Self::Sqlite(store) => {
                let destination = destination.to_owned();
                blocking(store, move |store| store.counts(&destination)).await
            }
            Self::Postgres(store) => store.counts(destination).await,
        }
    }

    /// See [`SqliteStore::pending`].
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn pending(&self, destination: &str) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            Self::Sqlite(store) => {
                let destination = destination.to_owned();
                blocking(store, move |store| store.pending(&destination)).await
            }
            Self::Postgres(store) => store.pending(destination).await,
        }
    }

    /// Returns when `destination` may have new jobs, or when `timeout` passes, so that an
    /// idle destination need not poll. PostgreSQL: a notification from any node's insert or
    /// replay (see [`PgStore::wait_for_jobs`]). SQLite: only one process uses the file, so
    /// the engine wakes its destinations itself; this just sleeps `timeout`.
    pub async fn wait_for_jobs(&self, destination: &str, timeout: Duration) -> Wake {
        match self {
            Self::Sqlite(_) => {
                tokio::time::sleep(timeout).await;
                Wake::TimedOut
            }
            Self::Postgres(store) => store.wait_for_jobs(destination, timeout).await,
        }
    }
}

/// Runs `operation` on a blocking thread, as SQLite calls block.
async fn blocking<T: Send + 'static>(
    store: &Arc<SqliteStore>,
    operation: impl FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || operation(&store))
        .await
        .map_err(|error| StoreError::Io(format!("a store task failed: {error}")))?
}

/// Milliseconds since the Unix epoch, the store's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
