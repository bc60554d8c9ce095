//! The job store through [`Store`], once per database: SQLite (a file in a temporary folder)
//! and PostgreSQL (a fresh schema per test, dropped at its end). Batches stored whole, each
//! due job claimed once, leases taken up after a claimer dies, stale claimers fenced,
//! retries, dead letters and replay, and jobs still there after the store is opened again;
//! then what only PostgreSQL does: two nodes claiming at once, connections killed under
//! load, and idle nodes woken by other nodes' inserts.
//!
//! PostgreSQL is `TIGHTBEAM_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`. When it is unreachable its tests print why and
//! pass, unless `TIGHTBEAM_REQUIRE_SERVICES=1`: then they fail.

use std::collections::HashSet;
use std::pin::pin;
use std::time::{Duration, Instant};

use tb_store::{
    Attempt, ClaimOnInsert, Claimed, Durability, JobFilter, JobId, JobStatus, JsonText, NewJob,
    Settlement, Store, StoreLocation, Wake,
};

const LEASE: i64 = 1_000;

/// Where a test's store lives, and how to clean up after it.
struct Backend {
    location: StoreLocation,
    /// The application name of a PostgreSQL store's connections, to find them.
    application_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<SchemaGuard>,
}

impl Backend {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            location: StoreLocation::Sqlite(dir.path().join("jobs.db")),
            application_name: None,
            _dir: Some(dir),
            _schema: None,
        }
    }

    /// A fresh schema in the test database, or `None` (with the reason printed) when the
    /// server is unreachable and services are not required.
    async fn postgres() -> Option<Self> {
        let base = postgres_url();
        if let Err(reason) = admin_client().await {
            assert!(
                std::env::var("TIGHTBEAM_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "PostgreSQL is required (TIGHTBEAM_REQUIRE_SERVICES=1) but {reason}"
            );
            eprintln!("skipping: {reason}; set TIGHTBEAM_REQUIRE_SERVICES=1 to fail instead");
            return None;
        }
        let schema = format!("tb_test_{}", JobId::new().0.replace('-', ""));
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}schema={schema}&application_name={schema}");
        Some(Self {
            location: StoreLocation::parse(Some(&url), std::path::Path::new("."))
                .expect("a valid URL"),
            application_name: Some(schema.clone()),
            _dir: None,
            _schema: Some(SchemaGuard(schema)),
        })
    }

    async fn open(&self) -> Store {
        Store::open(&self.location, Durability::Full)
            .await
            .expect("open")
    }
}

fn postgres_url() -> String {
    std::env::var("TIGHTBEAM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A connection of the test's own, outside any store.
async fn admin_client() -> Result<tokio_postgres::Client, String> {
    let url = postgres_url();
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|error| format!("TIGHTBEAM_TEST_POSTGRES_URL is invalid: {error}"))?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|error| {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .zip(config.get_ports())
                .map(|(host, port)| match host {
                    tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                    tokio_postgres::config::Host::Unix(path) => format!("{}", path.display()),
                })
                .collect();
            let cause = std::error::Error::source(&error)
                .map(|cause| format!(": {cause}"))
                .unwrap_or_default();
            format!(
                "PostgreSQL at {} is unreachable ({error}{cause})",
                hosts.join(",")
            )
        })?;
    tokio::spawn(connection);
    Ok(client)
}

/// Drops the test's schema, even when the test failed. Runs on a thread of its own, as
/// `Drop` cannot await on the test's runtime.
struct SchemaGuard(String);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let schema = self.0.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let client = admin_client().await?;
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await
                    .map_err(|error| error.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop schema {}: {dropped:?}", self.0);
        }
    }
}

/// Runs each test body (an `async fn(Backend)`) once per database, as
/// `sqlite::NAME` and `postgres::NAME`.
macro_rules! for_each_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = super::Backend::postgres().await {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}

for_each_store!(
    a_batch_is_stored_whole_or_not_at_all,
    each_due_job_is_claimed_once_and_a_later_one_when_its_time_comes,
    a_job_whose_claimer_died_is_taken_up_and_the_stale_claimer_is_fenced,
    a_failed_job_waits_for_its_retry_time_then_is_discarded_and_replayed,
    cancelling_a_running_job_fences_its_claimer,
    stored_and_running_jobs_are_there_after_the_store_is_opened_again,
    listings_page_by_cursor_and_filter_and_dead_letters_replay_in_bulk,
    succeeded_jobs_are_pruned_in_batches_and_a_deleted_job_is_gone,
    a_batch_settling_one_claim_twice_settles_it_once_and_fences_the_second,
    payloads_come_back_as_they_were_stored,
    jobs_claimed_as_they_are_stored_are_leased_to_their_claimer_alone,
    a_group_is_stored_claimed_and_settled_whole_and_shows_as_its_jobs,
    a_group_whose_jobs_part_is_split_and_each_keeps_its_id,
    a_group_claimed_again_fences_its_first_claimer,
    cancelling_one_job_of_a_running_group_fences_its_claimer_for_that_job_alone,
);

fn job(n: u64, run_at: Option<i64>) -> NewJob {
    job_for("crm", n, run_at)
}

fn job_for(destination: &str, n: u64, run_at: Option<i64>) -> NewJob {
    NewJob {
        id: JobId::new(),
        destination: destination.to_owned(),
        action: "identify".to_owned(),
        version: Some("2".to_owned()),
        payload: JsonText::from_value(&serde_json::json!({ "n": n })),
        context: JsonText::from_value(&serde_json::json!({ "connector": "web" })),
        run_at,
    }
}

fn attempt_for(settlement: &Settlement, now: i64) -> Attempt {
    Attempt {
        started_at: now,
        duration_ms: 3,
        error: (*settlement != Settlement::Succeeded).then(|| "503 from the receiver".to_owned()),
        ..Attempt::default()
    }
}

