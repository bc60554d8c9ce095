//! Several engines sharing one PostgreSQL job store: 10,000 jobs loaded by two engines with
//! no job loaded by both at once, and an engine stopped (SIGSTOP) past its lease whose late
//! completion is refused (fenced) while the other engine delivered the job. And a
//! `postgres` destination (over TLS) whose upserts add no row when jobs for the same rows come again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(120);
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// PostgreSQL is reachable, or the test should be skipped (it fails instead when services
/// are required).
fn postgres_available() -> bool {
    if std::net::TcpStream::connect_timeout(
        &"127.0.0.1:5432".parse().expect("address"),
        Duration::from_secs(2),
    )
    .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var("TIGHTBEAM_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "PostgreSQL on 127.0.0.1:5432 is unreachable and TIGHTBEAM_REQUIRE_SERVICES=1"
    );
    println!("skipping: PostgreSQL on 127.0.0.1:5432 is unreachable");
    false
}

/// A schema of its own for one test, dropped at the end.
struct Schema(String);

impl Schema {
    fn new() -> Self {
        Self(format!("tb_e2e_{}_{}", std::process::id(), free_port()))
    }

    fn url(&self) -> String {
        format!("{POSTGRES}?schema={}", self.0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0));
    }
}

/// Runs `sql` with psql on the test database; its output, unaligned and without headers.
fn psql(sql: &str) -> String {
    let output = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-qtA",
            "-c",
            sql,
        ])
        .output()
        .expect("psql");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Requests by idempotency key, which node sent them, and any key loaded by two at once.
#[derive(Clone, Default)]
struct Receiver {
    in_flight: Arc<Mutex<BTreeSet<String>>>,
    delivered: Arc<Mutex<Vec<(String, String)>>>,
    overlaps: Arc<Mutex<Vec<String>>>,
    /// Requests to this path wait until it is emptied (the first of them only).
    stall: Arc<Mutex<Option<String>>>,
    release: Arc<tokio::sync::Notify>,
}

impl Receiver {
    async fn serve(&self) -> u16 {
        let receiver = self.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
                let receiver = receiver.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let (key, node) = (header("idempotency-key"), header("x-node"));
                    if !receiver.in_flight.lock().expect("lock").insert(key.clone()) {
                        receiver.overlaps.lock().expect("lock").push(key.clone());
                    }
                    let stalled = {
                        let mut stall = receiver.stall.lock().expect("lock");
                        let hit = stall.as_deref() == Some(uri.path());
                        if hit {
                            *stall = None;
                        }
                        hit
                    };
                    if stalled {
                        receiver.release.notified().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    receiver.in_flight.lock().expect("lock").remove(&key);
                    receiver.delivered.lock().expect("lock").push((key, node));
                    "ok"
                }
            },
        );
        serve_app(app, 0).await
    }
}

struct Node {
    child: std::process::Child,
    http_port: u16,
    api_port: u16,
}

