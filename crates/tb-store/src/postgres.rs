//! The shared job store: PostgreSQL, so that several Tightbeam nodes share the work of one
//! set of destinations through one database.
//!
//! It keeps the operations and rules of [`SqliteStore`](crate::SqliteStore), and adds what
//! several processes need. A claim locks the rows it takes with `FOR UPDATE SKIP LOCKED`, so
//! two nodes claiming at once never take one job, and neither waits for the other. Every
//! operation is one statement (data-modifying `WITH` clauses where SQLite runs several), so
//! each is atomic and costs one round trip. Inserts and replays send
//! `NOTIFY tightbeam_jobs, '<destination>'` in their own transaction; one dedicated `LISTEN`
//! connection per store turns those into wake-ups for [`PgStore::wait_for_jobs`], so an
//! idle node learns of new jobs without polling.
//!
//! Connections come from a small pool. One found dead (the server restarted, an
//! administrator ended it) is dropped with every idle one, and the operation is tried once
//! more on a new connection; a second failure is returned. A connection lost while a
//! statement was in flight leaves its outcome unknown: if the first try had committed, a
//! retried insert fails on its duplicate ids, a retried claim's jobs come back when their
//! lease runs out, and a retried settlement is recorded as fenced, so the retry never
//! delivers or settles twice.
//!
//! Payload and context are stored as `TEXT` holding the JSON that SQLite stores, not
//! `JSONB`: the text round-trips exactly, and `JSONB` refuses strings holding `\u0000`,
//! which events may carry. The password of the URL never appears in an error or a log.

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error as _;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Row};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::Instrument as _;

use crate::StoreError;
use crate::group::{ClaimedRow, NewRow, RowWithAttempts, StoredRow};
use crate::job::{Attempt, ClaimKey, Claimed, JobFilter, JobId, JobStatus, Settlement};
use crate::pg_tls::PgConnect;
use crate::store::Wake;