async fn settle_one(store: &Store, claimed: &Claimed, settlement: Settlement, now: i64) -> bool {
    let attempt = attempt_for(&settlement, now);
    store
        .settle(vec![(claimed.key(), settlement, attempt)], now)
        .await
        .expect("settle")[0]
}

async fn count(store: &Store, status: JobStatus) -> u64 {
    store
        .counts("crm")
        .await
        .expect("counts")
        .into_iter()
        .find_map(|(found, count)| (found == status).then_some(count))
        .unwrap_or(0)
}

async fn claim(store: &Store, limit: u32, now: i64) -> Vec<Claimed> {
    store.claim("crm", limit, now, LEASE).await.expect("claim")
}

async fn a_batch_is_stored_whole_or_not_at_all(backend: Backend) {
    let store = backend.open().await;
    let mut batch: Vec<NewJob> = (0..5).map(|n| job(n, None)).collect();
    batch[4].id = batch[0].id.clone();
    assert!(
        store.insert(batch.clone(), 0).await.is_err(),
        "a duplicate id fails the batch"
    );
    assert!(
        store.counts("crm").await.expect("counts").is_empty(),
        "and nothing of it is stored"
    );
    batch.pop();
    store.insert(batch, 0).await.expect("insert");
    assert_eq!(count(&store, JobStatus::Available).await, 4);
}

async fn each_due_job_is_claimed_once_and_a_later_one_when_its_time_comes(backend: Backend) {
    let store = backend.open().await;
    let mut batch: Vec<NewJob> = (0..10).map(|n| job(n, None)).collect();
    batch.push(job(10, Some(5_000)));
    store.insert(batch, 0).await.expect("insert");
    assert_eq!(count(&store, JobStatus::Scheduled).await, 1);

    let first = claim(&store, 4, 10).await;
    let rest = claim(&store, 100, 10).await;
    assert_eq!((first.len(), rest.len()), (4, 6));
    let mut numbers: Vec<u64> = first
        .iter()
        .chain(&rest)
        .map(|claimed| claimed.payload.to_value()["n"].as_u64().expect("n"))
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..10).collect::<Vec<_>>(), "every due job once");
    assert!(claim(&store, 100, 10).await.is_empty());
    assert!(
        store
            .claim("other", 100, 10, LEASE)
            .await
            .expect("claim")
            .is_empty()
    );

    let later = claim(&store, 100, 5_000).await;
    let numbers: Vec<_> = later
        .iter()
        .map(|claimed| claimed.payload.to_value()["n"].clone())
        .collect();
    assert!(
        numbers.contains(&serde_json::json!(10)),
        "the scheduled job is due at 5,000"
    );
}

async fn a_job_whose_claimer_died_is_taken_up_and_the_stale_claimer_is_fenced(backend: Backend) {
    let store = backend.open().await;
    store.insert(vec![job(1, None)], 0).await.expect("insert");
    let stale = claim(&store, 1, 0).await.remove(0);
    assert!(claim(&store, 1, 500).await.is_empty(), "leased");
    assert_eq!(
        store
            .heartbeat(vec![stale.key()], 900, LEASE)
            .await
            .expect("heartbeat"),
        vec![true],
        "the owner extends"
    );
    assert!(
        claim(&store, 1, 1_500).await.is_empty(),
        "extended to 1,900"
    );

    let taken = claim(&store, 1, 2_000).await.remove(0);
    assert_eq!(taken.id, stale.id);
    assert_eq!((taken.attempt, taken.token), (2, stale.token + 1));
    assert_eq!(
        store
            .heartbeat(vec![stale.key(), taken.key()], 2_100, LEASE)
            .await
            .expect("heartbeat"),
        vec![false, true],
        "only the current claim extends"
    );
    assert!(
        !settle_one(&store, &stale, Settlement::Succeeded, 2_200).await,
        "a claimer paused past its lease cannot settle the job"
    );
    assert_eq!(
        count(&store, JobStatus::Running).await,
        1,
        "the stale settlement changed nothing"
    );
    assert!(settle_one(&store, &taken, Settlement::Succeeded, 2_300).await);

    let record = store
        .get(taken.id.clone())
        .await
        .expect("get")
        .expect("job");
    assert_eq!(record.status, JobStatus::Succeeded);
    assert_eq!(record.version.as_deref(), Some("2"));
    let fenced: Vec<bool> = record.attempts.iter().map(|(_, fenced)| *fenced).collect();
    assert_eq!(
        fenced,
        vec![true, false],
        "the duplicate attempt is on record, fenced"
    );
}