fn node(dir: &std::path::Path, name: &str, store: &str, receiver: u16, lease: &str) -> Node {
    let (http_port, api_port) = (free_port(), free_port());
    let config = format!(
        r#"data_dir = "data-{name}"
shutdown_grace = "10s"

[api]
address = "127.0.0.1:{api_port}"

[store]
url = "{store}"

[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"

[destinations.crm]
kind = "http"
url = "http://127.0.0.1:{receiver}"
headers = {{ x-node = "{name}" }}
lease = "{lease}"
concurrency = 16
inputs = ["web"]
path = "/users/{{{{ .n }}}}"
"#
    );
    let path = write(dir, &format!("{name}.toml"), &config);
    let mut child = start(dir, &path);
    wait_for_port(&mut child, http_port, LIMIT);
    Node {
        child,
        http_port,
        api_port,
    }
}

async fn post_events(client: &reqwest::Client, port: u16, numbers: std::ops::Range<u64>) {
    let body: Vec<String> = numbers.map(|n| format!(r#"{{"n": {n}}}"#)).collect();
    let status = client
        .post(format!("http://127.0.0.1:{port}/"))
        .body(format!("[{}]", body.join(",")))
        .send()
        .await
        .expect("post")
        .status();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn two_engines_on_one_postgres_store_load_every_job_and_never_one_twice_at_once() {
    if !postgres_available() {
        return;
    }
    let schema = Schema::new();
    let receiver = Receiver::default();
    let receiver_port = receiver.serve().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "a", &schema.url(), receiver_port, "15s");
    let b = node(dir.path(), "b", &schema.url(), receiver_port, "15s");
    let client = http_client();
    const EVENTS: u64 = 10_000;
    let started = std::time::Instant::now();
    // Half the events come in through each engine; either may load any job.
    for chunk in 0..(EVENTS / 500) {
        let port = if chunk % 2 == 0 {
            a.http_port
        } else {
            b.http_port
        };
        post_events(&client, port, chunk * 500..(chunk + 1) * 500).await;
    }
    let delivered = wait_until("every job is delivered", LIMIT, || {
        let delivered = receiver.delivered.lock().expect("lock").clone();
        let keys: BTreeSet<String> = delivered.iter().map(|(key, _)| key.clone()).collect();
        async move { (keys.len() as u64 == EVENTS).then_some(delivered) }
    })
    .await;
    let mut by_node: BTreeMap<String, u64> = BTreeMap::new();
    for (_, node) in &delivered {
        *by_node.entry(node.clone()).or_default() += 1;
    }
    let overlaps = receiver.overlaps.lock().expect("lock").clone();
    println!(
        "two engines, one PostgreSQL store: {EVENTS} jobs in {:.1} s; loads by node {by_node:?}; {} duplicates; {} loaded twice at once",
        started.elapsed().as_secs_f64(),
        delivered.len() as u64 - EVENTS,
        overlaps.len()
    );
    assert!(
        overlaps.is_empty(),
        "jobs loaded by two at once: {overlaps:?}"
    );
    assert_eq!(
        delivered.len() as u64,
        EVENTS,
        "no job loaded twice when nothing fails"
    );
    assert!(by_node.len() == 2, "both engines loaded jobs: {by_node:?}");
    stop_and_expect_drained(a.child, LIMIT);
    stop_and_expect_drained(b.child, LIMIT);
}

#[tokio::test]
async fn an_engine_stopped_past_its_lease_cannot_complete_the_job_the_other_engine_took() {
    if !postgres_available() {
        return;
    }
    let schema = Schema::new();
    let receiver = Receiver::default();
    *receiver.stall.lock().expect("lock") = Some("/users/1".to_owned());
    let receiver_port = receiver.serve().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node(dir.path(), "a", &schema.url(), receiver_port, "2s");
    let client = http_client();
    post_events(&client, a.http_port, 1..2).await;
    wait_until(
        "engine a is loading the job (its request stalls)",
        LIMIT,
        || {
            let stalled = receiver.stall.lock().expect("lock").is_none();
            async move { stalled.then_some(()) }
        },
    )
    .await;
    let pid = a.child.id().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("-STOP");
    // Engine b starts after a stopped, and takes the job up once a's lease has run out.
    let b = node(dir.path(), "b", &schema.url(), receiver_port, "2s");
    wait_until("engine b delivers the job", LIMIT, || {
        let by_b = receiver
            .delivered
            .lock()
            .expect("lock")
            .iter()
            .any(|(_, node)| node == "b");
        async move { by_b.then_some(()) }
    })
    .await;
    receiver.release.notify_one();
    signal("-CONT");
    let api = format!("http://127.0.0.1:{}", b.api_port);
    let job = wait_until("a's late completion is on record, fenced", LIMIT, || {
        let (client, api) = (client.clone(), api.clone());
        async move {
            let (_, page) = get_json(&client, &format!("{api}/api/v1/jobs")).await;
            let id = page["jobs"][0]["id"].as_str()?.to_owned();
            let (_, job) = get_json(&client, &format!("{api}/api/v1/jobs/{id}")).await;
            (job["attempts"].as_array()?.len() == 2).then_some(job)
        }
    })
    .await;
    assert_eq!(job["status"], "succeeded");
    let fenced: Vec<bool> = job["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|attempt| attempt["fenced"].as_bool().expect("fenced"))
        .collect();
    assert_eq!(
        fenced,
        vec![false, true],
        "b's attempt counts; a's late one is fenced: {job}"
    );
    stop_and_expect_drained(a.child, LIMIT);
    stop_and_expect_drained(b.child, LIMIT);
}

/// A `postgres` destination checks its settings at start: a table or a role that does not
/// exist is its run's error, with the database's words, in the topology API; it is not left
/// to the first job.
#[tokio::test]
async fn a_postgres_destination_with_a_missing_table_or_role_fails_at_start_saying_why() {
    if !postgres_available() {
        return;
    }
    let schema = Schema::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, api_port) = (free_port(), free_port());
    let stranger = POSTGRES.replace("postgres@", "tb_no_such_role@");
    let config = format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"

[destinations.missing]
kind = "postgres"
url = "{POSTGRES}"
table = "{schema}.no_such_table"
inputs = ["web"]

[destinations.stranger]
kind = "postgres"
url = "{stranger}"
table = "public.anything"
inputs = ["web"]
"#,
        schema = schema.0
    );
    let path = write(dir.path(), "refused.toml", &config);
    let mut child = start(dir.path(), &path);
    wait_for_port(&mut child, api_port, LIMIT);
    let client = http_client();
    for (id, words) in [
        ("missing", "no_such_table\" does not exist"),
        ("stranger", "role \"tb_no_such_role\" does not exist"),
    ] {
        let found = wait_until(&format!("{id} refused at start"), LIMIT, || {
            let client = client.clone();
            async move {
                let destination = component(&client, api_port, id).await;
                destination["last_error"]
                    .as_str()
                    .filter(|error| error.contains(words))
                    .map(str::to_owned)
            }
        })
        .await;
        assert!(found.contains("cannot load into"), "{found}");
    }
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn a_postgres_destination_upserts_so_jobs_loaded_again_add_no_rows() {
    if !postgres_available() {
        return;
    }
    let schema = Schema::new();
    let table = format!("{}.users", schema.0);
    psql(&format!(
        "CREATE SCHEMA {}; CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL, plan text)",
        schema.0
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, api_port) = (free_port(), free_port());
    let application = format!("{}_loader", schema.0);
    let config = format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"

[destinations.warehouse]
kind = "postgres"
url = "{POSTGRES}?sslmode=require&application_name={application}"
table = "{table}"
key = ["id"]
batch_size = 100
inputs = ["web"]
marshal = '{{ "id": .user_id, "name": .name, "plan": .plan }}'
"#
    );
    let path = write(dir.path(), "warehouse.toml", &config);
    let mut child = start(dir.path(), &path);
    wait_for_port(&mut child, http_port, LIMIT);
    let client = http_client();
    let post_plan = |plan: &'static str, with_bad_row: bool| {
        let client = client.clone();
        async move {
            let mut rows: Vec<String> = (0..500)
                .map(|n| format!(r#"{{"user_id": {n}, "name": "n{n}", "plan": "{plan}"}}"#))
                .collect();
            if with_bad_row {
                rows.insert(
                    250,
                    r#"{"user_id": 9999, "name": null, "plan": "x"}"#.to_owned(),
                );
            }
            let response = client
                .post(format!("http://127.0.0.1:{http_port}/"))
                .body(format!("[{}]", rows.join(",")))
                .send()
                .await
                .expect("post");
            assert_eq!(response.status(), 200);
        }
    };
    let rows_with = |plan: &'static str| {
        let table = table.clone();
        move || {
            let found = psql(&format!(
                "SELECT count(*), count(*) FILTER (WHERE plan = '{plan}') FROM {table}"
            ));
            async move { (found == "500|500").then_some(()) }
        }
    };
    post_plan("a", true).await;
    wait_until("500 rows of plan a", LIMIT, rows_with("a")).await;
    // The same rows again, as a redelivery would bring them: updated, not added.
    post_plan("b", false).await;
    wait_until("the same 500 rows, now of plan b", LIMIT, rows_with("b")).await;

    // The row that broke NOT NULL was loaded alone and discarded; its batch went through.
    let api = format!("http://127.0.0.1:{api_port}");
    let (_, page) = get_json(&client, &format!("{api}/api/v1/jobs?status=discarded")).await;
    let dead = page["jobs"].as_array().expect("jobs");
    assert_eq!(dead.len(), 1, "{page}");
    assert_eq!(dead[0]["payload"]["id"], 9999);
    assert!(
        dead[0]["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("null value")),
        "{page}"
    );
    // `sslmode=require`: the loader's connections are encrypted.
    let encrypted = psql(&format!(
        "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.application_name = '{application}'"
    ));
    assert!(
        encrypted.ends_with("|t") && !encrypted.starts_with("0|"),
        "{encrypted}"
    );
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn killing_the_engines_database_connections_under_load_loses_nothing() {
    if !postgres_available() {
        return;
    }
    let schema = Schema::new();
    let receiver = Receiver::default();
    let receiver_port = receiver.serve().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("{}&application_name=tb_kill_{}", schema.url(), schema.0);
    let a = node(dir.path(), "a", &store, receiver_port, "2s");
    let client = http_client();
    const EVENTS: u64 = 5_000;
    let killing = tokio::spawn({
        let name = format!("tb_kill_{}", schema.0);
        async move {
            let mut kills = 0;
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let killed = psql(&format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{name}'"
                ));
                kills += killed.parse::<u32>().unwrap_or(0);
            }
            kills
        }
    });
    // A source sends again what was not acknowledged (a 503 while the store was away).
    let mut acknowledged = BTreeSet::new();
    let mut refused = 0;
    for chunk in 0..(EVENTS / 100) {
        let numbers = chunk * 100..(chunk + 1) * 100;
        for _ in 0..100 {
            let body: Vec<String> = numbers
                .clone()
                .map(|n| format!(r#"{{"n": {n}}}"#))
                .collect();
            let status = client
                .post(format!("http://127.0.0.1:{}/", a.http_port))
                .body(format!("[{}]", body.join(",")))
                .send()
                .await
                .expect("post")
                .status();
            if status == 200 {
                acknowledged.extend(numbers.clone());
                break;
            }
            refused += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let kills = killing.await.expect("killer");
    assert_eq!(
        acknowledged.len() as u64,
        EVENTS,
        "every event acknowledged in the end"
    );
    let delivered = wait_until("every acknowledged job is delivered", LIMIT, || {
        let paths: BTreeSet<String> = receiver
            .delivered
            .lock()
            .expect("lock")
            .iter()
            .map(|(key, _)| key.clone())
            .collect();
        async move { (paths.len() as u64 == EVENTS).then_some(paths.len()) }
    })
    .await;
    let requests = receiver.delivered.lock().expect("lock").len();
    println!(
        "{kills} database connections killed under load: {EVENTS} events acknowledged ({refused} requests refused and sent again), {delivered} jobs delivered, {} duplicates",
        requests - delivered
    );
    assert!(kills > 0, "the test killed no connection");
    stop_and_expect_drained(a.child, LIMIT);
}
