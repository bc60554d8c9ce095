//! Durable delivery end to end, against the real binary and a local receiver that can be
//! told to fail: retries then success, a permanent failure dead-lettered and replayed through
//! the API, Standard Webhooks signatures checked by the `standardwebhooks` library, and a
//! kill -9 with jobs pending whose restart delivers every one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
    answered: u16,
    at: std::time::Instant,
}

/// A receiver that answers each path with the next code of its script (then 200), and
/// records every request.
#[derive(Clone, Default)]
struct Receiver {
    scripts: Arc<Mutex<BTreeMap<String, Vec<u16>>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn script(&self, path: &str, codes: &[u16]) {
        self.scripts
            .lock()
            .expect("lock")
            .insert(path.to_owned(), codes.iter().rev().copied().collect());
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    fn to(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|request| request.path == path)
            .collect()
    }

    async fn serve(&self) -> u16 {
        self.serve_on(0).await
    }

    async fn serve_on(&self, port: u16) -> u16 {
        let receiver = self.clone();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: String| {
                let receiver = receiver.clone();
                async move {
                    let path = uri.path().to_owned();
                    let code = receiver
                        .scripts
                        .lock()
                        .expect("lock")
                        .get_mut(&path)
                        .and_then(Vec::pop)
                        .unwrap_or(200);
                    let headers = headers
                        .iter()
                        .map(|(name, value)| {
                            (
                                name.to_string(),
                                value.to_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect();
                    receiver.received.lock().expect("lock").push(Received {
                        method: method.to_string(),
                        path,
                        headers,
                        body,
                        answered: code,
                        at: std::time::Instant::now(),
                    });
                    let status = axum::http::StatusCode::from_u16(code).expect("code");
                    (status, format!("answer {code}"))
                }
            },
        );
        serve_app(app, port).await
    }
}

/// The engine under test, started on a config sending to `receiver_port`.
struct Engine {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    child: std::process::Child,
    http_port: u16,
    api_port: u16,
}

/// Retries of the tests: three, quickly, so that a discard comes soon.
const FEW_RETRIES: &str =
    r#"{ max_retries = 3, initial_backoff = "200ms", max_backoff = "1s", jitter = false }"#;

impl Engine {
    fn start(receiver_port: u16) -> Self {
        Self::start_with(receiver_port, "", "")
    }

    /// With `extra` keys on destination `crm` and `tail` after its action `identify`.
    fn start_with(receiver_port: u16, extra: &str, tail: &str) -> Self {
        Self::start_retrying(receiver_port, FEW_RETRIES, extra, tail)
    }

    /// As [`Engine::start_with`], with the destination's `retry`.
    fn start_retrying(receiver_port: u16, retry: &str, extra: &str, tail: &str) -> Self {
        Self::start_config(|http_port, api_port| {
            config(http_port, api_port, receiver_port, retry, extra) + tail
        })
    }

    /// On the config `text` makes of its HTTP and API ports.
    fn start_config(text: impl FnOnce(u16, u16) -> String) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (http_port, api_port) = (free_port(), free_port());
        let path = write(dir.path(), "crm.toml", &text(http_port, api_port));
        let mut child = start(dir.path(), &path);
        wait_for_port(&mut child, http_port, LIMIT);
        Self {
            dir,
            path,
            child,
            http_port,
            api_port,
        }
    }
}

/// The engine's API and its `web` HTTP source, before any destination.
fn head(http_port: u16, api_port: u16) -> String {
    format!(
        r#"data_dir = "data"
shutdown_grace = "5s"

[api]
address = "127.0.0.1:{api_port}"

[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
"#
    )
}

fn config(http_port: u16, api_port: u16, receiver: u16, retry: &str, extra: &str) -> String {
    head(http_port, api_port)
        + &format!(
            r#"
[destinations.crm]
kind = "http"
url = "http://127.0.0.1:{receiver}"
retry = {retry}
signing = {{ secret = "{SECRET}" }}
{extra}
[destinations.crm.actions.identify]
inputs = ["web"]
marshal = '{{ "id": .user_id, "traits": .traits }}'
method = "PUT"
path = "/users/{{{{ .user_id }}}}"
"#
        )
}

async fn post(client: &reqwest::Client, port: u16, body: String) -> u16 {
    client
        .post(format!("http://127.0.0.1:{port}/"))
        .body(body)
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

async fn api_post(
    client: &reqwest::Client,
    api_port: u16,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = client
        .post(format!("http://127.0.0.1:{api_port}{path}"))
        .json(&body)
        .send()
        .await
        .expect("api post");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn a_job_is_retried_until_it_succeeds_and_a_dead_letter_is_replayed_through_the_api() {
    let receiver = Receiver::default();
    receiver.script("/users/1", &[503, 500]);
    receiver.script("/users/2", &[422]);
    let receiver_port = receiver.serve().await;
    let Engine {
        dir: _dir,
        path: _path,
        child,
        http_port,
        api_port,
    } = Engine::start(receiver_port);
    let client = http_client();

    let body = r#"[{"user_id": 1, "traits": {"plan": "pro"}}, {"user_id": 2, "traits": {}}]"#;
    assert_eq!(
        post(&client, http_port, body.to_owned()).await,
        200,
        "stored, so acknowledged"
    );

    let attempts = wait_until("user 1 is delivered on its third attempt", LIMIT, || {
        let found = receiver.to("/users/1");
        async move { (found.last().map(|last| last.answered) == Some(200)).then_some(found) }
    })
    .await;
    let codes: Vec<u16> = attempts.iter().map(|request| request.answered).collect();
    assert_eq!(codes, vec![503, 500, 200]);
    let first = &attempts[0];
    assert_eq!(first.method, "PUT");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&first.body).expect("json"),
        serde_json::json!({"id": 1, "traits": {"plan": "pro"}})
    );
    let keys: BTreeSet<&String> = attempts
        .iter()
        .map(|request| &request.headers["idempotency-key"])
        .collect();
    assert_eq!(keys.len(), 1, "one idempotency key across retries");
    assert_eq!(
        attempts[2].headers["webhook-id"],
        attempts[0].headers["webhook-id"]
    );

    // User 2 was refused for good (422): a dead letter, with its attempt on record.
    let api = format!("http://127.0.0.1:{api_port}");
    let (_, page) = get_json(
        &client,
        &format!("{api}/api/v1/jobs?destination=crm&status=discarded"),
    )
    .await;
    let dead = page["jobs"].as_array().expect("jobs").clone();
    assert_eq!(dead.len(), 1, "{page}");
    assert!(
        dead[0].get("attempts").is_none(),
        "a listing leaves attempts out"
    );
    let id = dead[0]["id"].as_str().expect("id").to_owned();
    let (status, job) = get_json(&client, &format!("{api}/api/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(job["context"]["path"], "/users/2");
    assert_eq!(job["attempts"][0]["code"], 422);
    assert_eq!(job["attempts"][0]["body_excerpt"], "answer 422");
    assert_eq!(receiver.to("/users/2").len(), 1, "a 422 is not retried");

    // Retrying a job that is not a dead letter is refused; the dead letter goes again.
    // The CLI calls the same API.
    let api_address = format!("127.0.0.1:{api_port}");
    let listed = run_to_end(
        std::path::Path::new("."),
        &[
            "jobs",
            "list",
            "--status",
            "discarded",
            "--api",
            &api_address,
        ],
        LIMIT,
    );
    assert!(listed.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed["jobs"][0]["id"], id.as_str());
    let shown = run_to_end(
        std::path::Path::new("."),
        &["jobs", "show", &id, "--api", &api_address],
        LIMIT,
    );
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("json");
    assert_eq!(shown["attempts"][0]["code"], 422);
    let (_, succeeded) = get_json(&client, &format!("{api}/api/v1/jobs?status=succeeded")).await;
    let done_id = succeeded["jobs"][0]["id"]
        .as_str()
        .expect("a succeeded job")
        .to_owned();
    let (status, _) = api_post(
        &client,
        api_port,
        &format!("/api/v1/jobs/{done_id}/retry"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 409);
    let refused = run_to_end(
        std::path::Path::new("."),
        &["jobs", "retry", &done_id, "--api", &api_address],
        LIMIT,
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("409"),
        "{refused:?}"
    );
    let (status, _) = api_post(
        &client,
        api_port,
        &format!("/api/v1/jobs/{id}/retry"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200);
    wait_until("the replayed job is delivered", LIMIT, || {
        let delivered = receiver
            .to("/users/2")
            .iter()
            .any(|request| request.answered == 200);
        async move { delivered.then_some(()) }
    })
    .await;
    let (_, destinations) = get_json(&client, &format!("{api}/api/v1/destinations")).await;
    let crm = &destinations["destinations"][0];
    assert_eq!(crm["circuit"], "closed");
    let metrics = metrics_text(&client, api_port).await;
    assert!(
        metrics.contains(r#"tightbeam_destination_circuit_open{destination="crm"} 0"#),
        "the circuit shows before it ever opens: {metrics}"
    );
    wait_until("both jobs show as succeeded", LIMIT, || {
        let client = client.clone();
        let api = api.clone();
        async move {
            let (_, destinations) = get_json(&client, &format!("{api}/api/v1/destinations")).await;
            (destinations["destinations"][0]["jobs"]["succeeded"] == 2).then_some(())
        }
    })
    .await;
    let metrics = metrics_text(&client, api_port).await;
    assert!(
        metrics.contains(
            r#"tightbeam_jobs_total{destination="crm",action="identify",status="retrying"} 2"#
        ),
        "{metrics}"
    );
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn signatures_verify_with_the_standard_webhooks_library() {
    let check = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output();
    if !check.is_ok_and(|output| output.status.success()) {
        assert!(
            std::env::var("TIGHTBEAM_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "the Python package standardwebhooks is missing (pip install standardwebhooks)"
        );
        println!("skipping: the Python package standardwebhooks is not installed");
        return;
    }
    let receiver = Receiver::default();
    let receiver_port = receiver.serve().await;
    let Engine {
        dir: _dir,
        path: _path,
        child,
        http_port,
        ..
    } = Engine::start(receiver_port);
    let client = http_client();
    let body = r#"{"user_id": "a b/ü", "traits": {"x": "\u00e9\"q"}}"#;
    assert_eq!(post(&client, http_port, body.to_owned()).await, 200);
    let request = wait_until("the receiver has the request", LIMIT, || {
        let found = receiver.received().into_iter().next();
        async move { found }
    })
    .await;
    assert_eq!(
        request.path, "/users/a%20b%2F%C3%BC",
        "the value stays in its segment"
    );
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
request = json.load(sys.stdin)
Webhook(request["secret"]).verify(request["body"], request["headers"])
try:
    Webhook("whsec_" + "QUJD" * 8).verify(request["body"], request["headers"])
except Exception:
    print("verified; a wrong secret fails")
"#;
    let input =
        serde_json::json!({ "secret": SECRET, "body": request.body, "headers": request.headers });
    let mut python = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write");
    let output = wait_with_limit(python, LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("verified; a wrong secret fails"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn jobs_pending_at_a_kill_9_are_all_delivered_after_a_restart() {
    // The receiver is down at first: jobs are stored (and acknowledged) and wait, retrying
    // often enough to be sent soon after it is back, and never running out of retries
    // however slow the machine is.
    let receiver_port = free_port();
    let Engine {
        dir,
        path,
        mut child,
        http_port,
        ..
    } = Engine::start_retrying(
        receiver_port,
        r#"{ max_retries = 1000, initial_backoff = "200ms", max_backoff = "1s" }"#,
        "",
        "",
    );
    let client = http_client();
    const EVENTS: u64 = 3_000;
    for chunk in 0..(EVENTS / 500) {
        let body: Vec<String> = (chunk * 500..(chunk + 1) * 500)
            .map(|n| format!(r#"{{"user_id": {n}, "traits": {{}}}}"#))
            .collect();
        let body = format!("[{}]", body.join(","));
        assert_eq!(post(&client, http_port, body).await, 200);
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    let receiver = Receiver::default();
    let listener_port = receiver.serve_on(receiver_port).await;
    assert_eq!(listener_port, receiver_port);
    let started = std::time::Instant::now();
    let mut child = start(dir.path(), &path);
    wait_for_port(&mut child, http_port, LIMIT);
    let delivered = wait_until(
        "every acknowledged job is delivered after the restart",
        Duration::from_secs(90),
        || {
            let paths: BTreeSet<String> = receiver
                .received()
                .into_iter()
                .filter(|request| request.answered == 200)
                .map(|request| request.path)
                .collect();
            async move { (paths.len() as u64 == EVENTS).then_some(paths) }
        },
    )
    .await;
    let requests = receiver.received().len() as u64;
    println!(
        "kill -9 with {EVENTS} jobs pending: {} distinct delivered, {} duplicates, {:.1} s after the restart",
        delivered.len(),
        requests - EVENTS,
        started.elapsed().as_secs_f64()
    );
    for n in 0..EVENTS {
        assert!(delivered.contains(&format!("/users/{n}")), "job {n} lost");
    }
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn a_circuit_opens_pauses_loads_and_closes_and_outcomes_chain_to_other_actions() {
    let receiver = Receiver::default();
    receiver.script("/users/1", &[503, 503, 503]);
    receiver.script("/users/2", &[422]);
    let receiver_port = receiver.serve().await;
    let tail = format!(
        r#"on_succeeded = ["track"]
on_discarded = ["alerts.default"]

[destinations.crm.actions.track]
inputs = []
path = "/track/{{{{ .outcome.job_id }}}}"

[destinations.alerts]
kind = "http"
url = "http://127.0.0.1:{receiver_port}"
path = "/alerts"
inputs = []
"#
    );
    let extra = r#"circuit_breaker = { consecutive_failures = 3, cool_down = "3s" }"#;
    let Engine {
        dir: _dir,
        path: _path,
        child,
        http_port,
        api_port,
    } = Engine::start_with(receiver_port, extra, &tail);
    let client = http_client();
    let body = r#"[{"user_id": 1, "traits": {}}, {"user_id": 2, "traits": {}}]"#;
    assert_eq!(post(&client, http_port, body.to_owned()).await, 200);

    let api = format!("http://127.0.0.1:{api_port}");
    wait_until("the circuit opens after 3 failures in a row", LIMIT, || {
        let (client, api) = (client.clone(), api.clone());
        async move {
            let (_, found) = get_json(&client, &format!("{api}/api/v1/destinations")).await;
            let crm = found["destinations"]
                .as_array()?
                .iter()
                .find(|d| d["id"] == "crm")?
                .clone();
            (crm["circuit"] == "open").then_some(())
        }
    })
    .await;
    let attempts = wait_until("user 1 is delivered by the probe", LIMIT, || {
        let found = receiver.to("/users/1");
        async move { (found.last().map(|last| last.answered) == Some(200)).then_some(found) }
    })
    .await;
    assert_eq!(attempts.len(), 4, "3 failures, then the probe");
    let paused = attempts[3].at - attempts[2].at;
    assert!(
        paused >= Duration::from_millis(2_500),
        "no load while the circuit was open (cool_down 3s; the backoff alone is 800ms): {paused:?}"
    );
    let metrics = metrics_text(&client, api_port).await;
    assert!(
        metrics.contains(r#"tightbeam_destination_circuit_open{destination="crm"} 0"#),
        "{metrics}"
    );

    // The success chained a `track` job, the 422 an `alerts` job, each with the outcome.
    let first_to = |prefix: &'static str| {
        let receiver = receiver.clone();
        move || {
            let found = receiver
                .received()
                .into_iter()
                .find(|r| r.path.starts_with(prefix));
            async move {
                found.map(|r| serde_json::from_str::<serde_json::Value>(&r.body).expect("json"))
            }
        }
    };
    let tracked = wait_until(
        "the chained track job is loaded",
        LIMIT,
        first_to("/track/"),
    )
    .await;
    assert_eq!(tracked["payload"]["id"], 1);
    assert_eq!(tracked["outcome"]["status"], "succeeded");
    assert_eq!(tracked["outcome"]["code"], 200);
    let alert = wait_until("the chained alert is loaded", LIMIT, first_to("/alerts")).await;
    assert_eq!(alert["payload"]["id"], 2);
    assert_eq!(alert["outcome"]["status"], "discarded");
    assert_eq!(alert["outcome"]["code"], 422);
    assert_eq!(alert["outcome"]["body"], "answer 422");
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn a_scheduled_destination_loads_what_waits_at_each_tick_in_batches() {
    let receiver = Receiver::default();
    let receiver_port = receiver.serve().await;
    let tail = format!(
        r#"
[destinations.nightly]
kind = "http"
url = "http://127.0.0.1:{receiver_port}"
schedule = "@every 3s"
batch_size = 10
path = "/nightly"
inputs = ["web"]
"#
    );
    let Engine {
        dir: _dir,
        path: _path,
        child,
        http_port,
        ..
    } = Engine::start_with(receiver_port, "", &tail);
    let client = http_client();
    for n in 0..5 {
        let body = format!(r#"{{"user_id": {n}, "traits": {{}}}}"#);
        assert_eq!(post(&client, http_port, body).await, 200);
    }
    let batches = wait_until("the scheduled jobs are loaded", LIMIT, || {
        let batches = receiver.to("/nightly");
        let lines: usize = batches.iter().map(|batch| batch.body.lines().count()).sum();
        async move { (lines == 5).then_some(batches) }
    })
    .await;
    // Posted within a moment: one tick takes them all, or two if a tick fell in between.
    assert!(batches.len() <= 2, "{} requests", batches.len());
    let largest = batches
        .iter()
        .map(|batch| batch.body.lines().count())
        .max()
        .unwrap_or(0);
    assert!(largest >= 3, "jobs waited for the tick and went together");
    assert_eq!(batches[0].headers["content-type"], "application/x-ndjson");
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|batch| {
            batch
                .body
                .lines()
                .map(|line| {
                    serde_json::from_str::<serde_json::Value>(line).expect("json")["user_id"]
                        .as_i64()
                        .expect("id")
                })
                .collect::<Vec<_>>()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 2, 3, 4]);
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn a_sending_connector_wrapped_as_a_destination_gets_each_job_once_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, api_port) = (free_port(), free_port());
    let config = format!(
        r#"data_dir = "data"

[api]
address = "127.0.0.1:{api_port}"

[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"

[destinations.archive]
kind = "connector"
connector = {{ kind = "file", path = "archive.ndjson" }}
inputs = ["web"]
marshal = '{{ "id": .user_id }}'
"#
    );
    let path = write(dir.path(), "archive.toml", &config);
    let mut child = start(dir.path(), &path);
    wait_for_port(&mut child, http_port, LIMIT);
    let client = http_client();
    let body = r#"[{"user_id": 1}, {"user_id": 2}, {"user_id": 3}]"#;
    assert_eq!(post(&client, http_port, body.to_owned()).await, 200);
    let api = format!("http://127.0.0.1:{api_port}");
    wait_until("the three jobs succeed", LIMIT, || {
        let (client, api) = (client.clone(), api.clone());
        async move {
            let (_, found) = get_json(&client, &format!("{api}/api/v1/destinations")).await;
            (found["destinations"][0]["jobs"]["succeeded"] == 3).then_some(())
        }
    })
    .await;
    stop_and_expect_drained(child, LIMIT);
    let written = json_lines(&dir.path().join("archive.ndjson"));
    let mut ids: Vec<i64> = written
        .iter()
        .map(|line| line["id"].as_i64().expect("id"))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3]);

    // A kind that only receives is refused at validation, naming the sending kinds.
    let wrong = write(
        dir.path(),
        "wrong.toml",
        &config.replace(r#"kind = "file""#, r#"kind = "generator""#),
    );
    let output = run_to_end(
        dir.path(),
        &[
            "validate",
            "--no-environment",
            "-c",
            wrong.to_str().expect("path"),
        ],
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`generator` is not a sending connector; one of:")
            && stderr.contains("file"),
        "{stderr}"
    );
}

/// The payload numbers `n` of the lines of the batches to `path` answered with `code`.
fn numbers_answered(receiver: &Receiver, path: &str, code: u16) -> Vec<u64> {
    receiver
        .to(path)
        .into_iter()
        .filter(|request| request.answered == code)
        .flat_map(|request| {
            request
                .body
                .lines()
                .map(|line| {
                    serde_json::from_str::<serde_json::Value>(line).expect("json")["n"]
                        .as_u64()
                        .expect("n")
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn jobs_stored_in_groups_survive_a_kill_9_and_a_dead_letter_among_them_is_replayed_alone() {
    // A destination loading batches to one path keeps the jobs of a batch in one row of the
    // store. The receiver is down at first: the groups are retried whole; after a kill -9
    // and a restart every job is delivered; the batch the receiver refuses (400) becomes
    // dead letters, one of which is replayed alone through the API, then the rest in bulk.
    let receiver_port = free_port();
    let Engine {
        dir,
        path,
        mut child,
        http_port,
        api_port,
    } = Engine::start_config(|http_port, api_port| {
        head(http_port, api_port)
            + &format!(
                r#"
[destinations.bulk]
kind = "http"
url = "http://127.0.0.1:{receiver_port}"
inputs = ["web"]
path = "/batch"
batch_size = 50
concurrency = 4
retry = {{ max_retries = 1000, initial_backoff = "200ms", max_backoff = "1s" }}
"#
            )
    });
    let client = http_client();
    const EVENTS: u64 = 2_000;
    for chunk in 0..(EVENTS / 500) {
        let body: Vec<String> = (chunk * 500..(chunk + 1) * 500)
            .map(|n| format!(r#"{{"n": {n}}}"#))
            .collect();
        assert_eq!(
            post(&client, http_port, format!("[{}]", body.join(","))).await,
            200
        );
    }
    let api = format!("http://127.0.0.1:{api_port}");
    // Every job shows in the API, page by page, each once.
    let mut listed = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = get_json(
            &client,
            &format!("{api}/api/v1/jobs?destination=bulk&limit=300{cursor}"),
        )
        .await;
        for job in page["jobs"].as_array().expect("jobs") {
            assert!(listed.insert(job["id"].as_str().expect("id").to_owned()));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(listed.len() as u64, EVENTS, "each job listed once");
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    let receiver = Receiver::default();
    receiver.script("/batch", &[400]);
    assert_eq!(receiver.serve_on(receiver_port).await, receiver_port);
    let started = std::time::Instant::now();
    let mut child = start(dir.path(), &path);
    wait_for_port(&mut child, http_port, LIMIT);
    let refused: Vec<u64> = wait_until("every job is loaded once", LIMIT, || {
        let requests = receiver.to("/batch");
        let lines: usize = requests
            .iter()
            .map(|request| request.body.lines().count())
            .sum();
        let refused = numbers_answered(&receiver, "/batch", 400);
        async move { (lines as u64 >= EVENTS && !refused.is_empty()).then_some(refused) }
    })
    .await;
    let delivered = numbers_answered(&receiver, "/batch", 200);
    println!(
        "kill -9 with {EVENTS} jobs pending in groups: {} delivered, {} refused as a batch, {:.1} s after the restart",
        delivered.len(),
        refused.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(!refused.is_empty() && refused.len() <= 50, "{refused:?}");
    assert_eq!(
        delivered.len() + refused.len(),
        EVENTS as usize,
        "none lost, none twice"
    );

    // The refused batch is dead letters, one per job; one is replayed alone.
    let (_, page) = get_json(
        &client,
        &format!("{api}/api/v1/jobs?destination=bulk&status=discarded&limit=100"),
    )
    .await;
    let dead: Vec<String> = page["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|job| job["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(dead.len(), refused.len(), "{page}");
    let (_, first) = get_json(&client, &format!("{api}/api/v1/jobs/{}", dead[0])).await;
    let attempts = first["attempts"].as_array().expect("attempts");
    assert_eq!(
        attempts.last().map(|last| &last["code"]),
        Some(&serde_json::json!(400)),
        "{first}"
    );
    let (status, _) = api_post(
        &client,
        api_port,
        &format!("/api/v1/jobs/{}/retry", dead[0]),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let alone = wait_until("the replayed job is delivered alone", LIMIT, || {
        let last = receiver.to("/batch").last().cloned();
        async move { last.filter(|last| last.answered == 200 && last.body.lines().count() == 1) }
    })
    .await;
    let replayed: serde_json::Value = serde_json::from_str(alone.body.trim()).expect("json");
    assert_eq!(replayed["n"], first["payload"]["n"]);
    let (status, answer) = api_post(
        &client,
        api_port,
        "/api/v1/jobs/retry",
        serde_json::json!({ "destination": "bulk", "status": "discarded" }),
    )
    .await;
    assert_eq!(
        (status, answer["retried"].as_u64()),
        (200, Some(refused.len() as u64 - 1))
    );
    let every: BTreeSet<u64> = wait_until("every job is delivered", LIMIT, || {
        let delivered: BTreeSet<u64> = numbers_answered(&receiver, "/batch", 200)
            .into_iter()
            .collect();
        async move { (delivered.len() as u64 == EVENTS).then_some(delivered) }
    })
    .await;
    assert_eq!(every.len() as u64, EVENTS);
    stop_and_expect_drained(child, LIMIT);
}