/// A claimer that stores jobs may claim the first ones as it stores them: they are its
/// under a lease, as a claim would make them (attempt 1, token 1), nobody else claims them
/// until the lease ends, and then they are taken up and the first claimer is fenced. A
/// scheduled job is never claimed early, and the jobs past `count` are stored available.
async fn jobs_claimed_as_they_are_stored_are_leased_to_their_claimer_alone(backend: Backend) {
    let store = backend.open().await;
    let batch = vec![
        job(1, None),
        job(2, Some(5_000)),
        job(3, None),
        job(4, None),
    ];
    let ids: Vec<JobId> = batch.iter().map(|job| job.id.clone()).collect();
    let mine = store
        .insert_claiming(
            batch,
            0,
            Some(ClaimOnInsert {
                count: 3,
                lease_ms: LEASE,
            }),
            1,
        )
        .await
        .expect("insert");
    let claimed: Vec<(JobId, u32, u64, i64)> = mine
        .iter()
        .map(|job| (job.id.clone(), job.attempt, job.token, job.lease_until))
        .collect();
    assert_eq!(
        claimed,
        vec![(ids[0].clone(), 1, 1, LEASE), (ids[2].clone(), 1, 1, LEASE)],
        "the due jobs among the first three"
    );
    assert_eq!(mine[0].payload.as_str(), r#"{"n":1}"#);
    assert_eq!(count(&store, JobStatus::Running).await, 2);
    assert_eq!(count(&store, JobStatus::Scheduled).await, 1);

    let others = claim(&store, 10, 500).await;
    let taken: Vec<JobId> = others.iter().map(|job| job.id.clone()).collect();
    assert_eq!(taken, vec![ids[3].clone()], "only the job past `count`");
    assert!(settle_one(&store, &mine[0], Settlement::Succeeded, 600).await);

    // The claimer of the third died: its lease ends and it is taken up, the claimer fenced.
    let again = claim(&store, 10, LEASE + 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        (&again[0].id, again[0].attempt, again[0].token),
        (&ids[2], 2, 2)
    );
    assert!(!settle_one(&store, &mine[1], Settlement::Succeeded, LEASE + 2).await);
    assert!(settle_one(&store, &again[0], Settlement::Succeeded, LEASE + 3).await);
    assert_eq!(count(&store, JobStatus::Succeeded).await, 2);
}

async fn a_failed_job_waits_for_its_retry_time_then_is_discarded_and_replayed(backend: Backend) {
    let store = backend.open().await;
    store.insert(vec![job(1, None)], 0).await.expect("insert");
    let first = claim(&store, 1, 0).await.remove(0);
    assert!(settle_one(&store, &first, Settlement::Retry { at: 5_000 }, 10).await);
    let record = store
        .get(first.id.clone())
        .await
        .expect("get")
        .expect("job");
    assert_eq!(
        (record.status, record.next_attempt_at),
        (JobStatus::Retrying, 5_000)
    );
    assert_eq!(record.last_error.as_deref(), Some("503 from the receiver"));
    assert!(claim(&store, 1, 4_999).await.is_empty());

    let second = claim(&store, 1, 5_000).await.remove(0);
    assert_eq!(second.attempt, 2);
    assert!(settle_one(&store, &second, Settlement::Discarded, 5_010).await);
    assert_eq!(count(&store, JobStatus::Discarded).await, 1);
    assert!(
        claim(&store, 1, 99_999).await.is_empty(),
        "a dead letter waits"
    );

    assert!(
        store
            .replay(second.id.clone(), 6_000)
            .await
            .expect("replay")
    );
    assert!(
        !store
            .replay(second.id.clone(), 6_000)
            .await
            .expect("replay"),
        "only a dead letter replays"
    );
    let third = claim(&store, 1, 6_000).await.remove(0);
    assert_eq!(third.attempt, 1, "a replay gets a fresh budget of retries");
    assert_eq!(
        store
            .get(third.id.clone())
            .await
            .expect("get")
            .expect("job")
            .attempts
            .len(),
        2
    );
}

async fn cancelling_a_running_job_fences_its_claimer(backend: Backend) {
    let store = backend.open().await;
    store.insert(vec![job(1, None)], 0).await.expect("insert");
    let claimed = claim(&store, 1, 0).await.remove(0);
    assert!(store.cancel(claimed.id.clone(), 10).await.expect("cancel"));
    assert!(
        !store.cancel(claimed.id.clone(), 10).await.expect("cancel"),
        "already ended"
    );
    assert!(!settle_one(&store, &claimed, Settlement::Succeeded, 20).await);
    assert_eq!(count(&store, JobStatus::Cancelled).await, 1);
    assert!(claim(&store, 1, 99_999).await.is_empty());
}

async fn stored_and_running_jobs_are_there_after_the_store_is_opened_again(backend: Backend) {
    let ids: Vec<JobId> = {
        let store = backend.open().await;
        let batch: Vec<NewJob> = (0..100).map(|n| job(n, None)).collect();
        let ids = batch.iter().map(|job| job.id.clone()).collect();
        store.insert(batch, 0).await.expect("insert");
        claim(&store, 10, 0).await;
        ids
    };
    let store = backend.open().await;
    assert_eq!(count(&store, JobStatus::Available).await, 90);
    assert_eq!(count(&store, JobStatus::Running).await, 10);
    let taken_up = claim(&store, 1_000, 2_000).await;
    assert_eq!(
        taken_up.len(),
        100,
        "the running ones come back once their lease is out"
    );
    for id in &ids {
        assert!(store.get(id.clone()).await.expect("get").is_some());
    }
}

async fn listings_page_by_cursor_and_filter_and_dead_letters_replay_in_bulk(backend: Backend) {
    let store = backend.open().await;
    let batch: Vec<NewJob> = (0..5).map(|n| job(n, None)).collect();
    store.insert(batch, 0).await.expect("insert");
    for claimed in claim(&store, 3, 0).await {
        assert!(settle_one(&store, &claimed, Settlement::Discarded, 10).await);
    }
    let discarded = JobFilter {
        destination: Some("crm".to_owned()),
        status: Some(JobStatus::Discarded),
        ..JobFilter::default()
    };
    let first = store.list(discarded.clone(), 2, None).await.expect("list");
    assert_eq!(first.jobs.len(), 2);
    let cursor = first.next_cursor.expect("a full page has a cursor");
    let second = store
        .list(discarded.clone(), 2, Some(cursor))
        .await
        .expect("list");
    assert_eq!(second.jobs.len(), 1);
    assert!(second.next_cursor.is_none());
    assert!(first.jobs[1].id < second.jobs[0].id, "in id order");
    assert_eq!(
        second.jobs[0].payload["n"].as_u64().map(|n| n < 5),
        Some(true)
    );
    assert_eq!(second.jobs[0].context["connector"], "web");

    assert_eq!(
        store
            .replay_matching(discarded.clone(), 20)
            .await
            .expect("replay"),
        3
    );
    assert_eq!(count(&store, JobStatus::Available).await, 5);
    assert!(
        store
            .list(discarded, 10, None)
            .await
            .expect("list")
            .jobs
            .is_empty()
    );
}

async fn succeeded_jobs_are_pruned_in_batches_and_a_deleted_job_is_gone(backend: Backend) {
    let store = backend.open().await;
    let batch: Vec<NewJob> = (0..5).map(|n| job(n, None)).collect();
    let last = batch[4].id.clone();
    store.insert(batch, 0).await.expect("insert");
    for claimed in claim(&store, 4, 0).await {
        assert!(settle_one(&store, &claimed, Settlement::Succeeded, 100).await);
    }
    assert_eq!(
        store.prune_succeeded("crm", 100, 10).await.expect("prune"),
        0,
        "not yet old enough"
    );
    assert_eq!(
        store.prune_succeeded("crm", 101, 3).await.expect("prune"),
        3,
        "a batch at most"
    );
    assert_eq!(
        store.prune_succeeded("crm", 101, 3).await.expect("prune"),
        1
    );
    assert_eq!(count(&store, JobStatus::Succeeded).await, 0);
    assert_eq!(
        count(&store, JobStatus::Available).await,
        1,
        "pending jobs stay"
    );

    assert_eq!(
        store.pending("crm").await.expect("pending"),
        vec![("identify".to_owned(), 1)],
        "one job of the action is pending"
    );
    assert!(store.delete(last.clone()).await.expect("delete"));
    assert!(store.get(last.clone()).await.expect("get").is_none());
    assert!(!store.delete(last).await.expect("delete"), "already gone");
}

async fn a_batch_settling_one_claim_twice_settles_it_once_and_fences_the_second(backend: Backend) {
    let store = backend.open().await;
    store
        .insert(vec![job(1, None), job(2, None)], 0)
        .await
        .expect("insert");
    let claims = claim(&store, 2, 0).await;
    let retry = Settlement::Retry { at: 500 };
    let owned = store
        .settle(
            vec![
                (
                    claims[0].key(),
                    Settlement::Succeeded,
                    attempt_for(&Settlement::Succeeded, 10),
                ),
                (claims[0].key(), retry.clone(), attempt_for(&retry, 11)),
                (claims[1].key(), retry.clone(), attempt_for(&retry, 12)),
            ],
            20,
        )
        .await
        .expect("settle");
    assert_eq!(owned, vec![true, false, true]);
    let record = store
        .get(claims[0].id.clone())
        .await
        .expect("get")
        .expect("job");
    assert_eq!(record.status, JobStatus::Succeeded, "the first one counts");
    let attempts: Vec<(i64, bool)> = record
        .attempts
        .iter()
        .map(|(attempt, fenced)| (attempt.started_at, *fenced))
        .collect();
    assert_eq!(
        attempts,
        vec![(10, false), (11, true)],
        "both on record, in order"
    );
    assert_eq!(count(&store, JobStatus::Retrying).await, 1);
}

async fn payloads_come_back_as_they_were_stored(backend: Backend) {
    let store = backend.open().await;
    let mut stored = job(1, None);
    stored.payload = JsonText::from_value(&serde_json::json!({
        "text": "nul \u{0} and emoji \u{1F680} and quote \" and backslash \\",
        "big": u64::MAX,
        "negative": i64::MIN,
        "float": 0.1,
        "nested": { "list": [1, null, true, "x"] },
    }));
    stored.context = JsonText::from_value(&serde_json::json!(["not", "an", "object"]));
    stored.version = None;
    store.insert(vec![stored.clone()], 0).await.expect("insert");
    let record = store
        .get(stored.id.clone())
        .await
        .expect("get")
        .expect("job");
    assert_eq!(record.payload, stored.payload.to_value());
    assert_eq!(record.context, stored.context.to_value());
    assert_eq!(record.version, None);
    assert_eq!(claim(&store, 1, 0).await[0].payload, stored.payload);
}

/// Stores `count` jobs (`n` from 0) in groups of at most `group_max`; their ids.
async fn insert_grouped(store: &Store, count: u64, group_max: usize) -> Vec<JobId> {
    let batch: Vec<NewJob> = (0..count).map(|n| job(n, None)).collect();
    store
        .insert_claiming(batch, 0, None, group_max)
        .await
        .expect("insert");
    let page = store
        .list(JobFilter::default(), 1_000, None)
        .await
        .expect("list");
    page.jobs.into_iter().map(|job| job.id).collect()
}

async fn a_group_is_stored_claimed_and_settled_whole_and_shows_as_its_jobs(backend: Backend) {
    let store = backend.open().await;
    let ids = insert_grouped(&store, 10, 4).await;
    assert_eq!(ids.len(), 10, "every job listed");
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "in id order");
    assert_eq!(count(&store, JobStatus::Available).await, 10);
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(JobFilter::default(), 3, cursor)
            .await
            .expect("list");
        paged.extend(page.jobs.iter().map(|job| job.id.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        paged, ids,
        "pages of 3 go through groups of 4 without a gap"
    );
    let fifth = store.get(ids[5].clone()).await.expect("get").expect("job");
    assert_eq!(fifth.payload["n"], 5);
    assert_eq!(fifth.context["connector"], "web");

    let claimed = claim(&store, 2, 0).await;
    let first_group: Vec<JobId> = claimed.iter().map(|job| job.id.clone()).collect();
    assert_eq!(
        first_group,
        ids[..4],
        "a group is claimed whole, past the limit"
    );
    assert!(
        claimed
            .iter()
            .all(|job| job.group.as_ref().map(|g| g.size) == Some(4))
    );
    assert_eq!(succeed_all(&store, &claimed, 5).await, [true; 4]);
    assert_eq!(count(&store, JobStatus::Succeeded).await, 4);
    assert_eq!(count(&store, JobStatus::Available).await, 6);
    let settled_job = store.get(ids[2].clone()).await.expect("get").expect("job");
    assert_eq!(settled_job.status, JobStatus::Succeeded);
    assert_eq!(
        settled_job.attempts.len(),
        1,
        "the group's attempt shows on its jobs"
    );
    assert_eq!(settled_job.payload["n"], 2);
    assert_eq!(
        store.pending("crm").await.expect("pending"),
        [("identify".to_owned(), 6)]
    );
    assert_eq!(
        store.prune_succeeded("crm", 6, 10).await.expect("prune"),
        1,
        "the group's row"
    );
    assert_eq!(count(&store, JobStatus::Succeeded).await, 0);
    assert!(store.get(ids[2].clone()).await.expect("get").is_none());
    let left = store.get(ids[4].clone()).await.expect("get").expect("job");
    assert_eq!(
        left.payload["n"], 4,
        "the next group's payloads are still there"
    );
}

async fn a_group_whose_jobs_part_is_split_and_each_keeps_its_id(backend: Backend) {
    let store = backend.open().await;
    let ids = insert_grouped(&store, 8, 4).await;
    let claimed = claim(&store, 4, 0).await;
    assert_eq!(claimed.len(), 4);
    let outcomes = [
        Settlement::Succeeded,
        Settlement::Retry { at: 50 },
        Settlement::Discarded,
        Settlement::Succeeded,
    ];
    let settled: Vec<_> = claimed
        .iter()
        .zip(&outcomes)
        .map(|(job, settlement)| (job.key(), settlement.clone(), attempt_for(settlement, 5)))
        .collect();
    assert_eq!(store.settle(settled, 5).await.expect("settle"), [true; 4]);
    let statuses = [
        JobStatus::Succeeded,
        JobStatus::Retrying,
        JobStatus::Discarded,
        JobStatus::Succeeded,
    ];
    for (index, status) in statuses.iter().enumerate() {
        let job = store
            .get(ids[index].clone())
            .await
            .expect("get")
            .expect("job");
        assert_eq!((job.id.clone(), job.status), (ids[index].clone(), *status));
        assert_eq!(job.payload["n"], index as u64);
        assert_eq!(job.attempts.len(), 1, "its own attempt");
    }
    assert!(store.replay(ids[2].clone(), 60).await.expect("replay"));
    let replayed = claim(&store, 10, 60).await;
    let replayed: Vec<JobId> = replayed.iter().map(|job| job.id.clone()).collect();
    assert!(
        replayed.contains(&ids[1]) && replayed.contains(&ids[2]),
        "the retry and the replay"
    );

    // A person's action on one job of a group that has not been claimed splits it.
    let remaining = store.counts("crm").await.expect("counts");
    assert!(
        remaining.contains(&(JobStatus::Running, 6)),
        "{remaining:?}"
    );
    let fresh = insert_grouped(&store, 3, 3).await;
    let fresh: Vec<JobId> = fresh.into_iter().filter(|id| !ids.contains(id)).collect();
    assert_eq!(fresh.len(), 3);
    assert!(store.cancel(fresh[1].clone(), 70).await.expect("cancel"));
    assert!(store.delete(fresh[2].clone()).await.expect("delete"));
    let first = store
        .get(fresh[0].clone())
        .await
        .expect("get")
        .expect("job");
    assert_eq!(first.status, JobStatus::Available);
    let cancelled = store
        .get(fresh[1].clone())
        .await
        .expect("get")
        .expect("job");
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(store.get(fresh[2].clone()).await.expect("get").is_none());
    assert!(
        !store.cancel(fresh[2].clone(), 70).await.expect("cancel"),
        "gone"
    );
}

async fn cancelling_one_job_of_a_running_group_fences_its_claimer_for_that_job_alone(
    backend: Backend,
) {
    let store = backend.open().await;
    let ids = insert_grouped(&store, 3, 3).await;
    let claimed = claim(&store, 3, 0).await;
    assert!(store.cancel(ids[1].clone(), 5).await.expect("cancel"));
    // The group is split now: its claimer's group keys fall back to the jobs' own rows.
    let renewed = store
        .heartbeat(claimed.iter().map(Claimed::key).collect(), 6, LEASE)
        .await
        .expect("heartbeat");
    assert_eq!(renewed, [true, false, true]);
    assert_eq!(succeed_all(&store, &claimed, 7).await, [true, false, true]);
    let statuses = [
        JobStatus::Succeeded,
        JobStatus::Cancelled,
        JobStatus::Succeeded,
    ];
    for (id, status) in ids.iter().zip(statuses) {
        let job = store.get(id.clone()).await.expect("get").expect("job");
        assert_eq!(job.status, status, "{id}");
        let fenced = job.attempts.iter().filter(|(_, fenced)| *fenced).count();
        assert_eq!(fenced, usize::from(status == JobStatus::Cancelled), "{id}");
    }
}

/// Settles every job of `claimed` as succeeded; whether each was its claimer's.
async fn succeed_all(store: &Store, claimed: &[Claimed], now: i64) -> Vec<bool> {
    let settled = claimed
        .iter()
        .map(|job| {
            let settlement = Settlement::Succeeded;
            (job.key(), settlement.clone(), attempt_for(&settlement, now))
        })
        .collect();
    store.settle(settled, now).await.expect("settle")
}

async fn a_group_claimed_again_fences_its_first_claimer(backend: Backend) {
    let store = backend.open().await;
    let ids = insert_grouped(&store, 3, 3).await;
    let first = claim(&store, 3, 0).await;
    let renewed = store
        .heartbeat(first.iter().map(Claimed::key).collect(), 10, LEASE)
        .await
        .expect("heartbeat");
    assert_eq!(renewed, [true; 3]);
    let second = claim(&store, 3, 10 + LEASE + 1).await;
    assert_eq!(second.len(), 3, "taken up once the lease ran out");
    let now = 10 + LEASE + 2;
    assert_eq!(succeed_all(&store, &first, now).await, [false; 3]);
    let stale = store
        .heartbeat(first.iter().map(Claimed::key).collect(), now, LEASE)
        .await
        .expect("heartbeat");
    assert_eq!(stale, [false; 3]);
    let job = store.get(ids[0].clone()).await.expect("get").expect("job");
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.attempts.iter().filter(|(_, fenced)| *fenced).count(), 1);
    assert_eq!(succeed_all(&store, &second, now).await, [true; 3]);
    assert_eq!(count(&store, JobStatus::Succeeded).await, 3);
}

