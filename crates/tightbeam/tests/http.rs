//! HTTP ingest, request/response, the API, and draining on SIGTERM, against the real binary.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn ingest_config(http_port: u16, api_port: u16) -> String {
    format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
interceptors = [{{ kind = "lines" }}]
max_body = 65536

[pipelines.w1]
inputs = ["web"]
steps = [
  {{ kind = "filter", condition = '.kind != "debug"' }},
  {{ kind = "transform", source = '.processed = true' }},
]

[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["w1"]

[connectors.rejects]
kind = "file"
path = "rejects.ndjson"
inputs = ["web._errors"]
"#
    )
}

fn body(range: std::ops::Range<u64>) -> String {
    range
        .map(|seq| {
            let kind = if seq % 10 == 9 { "debug" } else { "temp" };
            format!("{{\"seq\":{seq},\"kind\":\"{kind}\"}}\n")
        })
        .collect()
}

#[tokio::test]
async fn ingest_answers_after_ack_and_rejects_bad_bodies_with_reasons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, api_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "ingest.toml",
        &ingest_config(http_port, api_port),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, http_port, LIMIT);
    wait_for_port(&mut child, api_port, LIMIT);
    let client = http_client();
    let url = format!("http://127.0.0.1:{http_port}/ingest");

    let response = client
        .post(&url)
        .body(body(0..100))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.expect("json");
    assert_eq!(answer, serde_json::json!({ "accepted": 100 }));
    // Answered after acknowledgement: the 90 kept events are already in the file.
    assert_eq!(json_lines(&dir.path().join("out.ndjson")).len(), 90);

    let response = client
        .post(&url)
        .body("{\"ok\":1}\n{not json}\n")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let answer: serde_json::Value = response.json().await.expect("json");
    let reason = answer["error"].as_str().expect("reason");
    assert!(reason.contains("key must be a string"), "{answer}");
    // Issue 7: the line of the body, not only the position within the bad line.
    assert!(reason.starts_with("line 2 of the body: "), "{answer}");

    let response = client
        .post(&url)
        .body(vec![b' '; 70_000])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 413);

    let response = client.get(&url).send().await.expect("get");
    assert_eq!(response.status(), 405);

    let response = client.post(&url).body("").send().await.expect("post");
    assert_eq!(
        response.status(),
        200,
        "an empty body is acknowledged at once"
    );
    let answer: serde_json::Value = response.json().await.expect("json");
    assert_eq!(answer, serde_json::json!({ "accepted": 0 }));

    let health: serde_json::Value = client
        .get(format!("http://127.0.0.1:{api_port}/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health, serde_json::json!({ "status": "ok" }));

    let metrics = metrics_text(&client, api_port).await;
    assert!(
        metrics
            .contains("tightbeam_connector_events_total{connector=\"web\",direction=\"recv\"} 100"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("tightbeam_pipeline_events_total{pipeline=\"w1\",direction=\"dropped\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tightbeam_event_latency_seconds_count{connector=\"web\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tightbeam_queue_fill{component=\"w1\"}"),
        "queue fill levels are exported: {metrics}"
    );

    let topology: serde_json::Value = client
        .get(format!("http://127.0.0.1:{api_port}/api/v1/topology"))
        .send()
        .await
        .expect("topology")
        .json()
        .await
        .expect("json");
    let web = topology["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|component| component["id"] == "web")
        .expect("web component");
    assert_eq!(web["type"], "connector");
    assert_eq!(web["kind"], "http_server");
    assert_eq!(web["status"], "running");
    assert_eq!(web["metrics"]["recv"], 100);
    assert!(
        topology["edges"]
            .as_array()
            .expect("edges")
            .contains(&serde_json::json!({"from": "web", "to": "w1"}))
    );

    let rejects = json_lines(&dir.path().join("rejects.ndjson"));
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0]["raw"], "{not json}");

    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn request_response_returns_the_pipeline_result_to_its_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write(
        dir.path(),
        "rr.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.calc]
kind = "http_server"
address = "127.0.0.1:{port}"
reply_timeout = "5s"
inputs = ["add"]

[pipelines.add]
inputs = ["calc"]
steps = [
  {{ kind = "filter", condition = '.skip != true' }},
  {{ kind = "transform", source = '.sum = (int(.a) ?? 0) + (int(.b) ?? 0); .auth = %tightbeam.headers.authorization; .path = %tightbeam.path' }},
]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, port, LIMIT);
    let client = http_client();
    let url = format!("http://127.0.0.1:{port}/");
    let requests = (0..20).map(|n| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let response = client
                .post(&url)
                .body(format!("{{\"a\":{n},\"b\":1000}}"))
                .send()
                .await
                .expect("post");
            assert_eq!(response.status(), 200);
            let answer: serde_json::Value = response.json().await.expect("json");
            assert_eq!(answer["sum"], n + 1000, "each request gets its own answer");
        }
    });
    futures::future::join_all(requests).await;

    let response = client
        .post(&url)
        .body("{\"skip\":true}")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 204, "filtered request has no reply");

    // Issue 7: several replies to one request are one JSON array, not objects run together.
    let response = client
        .post(&url)
        .body("[{\"a\":1,\"b\":1},{\"a\":2,\"b\":2}]")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "one JSON document"
    );
    let answer: serde_json::Value = response.json().await.expect("a JSON array");
    let sums: Vec<i64> = answer
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|reply| reply["sum"].as_i64())
        .collect();
    assert_eq!(sums, vec![2, 4]);

    // Issue 7: an empty body has no reply: 204, as for a filtered request.
    let response = client.post(&url).body("").send().await.expect("post");
    assert_eq!(response.status(), 204, "an empty body has no reply");

    stop_and_expect_drained(child, LIMIT);
}

