//! The SQLite job store against real files: batches stored whole, each due job claimed
//! once, leases taken up after a claimer dies, stale claimers fenced, retries, dead letters
//! and replay, and jobs still there after the store is opened again.

use tb_store::{
    Attempt, Claimed, Durability, JobFilter, JobId, JobStatus, NewJob, Settlement, SqliteStore,
};

const LEASE: i64 = 1_000;

fn store(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("jobs.db"), Durability::Full).expect("open")
}

fn job(n: u64, run_at: Option<i64>) -> NewJob {
    NewJob {
        id: JobId::new(),
        destination: "crm".to_owned(),
        action: "identify".to_owned(),
        version: Some("2".to_owned()),
        payload: serde_json::json!({ "n": n }),
        context: serde_json::json!({ "connector": "web" }),
        run_at,
    }
}

fn settle_one(store: &SqliteStore, claimed: &Claimed, settlement: Settlement, now: i64) -> bool {
    let attempt = Attempt {
        started_at: now,
        duration_ms: 3,
        error: (settlement != Settlement::Succeeded).then(|| "503 from the receiver".to_owned()),
        ..Attempt::default()
    };
    store
        .settle(&[(claimed.clone(), settlement, attempt)], now)
        .expect("settle")[0]
}

fn count(store: &SqliteStore, status: JobStatus) -> u64 {
    store
        .counts("crm")
        .expect("counts")
        .into_iter()
        .find_map(|(found, count)| (found == status).then_some(count))
        .unwrap_or(0)
}

#[test]
fn a_batch_is_stored_whole_or_not_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    let mut batch: Vec<NewJob> = (0..5).map(|n| job(n, None)).collect();
    batch[4].id = batch[0].id.clone();
    assert!(
        store.insert(&batch, 0).is_err(),
        "a duplicate id fails the batch"
    );
    assert!(
        store.counts("crm").expect("counts").is_empty(),
        "and nothing of it is stored"
    );
    batch.pop();
    store.insert(&batch, 0).expect("insert");
    assert_eq!(count(&store, JobStatus::Available), 4);
}

#[test]
fn each_due_job_is_claimed_once_and_a_later_one_when_its_time_comes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    let mut batch: Vec<NewJob> = (0..10).map(|n| job(n, None)).collect();
    batch.push(job(10, Some(5_000)));
    store.insert(&batch, 0).expect("insert");
    assert_eq!(count(&store, JobStatus::Scheduled), 1);

    let first = store.claim("crm", 4, 10, LEASE).expect("claim");
    let rest = store.claim("crm", 100, 10, LEASE).expect("claim");
    assert_eq!((first.len(), rest.len()), (4, 6));
    let mut numbers: Vec<u64> = first
        .iter()
        .chain(&rest)
        .map(|claimed| claimed.payload["n"].as_u64().expect("n"))
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..10).collect::<Vec<_>>(), "every due job once");
    assert!(
        store
            .claim("crm", 100, 10, LEASE)
            .expect("claim")
            .is_empty()
    );
    assert!(
        store
            .claim("other", 100, 10, LEASE)
            .expect("claim")
            .is_empty()
    );

    let later = store.claim("crm", 100, 5_000, LEASE).expect("claim");
    let numbers: Vec<_> = later
        .iter()
        .map(|claimed| claimed.payload["n"].clone())
        .collect();
    assert!(
        numbers.contains(&serde_json::json!(10)),
        "the scheduled job is due at 5,000"
    );
}

#[test]
fn a_job_whose_claimer_died_is_taken_up_and_the_stale_claimer_is_fenced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    store.insert(&[job(1, None)], 0).expect("insert");
    let stale = store.claim("crm", 1, 0, LEASE).expect("claim").remove(0);
    assert!(
        store.claim("crm", 1, 500, LEASE).expect("claim").is_empty(),
        "leased"
    );
    assert!(
        store.heartbeat(&stale, 900, LEASE).expect("heartbeat"),
        "the owner extends"
    );
    assert!(
        store
            .claim("crm", 1, 1_500, LEASE)
            .expect("claim")
            .is_empty(),
        "extended to 1,900"
    );

    let taken = store
        .claim("crm", 1, 2_000, LEASE)
        .expect("claim")
        .remove(0);
    assert_eq!(taken.id, stale.id);
    assert_eq!((taken.attempt, taken.token), (2, stale.token + 1));
    assert!(!store.heartbeat(&stale, 2_100, LEASE).expect("heartbeat"));
    assert!(
        !settle_one(&store, &stale, Settlement::Succeeded, 2_200),
        "a claimer paused past its lease cannot settle the job"
    );
    assert_eq!(
        count(&store, JobStatus::Running),
        1,
        "the stale settlement changed nothing"
    );
    assert!(settle_one(&store, &taken, Settlement::Succeeded, 2_300));

    let record = store.get(&taken.id).expect("get").expect("job");
    assert_eq!(record.status, JobStatus::Succeeded);
    assert_eq!(record.version.as_deref(), Some("2"));
    let fenced: Vec<bool> = record.attempts.iter().map(|(_, fenced)| *fenced).collect();
    assert_eq!(
        fenced,
        vec![true, false],
        "the duplicate attempt is on record, fenced"
    );
}