/// The channel inserts and replays notify, with the destination as payload.
const CHANNEL: &str = "tightbeam_jobs";
/// Connections per store: enough for the engine's concurrent claims and settlements, small
/// enough for many nodes to share one server.
const POOL_SIZE: usize = 8;
/// How long to wait for a new connection, when the URL does not say (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an operation waits for a free connection before it fails.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The application name of the store's connections, when the URL does not set one.
const DEFAULT_APPLICATION_NAME: &str = "tightbeam";
/// The longest pause between two attempts of the listener to reconnect.
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The schema, in `{schema}`, a quoted identifier. Serialised by an advisory lock, since
/// two nodes starting at once would otherwise race on `CREATE .. IF NOT EXISTS`.
const SCHEMA: &str = r#"
SELECT pg_advisory_xact_lock(hashtext('tightbeam job store schema'));
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.jobs (
    id TEXT COLLATE "C" PRIMARY KEY,
    destination TEXT NOT NULL,
    action TEXT NOT NULL,
    version TEXT,
    payload TEXT NOT NULL,
    context TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT,
    token BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_claimable ON {schema}.jobs (destination, status, next_attempt_at, id);
CREATE INDEX IF NOT EXISTS jobs_ended ON {schema}.jobs (status, updated_at);
CREATE TABLE IF NOT EXISTS {schema}.attempts (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id TEXT COLLATE "C" NOT NULL,
    attempt INTEGER NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    code BIGINT,
    error TEXT,
    body_excerpt TEXT,
    fenced BOOLEAN NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_job ON {schema}.attempts (job_id, seq);
ALTER TABLE {schema}.jobs ADD COLUMN IF NOT EXISTS size INTEGER NOT NULL DEFAULT 1;
CREATE INDEX IF NOT EXISTS jobs_due ON {schema}.jobs (destination, status, next_attempt_at, id)
    INCLUDE (size);
DROP INDEX IF EXISTS {schema}.jobs_claimable;
"#;

const INSERT: &str = "
WITH inserted AS (
    INSERT INTO {schema}.jobs (id, destination, action, version, payload, context, status,
        attempt, token, lease_until, next_attempt_at, created_at, updated_at, size)
    SELECT id, destination, action, version, payload, context, status,
        running::int, running::int, CASE WHEN running THEN next_attempt_at END,
        next_attempt_at, $9, $9, size
    FROM (SELECT *, status = 'running' AS running FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::bigint[], $10::integer[])
        AS batch (id, destination, action, version, payload, context, status, next_attempt_at, size))
        AS batch
    RETURNING destination
)
SELECT pg_notify('tightbeam_jobs', destination)::text
FROM (SELECT DISTINCT destination FROM inserted) AS destinations";

/// As SQLite's claim: due retries, then scheduled jobs, then new ones, each oldest first,
/// then expired leases, each part one range of `jobs_claimable`. `Append` runs its parts in
/// order and the outer `LIMIT` stops pulling rows once it has enough, so no more rows are
/// locked than are claimed.
const CLAIM: &str = "
WITH due AS MATERIALIZED (
    SELECT * FROM (
        SELECT 1 AS part, * FROM (SELECT id, size, next_attempt_at FROM {schema}.jobs
            WHERE destination = $1 AND status = 'retrying' AND next_attempt_at <= $2
            ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) AS retrying
        UNION ALL
        SELECT 2, * FROM (SELECT id, size, next_attempt_at FROM {schema}.jobs
            WHERE destination = $1 AND status = 'scheduled' AND next_attempt_at <= $2
            ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) AS scheduled
        UNION ALL
        SELECT 3, * FROM (SELECT id, size, next_attempt_at FROM {schema}.jobs
            WHERE destination = $1 AND status = 'available' AND next_attempt_at <= $2
            ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) AS available
        UNION ALL
        SELECT 4, * FROM (SELECT id, size, next_attempt_at FROM {schema}.jobs
            WHERE destination = $1 AND status = 'running' AND next_attempt_at < $2
            ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) AS expired
    ) AS due
    LIMIT $4
),
picked AS (
    SELECT id FROM (
        SELECT id, sum(size) OVER (ORDER BY part, next_attempt_at, id
            ROWS UNBOUNDED PRECEDING) - size AS before
        FROM due
    ) AS counted
    WHERE before < $4
)
UPDATE {schema}.jobs AS jobs SET status = 'running', attempt = jobs.attempt + 1,
    token = jobs.token + 1, lease_until = $2 + $3, next_attempt_at = $2 + $3, updated_at = $2
FROM picked WHERE jobs.id = picked.id
RETURNING jobs.id, jobs.action, jobs.payload, jobs.attempt, jobs.token, jobs.lease_until,
    jobs.context, jobs.size";

const HEARTBEAT: &str = "
UPDATE {schema}.jobs AS jobs SET lease_until = $3, next_attempt_at = $3, updated_at = $4
FROM unnest($1::text[], $2::bigint[]) AS claims (id, token)
WHERE jobs.id = claims.id AND jobs.token = claims.token AND jobs.status = 'running'
RETURNING jobs.id, jobs.token";

/// As SQLite's settlement, in one statement: of the entries whose claim still owns its job,
/// the first for each job settles it; every entry is recorded, in batch order, fenced unless
/// it settled. (All parts of a statement see one snapshot, so a second entry for a job that
/// the first settles is fenced here by `DISTINCT ON`, as SQLite fences it by the status the
/// first one changed.)
const SETTLE: &str = "
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[],
        $6::integer[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[])
        WITH ORDINALITY AS batch (id, token, status, next_attempt_at, error, attempt,
            started_at, duration_ms, code, body_excerpt, position)
),
winners AS (
    SELECT DISTINCT ON (batch.id) batch.* FROM batch
    JOIN {schema}.jobs AS jobs ON jobs.id = batch.id AND jobs.token = batch.token
        AND jobs.status = 'running'
    ORDER BY batch.id, batch.position
),
settled AS (
    UPDATE {schema}.jobs AS jobs SET status = winners.status,
        next_attempt_at = winners.next_attempt_at, lease_until = NULL,
        last_error = winners.error, updated_at = $11
    FROM winners
    WHERE jobs.id = winners.id AND jobs.token = winners.token AND jobs.status = 'running'
    RETURNING winners.position
),
recorded AS (
    INSERT INTO {schema}.attempts (job_id, attempt, started_at, duration_ms, code, error,
        body_excerpt, fenced)
    SELECT id, attempt, started_at, duration_ms, code, error, body_excerpt,
        position NOT IN (SELECT position FROM settled)
    FROM batch ORDER BY position
)
SELECT position FROM settled";

const CANCEL: &str = "
UPDATE {schema}.jobs SET status = 'cancelled', lease_until = NULL, updated_at = $2
WHERE id = $1 AND size = 1 AND status IN ('scheduled', 'available', 'running', 'retrying')";

/// Replays `replayed` (a data-modifying `WITH` over the rows to replay, returning their
/// destinations) and notifies each destination once; returns one row per destination,
/// with how many were replayed.
const NOTIFY_REPLAYED: &str = "
SELECT sum(size)::bigint, pg_notify('tightbeam_jobs', destination)::text
FROM replayed GROUP BY destination";

const REPLAY: &str = "
WITH replayed AS (
    UPDATE {schema}.jobs SET status = 'available', attempt = 0, next_attempt_at = $2,
        updated_at = $2
    WHERE id = $1 AND size = 1 AND status IN ('discarded', 'cancelled')
    RETURNING destination, size
)";

/// A [`JobFilter`] as SQL over parameters 1 to 3 ([`JobFilter::params`]).
const FILTER: &str = "($1::text IS NULL OR destination = $1) AND ($2::text IS NULL OR action = $2)
    AND ($3::text IS NULL OR status = $3)";

/// The columns [`read_job`] reads.
const JOB_COLUMNS: &str = "id, destination, action, version, status, attempt, next_attempt_at,
    last_error, payload, context, created_at, updated_at, size";

const ATTEMPTS: &str = "
SELECT started_at, duration_ms, code, error, body_excerpt, fenced FROM {schema}.attempts
WHERE job_id = $1 ORDER BY seq";