#[tokio::test]
async fn an_sqlite_store_made_before_groups_keeps_its_jobs_and_takes_groups() {
    let backend = Backend::sqlite();
    let StoreLocation::Sqlite(path) = &backend.location else {
        panic!("an SQLite backend");
    };
    // The schema and a job as the build before groups wrote them.
    let old = rusqlite::Connection::open(path).expect("open");
    old.execute_batch(
        "CREATE TABLE jobs (
             id TEXT PRIMARY KEY NOT NULL, destination TEXT NOT NULL, action TEXT NOT NULL,
             version TEXT, payload TEXT NOT NULL, context TEXT NOT NULL, status TEXT NOT NULL,
             attempt INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL,
             lease_until INTEGER, token INTEGER NOT NULL DEFAULT 0, last_error TEXT,
             created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX jobs_claimable ON jobs (destination, status, next_attempt_at, id);
         INSERT INTO jobs (id, destination, action, payload, context, status, next_attempt_at,
             created_at, updated_at)
         VALUES ('0190aaaa-0000-7000-8000-000000000001', 'crm', 'identify', '{\"n\":99}',
             '{\"connector\":\"web\"}', 'available', 0, 0, 0);",
    )
    .expect("the old schema");
    drop(old);
    let store = backend.open().await;
    let kept = JobId("0190aaaa-0000-7000-8000-000000000001".to_owned());
    let job = store
        .get(kept.clone())
        .await
        .expect("get")
        .expect("the old job");
    assert_eq!(job.payload["n"], 99);
    let ids = insert_grouped(&store, 4, 4).await;
    assert_eq!(ids.len(), 5);
    let claimed = claim(&store, 10, 0).await;
    let claimed: Vec<JobId> = claimed.iter().map(|job| job.id.clone()).collect();
    assert_eq!(claimed, ids, "the old job and the new group, in id order");
    assert_eq!(count(&store, JobStatus::Running).await, 5);
}

