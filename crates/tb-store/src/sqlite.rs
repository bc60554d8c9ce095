//! The embedded job store: one SQLite file in WAL mode, `synchronous = FULL` unless a
//! weaker setting is chosen by name.
//!
//! Every operation is one transaction. Claiming is one `UPDATE .. RETURNING` over the
//! jobs that are due (or whose lease ran out), read from index ranges, so two claimers never hold one job at once;
//! settling checks the claim's token in the same statement that settles, so a stale claimer
//! changes nothing. The connection is behind a mutex and every call is synchronous and
//! short: async callers run it on a blocking thread.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::group::{ClaimedRow, NewRow, RowWithAttempts, StoredRow};
use crate::job::{Attempt, ClaimKey, Claimed, JobFilter, JobId, JobStatus, NewJob, Settlement};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY NOT NULL,
    destination TEXT NOT NULL,
    action TEXT NOT NULL,
    version TEXT,
    payload TEXT NOT NULL,
    context TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until INTEGER,
    token INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 1,
    body INTEGER
) WITHOUT ROWID;
DROP INDEX IF EXISTS jobs_ended;
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    code INTEGER,
    error TEXT,
    body_excerpt TEXT,
    fenced INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_job ON attempts (job_id);
";

/// What a store made before jobs were grouped lacks: the `size` of a row (its jobs), also
/// in the claim index, so that a claim counts jobs without reading rows.
///
/// A group's payloads and contexts are kept apart from its row, in `bodies` (a rowid table,
/// written once), so that claiming and settling the group rewrite a small row, not tens of
/// kilobytes of payloads with it (SQLite writes a changed row whole, and a `WITHOUT ROWID`
/// table keeps large rows badly). A single job's stay in its row.
const GROUPS: &str = "
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (destination, status, next_attempt_at, id, size);
DROP INDEX IF EXISTS jobs_claimable;
CREATE TABLE IF NOT EXISTS bodies (payload TEXT NOT NULL, context TEXT NOT NULL);
";

/// How hard a commit waits for the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = FULL`: a committed job survives power loss. The default.
    #[default]
    Full,
    /// `synchronous = NORMAL`: a committed job survives a crash of the process, but power
    /// loss may take the last transactions before a WAL checkpoint. Opt-in, for speed.
    Normal,
}

/// WAL pages past which the writer checkpoints by itself: a backstop only, for when the
/// checkpointer thread falls behind.
const WRITER_CHECKPOINT_PAGES: u32 = 16_384;
/// The page cache, in KiB (negative, as `PRAGMA cache_size` takes KiB).
const CACHE_KIB: i64 = -65_536;
/// How often the checkpointer thread copies the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// The embedded job store.
pub struct SqliteStore {
    connection: Mutex<Connection>,
    durability: Durability,
    /// Checkpoints the WAL on a connection and thread of its own; stops when dropped.
    _checkpointer: Checkpointer,
}

/// A thread that checkpoints the WAL (`PRAGMA wal_checkpoint(PASSIVE)`) on its own
/// connection, so the copying runs beside the writer instead of inside one of its commits,
/// where SQLite's automatic checkpoint would put it (a stall of about 10 ms every few
/// thousand jobs, measured by `cargo bench -p tb-store`). Stopped and joined when dropped.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path).map_err(StoreError::sqlite("open"))?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(StoreError::sqlite("set the busy timeout"))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tb-store-checkpoint".to_owned())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    let checkpoint =
                        connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(error) = checkpoint {
                        tracing::warn!(%error, "Could not checkpoint the job store's WAL; the writer will.");
                    }
                }
            })
            .map_err(|error| StoreError::Io(format!("cannot start the checkpointer: {error}")))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("The job store's checkpointer panicked.");
        }
    }
}

/// The connection, for a write that must survive power loss when the store is
/// [`Durability::Full`]: its commit syncs the WAL (and with it every commit before). The
/// connection goes back to `synchronous = NORMAL` when the guard is dropped.
struct Durable<'a> {
    connection: MutexGuard<'a, Connection>,
    full: bool,
}