/// Issue 7: a client that gives up before its reply must not leave its reply slot open;
/// replies that come later have nowhere to go and count as `err`, never as `send`.
#[tokio::test]
async fn a_reply_to_a_request_that_went_away_is_an_error_not_a_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, api_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "abort.toml",
        &format!(
            r#"[api]
address = "127.0.0.1:{api_port}"
[connectors.calc]
kind = "http_server"
address = "127.0.0.1:{port}"
reply_timeout = "5s"
inputs = ["slow"]

# The batch holds each reply 300 ms: long after the client below has given up.
[pipelines.slow]
inputs = ["calc"]
steps = [{{ kind = "batch", max_events = 1000, timeout = "300ms", per_stream = true }}]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, port, LIMIT);
    wait_for_port(&mut child, api_port, LIMIT);
    let client = http_client();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/");
    for n in 0..30 {
        let sent = impatient
            .post(&url)
            .body(format!("{{\"n\":{n}}}"))
            .send()
            .await;
        assert!(
            sent.is_err(),
            "the client gives up before the reply: {:?}",
            sent.map(|response| response.status())
        );
    }
    let calc = wait_until("every late reply was counted", LIMIT, || async {
        let calc = component(&client, api_port, "calc").await;
        (calc["metrics"]["err"].as_u64() == Some(30)).then_some(calc)
    })
    .await;
    assert_eq!(
        calc["metrics"]["send"], 0,
        "nothing was sent to a request that left: {calc}"
    );
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn sigterm_during_load_keeps_every_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, api_port) = (free_port(), free_port());
    let config = write(dir.path(), "load.toml", &ingest_config(http_port, api_port));
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, http_port, LIMIT);
    let url = format!("http://127.0.0.1:{http_port}/");
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(20);

    let mut workers = Vec::new();
    for worker in 0..4u64 {
        let client = client.clone();
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for request in 0..500u64 {
                if Instant::now() > deadline {
                    break;
                }
                let first = (worker * 500 + request) * 50;
                match client.post(&url).body(body(first..first + 50)).send().await {
                    Ok(response) if response.status() == 200 => acknowledged.push(first),
                    Ok(_) | Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    // Let the load run, then stop the process in the middle of it.
    let started = Instant::now();
    while json_lines(&dir.path().join("out.ndjson")).len() < 2000
        && started.elapsed() < Duration::from_secs(15)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    terminate(&child);
    let mut acknowledged = Vec::new();
    for worker in workers {
        acknowledged.extend(worker.await.expect("worker"));
    }
    let status = wait_with_limit(child, LIMIT).status;
    assert!(status.success(), "drained and exited 0");
    assert!(
        !acknowledged.is_empty(),
        "some requests were acknowledged before SIGTERM"
    );

    let written: BTreeSet<u64> = json_lines(&dir.path().join("out.ndjson"))
        .iter()
        .map(|event| event["seq"].as_u64().expect("seq"))
        .collect();
    for first in acknowledged {
        for seq in (first..first + 50).filter(|seq| seq % 10 != 9) {
            assert!(
                written.contains(&seq),
                "event {seq} got a 200 but is not in the output"
            );
        }
    }
}

#[tokio::test]
async fn decompression_bomb_costs_a_413_and_an_errors_event() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write(
        dir.path(),
        "bomb.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.web]
kind = "http_server"
address = "127.0.0.1:{port}"
interceptors = [{{ kind = "gzip", max_decompressed = 1048576 }}, {{ kind = "lines" }}]

[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["web"]

[connectors.rejects]
kind = "file"
path = "rejects.ndjson"
inputs = ["web._errors"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, port, LIMIT);
    // 64 MiB of newlines compresses to about 64 KiB: far under max_body, far over the cap.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b'\n'; 1024 * 1024];
    for _ in 0..64 {
        encoder.write_all(&zeros).expect("compress");
    }
    let bomb = encoder.finish().expect("gzip");
    let client = http_client();
    let url = format!("http://127.0.0.1:{port}/");
    let response = client.post(&url).body(bomb).send().await.expect("post");
    assert_eq!(response.status(), 413);

    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(b"{\"ok\":1}\n{\"ok\":2}\n")
        .expect("compress");
    let response = client
        .post(&url)
        .body(encoder.finish().expect("gzip"))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200, "a good gzip body still works");

    assert_eq!(json_lines(&dir.path().join("out.ndjson")).len(), 2);
    let rejects = json_lines(&dir.path().join("rejects.ndjson"));
    assert_eq!(rejects.len(), 1);
    assert!(
        rejects[0]["error"]["message"]
            .as_str()
            .expect("message")
            .contains("1048576"),
        "{}",
        rejects[0]
    );
    stop_and_expect_drained(child, LIMIT);
}

fn compressed_ingest_config(http_port: u16) -> String {
    format!(
        r#"[api]
address = "off"
[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
interceptors = [{{ kind = "lines" }}]
max_body = 4096
body_timeout = "300ms"
[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["web"]
"#
    )
}

/// Issue 7: `Content-Encoding: gzip` and `zstd` bodies are decompressed (they were a 400);
/// an encoding Tightbeam cannot read is a 415.
#[tokio::test]
async fn compressed_bodies_are_decoded_by_their_content_encoding() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let http_port = free_port();
    let config = write(dir.path(), "gz.toml", &compressed_ingest_config(http_port));
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, http_port, LIMIT);
    let client = http_client();
    let url = format!("http://127.0.0.1:{http_port}/");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(b"{\"n\":1}\n{\"n\":2}\n").expect("gzip");
    let gzipped = gzip.finish().expect("gzip");
    let zstded = zstd::encode_all(&b"{\"n\":3}\n"[..], 0).expect("zstd");
    for (encoding, body) in [("gzip", gzipped), ("zstd", zstded)] {
        let response = client
            .post(&url)
            .header("content-encoding", encoding)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200, "{encoding}");
    }
    let lines = wait_for_json_lines(&dir.path().join("out.ndjson"), 3, LIMIT).await;
    let seen: Vec<i64> = lines.iter().filter_map(|line| line["n"].as_i64()).collect();
    assert_eq!(seen, vec![1, 2, 3]);
    let response = client
        .post(&url)
        .header("content-encoding", "br")
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 415);
    stop_and_expect_drained(child, LIMIT);
}