#[tokio::test]
async fn the_sqlite_store_waits_out_the_timeout() {
    let store = Backend::sqlite().open().await;
    assert_eq!(
        store.wait_for_jobs("crm", Duration::from_millis(10)).await,
        Wake::TimedOut
    );
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_the_password() {
    let location = StoreLocation::parse(
        Some("postgres://tightbeam:s3cret-pw@127.0.0.1:1/jobs?connect_timeout=2"),
        std::path::Path::new("."),
    )
    .expect("a valid URL");
    assert!(!format!("{location:?} {location}").contains("s3cret-pw"));
    let error = match Store::open(&location, Durability::Full).await {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("127.0.0.1:1"), "names the server: {error}");
    assert!(!error.contains("s3cret-pw"), "hides the password: {error}");

    let refused = StoreLocation::parse(
        Some("postgres://tightbeam:s3cret-pw@db/jobs?schema=No-Such"),
        std::path::Path::new("."),
    )
    .expect_err("an invalid schema");
    assert!(!refused.contains("s3cret-pw"), "{refused}");
}

/// Two nodes (two stores, two pools) claim 2,000 jobs at once, several claimers each: every
/// job is claimed, and settled, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claiming_at_once_take_each_job_exactly_once() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    const JOBS: u64 = 2_000;
    let nodes = [backend.open().await, backend.open().await];
    for start in (0..JOBS).step_by(250) {
        let batch = (start..start + 250).map(|n| job(n, None)).collect();
        nodes[0].insert(batch, 0).await.expect("insert");
    }

    let mut claimers = tokio::task::JoinSet::new();
    for (node_index, node) in nodes.iter().enumerate() {
        for _ in 0..4 {
            let node = node.clone();
            claimers.spawn(async move {
                let mut numbers = Vec::new();
                // Bounded: each round claims at least one job, or ends the loop.
                for _ in 0..JOBS {
                    let claims = node.claim("crm", 25, 10, 60_000).await.expect("claim");
                    if claims.is_empty() {
                        break;
                    }
                    numbers.extend(
                        claims
                            .iter()
                            .map(|claimed| claimed.payload.to_value()["n"].clone()),
                    );
                    let settled = claims
                        .into_iter()
                        .map(|claimed| {
                            let attempt = attempt_for(&Settlement::Succeeded, 20);
                            (claimed.key(), Settlement::Succeeded, attempt)
                        })
                        .collect();
                    let owned = node.settle(settled, 20).await.expect("settle");
                    assert!(
                        owned.iter().all(|owned| *owned),
                        "a claimer owns its claims"
                    );
                }
                (node_index, numbers)
            });
        }
    }
    let mut per_node = [0_usize; 2];
    let mut all = Vec::new();
    let joined = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(result) = claimers.join_next().await {
            let (node_index, numbers) = result.expect("a claimer task");
            per_node[node_index] += numbers.len();
            all.extend(numbers);
        }
    })
    .await;
    assert!(joined.is_ok(), "the claimers finished within 120 s");
    eprintln!(
        "node 0 claimed {} jobs, node 1 claimed {}",
        per_node[0], per_node[1]
    );
    let distinct: HashSet<String> = all.iter().map(ToString::to_string).collect();
    assert_eq!(all.len() as u64, JOBS, "no job claimed twice");
    assert_eq!(distinct.len() as u64, JOBS, "every job claimed");
    assert_eq!(count(&nodes[1], JobStatus::Succeeded).await, JOBS);
    assert_eq!(count(&nodes[1], JobStatus::Available).await, 0);
    assert!(claim(&nodes[0], 100, 10).await.is_empty());
}

