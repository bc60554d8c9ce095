//! The `http_stream` relay against a small streaming server in Python
//! (`tests/peers/stream_server.py`): DATA, PING and SYNC envelopes as NDJSON lines and as
//! server-sent events. The feed goes silent (the engine notices by its heartbeat timeout
//! and reconnects) and then drops the connection (the engine resumes from the last
//! confirmed SYNC marker); every message reaches the output, and the markers the server
//! received are checked.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);
const TOTAL: usize = 150;

/// The Python feed on `port`, killed when dropped.
struct StreamServer(Child);

impl StreamServer {
    fn start(port: u16, format: &str) -> Self {
        Self::start_with(port, format, TOTAL, "scripted")
    }

    /// `mode` `steady`: every connection sends all the rest.
    fn start_with(port: u16, format: &str, total: usize, mode: &str) -> Self {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/stream_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(format)
            .arg(total.to_string())
            .arg(mode)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the stream server");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's first line");
        assert_eq!(line.trim(), "listening");
        Self(child)
    }
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the server recorded: each connection's resume marker, and the markers synced.
async fn server_state(port: u16) -> (Vec<Option<String>>, Vec<String>) {
    let (_, state) = get_json(&http_client(), &format!("http://127.0.0.1:{port}/state")).await;
    let connections = state["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|resume| resume.as_str().map(str::to_owned))
        .collect();
    let synced = state["synced"]
        .as_array()
        .expect("synced")
        .iter()
        .map(|marker| marker.as_str().expect("a marker").to_owned())
        .collect();
    (connections, synced)
}

/// The `since` query parameter of each connection (`resume_query`), in order.
async fn since_params(port: u16) -> Vec<Option<String>> {
    let (_, state) = get_json(&http_client(), &format!("http://127.0.0.1:{port}/state")).await;
    state["since"]
        .as_array()
        .expect("since")
        .iter()
        .map(|since| since.as_str().map(str::to_owned))
        .collect()
}

/// The number in a marker `m<n>`.
fn marker_number(marker: &str) -> usize {
    marker[1..].parse().expect("m<n>")
}

/// The engine's config: the feed on `feed_port` into `out.ndjson`.
fn relay_config(api_port: u16, feed_port: u16, format: &str) -> String {
    format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.feed]
kind = "http_stream"
url = "http://127.0.0.1:{feed_port}/stream"
format = "{format}"
heartbeat_timeout = "2s"
sync_url = "http://127.0.0.1:{feed_port}/sync"
resume_query = "since"
reconnect_min = "100ms"
reconnect_max = "500ms"

[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["feed"]

[connectors.bad]
kind = "file"
path = "errors.ndjson"
inputs = ["feed._errors"]
"#
    )
}