#[test]
fn a_failed_job_waits_for_its_retry_time_then_is_discarded_and_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    store.insert(&[job(1, None)], 0).expect("insert");
    let first = store.claim("crm", 1, 0, LEASE).expect("claim").remove(0);
    assert!(settle_one(
        &store,
        &first,
        Settlement::Retry { at: 5_000 },
        10
    ));
    let record = store.get(&first.id).expect("get").expect("job");
    assert_eq!(
        (record.status, record.next_attempt_at),
        (JobStatus::Retrying, 5_000)
    );
    assert_eq!(record.last_error.as_deref(), Some("503 from the receiver"));
    assert!(
        store
            .claim("crm", 1, 4_999, LEASE)
            .expect("claim")
            .is_empty()
    );

    let second = store
        .claim("crm", 1, 5_000, LEASE)
        .expect("claim")
        .remove(0);
    assert_eq!(second.attempt, 2);
    assert!(settle_one(&store, &second, Settlement::Discarded, 5_010));
    assert_eq!(count(&store, JobStatus::Discarded), 1);
    assert!(
        store
            .claim("crm", 1, 99_999, LEASE)
            .expect("claim")
            .is_empty(),
        "a dead letter waits"
    );

    assert!(store.replay(&second.id, 6_000).expect("replay"));
    assert!(
        !store.replay(&second.id, 6_000).expect("replay"),
        "only a dead letter replays"
    );
    let third = store
        .claim("crm", 1, 6_000, LEASE)
        .expect("claim")
        .remove(0);
    assert_eq!(third.attempt, 1, "a replay gets a fresh budget of retries");
    assert_eq!(
        store
            .get(&third.id)
            .expect("get")
            .expect("job")
            .attempts
            .len(),
        2
    );
}

#[test]
fn cancelling_a_running_job_fences_its_claimer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    store.insert(&[job(1, None)], 0).expect("insert");
    let claimed = store.claim("crm", 1, 0, LEASE).expect("claim").remove(0);
    assert!(store.cancel(&claimed.id, 10).expect("cancel"));
    assert!(
        !store.cancel(&claimed.id, 10).expect("cancel"),
        "already ended"
    );
    assert!(!settle_one(&store, &claimed, Settlement::Succeeded, 20));
    assert_eq!(count(&store, JobStatus::Cancelled), 1);
    assert!(
        store
            .claim("crm", 1, 99_999, LEASE)
            .expect("claim")
            .is_empty()
    );
}

#[test]
fn stored_and_running_jobs_are_there_after_the_store_is_opened_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ids: Vec<JobId> = {
        let store = store(&dir);
        let batch: Vec<NewJob> = (0..100).map(|n| job(n, None)).collect();
        store.insert(&batch, 0).expect("insert");
        store.claim("crm", 10, 0, LEASE).expect("claim");
        batch.into_iter().map(|job| job.id).collect()
    };
    let store = store(&dir);
    assert_eq!(count(&store, JobStatus::Available), 90);
    assert_eq!(count(&store, JobStatus::Running), 10);
    let taken_up = store.claim("crm", 1_000, 2_000, LEASE).expect("claim");
    assert_eq!(
        taken_up.len(),
        100,
        "the running ones come back once their lease is out"
    );
    for id in &ids {
        assert!(store.get(id).expect("get").is_some());
    }
}

#[test]
fn listings_page_by_cursor_and_filter_and_dead_letters_replay_in_bulk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    let batch: Vec<NewJob> = (0..5).map(|n| job(n, None)).collect();
    store.insert(&batch, 0).expect("insert");
    for claimed in store.claim("crm", 3, 0, LEASE).expect("claim") {
        assert!(settle_one(&store, &claimed, Settlement::Discarded, 10));
    }
    let discarded = JobFilter {
        destination: Some("crm".to_owned()),
        status: Some(JobStatus::Discarded),
        ..JobFilter::default()
    };
    let first = store.list(&discarded, 2, None).expect("list");
    assert_eq!(first.jobs.len(), 2);
    let cursor = first.next_cursor.expect("a full page has a cursor");
    let second = store.list(&discarded, 2, Some(&cursor)).expect("list");
    assert_eq!(second.jobs.len(), 1);
    assert!(second.next_cursor.is_none());
    assert!(first.jobs[1].id < second.jobs[0].id, "in id order");
    assert_eq!(
        second.jobs[0].payload["n"].as_u64().map(|n| n < 5),
        Some(true)
    );
    assert_eq!(second.jobs[0].context["connector"], "web");

    assert_eq!(store.replay_matching(&discarded, 20).expect("replay"), 3);
    assert_eq!(count(&store, JobStatus::Available), 5);
    assert!(
        store
            .list(&discarded, 10, None)
            .expect("list")
            .jobs
            .is_empty()
    );
}

#[test]
fn succeeded_jobs_are_pruned_in_batches_and_a_deleted_job_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(&dir);
    let batch: Vec<NewJob> = (0..5).map(|n| job(n, None)).collect();
    store.insert(&batch, 0).expect("insert");
    for claimed in store.claim("crm", 4, 0, LEASE).expect("claim") {
        assert!(settle_one(&store, &claimed, Settlement::Succeeded, 100));
    }
    assert_eq!(
        store.prune_succeeded(100, 10).expect("prune"),
        0,
        "not yet old enough"
    );
    assert_eq!(
        store.prune_succeeded(101, 3).expect("prune"),
        3,
        "a batch at most"
    );
    assert_eq!(store.prune_succeeded(101, 3).expect("prune"), 1);
    assert_eq!(count(&store, JobStatus::Succeeded), 0);
    assert_eq!(count(&store, JobStatus::Available), 1, "pending jobs stay");

    let tally = store.tally().expect("tally");
    assert_eq!(
        tally,
        vec![(
            "crm".to_owned(),
            "identify".to_owned(),
            JobStatus::Available,
            1
        )]
    );
    let last = &batch[4].id;
    assert!(store.delete(last).expect("delete"));
    assert!(store.get(last).expect("get").is_none());
    assert!(!store.delete(last).expect("delete"), "already gone");
}
