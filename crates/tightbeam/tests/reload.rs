//! Live reload against the real binary: `PUT /api/v1/config` under steady HTTP ingest,
//! a pushed config with problems, SIGHUP and `--watch`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

/// `web` -> `tag` (sets `.v`) -> `all`, and `copy` (a second file) when `with_copy`.
fn tagging_config(http_port: u16, api_port: u16, version: u32, with_copy: bool) -> String {
    let copy = if with_copy {
        "\n[connectors.copy]\nkind = \"file\"\npath = \"copy.ndjson\"\ninputs = [\"tag\"]\n"
    } else {
        ""
    };
    format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
interceptors = [{{ kind = "lines" }}]

[pipelines.tag]
inputs = ["web"]
steps = [{{ kind = "transform", source = '.v = {version}' }}]

[connectors.all]
kind = "file"
path = "all.ndjson"
inputs = ["tag"]
{copy}"#
    )
}

async fn put_config(
    client: &reqwest::Client,
    api_port: u16,
    text: String,
) -> (u16, serde_json::Value) {
    let response = client
        .put(format!("http://127.0.0.1:{api_port}/api/v1/config"))
        .header("content-type", "application/toml")
        .body(text)
        .send()
        .await
        .expect("PUT config");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// One request's events and when its 200 came back, relative to the reloads.
struct Acknowledged {
    first_seq: u64,
    sent_after_switch: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_http_load_delivers_every_acknowledged_event_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, api_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "tag.toml",
        &tagging_config(http_port, api_port, 1, true),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, api_port, LIMIT);
    wait_for_port(&mut child, http_port, LIMIT);
    let client = http_client();
    let url = format!("http://127.0.0.1:{http_port}/");
    // `switched` turns true once the reload to v = 2 has answered: every request sent after
    // that must carry the new transform.
    let switched = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    const EVENTS_PER_REQUEST: u64 = 20;
    let mut workers = Vec::new();
    for worker in 0..3u64 {
        let (client, url, switched, stop) =
            (client.clone(), url.clone(), switched.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut failures = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(40);
            for request in 0..5_000u64 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let first_seq = (worker * 5_000 + request) * EVENTS_PER_REQUEST;
                let body: String = (first_seq..first_seq + EVENTS_PER_REQUEST)
                    .map(|seq| format!("{{\"seq\":{seq}}}\n"))
                    .collect();
                let sent_after_switch = switched.load(Ordering::SeqCst);
                match client.post(&url).body(body).send().await {
                    Ok(response) if response.status() == 200 => acknowledged.push(Acknowledged {
                        first_seq,
                        sent_after_switch,
                    }),
                    Ok(response) => failures.push(response.status().to_string()),
                    Err(error) => failures.push(error.to_string()),
                }
            }
            (acknowledged, failures)
        }));
    }
    let all = dir.path().join("all.ndjson");
    wait_for_json_lines(&all, 200, LIMIT).await;

    // Change the transform, many times, timing each reconcile.
    let mut took = Vec::new();
    for round in 0..10u32 {
        let version = if round % 2 == 0 { 2 } else { 3 };
        let (status, summary) = put_config(
            &client,
            api_port,
            tagging_config(http_port, api_port, version, true),
        )
        .await;
        assert_eq!(status, 200, "{summary}");
        assert_eq!(
            summary["changed"],
            serde_json::json!(["tag"]),
            "only the transform changed"
        );
        took.push(summary["took_ms"].as_f64().expect("took_ms"));
    }
    let (status, _) = put_config(
        &client,
        api_port,
        tagging_config(http_port, api_port, 2, true),
    )
    .await;
    assert_eq!(status, 200);
    switched.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Remove a sink, then add it back.
    let (status, summary) = put_config(
        &client,
        api_port,
        tagging_config(http_port, api_port, 2, false),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(summary["removed"], serde_json::json!(["copy"]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, summary) = put_config(
        &client,
        api_port,
        tagging_config(http_port, api_port, 2, true),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(summary["added"], serde_json::json!(["copy"]));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // An invalid config changes nothing.
    let (status, refused) = put_config(
        &client,
        api_port,
        tagging_config(http_port, api_port, 2, true).replace(".v = 2", ".v = ="),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for worker in workers {
        let (done, failures) = worker.await.expect("worker");
        assert!(
            failures.is_empty(),
            "no request failed during the reloads: {failures:?}"
        );
        acknowledged.extend(done);
    }
    stop_and_expect_drained(child, LIMIT);

    let mut written: BTreeMap<u64, (usize, i64)> = BTreeMap::new();
    for event in json_lines(&all) {
        let seq = event["seq"].as_u64().expect("seq");
        let entry = written.entry(seq).or_insert((0, 0));
        entry.0 += 1;
        entry.1 = event["v"].as_i64().expect("v");
    }
    for request in &acknowledged {
        for seq in request.first_seq..request.first_seq + EVENTS_PER_REQUEST {
            let Some((count, version)) = written.get(&seq) else {
                panic!("event {seq} got a 200 but is not in the output");
            };
            assert_eq!(*count, 1, "event {seq} arrived {count} times");
            if request.sent_after_switch {
                assert_eq!(
                    *version, 2,
                    "event {seq} was sent after the switch to v = 2"
                );
            }
        }
    }
    let copies = json_lines(&dir.path().join("copy.ndjson"));
    let mut seen = std::collections::BTreeSet::new();
    for event in &copies {
        assert!(
            seen.insert(event["seq"].as_u64().expect("seq")),
            "no duplicate in copy: {event}"
        );
    }
    took.sort_by(f64::total_cmp);
    println!(
        "reload under load: {} acknowledged requests ({} events), reconcile of one changed transform p50 {:.1} ms, p99 {:.1} ms over {} reloads",
        acknowledged.len(),
        acknowledged.len() as u64 * EVENTS_PER_REQUEST,
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took.len()
    );
    assert!(
        acknowledged.iter().any(|request| request.sent_after_switch),
        "load ran after the switch"
    );
}

#[tokio::test]
async fn a_pushed_config_with_problems_is_refused_with_them_and_nothing_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, api_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "tag.toml",
        &tagging_config(http_port, api_port, 1, false),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, api_port, LIMIT);
    wait_for_port(&mut child, http_port, LIMIT);
    let client = http_client();
    let config_url = format!("http://127.0.0.1:{api_port}/api/v1/config");
    let (_, before) = get_json(&client, &config_url).await;

    let broken = tagging_config(http_port, api_port, 1, false)
        .replace("kind = \"file\"", "kind = \"fiel\"")
        .replace(".v = 1", ".v = ");
    let (status, refused) = put_config(&client, api_port, broken).await;
    assert_eq!(status, 400, "{refused}");
    let problems = refused["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 2, "every problem at once: {refused}");
    let texts: Vec<&str> = problems.iter().filter_map(|p| p["text"].as_str()).collect();
    assert!(
        texts
            .iter()
            .any(|text| text.contains("unknown connector kind `fiel` (did you mean `file`?)")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|text| text.contains("VRL")), "{texts:?}");
    for problem in problems {
        assert!(
            problem["line"].as_u64().unwrap_or(0) > 0,
            "a line: {problem}"
        );
        assert!(
            problem["column"].as_u64().unwrap_or(0) > 0,
            "a column: {problem}"
        );
    }
    // A pushed config never reads the environment: a default is taken, a bare variable is
    // a problem, and the variable's value is never shown.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    let (status, refused) = put_config(
        &client,
        api_port,
        tagging_config(http_port, api_port, 1, false).replace("all.ndjson", "${HOME}/all.ndjson"),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("a pushed config does not read the environment"),
        "{refused}"
    );
    assert!(!refused.to_string().contains(&home), "{refused}");
    let (status, applied) = put_config(
        &client,
        api_port,
        tagging_config(http_port, api_port, 1, false)
            .replace("all.ndjson", "${OUT_PATH:-defaulted.ndjson}"),
    )
    .await;
    assert_eq!(status, 200, "{applied}");
    let (_, after) = get_json(&client, &config_url).await;
    assert_eq!(after["connectors"]["all"]["path"], "defaulted.ndjson");
    let (status, _) = put_config(
        &client,
        api_port,
        tagging_config(http_port, api_port, 1, false),
    )
    .await;
    assert_eq!(status, 200);
    let (_, restored) = get_json(&client, &config_url).await;
    assert_eq!(restored, before);

    let response = client
        .post(format!("http://127.0.0.1:{http_port}/"))
        .body("{\"seq\":7}\n")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200, "the running topology went on");
    let lines = wait_for_json_lines(&dir.path().join("all.ndjson"), 1, LIMIT).await;
    assert_eq!(lines[0]["v"], 1);
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn get_config_masks_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let config = write(
        dir.path(),
        "secret.toml",
        &format!(
            r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.gen]
kind = "generator"
rate = 1

[connectors.hook]
kind = "http_client"
url = "http://user:hunter2@127.0.0.1:9/?apikey=abc123&topic=x"
headers = {{ Authorization = "Bearer s3cr3t" }}
inputs = ["gen"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, api_port, LIMIT);
    let (status, shown) = get_json(
        &http_client(),
        &format!("http://127.0.0.1:{api_port}/api/v1/config"),
    )
    .await;
    assert_eq!(status, 200);
    let text = shown.to_string();
    for secret in ["hunter2", "abc123", "s3cr3t"] {
        assert!(!text.contains(secret), "{secret} is shown: {text}");
    }
    assert_eq!(shown["connectors"]["hook"]["kind"], "http_client");
    assert!(text.contains("topic=x"));
    stop_and_expect_drained(child, LIMIT);
}

async fn wait_for_version(
    dir: &std::path::Path,
    client: &reqwest::Client,
    http_port: u16,
    version: i64,
) {
    let all = dir.join("all.ndjson");
    wait_until(&format!("events carry v = {version}"), LIMIT, || async {
        let response = client
            .post(format!("http://127.0.0.1:{http_port}/"))
            .body("{\"seq\":1}\n")
            .send()
            .await
            .ok()?;
        assert_eq!(response.status(), 200);
        let lines = json_lines(&all);
        (lines.last()?["v"] == version).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sighup_reloads_the_config_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, api_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "tag.toml",
        &tagging_config(http_port, api_port, 1, false),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, http_port, LIMIT);
    let client = http_client();
    wait_for_version(dir.path(), &client, http_port, 1).await;
    write(
        dir.path(),
        "tag.toml",
        &tagging_config(http_port, api_port, 5, false),
    );
    // SAFETY: kill(2) on a pid we spawned and have not reaped.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) },
        0
    );
    wait_for_version(dir.path(), &client, http_port, 5).await;
    // A broken file is refused; the running topology goes on.
    write(
        dir.path(),
        "tag.toml",
        &tagging_config(http_port, api_port, 6, false).replace(".v = 6", ".v = ="),
    );
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) },
        0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for_version(dir.path(), &client, http_port, 5).await;
    terminate(&child);
    let output = wait_with_limit(child, LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tag.toml:"),
        "the problem is logged with its file: {stderr}"
    );
    assert!(output.status.success(), "{stderr}");
}

#[tokio::test]
async fn watch_reloads_when_a_config_file_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, api_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "tag.toml",
        &tagging_config(http_port, api_port, 1, false),
    );
    let mut child = tightbeam()
        .args(["run", "--watch", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for_port(&mut child, http_port, LIMIT);
    let client = http_client();
    wait_for_version(dir.path(), &client, http_port, 1).await;
    write(
        dir.path(),
        "tag.toml",
        &tagging_config(http_port, api_port, 7, false),
    );
    wait_for_version(dir.path(), &client, http_port, 7).await;
    stop_and_expect_drained(child, LIMIT);
}