impl std::ops::Deref for Durable<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.connection
    }
}

impl std::ops::DerefMut for Durable<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.connection
    }
}

impl Drop for Durable<'_> {
    fn drop(&mut self) {
        if self.full
            && let Err(error) = self.connection.pragma_update(None, "synchronous", "NORMAL")
        {
            tracing::warn!(%error, "Could not set the job store back to synchronous = NORMAL.");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if need be) the store at `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or set up.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let connection = Connection::open(path).map_err(StoreError::sqlite("open"))?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(StoreError::sqlite("set the busy timeout"))?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(StoreError::sqlite("turn on WAL"))?;
        // Claims, heartbeats and settlements commit without syncing: one lost to power loss
        // only makes a job run again (at least once). What acknowledges a source, or stands for
        // a person's decision, syncs when the store is `Full` ([`SqliteStore::durable`]).
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(StoreError::sqlite("set synchronous"))?;
        connection
            .pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
            .map_err(StoreError::sqlite("set the checkpoint size"))?;
        // Groups just stored are read back by claims: keep them in memory (64 MiB of pages,
        // not SQLite's default 2 MiB).
        connection
            .pragma_update(None, "cache_size", CACHE_KIB)
            .map_err(StoreError::sqlite("set the cache size"))?;
        connection
            .execute_batch(SCHEMA)
            .map_err(StoreError::sqlite("create the schema"))?;
        for (column, definition) in [("size", "INTEGER NOT NULL DEFAULT 1"), ("body", "INTEGER")] {
            let present: bool = connection
                .query_row(
                    "SELECT COUNT(*) > 0 FROM pragma_table_info('jobs') WHERE name = ?1",
                    [column],
                    |row| row.get(0),
                )
                .map_err(StoreError::sqlite("read the schema"))?;
            if !present {
                connection
                    .execute_batch(&format!(
                        "ALTER TABLE jobs ADD COLUMN {column} {definition}"
                    ))
                    .map_err(StoreError::sqlite("add a column for groups"))?;
            }
        }
        connection
            .execute_batch(GROUPS)
            .map_err(StoreError::sqlite("create the claim index"))?;
        Ok(Self {
            connection: Mutex::new(connection),
            durability,
            _checkpointer: Checkpointer::start(path)?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection for a write that must survive power loss (see [`Durable`]).
    fn durable(&self) -> Result<Durable<'_>, StoreError> {
        let connection = self.lock();
        let full = self.durability == Durability::Full;
        if full {
            connection
                .pragma_update(None, "synchronous", "FULL")
                .map_err(StoreError::sqlite("set synchronous"))?;
        }
        Ok(Durable { connection, full })
    }

    /// Stores `jobs` in one transaction, at time `now`, one row each: all of them or none.
    ///
    /// # Errors
    ///
    /// The transaction failed (nothing is stored).
    pub fn insert(&self, jobs: &[NewJob], now: i64) -> Result<(), StoreError> {
        let spans = crate::group::singles(jobs.len());
        self.insert_rows(&crate::group::rows(jobs, &spans, now, None), now)
    }

    /// Stores `rows` (jobs, or groups of them) in one transaction: all or none.
    pub(crate) fn insert_rows(&self, rows: &[NewRow<'_>], now: i64) -> Result<(), StoreError> {
        let mut connection = self.durable()?;
        let transaction = connection
            .transaction()
            .map_err(StoreError::sqlite("begin an insert"))?;
        {
            let mut insert = transaction
                .prepare_cached(
                    "INSERT INTO jobs (id, destination, action, version, payload, context, status,
                     attempt, token, lease_until, next_attempt_at, created_at, updated_at, size,
                     body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?11, ?12, ?13)",
                )
                .map_err(StoreError::sqlite("prepare an insert"))?;
            let mut insert_body = transaction
                .prepare_cached("INSERT INTO bodies (payload, context) VALUES (?1, ?2)")
                .map_err(StoreError::sqlite("prepare an insert"))?;
            for row in rows {
                let running = row.status == JobStatus::Running;
                let (payload, context, body) = if row.size > 1 {
                    let body = insert_body
                        .insert(params![row.payload, row.context])
                        .map_err(StoreError::sqlite("insert a group's payloads"))?;
                    ("", "", Some(body))
                } else {
                    (row.payload.as_str(), row.context.as_str(), None)
                };
                insert
                    .execute(params![
                        row.id,
                        row.destination,
                        row.action,
                        row.version,
                        payload,
                        context,
                        row.status.as_str(),
                        u32::from(running),
                        running.then_some(row.at),
                        row.at,
                        now,
                        row.size,
                        body,
                    ])
                    .map_err(StoreError::sqlite("insert a job"))?;
            }
        }
        transaction
            .commit()
            .map_err(StoreError::sqlite("commit an insert"))
    }

    /// Claims up to `limit` jobs of `destination` that are due at `now`, or whose lease ran
    /// out (their claimer died), each with a new token and a lease of `lease_ms`. A group
    /// is claimed whole: the first row is claimed however many jobs it holds, the others
    /// while the jobs claimed before them are fewer than `limit`.
    ///
    /// Due retries come first, then scheduled jobs, then new ones, each oldest first, then
    /// expired leases. Each part is one range of the `jobs_due` index (a running job's
    /// `next_attempt_at` is the end of its lease), so a claim reads about `limit` rows however
    /// many jobs have ended or are running (no scan, no sort).
    ///
    /// # Errors
    ///
    /// The claim failed (nothing is claimed).
    pub fn claim(
        &self,
        destination: &str,
        limit: u32,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let connection = self.lock();
        let mut claim = connection
            .prepare_cached(
                "UPDATE jobs SET status = 'running', attempt = attempt + 1, token = token + 1,
                     lease_until = ?2 + ?3, next_attempt_at = ?2 + ?3, updated_at = ?2
                 WHERE id IN (
                     SELECT id FROM (
                         SELECT id, SUM(size) OVER (ORDER BY part, next_attempt_at, id
                             ROWS UNBOUNDED PRECEDING) - size AS before
                         FROM (
                             SELECT * FROM (SELECT 1 AS part, id, size, next_attempt_at FROM jobs
                                 WHERE destination = ?1 AND status = 'retrying'
                                 AND next_attempt_at <= ?2 ORDER BY next_attempt_at, id LIMIT ?4)
                             UNION ALL
                             SELECT * FROM (SELECT 2, id, size, next_attempt_at FROM jobs
                                 WHERE destination = ?1 AND status = 'scheduled'
                                 AND next_attempt_at <= ?2 ORDER BY next_attempt_at, id LIMIT ?4)
                             UNION ALL
                             SELECT * FROM (SELECT 3, id, size, next_attempt_at FROM jobs
                                 WHERE destination = ?1 AND status = 'available'
                                 AND next_attempt_at <= ?2 ORDER BY next_attempt_at, id LIMIT ?4)
                             UNION ALL
                             SELECT * FROM (SELECT 4, id, size, next_attempt_at FROM jobs
                                 WHERE destination = ?1 AND status = 'running'
                                 AND next_attempt_at < ?2 ORDER BY next_attempt_at, id LIMIT ?4)))
                     WHERE before < ?4)
                 RETURNING id, action, payload, attempt, token, lease_until, context, size, body",
            )
            .map_err(StoreError::sqlite("prepare a claim"))?;
        let rows = claim
            .query_map(params![destination, now, lease_ms, limit], |row| {
                Ok((
                    ClaimedRow {
                        id: row.get(0)?,
                        action: row.get(1)?,
                        payload: row.get(2)?,
                        attempt: row.get(3)?,
                        token: row.get(4)?,
                        lease_until: row.get(5)?,
                        context: row.get(6)?,
                        size: row.get(7)?,
                    },
                    row.get::<_, Option<i64>>(8)?,
                ))
            })
            .map_err(StoreError::sqlite("claim jobs"))?;
        let rows: Vec<_> = rows
            .collect::<Result<_, _>>()
            .map_err(StoreError::sqlite("read a claimed job"))?;
        drop(claim);
        let mut body_of = connection
            .prepare_cached("SELECT payload, context FROM bodies WHERE rowid = ?1")
            .map_err(StoreError::sqlite("prepare a payload read"))?;
        let rows = rows
            .into_iter()
            .map(|(mut row, body)| {
                if let Some(body) = body {
                    (row.payload, row.context) = body_of
                        .query_row(params![body], |found| Ok((found.get(0)?, found.get(1)?)))
                        .map_err(StoreError::sqlite("read a group's payloads"))?;
                }
                Ok(row)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        drop(body_of);
        // Read after the lock is let go: the store does one thing at a time.
        drop(connection);
        crate::group::claimed_jobs(rows)
    }

    /// Extends the lease of a job its claimer still owns; false when it does not (the job
    /// was taken up by another claimer, or cancelled).
    ///
    /// # Errors
    ///
    /// The update failed.
    pub fn heartbeat(
        &self,
        claimed: &ClaimKey,
        now: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .lock()
            .execute(
                "UPDATE jobs SET lease_until = ?3, next_attempt_at = ?3, updated_at = ?4
                 WHERE id = ?1 AND token = ?2 AND status = 'running'",
                params![claimed.id.0, claimed.token, now + lease_ms, now],
            )
            .map_err(StoreError::sqlite("extend a lease"))?;
        Ok(changed == 1)
    }

    /// Settles attempts in one transaction, each as its claim allows: a claim whose token
    /// is stale (the job was taken up again, or cancelled) changes nothing but is recorded
    /// as a fenced attempt. Returns, in order, whether each settled its job.
    ///
    /// # Errors
    ///
    /// The transaction failed (nothing is settled).
    pub fn settle(
        &self,
        settled: &[(ClaimKey, Settlement, Attempt)],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction()
            .map_err(StoreError::sqlite("begin a settlement"))?;
        let mut owned = Vec::with_capacity(settled.len());
        {
            let mut update = transaction
                .prepare_cached(
                    "UPDATE jobs SET status = ?3, next_attempt_at = ?4, lease_until = NULL,
                         last_error = ?5, updated_at = ?6
                     WHERE id = ?1 AND token = ?2 AND status = 'running'",
                )
                .map_err(StoreError::sqlite("prepare a settlement"))?;
            let mut record = transaction
                .prepare_cached(
                    "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, code, error,
                     body_excerpt, fenced) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(StoreError::sqlite("prepare an attempt record"))?;
            for (claimed, settlement, attempt) in settled {
                let (status, next_at) = match settlement {
                    Settlement::Succeeded => (JobStatus::Succeeded, now),
                    Settlement::Retry { at } => (JobStatus::Retrying, *at),
                    Settlement::Discarded => (JobStatus::Discarded, now),
                };
                let changed = update
                    .execute(params![
                        claimed.id.0,
                        claimed.token,
                        status.as_str(),
                        next_at,
                        attempt.error,
                        now,
                    ])
                    .map_err(StoreError::sqlite("settle a job"))?;
                let is_owner = changed == 1;
                record
                    .execute(params![
                        claimed.id.0,
                        claimed.attempt,
                        attempt.started_at,
                        attempt.duration_ms,
                        attempt.code,
                        attempt.error,
                        attempt.body_excerpt,
                        !is_owner,
                    ])
                    .map_err(StoreError::sqlite("record an attempt"))?;
                owned.push(is_owner);
            }
        }
        transaction
            .commit()
            .map_err(StoreError::sqlite("commit a settlement"))?;
        Ok(owned)
    }

    /// Cancels a job that has not ended; a claimer still attempting it will be fenced.
    /// False when there is no such job or it already ended.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub fn cancel(&self, id: &JobId, now: i64) -> Result<bool, StoreError> {
        let changed = self
            .durable()?
            .execute(
                "UPDATE jobs SET status = 'cancelled', lease_until = NULL, updated_at = ?2
                 WHERE id = ?1 AND size = 1
                 AND status IN ('scheduled', 'available', 'running', 'retrying')",
                params![id.0, now],
            )
            .map_err(StoreError::sqlite("cancel a job"))?;
        Ok(changed == 1)
    }

    /// Replays a dead letter (discarded or cancelled): available at once, with a fresh
    /// budget of retries (its attempt count starts again; its attempts stay on record).
    /// False when there is no such job or it is not a dead letter.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub fn replay(&self, id: &JobId, now: i64) -> Result<bool, StoreError> {
        let changed = self
            .durable()?
            .execute(
                "UPDATE jobs SET status = 'available', attempt = 0, next_attempt_at = ?2, updated_at = ?2
                 WHERE id = ?1 AND size = 1 AND status IN ('discarded', 'cancelled')",
                params![id.0, now],
            )
            .map_err(StoreError::sqlite("replay a job"))?;
        Ok(changed == 1)
    }

    /// The row `id` (a job, or a group of them) with its attempts, if it exists.
    ///
    /// # Errors
    ///
    /// The query failed.
    pub(crate) fn get_row(&self, id: &str) -> Result<Option<RowWithAttempts>, StoreError> {
        let connection = self.lock();
        let row = connection
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM {JOBS} WHERE id = ?1"),
                params![id],
                read_row,
            )
            .optional()
            .map_err(StoreError::sqlite("read a job"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut query = connection
            .prepare_cached(
                "SELECT started_at, duration_ms, code, error, body_excerpt, fenced FROM attempts
                 WHERE job_id = ?1 ORDER BY rowid",
            )
            .map_err(StoreError::sqlite("prepare an attempts query"))?;
        let attempts = query
            .query_map(params![id], |row| {
                Ok((
                    Attempt {
                        started_at: row.get(0)?,
                        duration_ms: row.get(1)?,
                        code: row.get(2)?,
                        error: row.get(3)?,
                        body_excerpt: row.get(4)?,
                    },
                    row.get::<_, bool>(5)?,
                ))
            })
            .and_then(Iterator::collect)
            .map_err(StoreError::sqlite("read attempts"))?;
        Ok(Some((row, attempts)))
    }

    /// Up to `limit` rows matching `filter`, in id order, from `from` (inclusive).
    ///
    /// # Errors
    ///
    /// The query failed.
    pub(crate) fn list_rows(
        &self,
        filter: &JobFilter,
        limit: u32,
        from: &str,
    ) -> Result<Vec<StoredRow>, StoreError> {
        let connection = self.lock();
        let mut query = connection
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM {JOBS} WHERE {FILTER} AND id >= ?4 ORDER BY id LIMIT ?5"
            ))
            .map_err(StoreError::sqlite("prepare a listing"))?;
        let (destination, action, status) = filter.params();
        query
            .query_map(params![destination, action, status, from, limit], read_row)
            .and_then(Iterator::collect)
            .map_err(StoreError::sqlite("list jobs"))
    }

    /// Splits the group `id` into one row per job, each in the group's state, with the
    /// group's attempts; false when there is no such group of at least `index` jobs.
    ///
    /// # Errors
    ///
    /// The transaction failed (nothing is split).
    pub(crate) fn split(&self, id: &JobId, index: u32, now: i64) -> Result<bool, StoreError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction()
            .map_err(StoreError::sqlite("begin a split"))?;
        let group = transaction
            .query_row(
                &format!(
                    "SELECT size, {BODY} FROM {JOBS} WHERE id = ?1 AND size > 1 AND size >= ?2"
                ),
                params![id.0, index],
                |row| {
                    Ok((
                        row.get::<_, u32>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(StoreError::sqlite("read a group"))?;
        let Some((size, payloads, contexts)) = group else {
            return Ok(false);
        };
        let members = crate::group::split_members(id, size, &payloads, &contexts)?;
        for (member, payload, context) in members {
            transaction
                .execute(
                    "INSERT INTO jobs (id, destination, action, version, payload, context, status,
                         attempt, next_attempt_at, lease_until, token, last_error, created_at,
                         updated_at, size, body)
                     SELECT ?2, destination, action, version, ?3, ?4, status, attempt,
                         next_attempt_at, lease_until, token, last_error, created_at, ?5, 1, NULL
                     FROM jobs WHERE id = ?1",
                    params![id.0, member.0, payload, context, now],
                )
                .map_err(StoreError::sqlite("split a group"))?;
            transaction
                .execute(
                    "INSERT INTO attempts (job_id, attempt, started_at, duration_ms, code, error,
                         body_excerpt, fenced)
                     SELECT ?2, attempt, started_at, duration_ms, code, error, body_excerpt, fenced
                     FROM attempts WHERE job_id = ?1 ORDER BY rowid",
                    params![id.0, member.0],
                )
                .map_err(StoreError::sqlite("copy a group's attempts"))?;
        }
        transaction
            .execute(
                "DELETE FROM bodies WHERE rowid = (SELECT body FROM jobs WHERE id = ?1)",
                params![id.0],
            )
            .map_err(StoreError::sqlite("delete a split group's payloads"))?;
        transaction
            .execute("DELETE FROM jobs WHERE id = ?1", params![id.0])
            .map_err(StoreError::sqlite("delete a split group"))?;
        transaction
            .execute("DELETE FROM attempts WHERE job_id = ?1", params![id.0])
            .map_err(StoreError::sqlite("delete a split group's attempts"))?;
        transaction
            .commit()
            .map_err(StoreError::sqlite("commit a split"))?;
        Ok(true)
    }

    /// Deletes the job `id` and its attempts; false when there is none, or it is running
    /// (cancel it first).
    ///
    /// # Errors
    ///
    /// The transaction failed.
    pub fn delete(&self, id: &JobId) -> Result<bool, StoreError> {
        let mut connection = self.durable()?;
        let transaction = connection
            .transaction()
            .map_err(StoreError::sqlite("begin a delete"))?;
        let changed = transaction
            .execute(
                "DELETE FROM jobs WHERE id = ?1 AND size = 1 AND status <> 'running'",
                params![id.0],
            )
            .map_err(StoreError::sqlite("delete a job"))?;
        if changed == 1 {
            transaction
                .execute("DELETE FROM attempts WHERE job_id = ?1", params![id.0])
                .map_err(StoreError::sqlite("delete a job's attempts"))?;
        }
        transaction
            .commit()
            .map_err(StoreError::sqlite("commit a delete"))?;
        Ok(changed == 1)
    }

    /// Replays every dead letter (discarded or cancelled job) matching `filter`, as
    /// [`SqliteStore::replay`] does one; returns how many.
    ///
    /// # Errors
    ///
    /// The update failed (nothing is replayed).
    pub fn replay_matching(&self, filter: &JobFilter, now: i64) -> Result<u64, StoreError> {
        let (destination, action, status) = filter.params();
        let connection = self.durable()?;
        let mut replay = connection
            .prepare(&format!(
                "UPDATE jobs SET status = 'available', attempt = 0, next_attempt_at = ?4,
                     updated_at = ?4
                 WHERE {FILTER} AND status IN ('discarded', 'cancelled') RETURNING size"
            ))
            .map_err(StoreError::sqlite("prepare a replay"))?;
        let sizes: Vec<u64> = replay
            .query_map(params![destination, action, status, now], |row| row.get(0))
            .and_then(Iterator::collect)
            .map_err(StoreError::sqlite("replay jobs"))?;
        Ok(sizes.iter().sum())
    }

    /// Deletes up to `limit` jobs of `destination` that succeeded before `before`, with their attempts;
    /// returns how many. Called in small batches, so the store is never locked for long.
    ///
    /// # Errors
    ///
    /// The transaction failed (nothing is deleted).
    pub fn prune_succeeded(
        &self,
        destination: &str,
        before: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction()
            .map_err(StoreError::sqlite("begin a prune"))?;
        // A succeeded job's next_attempt_at is when it succeeded: one range of the claim
        // index, so no index is kept for pruning alone.
        const CHOSEN: &str = "SELECT id FROM jobs WHERE destination = ?1 AND status = 'succeeded'
            AND next_attempt_at < ?2 ORDER BY next_attempt_at, id LIMIT ?3";
        transaction
            .execute(
                &format!("DELETE FROM attempts WHERE job_id IN ({CHOSEN})"),
                params![destination, before, limit],
            )
            .map_err(StoreError::sqlite("prune attempts"))?;
        transaction
            .execute(
                &format!(
                    "DELETE FROM bodies WHERE rowid IN
                     (SELECT body FROM jobs WHERE id IN ({CHOSEN}) AND body IS NOT NULL)"
                ),
                params![destination, before, limit],
            )
            .map_err(StoreError::sqlite("prune payloads"))?;
        let pruned = transaction
            .execute(
                &format!("DELETE FROM jobs WHERE id IN ({CHOSEN})"),
                params![destination, before, limit],
            )
            .map_err(StoreError::sqlite("prune jobs"))?;
        transaction
            .commit()
            .map_err(StoreError::sqlite("commit a prune"))?;
        Ok(pruned as u64)
    }

    /// How many jobs of each action of `destination` have not ended (scheduled, available,
    /// running, retrying): ranges of the claim index, not a scan of ended jobs.
    ///
    /// # Errors
    ///
    /// The query failed.
    pub fn pending(&self, destination: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let connection = self.lock();
        let mut query = connection
            .prepare_cached(
                "SELECT action, SUM(size) FROM jobs WHERE destination = ?1
                 AND status IN ('scheduled', 'available', 'running', 'retrying') GROUP BY action",
            )
            .map_err(StoreError::sqlite("prepare a pending count"))?;
        query
            .query_map(params![destination], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(StoreError::sqlite("count pending jobs"))
    }

    /// How many jobs of `destination` are in each status that has any.
    ///
    /// # Errors
    ///
    /// The query failed, or a row is unreadable.
    pub fn counts(&self, destination: &str) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let connection = self.lock();
        let mut query = connection
            .prepare_cached(
                "SELECT status, SUM(size) FROM jobs WHERE destination = ?1 GROUP BY status",
            )
            .map_err(StoreError::sqlite("prepare a count"))?;
        let rows: Vec<(String, u64)> = query
            .query_map(params![destination], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(StoreError::sqlite("count jobs"))?;
        let mut counts = rows
            .into_iter()
            .map(|(status, count)| Ok((JobStatus::stored(&status)?, count)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        counts.sort_by_key(|(status, _)| JobStatus::ALL.iter().position(|s| s == status));
        Ok(counts)
    }
}

/// A row's payload and context, wherever they are kept.
macro_rules! body {
    () => {
        "COALESCE(bodies.payload, jobs.payload), COALESCE(bodies.context, jobs.context)"
    };
}
const BODY: &str = body!();

/// The columns [`read_row`] reads, in its order.
const JOB_COLUMNS: &str = concat!(
    "id, destination, action, version, status, attempt, next_attempt_at, last_error, ",
    body!(),
    ", created_at, updated_at, size"
);

/// Jobs with their groups' payloads.
const JOBS: &str = "jobs LEFT JOIN bodies ON bodies.rowid = jobs.body";

/// A [`JobFilter`] as SQL over parameters 1 to 3 ([`JobFilter::params`]).
const FILTER: &str = "(?1 IS NULL OR destination = ?1) AND (?2 IS NULL OR action = ?2)
    AND (?3 IS NULL OR status = ?3)";

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        id: row.get(0)?,
        destination: row.get(1)?,
        action: row.get(2)?,
        version: row.get(3)?,
        status: row.get(4)?,
        attempt: row.get(5)?,
        next_attempt_at: row.get(6)?,
        last_error: row.get(7)?,
        payload: row.get(8)?,
        context: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
        size: row.get(12)?,
    })
}
