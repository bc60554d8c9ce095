//! [`Store`]: the job store as the engine uses it, async, over whichever database the
//! config names. SQLite calls are short and synchronous; they run on tokio's blocking threads
//! so they never stall the tasks that move events.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::job::{Attempt, Claimed, JobFilter, JobId, JobPage, JobRecord, JobStatus, NewJob};
use crate::{Durability, Settlement, SqliteStore, StoreError};

/// Where the store is, as `[store] url` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file.
    Sqlite(PathBuf),
}

impl StoreLocation {
    /// Reads a store URL: `sqlite://PATH` (a relative path is relative to the working
    /// directory; `sqlite:///abs/path` is absolute). `None` means the default,
    /// `tightbeam.db` in `data_dir`.
    ///
    /// # Errors
    ///
    /// What would be right, for a URL this build cannot use.
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
            return Err(
                "the PostgreSQL store is not built yet; use \"sqlite://PATH\" (the default)"
                    .to_owned(),
            );
        }
        Err(format!(
            "store url must start with sqlite:// (such as \"sqlite://data/tightbeam.db\"), not `{url}`"
        ))
    }
}

/// The job store, shared by every destination of a process. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// The embedded store.
    Sqlite(Arc<SqliteStore>),
}

impl Store {
    /// Opens the store at `location`, creating it (and its folder) if need be.
    ///
    /// # Errors
    ///
    /// It cannot be opened.
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
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        match self {
            Self::Sqlite(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || operation(&store))
                    .await
                    .map_err(|error| StoreError::Io(format!("a store task failed: {error}")))?
            }
        }
    }

    /// See [`SqliteStore::insert`].
    ///
    /// # Errors
    ///
    /// Nothing is stored.
    pub async fn insert(&self, jobs: Vec<NewJob>, now: i64) -> Result<(), StoreError> {
        self.blocking(move |store| store.insert(&jobs, now)).await
    }

    /// See [`SqliteStore::claim`].
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
        let destination = destination.to_owned();
        self.blocking(move |store| store.claim(&destination, limit, now, lease_ms))
            .await
    }

    /// See [`SqliteStore::heartbeat`]; one answer per claim, in order.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn heartbeat(
        &self,
        claims: Vec<Claimed>,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        self.blocking(move |store| {
            claims
                .iter()
                .map(|claimed| store.heartbeat(claimed, now, lease_ms))
                .collect()
        })
        .await
    }

    /// See [`SqliteStore::settle`].
    ///
    /// # Errors
    ///
    /// Nothing is settled.
    pub async fn settle(
        &self,
        settled: Vec<(Claimed, Settlement, Attempt)>,
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        self.blocking(move |store| store.settle(&settled, now))
            .await
    }

    /// See [`SqliteStore::cancel`].
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn cancel(&self, id: JobId, now: i64) -> Result<bool, StoreError> {
        self.blocking(move |store| store.cancel(&id, now)).await
    }

    /// See [`SqliteStore::replay`].
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn replay(&self, id: JobId, now: i64) -> Result<bool, StoreError> {
        self.blocking(move |store| store.replay(&id, now)).await
    }

    /// See [`SqliteStore::replay_matching`].
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn replay_matching(&self, filter: JobFilter, now: i64) -> Result<u64, StoreError> {
        self.blocking(move |store| store.replay_matching(&filter, now))
            .await
    }

    /// See [`SqliteStore::get`].
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.blocking(move |store| store.get(&id)).await
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
        self.blocking(move |store| store.list(&filter, limit, cursor.as_deref()))
            .await
    }

    /// See [`SqliteStore::delete`].
    ///
    /// # Errors
    ///
    /// The transaction failed.
    pub async fn delete(&self, id: JobId) -> Result<bool, StoreError> {
        self.blocking(move |store| store.delete(&id)).await
    }

    /// See [`SqliteStore::prune_succeeded`].
    ///
    /// # Errors
    ///
    /// The transaction failed.
    pub async fn prune_succeeded(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        self.blocking(move |store| store.prune_succeeded(before, limit))
            .await
    }

    /// See [`SqliteStore::counts`].
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn counts(&self, destination: &str) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let destination = destination.to_owned();
        self.blocking(move |store| store.counts(&destination)).await
    }

    /// See [`SqliteStore::tally`].
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn tally(&self) -> Result<Vec<(String, String, JobStatus, u64)>, StoreError> {
        self.blocking(SqliteStore::tally).await
    }
}

/// Milliseconds since the Unix epoch, the store's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
