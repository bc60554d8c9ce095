//! The file tail confirms by position: an errored chunk is sent again until it passes, and a
//! rejected one is recorded on `_errors` and passed, so neither freezes the checkpoint.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

/// A receiver that answers 503 to its first `failures` requests, then 200, recording every
/// `seq` it accepted.
async fn flaky_receiver(failures: u64) -> (u16, Arc<std::sync::Mutex<Vec<u64>>>) {
    let seen: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    let requests = Arc::new(AtomicU64::new(0));
    let recorder = seen.clone();
    let app = axum::Router::new().fallback(move |body: String| {
        let (recorder, requests) = (recorder.clone(), requests.clone());
        async move {
            if requests.fetch_add(1, Ordering::SeqCst) < failures {
                return axum::http::StatusCode::SERVICE_UNAVAILABLE;
            }
            if let Ok(mut seen) = recorder.lock() {
                for line in body.lines() {
                    let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                    seen.extend(value["seq"].as_u64());
                }
            }
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

fn checkpoint(dir: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("state/checkpoints/log.json")).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default()["offset"]
        .as_u64()
        .unwrap_or(0)
}

fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open");
    file.write_all(text.as_bytes()).expect("append");
}

#[tokio::test]
async fn an_errored_chunk_is_sent_again_until_it_passes() {
    let (receiver, seen) = flaky_receiver(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let log = dir.path().join("log.ndjson");
    append(&log, "");
    let config = write(
        dir.path(),
        "tail.toml",
        &format!(
            r#"data_dir = "state"
[api]
address = "127.0.0.1:{api_port}"
[connectors.log]
kind = "file"
path = "log.ndjson"
mode = "tail"

[connectors.hook]
kind = "http_client"
url = "http://127.0.0.1:{receiver}/"
batch_timeout = "1ms"
inputs = ["log"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, api_port, LIMIT);
    let text: String = (0..10).map(|seq| format!("{{\"seq\":{seq}}}\n")).collect();
    append(&log, &text);
    let client = http_client();
    wait_until("every line reached the receiver", LIMIT, || async {
        let mut got = seen.lock().map(|seen| seen.clone()).unwrap_or_default();
        got.sort_unstable();
        got.dedup();
        (got == (0..10).collect::<Vec<u64>>()).then_some(())
    })
    .await;
    let log_component = component(&client, api_port, "log").await;
    assert!(
        log_component["metrics"]["redelivered"]
            .as_u64()
            .unwrap_or(0)
            >= 10,
        "resends are counted: {log_component}"
    );
    stop_and_expect_drained(child, LIMIT);
    assert_eq!(
        checkpoint(dir.path()),
        text.len() as u64,
        "the checkpoint reached the end once the chunk passed"
    );
}

#[tokio::test]
async fn a_rejected_chunk_is_recorded_and_passed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let log = dir.path().join("log.ndjson");
    append(&log, "");
    let config = write(
        dir.path(),
        "tail.toml",
        &format!(
            r#"data_dir = "state"
[api]
address = "127.0.0.1:{api_port}"
[connectors.log]
kind = "file"
path = "log.ndjson"
mode = "tail"

[pipelines.parse]
inputs = ["log"]
steps = [{{ kind = "transform", source = '.n = to_int!(.n)' }}]

[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["parse"]

[connectors.passed]
kind = "file"
path = "passed.ndjson"
inputs = ["log._errors"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, api_port, LIMIT);
    append(&log, "{\"n\":\"1\"}\n");
    wait_for_json_lines(&dir.path().join("out.ndjson"), 1, LIMIT).await;
    let bad = "{\"n\":\"one\"}\n";
    append(&log, bad);
    let records = wait_for_json_lines(&dir.path().join("passed.ndjson"), 1, LIMIT).await;
    assert_eq!(records[0]["start"], 10);
    assert_eq!(records[0]["end"], 10 + bad.len() as u64);
    assert!(
        records[0]["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("to_int"),
        "{}",
        records[0]
    );
    append(&log, "{\"n\":\"3\"}\n");
    let out = wait_for_json_lines(&dir.path().join("out.ndjson"), 2, LIMIT).await;
    assert_eq!(out[1]["n"], 3);
    stop_and_expect_drained(child, LIMIT);
    let length = std::fs::metadata(&log).expect("log").len();
    assert_eq!(
        checkpoint(dir.path()),
        length,
        "the bad line did not freeze the checkpoint"
    );
}
