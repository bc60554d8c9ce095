//! Issue 7: memory follows the limits, not the number of events in a body. A few large
//! requests of the smallest events (millions of `{}`) and a decompression bomb, sent at once
//! through http_server -> transform -> file, keep the process's peak RSS bounded.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Events in each large body: 3 MB of `{}` lines, or of `{},` array elements.
const EVENTS: usize = 1_000_000;

/// The bound the README promises for the defaults, with room for a debug build.
const RSS_BOUND_MB: u64 = 300;

#[tokio::test]
async fn large_bodies_and_a_bomb_at_once_keep_rss_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lines_port, array_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "memory.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.lines]
kind = "http_server"
address = "127.0.0.1:{lines_port}"
interceptors = [{{ kind = "lines" }}]
ack_timeout = "5m"
[connectors.array]
kind = "http_server"
address = "127.0.0.1:{array_port}"
ack_timeout = "5m"
[pipelines.mark]
inputs = ["lines", "array"]
steps = [{{ kind = "transform", source = '.seen = true' }}]
[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["mark"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, lines_port, LIMIT);
    wait_for_port(&mut child, array_port, LIMIT);
    let client = http_client();
    let ndjson = "{}\n".repeat(EVENTS);
    let array = format!("[{}]", vec!["{}"; EVENTS].join(","));
    // 200 MB of lines, past the default max_decompressed of 100 MB, in about 20 KB.
    let bomb = zstd::encode_all("{}\n".repeat(70_000_000).as_bytes(), 3).expect("zstd");

    let post = |port: u16, body: Vec<u8>, encoding: Option<&'static str>| {
        let client = client.clone();
        async move {
            let mut request = client.post(format!("http://127.0.0.1:{port}/")).body(body);
            if let Some(encoding) = encoding {
                request = request.header("content-encoding", encoding);
            }
            let response = request.send().await.expect("post");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.expect("json answer");
            (status, body)
        }
    };
    let answers = tokio::time::timeout(
        LIMIT,
        futures::future::join_all([
            post(lines_port, ndjson.clone().into_bytes(), None),
            post(lines_port, ndjson.into_bytes(), None),
            post(array_port, array.clone().into_bytes(), None),
            post(array_port, array.into_bytes(), None),
            post(lines_port, bomb, Some("zstd")),
        ]),
    )
    .await
    .expect("every request answered in time");

    for (status, body) in &answers[..4] {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["accepted"], EVENTS, "{body}");
    }
    assert_eq!(answers[4].0, 413, "the bomb is refused: {}", answers[4].1);
    assert_eq!(answers[4].1["accepted"], 0, "nothing of the bomb went on");

    let peak_mb = peak_rss_kb(child.id()) / 1024;
    println!("peak RSS with 4 x {EVENTS} events and a 200 MB bomb at once: {peak_mb} MB");
    assert!(
        peak_mb < RSS_BOUND_MB,
        "peak RSS {peak_mb} MB is past {RSS_BOUND_MB} MB"
    );
    stop_and_expect_drained(child, LIMIT);
    let written = std::fs::read_to_string(dir.path().join("out.ndjson")).expect("output");
    assert_eq!(
        written.lines().count(),
        4 * EVENTS,
        "every accepted event was written"
    );
}

/// A body past one slice (1,024 events) goes on as it is decoded: a bad line far into it
/// answers 400 naming the line, with `accepted` counting the events that went on before it.
#[tokio::test]
async fn a_bad_line_deep_in_a_large_body_names_its_line_and_what_was_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write(
        dir.path(),
        "partial.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.web]
kind = "http_server"
address = "127.0.0.1:{port}"
interceptors = [{{ kind = "lines" }}]
[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["web"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, port, LIMIT);
    let mut body: String = (0..10_000).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    body.push_str("{not json\n");
    body.push_str("{\"n\":\"after\"}\n");
    let response = http_client()
        .post(format!("http://127.0.0.1:{port}/"))
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let answer: serde_json::Value = response.json().await.expect("json");
    let reason = answer["error"].as_str().expect("error");
    assert!(reason.contains("line 10001 of the body"), "{reason}");
    let accepted = answer["accepted"].as_u64().expect("accepted") as usize;
    assert!(
        accepted > 0 && accepted <= 10_000 && accepted.is_multiple_of(1024),
        "whole slices before the bad line: {accepted}"
    );
    stop_and_expect_drained(child, LIMIT);
    let written: Vec<i64> = json_lines(&dir.path().join("out.ndjson"))
        .iter()
        .filter_map(|line| line["n"].as_i64())
        .collect();
    let expected: Vec<i64> = (0..accepted as i64).collect();
    assert_eq!(written, expected, "exactly the accepted events, in order");
}

/// Bodies take their bytes from `max_buffered` while their request is handled: one that
/// does not fit is answered 503 with Retry-After (declared, or sent in chunks), and the
/// bytes come back once a request is answered.
#[tokio::test]
async fn bodies_past_max_buffered_are_turned_away_with_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write(
        dir.path(),
        "budget.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.web]
kind = "http_server"
address = "127.0.0.1:{port}"
interceptors = [{{ kind = "lines" }}]
max_buffered = 4096
[connectors.out]
kind = "blackhole"
inputs = ["web"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, port, LIMIT);
    let client = http_client();
    let url = format!("http://127.0.0.1:{port}/");
    let large = "{\"n\":1}\n".repeat(1000);
    let declared = client
        .post(&url)
        .body(large.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(declared.status(), 503);
    assert_eq!(
        declared.headers()["connection"],
        "close",
        "a refused body is not read, so its connection closes and says so: the client does not reuse it"
    );
    assert!(declared.headers().contains_key("retry-after"));
    let reason = declared.text().await.expect("body");
    assert!(reason.contains("max_buffered"), "{reason}");
    let chunks = futures::stream::iter(
        large
            .into_bytes()
            .chunks(1000)
            .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
            .collect::<Vec<_>>(),
    );
    let chunked = client
        .post(&url)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("post");
    assert_eq!(
        chunked.status(),
        503,
        "a chunked body is counted as it arrives"
    );
    for _ in 0..3 {
        let small = client
            .post(&url)
            .body("{\"n\":1}\n".repeat(100))
            .send()
            .await
            .expect("post");
        assert_eq!(
            small.status(),
            200,
            "a body that fits, again and again: bytes come back"
        );
    }
    stop_and_expect_drained(child, LIMIT);
}

/// The process's peak resident set (`VmHWM`) in KB.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}
