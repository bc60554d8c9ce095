//! Acknowledgement outcomes as each source reports them (HTTP status, tcp ack lines, the
//! exit code of a finite run), and the second signal that abandons a drain.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const LIMIT: Duration = Duration::from_secs(60);

/// A receiver answering each request with the status code its path names (`/503` -> 503),
/// or never answering at all on `/stall`.
async fn status_receiver() -> u16 {
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        let path = uri.path().trim_start_matches('/');
        if path == "stall" {
            std::future::pending::<()>().await;
        }
        let code = path.parse::<u16>().unwrap_or(200);
        axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::OK)
    });
    serve_app(app, 0).await
}

#[tokio::test]
async fn http_answers_422_for_rejected_events_and_503_for_errored_ones() {
    let receiver = status_receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let http_port = free_port();
    let config = write(
        dir.path(),
        "outcomes.toml",
        &format!(
            r#"[api]
address = "off"

[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"

[pipelines.parse]
inputs = ["web"]
steps = [
  {{ kind = "transform", source = '.n = to_int!(.n)' }},
  {{ kind = "route", routes = {{ five = '.to == 503', four = '.to == 400' }} }},
]

[connectors.five]
kind = "http_client"
url = "http://127.0.0.1:{receiver}/503"
batch_timeout = "1ms"
inputs = ["parse.five"]

[connectors.four]
kind = "http_client"
url = "http://127.0.0.1:{receiver}/400"
batch_timeout = "1ms"
inputs = ["parse.four"]

[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["parse"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, http_port, LIMIT);
    let client = http_client();
    let url = format!("http://127.0.0.1:{http_port}/");
    let post = |body: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client.post(url).body(body).send().await.expect("post");
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").is_some();
            (
                status,
                retry_after,
                response.text().await.unwrap_or_default(),
            )
        }
    };

    let (status, _, body) = post(r#"{"n":"12"}"#).await;
    assert_eq!(status, 200, "{body}");

    // A VRL error, and nothing reads parse._errors: it will never pass as it is.
    let (status, _, body) = post(r#"{"n":"twelve"}"#).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("to_int"),
        "the reason is the VRL error: {body}"
    );

    // The receiver answers 503: worth retrying.
    let (status, retry_after, body) = post(r#"{"n":"1","to":503}"#).await;
    assert_eq!(status, 503, "{body}");
    assert!(retry_after, "a retryable failure says when to retry");
    assert!(body.contains("503"), "{body}");

    // The receiver answers 400: retrying will not help.
    let (status, _, body) = post(r#"{"n":"1","to":400}"#).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("400"), "{body}");
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn tcp_ack_lines_say_rejected_and_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write(
        dir.path(),
        "ack.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.tcp]
kind = "tcp_server"
address = "127.0.0.1:{port}"
ack_lines = true

[pipelines.parse]
inputs = ["tcp"]
steps = [{{ kind = "transform", source = '.n = to_int!(.n)' }}]

[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["parse"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, port, LIMIT);
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut next_ack = async || {
        let line = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .expect("ack in time")
            .expect("read")
            .expect("a line");
        serde_json::from_str::<serde_json::Value>(&line).expect("json")
    };
    write.write_all(b"{\"n\":\"1\"}\n").await.expect("write");
    assert_eq!(next_ack().await, serde_json::json!({ "acked": 1 }));
    write.write_all(b"{\"n\":\"x\"}\n").await.expect("write");
    let ack = next_ack().await;
    assert_eq!(ack["rejected"], 2, "{ack}");
    assert!(
        ack["reason"].as_str().unwrap_or("").contains("to_int"),
        "{ack}"
    );
    drop(write);
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn a_finite_run_that_could_not_deliver_exits_non_zero_and_counts_what_was_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "in.ndjson",
        &(0..30)
            .map(|n| {
                if n % 3 == 0 {
                    format!("{{\"n\":\"bad{n}\"}}\n")
                } else {
                    format!("{{\"n\":\"{n}\"}}\n")
                }
            })
            .collect::<String>(),
    );
    let config = write(
        dir.path(),
        "finite.toml",
        r#"[api]
address = "off"
[connectors.in]
kind = "file"
path = "in.ndjson"

[pipelines.parse]
inputs = ["in"]
steps = [{ kind = "transform", source = '.n = to_int!(.n)' }]

[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["parse"]
"#,
    );
    let output = run_to_end(
        dir.path(),
        &["run", "-c", config.to_str().expect("path")],
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    // The file is read in one chunk: every event of an unconfirmed chunk is counted.
    assert!(
        stderr.contains("30 events were received but not confirmed as delivered"),
        "{stderr}"
    );

    let generated = write(
        dir.path(),
        "generated.toml",
        r#"[api]
address = "off"
[connectors.gen]
kind = "generator"
count = 25
batch_size = 5
[connectors.out]
kind = "file"
path = "gen.ndjson"
inputs = ["gen"]
"#,
    );
    let output = run_to_end(
        dir.path(),
        &["run", "-c", generated.to_str().expect("path")],
        LIMIT,
    );
    assert!(output.status.success(), "everything delivered: exit 0");
}

#[tokio::test]
async fn a_second_signal_during_the_drain_exits_at_once_counting_what_was_abandoned() {
    let receiver = status_receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let config = write(
        dir.path(),
        "stall.toml",
        &format!(
            r#"shutdown_grace = "60s"
[api]
address = "127.0.0.1:{api_port}"
[connectors.gen]
kind = "generator"
count = 20
batch_size = 10

[connectors.stalled]
kind = "http_client"
url = "http://127.0.0.1:{receiver}/stall"
request_timeout = "60s"
batch_max_events = 100
batch_timeout = "1ms"
inputs = ["gen"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, api_port, LIMIT);
    let client = http_client();
    wait_until("the requests are in flight", LIMIT, || async {
        (component(&client, api_port, "stalled").await["metrics"]["in"] == 20).then_some(())
    })
    .await;
    terminate(&child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "still draining"
    );
    terminate(&child);
    let output = wait_with_limit(child, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("20 events were abandoned unconfirmed"),
        "{stderr}"
    );
}

/// Issue 7: a generator measures each acknowledgement's latency as it comes, not only once
/// 64 batches are waiting.
#[tokio::test]
async fn a_generator_records_latency_as_acknowledgements_come() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let config = write(
        dir.path(),
        "gen.toml",
        &format!(
            r#"[api]
address = "127.0.0.1:{api_port}"
[connectors.gen]
kind = "generator"
rate = 5
[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["gen"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, api_port, LIMIT);
    let client = http_client();
    let metrics_url = format!("http://127.0.0.1:{api_port}/metrics");
    wait_until("three latency samples", Duration::from_secs(5), || async {
        let text = client
            .get(&metrics_url)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let count = text
            .lines()
            .find(|line| {
                line.starts_with("tightbeam_event_latency_seconds_count{connector=\"gen\"}")
            })?
            .rsplit(' ')
            .next()?
            .parse::<u64>()
            .ok()?;
        (count >= 3).then_some(())
    })
    .await;
    // Issue 7: the Prometheus text format by default (HELP and TYPE name the samples, no
    // `# EOF`), OpenMetrics when asked for.
    let response = client.get(&metrics_url).send().await.expect("metrics");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.expect("text");
    assert!(
        text.contains("# TYPE tightbeam_connector_events_total counter"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));
    assert!(
        !text.contains("tightbeam_event_latency_seconds_count{connector=\"out\"}"),
        "a sink measures no receive-to-acknowledge latency, so it shows none: {text}"
    );
    let response = client
        .get(&metrics_url)
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .expect("metrics");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("application/openmetrics-text")
    );
    assert!(
        response
            .text()
            .await
            .expect("text")
            .trim_end()
            .ends_with("# EOF")
    );
    stop_and_expect_drained(child, LIMIT);
}