/// Sends raw bytes on a new connection and returns the status of the first response line.
async fn raw_status(port: u16, request: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    socket.write_all(request).await.expect("write");
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&answer[..read]).into_owned();
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head}"))
}

/// Issue 7: a declared length past `max_body` is refused before the body is read, and a body
/// shorter than its declared length does not hold the connection past `body_timeout`.
#[tokio::test]
async fn oversized_declared_lengths_and_short_bodies_are_answered_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http_port = free_port();
    let config = write(dir.path(), "len.toml", &compressed_ingest_config(http_port));
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, http_port, LIMIT);
    let huge = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000\r\n\r\n";
    assert_eq!(raw_status(http_port, huge).await, 413);
    let short = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"n\":1}\n";
    assert_eq!(raw_status(http_port, short).await, 408);
    stop_and_expect_drained(child, LIMIT);
}

/// Issue 7: a connection that sends nothing, one that trickles its headers a byte at a
/// time, and a keep-alive connection left idle after a request are all closed once
/// `header_timeout` passes (they stayed open over 70 s).
#[tokio::test]
async fn silent_trickling_and_idle_connections_are_closed_after_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let http_port = free_port();
    let config = write(
        dir.path(),
        "slow.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
header_timeout = "1s"
[connectors.out]
kind = "blackhole"
inputs = ["web"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, http_port, LIMIT);
    let address = format!("127.0.0.1:{http_port}");

    let silent = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    assert!(
        closed_within(silent, Duration::from_secs(10)).await,
        "a connection that sends nothing is closed"
    );

    let mut trickling = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let trickled = tokio::spawn(async move {
        // One byte every 100 ms, for at most 10 s: the headers never complete in time.
        for byte in b"POST / HTTP/1.1\r\nHost: t\r\nX-Slow: "
            .iter()
            .cycle()
            .take(100)
        {
            if trickling.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    assert!(
        trickled.await.expect("trickler"),
        "a connection trickling its headers is closed before it has sent them"
    );

    let mut idle = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    idle.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\n{\"n\":1}")
        .await
        .expect("request");
    assert!(
        closed_within(idle, Duration::from_secs(10)).await,
        "a keep-alive connection left idle after its request is closed"
    );
    stop_and_expect_drained(child, LIMIT);
}

/// Issue 7: the API port has the same guards, set in `[api]`: a silent connection is
/// closed after `header_timeout`, and a pushed config that stops short gets 408 after
/// `body_timeout`.
#[tokio::test]
async fn the_api_closes_silent_connections_and_times_out_short_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let config = write(
        dir.path(),
        "api.toml",
        &format!(
            r#"[api]
address = "127.0.0.1:{api_port}"
header_timeout = "1s"
body_timeout = "500ms"
[connectors.gen]
kind = "generator"
rate = 1.0
[connectors.out]
kind = "blackhole"
inputs = ["gen"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, api_port, LIMIT);
    let silent = tokio::net::TcpStream::connect(("127.0.0.1", api_port))
        .await
        .expect("connect");
    assert!(
        closed_within(silent, Duration::from_secs(10)).await,
        "a silent API connection is closed"
    );
    let short = b"PUT /api/v1/config HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n[api]\n";
    assert_eq!(raw_status(api_port, short).await, 408);
    stop_and_expect_drained(child, LIMIT);
}

/// Reads (and drops) what `stream` sends until the server closes it; false if it is still
/// open after `limit`.
async fn closed_within(mut stream: tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(limit, async {
        while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {}
    })
    .await
    .is_ok()
}
