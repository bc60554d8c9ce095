//! Backpressure: a slow HTTP receiver slows the sources, memory stays bounded, and the HTTP
//! server answers 503 with Retry-After rather than queueing without limit.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(60);
/// Each request to the slow receiver takes this long to answer.
const RECEIVER_DELAY: Duration = Duration::from_millis(100);

/// A receiver that answers 200 after `RECEIVER_DELAY`, counting the NDJSON lines it got.
async fn slow_receiver() -> (u16, Arc<AtomicU64>) {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = axum::Router::new().fallback(move |body: String| {
        let counter = counter.clone();
        async move {
            tokio::time::sleep(RECEIVER_DELAY).await;
            counter.fetch_add(body.lines().count() as u64, Ordering::Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kilobytes| kilobytes * 1024)
}

async fn component_metric(api_port: u16, id: &str, metric: &str) -> u64 {
    let topology: serde_json::Value = http_client()
        .get(format!("http://127.0.0.1:{api_port}/api/v1/topology"))
        .send()
        .await
        .expect("topology")
        .json()
        .await
        .expect("json");
    topology["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|component| component["id"] == id)
        .and_then(|component| component["metrics"][metric].as_u64())
        .expect("metric")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_receiver_slows_the_source_and_memory_stays_bounded() {
    let (receiver_port, received) = slow_receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let config = write(
        dir.path(),
        "slow.toml",
        &format!(
            r#"[api]
address = "127.0.0.1:{api_port}"
[connectors.fast]
kind = "generator"
batch_size = 100

[pipelines.mark]
inputs = ["fast"]
steps = [{{ kind = "transform", source = '.processed = true' }}]

[connectors.slow]
kind = "http_client"
url = "http://127.0.0.1:{receiver_port}/"
batch_max_events = 100
inputs = ["mark"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, api_port, LIMIT);
    let started = Instant::now();
    let mut peak_rss = 0;
    while started.elapsed() < Duration::from_secs(3) {
        peak_rss = peak_rss.max(rss_bytes(child.id()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let produced = component_metric(api_port, "fast", "out").await;
    let sent = component_metric(api_port, "slow", "send").await;
    let delivered = received.load(Ordering::Relaxed);
    terminate(&child);
    let status = wait_with_limit(child, LIMIT).status;

    assert!(delivered > 0, "the receiver got events");
    assert!(sent <= delivered, "sent counts only answered requests");
    // What the generator may run ahead of delivery: two input queues of 16 batches of 100
    // events, plus a few batches held by tasks (being processed, batched, in flight).
    let allowed_lead = 2 * 16 * 100 + 10 * 100;
    assert!(
        produced <= sent + allowed_lead,
        "generator ran ahead of a slow receiver: produced {produced}, sent {sent}"
    );
    assert!(peak_rss < 100 * 1024 * 1024, "peak RSS {peak_rss} bytes");
    assert!(status.success(), "drained and exited 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_server_answers_503_with_retry_after_when_the_pipeline_stays_full() {
    let (receiver_port, _received) = slow_receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, api_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "full.toml",
        &format!(
            r#"[api]
address = "127.0.0.1:{api_port}"
[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
interceptors = [{{ kind = "lines" }}]
queue_timeout = "50ms"

[connectors.slow]
kind = "http_client"
url = "http://127.0.0.1:{receiver_port}/"
batch_max_events = 100
inputs = ["web"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, http_port, LIMIT);
    let client = http_client();
    let url = format!("http://127.0.0.1:{http_port}/");
    let body: String = (0..100).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let requests = (0..80).map(|_| {
        let request = client.post(&url).body(body.clone()).send();
        async move { request.await.expect("response") }
    });
    let responses = futures::future::join_all(requests).await;
    let refused: Vec<_> = responses
        .iter()
        .filter(|response| response.status() == 503)
        .collect();
    assert!(!refused.is_empty(), "a full pipeline answers 503");
    assert!(
        refused.iter().all(|response| response
            .headers()
            .get("retry-after")
            .is_some_and(|value| value == "1")),
        "every 503 carries Retry-After"
    );
    assert!(
        responses.iter().any(|response| response.status() == 200),
        "some were accepted"
    );
    // Issue 7: events refused with a 503 were never received.
    let taken = responses.iter().filter(|r| r.status() != 503).count() as u64 * 100;
    let web = component(&client, api_port, "web").await;
    assert_eq!(web["metrics"]["recv"].as_u64(), Some(taken), "{web}");
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_waiting_past_reply_timeout_gets_504() {
    let (receiver_port, _received) = slow_receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let http_port = free_port();
    let config = write(
        dir.path(),
        "timeout.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
reply_timeout = "20ms"
inputs = ["echo"]

[pipelines.echo]
inputs = ["web"]

[connectors.slow]
kind = "http_client"
url = "http://127.0.0.1:{receiver_port}/"
batch_timeout = "1ms"
inputs = ["echo"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, http_port, LIMIT);
    let response = http_client()
        .post(format!("http://127.0.0.1:{http_port}/"))
        .body("{\"a\":1}")
        .send()
        .await
        .expect("post");
    assert_eq!(
        response.status(),
        504,
        "the slow copy holds the acknowledgement past reply_timeout"
    );
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_client_sends_json_array_batches_with_configured_headers() {
    type Seen = Arc<std::sync::Mutex<Vec<(String, String, serde_json::Value)>>>;
    let seen: Seen = Arc::default();
    let recorder = seen.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
        let recorder = recorder.clone();
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let parsed = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
            if let Ok(mut seen) = recorder.lock() {
                seen.push((header("content-type"), header("x-tenant"), parsed));
            }
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let receiver_port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(
        dir.path(),
        "array.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.gen]
kind = "generator"
count = 7
batch_size = 7

[connectors.push]
kind = "http_client"
url = "http://127.0.0.1:{receiver_port}/ingest"
headers = {{ x-tenant = "acme", authorization = "Bearer hunter2" }}
body = "array"
batch_max_events = 3
batch_timeout = "50ms"
inputs = ["gen"]
"#
        ),
    );
    let output = run_to_end(
        dir.path(),
        &["run", "-c", config.to_str().expect("path")],
        LIMIT,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("hunter2"),
        "no secret in logs"
    );
    let seen = seen.lock().expect("lock").clone();
    let sizes: Vec<usize> = seen
        .iter()
        .map(|(_, _, body)| body.as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(
        sizes,
        vec![3, 3, 1],
        "batches by count, the rest by timeout"
    );
    assert!(
        seen.iter().all(
            |(content_type, tenant, _)| content_type == "application/json" && tenant == "acme"
        )
    );
    let seqs: Vec<i64> = seen
        .iter()
        .flat_map(|(_, _, body)| body.as_array().cloned().unwrap_or_default())
        .map(|event| event["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, (0..7).collect::<Vec<i64>>());
}

/// Issue 7: requests in flight are capped; one past `max_requests` gets a 503 with
/// Retry-After at once, before its body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_max_requests_are_turned_away_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http_port = free_port();
    let config = write(
        dir.path(),
        "cap.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
max_requests = 2

# Each request's events wait 500 ms in a batch of their own before they are written.
[pipelines.hold]
inputs = ["web"]
steps = [{{ kind = "batch", max_events = 1000, timeout = "500ms", per_stream = true }}]

[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["hold"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, http_port, LIMIT);
    let client = http_client();
    let url = format!("http://127.0.0.1:{http_port}/");
    let requests = (0..6).map(|n| {
        let request = client.post(&url).body(format!("{{\"n\":{n}}}")).send();
        async move {
            let response = request.await.expect("response");
            let retry_after = response.headers().get("retry-after").is_some();
            (response.status().as_u16(), retry_after)
        }
    });
    let answers = futures::future::join_all(requests).await;
    let accepted = answers.iter().filter(|(status, _)| *status == 200).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 503)
        .collect();
    assert_eq!(accepted + refused.len(), 6, "{answers:?}");
    assert!(accepted >= 2, "the first two were taken: {answers:?}");
    assert!(
        !refused.is_empty(),
        "the rest were turned away: {answers:?}"
    );
    assert!(refused.iter().all(|(_, retry_after)| *retry_after));
    stop_and_expect_drained(child, LIMIT);
}
