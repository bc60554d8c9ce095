//! The SQLite job store's cost per job on durable delivery's hot path: a batch of jobs
//! stored, claimed, and settled as succeeded (with its attempt recorded), the life of a job
//! delivered at its first attempt. Throughput is in jobs. Payloads are the standard ~224-byte
//! sensor event (W3's), contexts as a destination writes them.
//!
//! The same through [`Store`] with the jobs stored in groups of 100, as a destination with
//! `batch_size = 100` stores them (`sqlite_grouped_job_lifecycle`).
//!
//! `cargo bench -p tb-store`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tb_store::{
    Attempt, ClaimKey, Claimed, Durability, JobId, JsonText, NewJob, Settlement, SqliteStore,
    Store, StoreLocation,
};

/// Jobs per batch: about what one group commit of W3 holds.
const BATCH: usize = 800;
const LEASE_MS: i64 = 15_000;

fn payload(sequence: usize) -> JsonText {
    JsonText::from_trusted(format!(
        concat!(
            r#"{{"ts":"2026-11-22T10:00:00.000Z","sensor_id":"s-0042","kind":"temp","reading":12.345,"#,
            r#""unit":"C","site":"plant-3","tags":["alpha","bravo"],"seq":{},"#,
            r#""note":"alpha bravo charlie delta echo foxtrot golf hotel india juliet","processed":true}}"#,
        ),
        sequence
    ))
}

fn batch(first: usize) -> Vec<NewJob> {
    (first..first + BATCH)
        .map(|sequence| NewJob {
            id: JobId::new(),
            destination: "receiver".to_owned(),
            action: "default".to_owned(),
            version: None,
            payload: payload(sequence),
            context: JsonText::from_value(&serde_json::json!({
                "connector": "ingest",
                "received_at": "2026-11-22T10:00:00.000000000+00:00",
                "path": "/events",
            })),
            run_at: None,
        })
        .collect()
}

/// `job`'s first attempt, succeeded at `now`.
fn succeeded(job: &Claimed, now: i64) -> (ClaimKey, Settlement, Attempt) {
    (
        job.key(),
        Settlement::Succeeded,
        Attempt {
            started_at: now,
            duration_ms: 1,
            code: Some(200),
            error: None,
            body_excerpt: None,
        },
    )
}

/// Stores, claims and settles `iterations` batches; the time spent in the store.
fn lifecycle(store: &SqliteStore, iterations: u64, now: &mut i64) -> Duration {
    let mut spent = Duration::ZERO;
    for iteration in 0..iterations {
        let jobs = batch(iteration as usize * BATCH);
        *now += 1;
        let started = Instant::now();
        store.insert(&jobs, *now).expect("insert");
        let claimed = store
            .claim("receiver", BATCH as u32, *now, LEASE_MS)
            .expect("claim");
        assert_eq!(claimed.len(), BATCH);
        let settled: Vec<_> = claimed.iter().map(|job| succeeded(job, *now)).collect();
        store.settle(&settled, *now).expect("settle");
        spent += started.elapsed();
    }
    spent
}

fn job_lifecycle(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("sqlite_job_lifecycle");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, durability) in [("full", Durability::Full), ("normal", Durability::Normal)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("jobs.db"), durability).expect("open");
        let mut now = 1_000_000;
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| lifecycle(&store, iterations, &mut now));
        });
    }
    group.finish();
}

/// As [`lifecycle`], through [`Store`] with the jobs of each batch stored in groups of
/// `GROUP` (as a destination with `batch_size = 100` stores them), settled a group at a time.
fn grouped_lifecycle(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    iterations: u64,
    now: &mut i64,
) -> Duration {
    let mut spent = Duration::ZERO;
    for iteration in 0..iterations {
        let jobs = batch(iteration as usize * BATCH);
        *now += 1;
        let at = *now;
        let started = Instant::now();
        runtime.block_on(async {
            store
                .insert_claiming(jobs, at, None, GROUP)
                .await
                .expect("insert");
            let claimed = store
                .claim("receiver", BATCH as u32, at, LEASE_MS)
                .await
                .expect("claim");
            assert_eq!(claimed.len(), BATCH);
            let settled = claimed.iter().map(|job| succeeded(job, at)).collect();
            store.settle(settled, at).await.expect("settle");
        });
        spent += started.elapsed();
    }
    spent
}

/// Jobs per group in [`grouped_lifecycle`].
const GROUP: usize = 100;

fn grouped_job_lifecycle(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("sqlite_grouped_job_lifecycle");
    group.throughput(Throughput::Elements(BATCH as u64));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for (name, durability) in [("full", Durability::Full), ("normal", Durability::Normal)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = StoreLocation::Sqlite(dir.path().join("jobs.db"));
        let store = runtime
            .block_on(Store::open(&location, durability))
            .expect("open");
        let mut now = 1_000_000;
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| {
                grouped_lifecycle(&runtime, &store, iterations, &mut now)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, job_lifecycle, grouped_job_lifecycle);
criterion_main!(benches);