const KILL: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = $1";

/// Ends every connection of a store (the pool's and the listener's); returns how many.
async fn kill_connections(admin: &tokio_postgres::Client, application_name: &str) -> usize {
    admin
        .query(KILL, &[&application_name])
        .await
        .expect("pg_terminate_backend")
        .len()
}

/// The pids of a store's `LISTEN` connections.
async fn listener_pids(admin: &tokio_postgres::Client, application_name: &str) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
             AND application_name = $1 AND query = 'LISTEN tightbeam_jobs'",
            &[&application_name],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A failure under `pg_terminate_backend` is a lost connection (twice: it is retried once).
fn assert_connection_lost(error: &tb_store::StoreError) {
    let message = error.to_string();
    assert!(
        [
            "terminating connection",
            "connection closed",
            "cannot connect"
        ]
        .iter()
        .any(|lost| message.contains(lost)),
        "only a lost connection fails an operation: {message}"
    );
}

/// Every connection of a store is ended between operations, again and again, and while
/// inserts and claims are in flight: each next operation succeeds on a new connection,
/// nothing stored is lost, and the listener comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_replaced_and_nothing_stored_is_lost() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let application_name = backend.application_name.clone().expect("postgres");
    let admin = admin_client().await.expect("admin connection");
    let store = backend.open().await;
    let mut stored: Vec<JobId> = Vec::new();
    let mut claimed = 0_usize;

    // Between operations: every one must succeed.
    for round in 0..8_u64 {
        let batches: Vec<Vec<NewJob>> = (0..3)
            .map(|part| {
                (0..20)
                    .map(|n| job(round * 100 + part * 20 + n, None))
                    .collect()
            })
            .collect();
        stored.extend(batches.iter().flatten().map(|job| job.id.clone()));
        let inserts = batches.into_iter().map(|batch| store.insert(batch, 0));
        for result in futures::future::join_all(inserts).await {
            result.expect("an insert right after the connections were killed");
        }
        claimed += claim(&store, 10, 0).await.len();
        let killed = kill_connections(&admin, &application_name).await;
        assert!(
            killed >= 1,
            "round {round}: the store had connections to kill"
        );
    }

    // While operations are in flight: a failure may only be a lost connection, reported as
    // an error (never a panic), and whatever was reported stored must be there.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut stored = Vec::new();
            let mut failed = 0_usize;
            for round in 0..40_u64 {
                let batch: Vec<NewJob> = (0..10)
                    .map(|n| job(10_000 + round * 10 + n, None))
                    .collect();
                let ids: Vec<JobId> = batch.iter().map(|job| job.id.clone()).collect();
                match store.insert(batch, 0).await {
                    Ok(()) => stored.extend(ids),
                    Err(error) => {
                        assert_connection_lost(&error);
                        failed += 1;
                    }
                }
                if let Err(error) = store.claim("crm", 5, 0, 60_000).await {
                    assert_connection_lost(&error);
                    failed += 1;
                }
            }
            (stored, failed)
        })
    };
    // Bounded: at most 200 kills, 10 ms apart, while the writer runs.
    let mut kills = 0_usize;
    while !writer.is_finished() && kills < 200 {
        kill_connections(&admin, &application_name).await;
        kills += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (stored_in_flight, failed) = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the writer finished within 60 s")
        .expect("the writer did not panic");
    eprintln!(
        "in flight: {kills} kills, {} jobs stored, {failed} of 80 operations failed",
        stored_in_flight.len()
    );
    assert!(
        !stored_in_flight.is_empty(),
        "inserts went on through the kills"
    );
    stored.extend(stored_in_flight);

    // After the kills: the next operations succeed, and every stored job is there.
    kill_connections(&admin, &application_name).await;
    store
        .insert(vec![job(99_999, None)], 0)
        .await
        .expect("an insert after the last kill");
    claimed += claim(&store, 10, 0).await.len();
    assert!(claimed > 0);
    for id in &stored {
        assert!(
            store.get(id.clone()).await.expect("get").is_some(),
            "job {id} was stored and is still there"
        );
    }
    let total: u64 = store
        .counts("crm")
        .await
        .expect("counts")
        .iter()
        .map(|(_, count)| count)
        .sum();
    assert_eq!(total, stored.len() as u64 + 1, "nothing more, nothing less");

    // The listener reconnected (a new LISTEN session), and wakes waiters again.
    let before = listener_pids(&admin, &application_name).await;
    kill_connections(&admin, &application_name).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now_listening = listener_pids(&admin, &application_name).await;
        if now_listening.iter().any(|pid| !before.contains(pid)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the listener reconnected within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let destination = format!("crm-{}", JobId::new());
    let mut waiting = pin!(store.wait_for_jobs(&destination, Duration::from_secs(10)));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    store
        .insert(vec![job_for(&destination, 1, None)], 0)
        .await
        .expect("insert");
    assert_eq!(waiting.await, Wake::Notified);
}

/// An idle node is woken by another node's insert for its destination, soon, and not by
/// inserts for other destinations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_node_is_woken_by_another_nodes_insert_for_its_destination() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let idle = backend.open().await;
    let busy = backend.open().await;
    let mine = format!("crm-{}", JobId::new());
    let other = format!("erp-{}", JobId::new());

    let started = Instant::now();
    let mut waiting = pin!(idle.wait_for_jobs(&mine, Duration::from_secs(10)));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    busy.insert(vec![job_for(&mine, 1, None)], 0)
        .await
        .expect("insert");
    assert_eq!(waiting.await, Wake::Notified);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken well before the 10 s timeout ({:?})",
        started.elapsed()
    );

    let mut waiting = pin!(idle.wait_for_jobs(&mine, Duration::from_millis(500)));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    busy.insert(vec![job_for(&other, 1, None)], 0)
        .await
        .expect("insert");
    assert_eq!(
        waiting.await,
        Wake::TimedOut,
        "another destination's jobs do not wake it"
    );

    // A replay is news too.
    let claimed = busy
        .claim(&mine, 1, 0, LEASE)
        .await
        .expect("claim")
        .remove(0);
    let discarded = Settlement::Discarded;
    let attempt = attempt_for(&discarded, 0);
    busy.settle(vec![(claimed.key(), discarded, attempt)], 0)
        .await
        .expect("settle");
    let mut waiting = pin!(idle.wait_for_jobs(&mine, Duration::from_secs(10)));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    assert!(busy.replay(claimed.id, 10).await.expect("replay"));
    assert_eq!(waiting.await, Wake::Notified);
}