/// Splits the group $1 (of at least $2 jobs) into one row per job, named by $3 in order,
/// each in the group's state and with copies of its attempts; returns how many groups it
/// split (0 or 1).
const SPLIT: &str = "
WITH grouped AS (
    DELETE FROM {schema}.jobs WHERE id = $1 AND size > 1 AND size >= $2 RETURNING *
),
members AS (
    SELECT grouped.*, member.id AS member_id, member.payload AS member_payload,
        member.context AS member_context
    FROM grouped, unnest($3::text[], string_to_array(grouped.payload, E'\\n'),
        string_to_array(grouped.context, E'\\n')) AS member (id, payload, context)
    WHERE member.payload IS NOT NULL
),
split AS (
    INSERT INTO {schema}.jobs (id, destination, action, version, payload, context, status,
        attempt, next_attempt_at, lease_until, token, last_error, created_at, updated_at, size)
    SELECT member_id, destination, action, version, member_payload, member_context, status,
        attempt, next_attempt_at, lease_until, token, last_error, created_at, $4, 1
    FROM members
),
copied AS (
    INSERT INTO {schema}.attempts (job_id, attempt, started_at, duration_ms, code, error,
        body_excerpt, fenced)
    SELECT members.member_id, attempts.attempt, attempts.started_at, attempts.duration_ms,
        attempts.code, attempts.error, attempts.body_excerpt, attempts.fenced
    FROM members JOIN {schema}.attempts AS attempts ON attempts.job_id = members.id
    ORDER BY members.member_id, attempts.seq
),
forgotten AS (
    DELETE FROM {schema}.attempts WHERE job_id IN (SELECT id FROM grouped)
)
SELECT count(*) FROM grouped";

const DELETE: &str = "
WITH deleted AS (
    DELETE FROM {schema}.jobs WHERE id = $1 AND size = 1 AND status <> 'running' RETURNING id
),
forgotten AS (
    DELETE FROM {schema}.attempts WHERE job_id IN (SELECT id FROM deleted)
)
SELECT count(*) FROM deleted";

/// Nodes pruning at once skip each other's rows rather than wait for them.
const PRUNE: &str = "
WITH chosen AS MATERIALIZED (
    SELECT id FROM {schema}.jobs WHERE destination = $3 AND status = 'succeeded'
    AND updated_at < $1 ORDER BY updated_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
),
forgotten AS (
    DELETE FROM {schema}.attempts WHERE job_id IN (SELECT id FROM chosen)
),
pruned AS (
    DELETE FROM {schema}.jobs WHERE id IN (SELECT id FROM chosen) RETURNING 1
)
SELECT count(*) FROM pruned";

const COUNTS: &str = "
SELECT status, sum(size)::bigint FROM {schema}.jobs WHERE destination = $1 GROUP BY status";

const PENDING: &str = "
SELECT action, sum(size)::bigint FROM {schema}.jobs WHERE destination = $1
    AND status IN ('scheduled', 'available', 'running', 'retrying') GROUP BY action";

/// A PostgreSQL URL, read: the connection settings, the schema, and the URL to show.
pub(crate) struct PgTarget {
    config: tokio_postgres::Config,
    /// The TLS its `sslmode` asks for.
    tls: MakeRustlsConnect,
    /// Invariant: a lowercase identifier ([`parse_schema`]), quoted.
    quoted_schema: String,
    /// The URL without its password.
    shown: String,
}

impl PgTarget {
    /// Reads `postgres://` or `postgresql://` URLs, as libpq does, plus the option
    /// `schema=NAME` (default `public`).
    ///
    /// # Errors
    ///
    /// What is wrong with the URL, which is shown without its password.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let shown = redact_url(url);
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut schema = "public";
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", name)) => schema = name,
                _ => kept.push(pair),
            }
        }
        let schema =
            parse_schema(schema).map_err(|reason| format!("PostgreSQL URL {shown}: {reason}"))?;
        let libpq_url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let PgConnect { mut config, tls } = PgConnect::parse(&libpq_url)
            .map_err(|reason| format!("PostgreSQL URL {shown}: {reason}"))?;
        if config.get_application_name().is_none() {
            config.application_name(DEFAULT_APPLICATION_NAME);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(Self {
            config,
            tls,
            quoted_schema: format!("\"{schema}\""),
            shown,
        })
    }
}

/// A schema name the store accepts: lowercase letters, digits and underscores, not starting
/// with a digit, as PostgreSQL folds an unquoted name, and at most 63 bytes.
fn parse_schema(name: &str) -> Result<&str, String> {
    let mut characters = name.chars();
    let first_ok = characters
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first == '_');
    let rest_ok = characters.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(name)
    } else {
        Err(format!(
            "schema `{name}` must be lowercase letters, digits and underscores, \
             not starting with a digit, at most 63 long"
        ))
    }
}

/// `url` without its password: the one in the user part (`user:***@host`) and a
/// `password=` option. Over-redacts rather than under: the user part ends at the first `@`,
/// as libpq reads it.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let rest = match rest.split_once('@') {
        Some((user_info, after)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{after}"),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest.as_str(), None),
    };
    let mut shown = format!("{scheme}{base}");
    if let Some(query) = query {
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                _ => pair.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&query.join("&"));
    }
    shown
}