async fn relay_through_silence_and_a_dropped_connection(format: &str) {
    let feed_port = free_port();
    let _server = StreamServer::start(feed_port, format);
    let api_port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = relay_config(api_port, feed_port, format);
    let path = write(dir.path(), "feed.toml", &config);
    let mut child = start(dir.path(), &path);
    wait_for_port(&mut child, api_port, LIMIT);

    let output = dir.path().join("out.ndjson");
    let distinct = DistinctN::new(TOTAL);
    wait_until(&format!("{TOTAL} distinct messages relayed"), LIMIT, || {
        let lines = json_lines(&output);
        let done = lines.iter().any(|body| distinct.see(body));
        async move { done.then_some(()) }
    })
    .await;
    // Everything acknowledged: the last marker is confirmed and saved.
    let last = format!("m{TOTAL}");
    wait_until(&format!("{last} synced"), LIMIT, || async {
        let (_, synced) = server_state(feed_port).await;
        synced.contains(&last).then_some(())
    })
    .await;
    stop_and_expect_drained(child, LIMIT);

    let (connections, synced) = server_state(feed_port).await;
    println!("{format}: connections resumed from {connections:?}; markers synced {synced:?}");
    assert!(connections.len() >= 3, "{connections:?}");
    assert_eq!(connections[0], None, "the first connection starts afresh");
    // The first connection went silent after m50, all of it acknowledged by then.
    assert_eq!(connections[1].as_deref(), Some("m50"), "{connections:?}");
    // The second dropped after m100: what was in flight settled first, so the third
    // resumed from there.
    assert_eq!(connections[2].as_deref(), Some("m100"), "{connections:?}");
    // `resume_query` carries the same marker as `Last-Event-ID`.
    assert_eq!(since_params(feed_port).await, connections);
    let numbers: Vec<usize> = synced.iter().map(|marker| marker_number(marker)).collect();
    assert!(
        numbers.windows(2).all(|pair| pair[0] < pair[1]),
        "markers synced in order, each once: {synced:?}"
    );
    let lines = json_lines(&output);
    let mut seen: Vec<i64> = lines
        .iter()
        .map(|line| line["n"].as_i64().expect("n"))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..TOTAL as i64).collect::<Vec<_>>(), "every message");
    assert_eq!(
        lines.len(),
        TOTAL,
        "no duplicates: each connection resumed where the last confirmed"
    );
    // The third connection began with two envelopes that cannot be read.
    let bad = json_lines(&dir.path().join("errors.ndjson"));
    let reasons: Vec<&str> = bad
        .iter()
        .map(|line| line["error"]["message"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(reasons[0].contains("not JSON"), "{reasons:?}");
    assert!(
        reasons[1].contains("unknown envelope type `HELLO`"),
        "{reasons:?}"
    );
    assert_eq!(bad[0]["raw"], "this is not JSON");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ndjson_feed_is_relayed_through_silence_and_a_dropped_connection() {
    relay_through_silence_and_a_dropped_connection("ndjson").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sent_events_feed_is_relayed_through_silence_and_a_dropped_connection() {
    relay_through_silence_and_a_dropped_connection("sse").await;
}

/// kill -9 of the engine in the middle of 10,000 messages, then a restart: the feed resumes
/// from the last marker the engine confirmed to it, and every message reaches the output
/// (at least once; the duplicates, those after that marker, are counted and printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_in_the_middle_of_10000_messages_loses_none() {
    const COUNT: usize = 10_000;
    let feed_port = free_port();
    let _server = StreamServer::start_with(feed_port, "ndjson", COUNT, "steady");
    let api_port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        dir.path(),
        "feed.toml",
        &relay_config(api_port, feed_port, "ndjson"),
    );
    let output = dir.path().join("out.ndjson");
    let mut child = start(dir.path(), &path);
    wait_for_port(&mut child, api_port, LIMIT);
    wait_for_json_lines(&output, 1_000, LIMIT).await;
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let (_, synced) = server_state(feed_port).await;
    let at_kill = json_lines(&output).len();

    let started = std::time::Instant::now();
    let mut child = start(dir.path(), &path);
    wait_for_port(&mut child, api_port, LIMIT);
    let distinct = DistinctN::new(COUNT);
    wait_until(&format!("{COUNT} distinct messages relayed"), LIMIT, || {
        let done = json_lines(&output).iter().any(|body| distinct.see(body));
        async move { done.then_some(()) }
    })
    .await;
    stop_and_expect_drained(child, LIMIT);
    let (connections, _) = server_state(feed_port).await;
    let resumed = connections.last().cloned().flatten();
    assert_eq!(
        resumed.as_deref(),
        synced.last().map(String::as_str),
        "the restart resumed from the last marker synced before the kill"
    );
    let lines = json_lines(&output).len();
    println!(
        "kill -9 after {at_kill} of {COUNT} written: {COUNT} distinct at the output, {} duplicates, resumed from {resumed:?}, {:.1} s after the restart",
        lines - COUNT,
        started.elapsed().as_secs_f64()
    );
}
