//! [`Store`]: the job store as the engine uses it, async, over whichever database the
//! config names. SQLite calls are short and synchronous; they run on tokio's blocking threads
//! so they never stall the tasks that move events. PostgreSQL calls are async already.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::group;
use crate::job::{
    Attempt, ClaimKey, ClaimOnInsert, Claimed, JobFilter, JobId, JobPage, JobRecord, JobStatus,
    NewJob,
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

    /// Stores `jobs` in one transaction, one row each: all or none.
    ///
    /// # Errors
    ///
    /// Nothing is stored.
    pub async fn insert(&self, jobs: Vec<NewJob>, now: i64) -> Result<(), StoreError> {
        self.insert_claiming(jobs, now, None, 1).await.map(drop)
    }

    /// Stores `jobs` in one transaction, runs of up to `group_max` jobs that share their
    /// destination, action and state in one row each (see [`crate::group`]; such jobs are
    /// renamed after their group), the first ones `claim` names claimed by the caller as
    /// they are stored ([`ClaimOnInsert`]); returns those, as [`Store::claim`] would.
    ///
    /// # Errors
    ///
    /// Nothing is stored, nothing claimed.
    pub async fn insert_claiming(
        &self,
        mut jobs: Vec<NewJob>,
        now: i64,
        claim: Option<ClaimOnInsert>,
        group_max: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let spans = group::layout(&mut jobs, now, claim, group_max);
        match self {
            Self::Sqlite(store) => {
                blocking(store, move |store| {
                    store.insert_rows(&group::rows(&jobs, &spans, now, claim), now)?;
                    Ok(group::claimed_on_insert(jobs, &spans, now, claim))
                })
                .await
            }
            Self::Postgres(store) => {
                store
                    .insert_rows(&group::rows(&jobs, &spans, now, claim), now)
                    .await?;
                Ok(group::claimed_on_insert(jobs, &spans, now, claim))
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

    /// Extends the leases of the jobs their claimers still own (a group's once); one
    /// answer per claim, in order: false when it does not own its job any more.
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
        let (rows, of_claim) = group::row_keys(&claims);
        let renewed = self.heartbeat_rows(rows.clone(), now, lease_ms).await?;
        let mut owned: Vec<bool> = of_claim.iter().map(|row| renewed[*row]).collect();
        // A group split meanwhile (a person acted on one of its jobs): its jobs are rows.
        let split: Vec<usize> = (0..claims.len())
            .filter(|index| !owned[*index] && claims[*index].group.is_some())
            .collect();
        if !split.is_empty() {
            let singles = split
                .iter()
                .map(|index| ClaimKey {
                    group: None,
                    ..claims[*index].clone()
                })
                .collect();
            let renewed = self.heartbeat_rows(singles, now, lease_ms).await?;
            for (index, renewed) in split.into_iter().zip(renewed) {
                owned[index] = renewed;
            }
        }
        Ok(owned)
    }

    async fn heartbeat_rows(
        &self,
        rows: Vec<ClaimKey>,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        match self {
            Self::Sqlite(store) => {
                blocking(store, move |store| {
                    rows.iter()
                        .map(|claimed| store.heartbeat(claimed, now, lease_ms))
                        .collect()
                })
                .await
            }
            Self::Postgres(store) => store.heartbeat(&rows, now, lease_ms).await,
        }
    }

    /// Settles attempts, each as its claim allows: a stale claim changes nothing but is
    /// recorded as a fenced attempt. Returns, in order, whether each settled its job.
    /// A group whose jobs all settle alike is settled as one row, with one attempt on
    /// record; one whose jobs part is split first (see [`crate::group`]).
    ///
    /// # Errors
    ///
    /// Nothing is settled (though a group may have been split).
    pub async fn settle(
        &self,
        settled: Vec<(ClaimKey, Settlement, Attempt)>,
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let plan = group::plan_settlement(&settled);
        for id in &plan.split {
            self.split(id.clone(), 1, now).await?;
        }
        let answers = self.settle_rows(plan.entries.clone(), now).await?;
        let mut owned = vec![false; settled.len()];
        let mut retried = Vec::new();
        for ((entry, covers), answer) in plan.entries.iter().zip(&plan.covers).zip(answers) {
            for index in covers {
                owned[*index] = answer;
            }
            // A whole group its claimer no longer owns: if the row is gone, a person split
            // it meanwhile and its jobs are settled one by one; if not, it was claimed
            // again, and the fenced attempt is on record.
            if !answer && covers.len() > 1 && self.get_row(entry.0.id.0.clone()).await?.is_none() {
                retried.extend(covers.iter().copied());
            }
        }
        if !retried.is_empty() {
            let singles = retried
                .iter()
                .map(|index| group::as_single(&settled[*index]))
                .collect();
            let answers = self.settle_rows(singles, now).await?;
            for (index, answer) in retried.into_iter().zip(answers) {
                owned[index] = answer;
            }
        }
        Ok(owned)
    }

    async fn settle_rows(
        &self,
        settled: Vec<(ClaimKey, Settlement, Attempt)>,
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        match self {
            Self::Sqlite(store) => blocking(store, move |store| store.settle(&settled, now)).await,
            Self::Postgres(store) => store.settle(&settled, now).await,
        }
    }

    /// Cancels a job that has not ended; a claimer still attempting it will be fenced.
    /// False when there is no such job or it already ended.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn cancel(&self, id: JobId, now: i64) -> Result<bool, StoreError> {
        self.on_job(id, now, |store, id| async move {
            match store {
                Self::Sqlite(store) => blocking(store, move |store| store.cancel(&id, now)).await,
                Self::Postgres(store) => store.cancel(&id, now).await,
            }
        })
        .await
    }

    /// Replays a dead letter (discarded or cancelled): available at once, with a fresh
    /// budget of retries (its attempts stay on record). False when there is no such job or
    /// it is not a dead letter.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn replay(&self, id: JobId, now: i64) -> Result<bool, StoreError> {
        self.on_job(id, now, |store, id| async move {
            match store {
                Self::Sqlite(store) => blocking(store, move |store| store.replay(&id, now)).await,
                Self::Postgres(store) => store.replay(&id, now).await,
            }
        })
        .await
    }

    /// Runs `operation` on the row of job `id`; when that finds nothing to change and the
    /// job is in a group, splits the group and runs it again on the job's own row.
    async fn on_job<'a, Operation>(
        &'a self,
        id: JobId,
        now: i64,
        operation: impl Fn(&'a Self, JobId) -> Operation,
    ) -> Result<bool, StoreError>
    where
        Operation: Future<Output = Result<bool, StoreError>>,
    {
        if operation(self, id.clone()).await? {
            return Ok(true);
        }
        let Some((group, index)) = id.group_of() else {
            return Ok(false);
        };
        if !self.split(group, index, now).await? {
            return Ok(false);
        }
        operation(self, id).await
    }

    async fn split(&self, group: JobId, index: u32, now: i64) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(store) => {
                blocking(store, move |store| store.split(&group, index, now)).await
            }
            Self::Postgres(store) => store.split(&group, index, now).await,
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

    /// The job `id` with its attempts (its group's, while it is in one), if it exists.
    ///
    /// # Errors
    ///
    /// The query failed, or the row is unreadable.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let (row, attempts) = match self.get_row(id.0.clone()).await? {
            Some(found) if found.0.size == 1 => found,
            _ => match id.group_of() {
                Some((group, _)) => match self.get_row(group.0).await? {
                    Some(found) => found,
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        Ok(row.into_job(&id)?.map(|job| JobRecord { attempts, ..job }))
    }

    async fn get_row(&self, id: String) -> Result<Option<group::RowWithAttempts>, StoreError> {
        match self {
            Self::Sqlite(store) => blocking(store, move |store| store.get_row(&id)).await,
            Self::Postgres(store) => store.get_row(&id).await,
        }
    }

    /// Up to `limit` jobs matching `filter`, in id order (the order they were stored),
    /// after `cursor`.
    ///
    /// # Errors
    ///
    /// The query failed, or a row is unreadable.
    pub async fn list(
        &self,
        filter: JobFilter,
        limit: u32,
        cursor: Option<String>,
    ) -> Result<JobPage, StoreError> {
        let from = group::page_start(cursor.as_deref());
        // Every row holds a job, and only the first may hold none after the cursor.
        let rows = limit.saturating_add(1);
        let rows = match self {
            Self::Sqlite(store) => {
                blocking(store, move |store| store.list_rows(&filter, rows, &from)).await?
            }
            Self::Postgres(store) => store.list_rows(&filter, rows, &from).await?,
        };
        group::page(rows, limit, cursor.as_deref())
    }

    /// Deletes the job `id` and its attempts; false when there is none, or it is running
    /// (cancel it first).
    ///
    /// # Errors
    ///
    /// The transaction failed.
    pub async fn delete(&self, id: JobId) -> Result<bool, StoreError> {
        self.on_job(id, now_ms(), |store, id| async move {
            match store {
                Self::Sqlite(store) => blocking(store, move |store| store.delete(&id)).await,
                Self::Postgres(store) => store.delete(&id).await,
            }
        })
        .await
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