/// The store at `url` plus a fresh schema named for the test (also its connections'
/// application name), and whether every one of its connections is encrypted.
async fn open_over_tls(
    admin: &tokio_postgres::Client,
    url: &str,
) -> (Result<Store, tb_store::StoreError>, SchemaGuard) {
    let schema = format!("tb_tls_{}", JobId::new().0.replace('-', ""));
    let url = format!("{url}&schema={schema}&application_name={schema}&connect_timeout=5");
    let location = StoreLocation::parse(Some(&url), std::path::Path::new(".")).expect("a URL");
    let opened = Store::open(&location, Durability::Full).await;
    if let Ok(store) = &opened {
        store
            .insert(vec![job(1, None)], 0)
            .await
            .expect("insert over the connection");
        let encrypted: Vec<bool> = admin
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.application_name = $1",
                &[&schema],
            )
            .await
            .expect("pg_stat_ssl")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(!encrypted.is_empty(), "the store's connections are listed");
        let mode = url.split("sslmode=").nth(1).unwrap_or_default();
        let want = !mode.starts_with("disable");
        assert!(
            encrypted.iter().all(|ssl| *ssl == want),
            "{url}: every connection encrypted = {want}, found {encrypted:?}"
        );
    }
    (opened, SchemaGuard(schema))
}