/// Who waits for jobs of which destination. The listener sends to a destination's channel
/// when it is notified, and to every channel after it reconnects (notifications sent while
/// it was away are lost, so every waiter is told to look).
#[derive(Default)]
struct Waiters {
    /// Invariant: an entry is made only by a waiter, so the map holds at most the
    /// destinations this node serves.
    by_destination: Mutex<HashMap<String, watch::Sender<()>>>,
}

impl Waiters {
    fn subscribe(&self, destination: &str) -> watch::Receiver<()> {
        let mut by_destination = self
            .by_destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match by_destination.get(destination) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(());
                by_destination.insert(destination.to_owned(), sender);
                receiver
            }
        }
    }

    fn wake(&self, destination: &str) {
        let by_destination = self
            .by_destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = by_destination.get(destination) {
            sender.send_modify(|()| {});
        }
    }

    fn wake_all(&self) {
        let by_destination = self
            .by_destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for sender in by_destination.values() {
            sender.send_modify(|()| {});
        }
    }
}

/// The PostgreSQL job store. Async; cheap operations on a pool of connections.
pub struct PgStore {
    pool: Pool,
    /// Invariant: a quoted lowercase identifier, safe to put in SQL.
    quoted_schema: String,
    /// The URL without its password, for errors.
    shown: String,
    waiters: Arc<Waiters>,
    /// The task that holds the `LISTEN` connection; aborted when the store is dropped.
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connects to the database `url` names (see [`StoreLocation::parse`]), creates the
    /// schema and tables if need be, and starts listening for new jobs. Must run inside a
    /// tokio runtime, which the listener task is spawned on.
    ///
    /// [`StoreLocation::parse`]: crate::StoreLocation::parse
    ///
    /// # Errors
    ///
    /// The URL is invalid, the server cannot be reached, or the schema cannot be created.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let target = PgTarget::parse(url).map_err(StoreError::InvalidUrl)?;
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                // A closed connection is dropped when it comes back; one that died unseen
                // fails its next operation, which is then retried (`retrying`).
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(
                target
                    .config
                    .get_connect_timeout()
                    .copied()
                    .unwrap_or(CONNECT_TIMEOUT),
            ))
            .build()
            .map_err(|error| {
                StoreError::Io(format!("cannot build the connection pool: {error}"))
            })?;
        let waiters = Arc::new(Waiters::default());
        let (listening, mut listening_receiver) = watch::channel(0_u64);
        let listener = tokio::spawn(
            listen(
                target.config.clone(),
                target.tls.clone(),
                waiters.clone(),
                listening,
            )
            .instrument(tracing::info_span!("job_store_listener", url = %target.shown)),
        );
        let store = Self {
            pool,
            quoted_schema: target.quoted_schema,
            shown: target.shown,
            waiters,
            listener,
        };
        let schema = store.sql(SCHEMA);
        store
            .retrying(|| async {
                let mut client = store.client().await?;
                let transaction = client
                    .transaction()
                    .await
                    .map_err(StoreError::postgres("begin creating the schema"))?;
                transaction
                    .batch_execute(&schema)
                    .await
                    .map_err(StoreError::postgres("create the schema"))?;
                transaction
                    .commit()
                    .await
                    .map_err(StoreError::postgres("commit the schema"))
            })
            .await?;
        tokio::time::timeout(
            POOL_WAIT_TIMEOUT,
            listening_receiver.wait_for(|sessions| *sessions > 0),
        )
        .await
        .map_err(|_elapsed| StoreError::PostgresUnreachable {
            target: store.shown.clone(),
            error: "no LISTEN connection could be made in time".into(),
        })?
        .map_err(|_closed| StoreError::Io("the listener task ended".to_owned()))?;
        Ok(store)
    }

    /// `template` with its `{schema}` filled in.
    fn sql(&self, template: &str) -> String {
        template.replace("{schema}", &self.quoted_schema)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|error| StoreError::PostgresUnreachable {
                target: self.shown.clone(),
                // The driver's error rather than the pool's wrapping of it, which repeats it.
                error: match error {
                    deadpool_postgres::PoolError::Backend(error) => Box::new(error),
                    error => Box::new(error),
                },
            })
    }

    /// Runs `operation`, and once more when it failed because its connection was lost,
    /// after dropping every idle connection (they are likely dead too: the server restarted,
    /// or an administrator ended them).
    async fn retrying<T, Operation>(
        &self,
        mut operation: impl FnMut() -> Operation,
    ) -> Result<T, StoreError>
    where
        Operation: Future<Output = Result<T, StoreError>>,
    {
        match operation().await {
            Err(error) if error.is_connection_loss() => {
                tracing::warn!(%error, "Lost a job store connection; trying once more on a new one.");
                self.pool.retain(|_, _| false);
                operation().await
            }
            result => result,
        }
    }

    /// Runs the statement `sql` (prepared once per connection) and returns its rows, with
    /// one retry on a lost connection.
    async fn query(
        &self,
        context: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.retrying(|| async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(sql)
                .await
                .map_err(StoreError::postgres(context))?;
            client
                .query(&statement, params)
                .await
                .map_err(StoreError::postgres(context))
        })
        .await
    }

    /// As [`query`](Self::query), for a statement without rows; returns how many it changed.
    async fn execute(
        &self,
        context: &'static str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.retrying(|| async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(sql)
                .await
                .map_err(StoreError::postgres(context))?;
            client
                .execute(&statement, params)
                .await
                .map_err(StoreError::postgres(context))
        })
        .await
    }

    /// Stores `rows` (jobs, or groups of them) in one statement: all or none; then every
    /// listener is told of each destination that got jobs.
    pub(crate) async fn insert_rows(
        &self,
        rows: &[NewRow<'_>],
        now: i64,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut columns = InsertColumns::default();
        for row in rows {
            columns.id.push(row.id);
            columns.destination.push(row.destination);
            columns.action.push(row.action);
            columns.version.push(row.version);
            columns.payload.push(&row.payload);
            columns.context.push(&row.context);
            columns.status.push(row.status.as_str());
            columns.next_attempt_at.push(row.at);
            columns
                .size
                .push(i32::try_from(row.size).unwrap_or(i32::MAX));
        }
        self.query(
            "insert jobs",
            &self.sql(INSERT),
            &[
                &columns.id,
                &columns.destination,
                &columns.action,
                &columns.version,
                &columns.payload,
                &columns.context,
                &columns.status,
                &columns.next_attempt_at,
                &now,
                &columns.size,
            ],
        )
        .await?;
        Ok(())
    }

    /// Claims up to `limit` jobs of `destination` that are due at `now`, or whose lease ran
    /// out, each with a new token and a lease of `lease_ms`, in the order of
    /// [`SqliteStore::claim`](crate::SqliteStore::claim). Rows another node is claiming at
    /// the same moment are skipped, not waited for.
    ///
    /// # Errors
    ///
    /// The claim failed (nothing is claimed).
    pub async fn claim(
        &self,
        destination: &str,
        limit: u32,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let rows = self
            .query(
                "claim jobs",
                &self.sql(CLAIM),
                &[&destination, &now, &lease_ms, &i64::from(limit)],
            )
            .await?;
        let rows = rows
            .iter()
            .map(|row| {
                let id: String = get(row, 0)?;
                Ok(ClaimedRow {
                    action: get(row, 1)?,
                    payload: get(row, 2)?,
                    attempt: to_attempt(&id, get(row, 3)?)?,
                    token: to_token(&id, get(row, 4)?)?,
                    lease_until: get(row, 5)?,
                    context: get(row, 6)?,
                    size: to_size(&id, get(row, 7)?)?,
                    id,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        crate::group::claimed_jobs(rows)
    }

    /// Extends the leases of the jobs their claimers still own; one answer per claim, in
    /// order: false when it does not own its job any more.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn heartbeat(
        &self,
        claims: &[ClaimKey],
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let ids: Vec<&str> = claims.iter().map(|claimed| claimed.id.0.as_str()).collect();
        let tokens = claims
            .iter()
            .map(|claimed| from_token(claimed.token))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = self
            .query(
                "extend leases",
                &self.sql(HEARTBEAT),
                &[&ids, &tokens, &(now + lease_ms), &now],
            )
            .await?;
        let extended = rows
            .iter()
            .map(|row| Ok((get::<String>(row, 0)?, get::<i64>(row, 1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(ids
            .iter()
            .zip(&tokens)
            .map(|(id, token)| {
                extended
                    .iter()
                    .any(|(found, found_token)| found == id && found_token == token)
            })
            .collect())
    }

    /// Settles attempts in one transaction, as [`SqliteStore::settle`] does: a stale claim
    /// changes nothing but is recorded as a fenced attempt. Returns, in order, whether each
    /// settled its job.
    ///
    /// [`SqliteStore::settle`]: crate::SqliteStore::settle
    ///
    /// # Errors
    ///
    /// The statement failed (nothing is settled).
    pub async fn settle(
        &self,
        settled: &[(ClaimKey, Settlement, Attempt)],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        if settled.is_empty() {
            return Ok(Vec::new());
        }
        let mut columns = SettleColumns::default();
        for (claimed, settlement, attempt) in settled {
            let (status, next_at) = match settlement {
                Settlement::Succeeded => (JobStatus::Succeeded, now),
                Settlement::Retry { at } => (JobStatus::Retrying, *at),
                Settlement::Discarded => (JobStatus::Discarded, now),
            };
            columns.id.push(claimed.id.0.as_str());
            columns.token.push(from_token(claimed.token)?);
            columns.status.push(status.as_str());
            columns.next_attempt_at.push(next_at);
            columns.error.push(attempt.error.as_deref());
            columns.attempt.push(
                i32::try_from(claimed.attempt)
                    .map_err(|_| StoreError::Corrupt(format!("job {} attempt", claimed.id)))?,
            );
            columns.started_at.push(attempt.started_at);
            columns.duration_ms.push(attempt.duration_ms);
            columns.code.push(attempt.code);
            columns.body_excerpt.push(attempt.body_excerpt.as_deref());
        }
        let rows = self
            .query(
                "settle jobs",
                &self.sql(SETTLE),
                &[
                    &columns.id,
                    &columns.token,
                    &columns.status,
                    &columns.next_attempt_at,
                    &columns.error,
                    &columns.attempt,
                    &columns.started_at,
                    &columns.duration_ms,
                    &columns.code,
                    &columns.body_excerpt,
                    &now,
                ],
            )
            .await?;
        let mut owned = vec![false; settled.len()];
        for row in &rows {
            // WITH ORDINALITY counts from 1.
            let position: i64 = get(row, 0)?;
            let index = usize::try_from(position - 1)
                .ok()
                .filter(|index| *index < owned.len())
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("a settlement returned position {position}"))
                })?;
            owned[index] = true;
        }
        Ok(owned)
    }

    /// See [`SqliteStore::cancel`](crate::SqliteStore::cancel).
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn cancel(&self, id: &JobId, now: i64) -> Result<bool, StoreError> {
        let changed = self
            .execute("cancel a job", &self.sql(CANCEL), &[&id.0, &now])
            .await?;
        Ok(changed == 1)
    }

    /// See [`SqliteStore::replay`](crate::SqliteStore::replay); listeners are told.
    ///
    /// # Errors
    ///
    /// The update failed.
    pub async fn replay(&self, id: &JobId, now: i64) -> Result<bool, StoreError> {
        let sql = format!("{}{NOTIFY_REPLAYED}", self.sql(REPLAY));
        let rows = self.query("replay a job", &sql, &[&id.0, &now]).await?;
        Ok(replayed(&rows)? == 1)
    }

    /// See [`SqliteStore::replay_matching`](crate::SqliteStore::replay_matching); listeners
    /// are told.
    ///
    /// # Errors
    ///
    /// The update failed (nothing is replayed).
    pub async fn replay_matching(&self, filter: &JobFilter, now: i64) -> Result<u64, StoreError> {
        let (destination, action, status) = filter.params();
        let sql = self.sql(&format!(
            "WITH replayed AS (
                 UPDATE {{schema}}.jobs SET status = 'available', attempt = 0,
                     next_attempt_at = $4, updated_at = $4
                 WHERE {FILTER} AND status IN ('discarded', 'cancelled')
                 RETURNING destination, size
             ){NOTIFY_REPLAYED}"
        ));
        let rows = self
            .query("replay jobs", &sql, &[&destination, &action, &status, &now])
            .await?;
        replayed(&rows)
    }

    /// The row `id` (a job, or a group of them) with its attempts, if it exists.
    ///
    /// # Errors
    ///
    /// The query failed, or the row is unreadable.
    pub(crate) async fn get_row(&self, id: &str) -> Result<Option<RowWithAttempts>, StoreError> {
        let sql = self.sql(&format!(
            "SELECT {JOB_COLUMNS} FROM {{schema}}.jobs WHERE id = $1"
        ));
        let rows = self.query("read a job", &sql, &[&id]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let row = read_row(row)?;
        let attempts = self
            .query("read attempts", &self.sql(ATTEMPTS), &[&id])
            .await?;
        let attempts = attempts
            .iter()
            .map(|row| {
                Ok((
                    Attempt {
                        started_at: get(row, 0)?,
                        duration_ms: get(row, 1)?,
                        code: get(row, 2)?,
                        error: get(row, 3)?,
                        body_excerpt: get(row, 4)?,
                    },
                    get(row, 5)?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Some((row, attempts)))
    }

    /// Up to `limit` rows matching `filter`, in id order, from `from` (inclusive).
    ///
    /// # Errors
    ///
    /// The query failed, or a row is unreadable.
    pub(crate) async fn list_rows(
        &self,
        filter: &JobFilter,
        limit: u32,
        from: &str,
    ) -> Result<Vec<StoredRow>, StoreError> {
        let (destination, action, status) = filter.params();
        let sql = self.sql(&format!(
            "SELECT {JOB_COLUMNS} FROM {{schema}}.jobs WHERE {FILTER} AND id >= $4
             ORDER BY id LIMIT $5"
        ));
        let rows = self
            .query(
                "list jobs",
                &sql,
                &[&destination, &action, &status, &from, &i64::from(limit)],
            )
            .await?;
        rows.iter().map(read_row).collect()
    }

    /// See [`SqliteStore::split`](crate::SqliteStore::split).
    ///
    /// # Errors
    ///
    /// The statement failed (nothing is split).
    pub(crate) async fn split(&self, id: &JobId, index: u32, now: i64) -> Result<bool, StoreError> {
        let members: Vec<String> = (1..=crate::GROUP_MAX as u32)
            .map(|index| id.member(index).0)
            .collect();
        let rows = self
            .query(
                "split a group",
                &self.sql(SPLIT),
                &[
                    &id.0,
                    &i32::try_from(index).unwrap_or(i32::MAX),
                    &members,
                    &now,
                ],
            )
            .await?;
        Ok(single_count(&rows)? == 1)
    }

    /// Deletes the job `id` and its attempts; false when there is none, or it is running.
    ///
    /// # Errors
    ///
    /// The statement failed.
    pub async fn delete(&self, id: &JobId) -> Result<bool, StoreError> {
        let rows = self
            .query("delete a job", &self.sql(DELETE), &[&id.0])
            .await?;
        Ok(single_count(&rows)? == 1)
    }

    /// Deletes up to `limit` jobs of `destination` that succeeded before `before`, with their
    /// attempts; returns how many.
    ///
    /// # Errors
    ///
    /// The statement failed (nothing is deleted).
    pub async fn prune_succeeded(
        &self,
        destination: &str,
        before: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let rows = self
            .query(
                "prune jobs",
                &self.sql(PRUNE),
                &[&before, &i64::from(limit), &destination],
            )
            .await?;
        single_count(&rows)
    }

    /// How many jobs of `destination` are in each status that has any.
    ///
    /// # Errors
    ///
    /// The query failed, or a row is unreadable.
    pub async fn counts(&self, destination: &str) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let rows = self
            .query("count jobs", &self.sql(COUNTS), &[&destination])
            .await?;
        let mut counts = rows
            .iter()
            .map(|row| {
                Ok((
                    JobStatus::stored(&get::<String>(row, 0)?)?,
                    get::<i64>(row, 1)?.unsigned_abs(),
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        counts.sort_by_key(|(status, _)| JobStatus::ALL.iter().position(|s| s == status));
        Ok(counts)
    }

    /// How many jobs of each action of `destination` have not ended.
    ///
    /// # Errors
    ///
    /// The query failed.
    pub async fn pending(&self, destination: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self
            .query("count pending jobs", &self.sql(PENDING), &[&destination])
            .await?;
        rows.iter()
            .map(|row| Ok((get::<String>(row, 0)?, get::<i64>(row, 1)?.unsigned_abs())))
            .collect()
    }

    /// Returns when `destination` may have new jobs (a node inserted or replayed some, or the
    /// listener reconnected and may have missed that), or when `timeout` passes. Only
    /// notifications sent after the call count: a caller that claims nothing and then waits
    /// can miss jobs inserted in between, for at most `timeout`.
    pub async fn wait_for_jobs(&self, destination: &str, timeout: Duration) -> Wake {
        let mut receiver = self.waiters.subscribe(destination);
        match tokio::time::timeout(timeout, receiver.changed()).await {
            Ok(_) => Wake::Notified,
            Err(_elapsed) => Wake::TimedOut,
        }
    }
}

/// The job store's `LISTEN` connection: wakes the waiters of each destination notified, and
/// reconnects (with a growing pause, at most [`LISTEN_BACKOFF_MAX`]) when its connection
/// dies. `listening` counts the sessions that reached `LISTEN`. Runs until aborted.
async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    waiters: Arc<Waiters>,
    listening: watch::Sender<u64>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Err(error) = listen_once(&config, &tls, &waiters, &listening, &mut backoff).await;
        tracing::warn!(
            %error,
            retry_in_ms = backoff.as_millis(),
            "Lost the job store's LISTEN connection; reconnecting."
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
    }
}

/// One `LISTEN` session, until its connection fails.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    waiters: &Waiters,
    listening: &watch::Sender<u64>,
    backoff: &mut Duration,
) -> Result<Infallible, StoreError> {
    let (client, mut connection) = config
        .connect(tls.clone())
        .await
        .map_err(StoreError::postgres("connect to listen for jobs"))?;
    // The connection's messages are read here, by this task, while LISTEN runs and after:
    // `poll_message` drives the connection and yields what the server sends unasked.
    let deliver = |message: Option<Result<AsyncMessage, tokio_postgres::Error>>| match message {
        Some(Ok(AsyncMessage::Notification(notification))) => {
            if notification.channel() == CHANNEL {
                waiters.wake(notification.payload());
            }
            Ok(())
        }
        Some(Ok(_notice)) => Ok(()),
        Some(Err(error)) => Err(StoreError::Postgres {
            context: "listen for jobs",
            error,
        }),
        None => Err(StoreError::Io(
            "the server closed the LISTEN connection".to_owned(),
        )),
    };
    let statement = format!("LISTEN {CHANNEL}");
    {
        let mut subscribe = pin!(client.batch_execute(&statement));
        loop {
            tokio::select! {
                result = &mut subscribe => {
                    result.map_err(StoreError::postgres("listen for jobs"))?;
                    break;
                }
                message = poll_fn(|context| connection.poll_message(context)) => deliver(message)?,
            }
        }
    }
    listening.send_modify(|sessions| *sessions += 1);
    *backoff = Duration::from_millis(100);
    // Notifications sent while there was no session are lost: every waiter looks again.
    waiters.wake_all();
    loop {
        deliver(poll_fn(|context| connection.poll_message(context)).await)?;
    }
}

impl StoreError {
    pub(crate) fn postgres(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |error| Self::Postgres { context, error }
    }

    /// Whether this error is a lost (or unobtainable) connection, which a new connection
    /// may not have.
    fn is_connection_loss(&self) -> bool {
        match self {
            Self::PostgresUnreachable { .. } => true,
            Self::Postgres { error, .. } => {
                error.is_closed()
                    || error.code().is_some_and(|code| {
                        *code == SqlState::ADMIN_SHUTDOWN
                            || *code == SqlState::CRASH_SHUTDOWN
                            || *code == SqlState::CANNOT_CONNECT_NOW
                            || code.code().starts_with("08")
                    })
                    || error
                        .source()
                        .is_some_and(|cause| cause.is::<std::io::Error>())
            }
            _ => false,
        }
    }
}

#[derive(Default)]
struct InsertColumns<'a> {
    id: Vec<&'a str>,
    destination: Vec<&'a str>,
    action: Vec<&'a str>,
    version: Vec<Option<&'a str>>,
    payload: Vec<&'a str>,
    context: Vec<&'a str>,
    status: Vec<&'static str>,
    next_attempt_at: Vec<i64>,
    size: Vec<i32>,
}

#[derive(Default)]
struct SettleColumns<'a> {
    id: Vec<&'a str>,
    token: Vec<i64>,
    status: Vec<&'static str>,
    next_attempt_at: Vec<i64>,
    error: Vec<Option<&'a str>>,
    attempt: Vec<i32>,
    started_at: Vec<i64>,
    duration_ms: Vec<i64>,
    code: Vec<Option<i64>>,
    body_excerpt: Vec<Option<&'a str>>,
}

/// Column `index` of `row`, without panicking on a type the store never writes.
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(StoreError::postgres("read a row"))
}

/// `error` and its causes, as one line (bar a database error's `DETAIL` and `HINT`), each
/// once: tokio-postgres shows a cause only through `source`.
pub(crate) fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let next_text = next.to_string();
        if !text.contains(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        cause = next.source();
    }
    text
}

/// How many jobs [`NOTIFY_REPLAYED`]'s rows count.
fn replayed(rows: &[Row]) -> Result<u64, StoreError> {
    rows.iter()
        .map(|row| get::<i64>(row, 0).map(i64::unsigned_abs))
        .sum()
}

fn single_count(rows: &[Row]) -> Result<u64, StoreError> {
    let row = rows
        .first()
        .ok_or_else(|| StoreError::Corrupt("a count returned no row".to_owned()))?;
    Ok(get::<i64>(row, 0)?.unsigned_abs())
}

fn to_attempt(id: &str, attempt: i32) -> Result<u32, StoreError> {
    u32::try_from(attempt)
        .map_err(|_| StoreError::Corrupt(format!("job {id} has attempt {attempt}")))
}

fn to_token(id: &str, token: i64) -> Result<u64, StoreError> {
    u64::try_from(token).map_err(|_| StoreError::Corrupt(format!("job {id} has token {token}")))
}

fn from_token(token: u64) -> Result<i64, StoreError> {
    i64::try_from(token).map_err(|_| StoreError::Corrupt(format!("a claim has token {token}")))
}

fn to_size(id: &str, size: i32) -> Result<u32, StoreError> {
    u32::try_from(size).map_err(|_| StoreError::Corrupt(format!("row {id} has size {size}")))
}

fn read_row(row: &Row) -> Result<StoredRow, StoreError> {
    let id: String = get(row, 0)?;
    Ok(StoredRow {
        destination: get(row, 1)?,
        action: get(row, 2)?,
        version: get(row, 3)?,
        status: get(row, 4)?,
        attempt: to_attempt(&id, get(row, 5)?)?,
        next_attempt_at: get(row, 6)?,
        last_error: get(row, 7)?,
        payload: get(row, 8)?,
        context: get(row, 9)?,
        created_at: get(row, 10)?,
        updated_at: get(row, 11)?,
        size: to_size(&id, get(row, 12)?)?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("postgres://tb:s3cret@db.example:5432/jobs?schema=tb"),
            "postgres://tb:***@db.example:5432/jobs?schema=tb"
        );
        assert_eq!(
            redact_url("postgresql://db/jobs?user=tb&password=s3cret&schema=x"),
            "postgresql://db/jobs?user=tb&password=***&schema=x"
        );
        assert_eq!(redact_url("postgres://tb@db/jobs"), "postgres://tb@db/jobs");
    }

    #[test]
    fn the_schema_option_is_read_and_checked() {
        let target = PgTarget::parse("postgres://tb:pw@db/jobs?schema=tightbeam&sslmode=disable")
            .expect("valid");
        assert_eq!(target.quoted_schema, "\"tightbeam\"");
        assert_eq!(target.config.get_application_name(), Some("tightbeam"));
        let public = PgTarget::parse("postgres://db/jobs?application_name=node_1").expect("valid");
        assert_eq!(public.quoted_schema, "\"public\"");
        assert_eq!(public.config.get_application_name(), Some("node_1"));
        let error = PgTarget::parse("postgres://tb:s3cret@db/jobs?schema=Bad;Name")
            .err()
            .expect("an invalid schema");
        assert!(error.contains("Bad;Name"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        let error = PgTarget::parse("postgres://tb:s3cret@db/jobs?bogus=1")
            .err()
            .expect("an unknown option");
        assert!(!error.contains("s3cret"), "{error}");
    }
}