/// libpq's `sslmode`s against the real server, whose certificate (Debian's, for `localhost`)
/// it names itself: `disable` is plain; `require` encrypts without checking; `verify-ca`
/// checks the chain to `sslrootcert` but not the name; `verify-full` also checks the name, so
/// it connects to 127.0.0.1 as `localhost` (`hostaddr`) and refuses the same certificate for
/// the name `127.0.0.1`, or with only public roots.
#[tokio::test]
async fn tls_modes_encrypt_and_check_the_certificate_as_libpq_does() {
    let admin = match admin_client().await {
        Ok(admin) => admin,
        Err(reason) => {
            assert!(
                std::env::var("TIGHTBEAM_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "PostgreSQL is required (TIGHTBEAM_REQUIRE_SERVICES=1) but {reason}"
            );
            eprintln!("skipping: {reason}; set TIGHTBEAM_REQUIRE_SERVICES=1 to fail instead");
            return;
        }
    };
    let setting = |name: &'static str| {
        let admin = &admin;
        async move {
            let row = admin
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .expect("SHOW");
            row.get::<_, String>(0)
        }
    };
    assert_eq!(setting("ssl").await, "on", "the test server must offer TLS");
    let certificate = setting("ssl_cert_file").await;
    let config: tokio_postgres::Config = postgres_url().parse().expect("a URL");
    let user = config.get_user().unwrap_or("postgres");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or("test");
    let by_address = format!("postgres://{user}@127.0.0.1:{port}/{database}");
    let by_name = format!("postgres://{user}@localhost:{port}/{database}?hostaddr=127.0.0.1");

    for url in [
        format!("{by_address}?sslmode=disable"),
        format!("{by_address}?sslmode=require"),
        format!("{by_address}?sslmode=verify-ca&sslrootcert={certificate}"),
        format!("{by_name}&sslmode=verify-full&sslrootcert={certificate}"),
    ] {
        let (opened, _schema) = open_over_tls(&admin, &url).await;
        if let Err(error) = opened {
            panic!("{url}: {error}");
        }
    }
    for (url, why) in [
        (
            format!("{by_address}?sslmode=verify-full&sslrootcert={certificate}"),
            "not valid for name",
        ),
        (
            // Debian's bundle of public roots, which did not sign the server's certificate.
            format!("{by_name}&sslmode=verify-full&sslrootcert=/etc/ssl/certs/ca-certificates.crt"),
            "UnknownIssuer",
        ),
    ] {
        let (opened, _schema) = open_over_tls(&admin, &url).await;
        match opened {
            Ok(_) => panic!("{url}: the certificate must be refused"),
            Err(error) => {
                let error = error.to_string();
                assert!(
                    error.contains("invalid peer certificate") && error.contains(why),
                    "{url}: {error}"
                );
            }
        }
    }
}
