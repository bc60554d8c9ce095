//! `partition` and `batch` against the real binary: per-key order across lanes, and batch
//! boundaries by count, bytes, group, timeout and stream, each against a reference.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

const LIMIT: Duration = Duration::from_secs(60);

fn finite_config(steps: &str) -> String {
    format!(
        r#"[api]
address = "off"
[connectors.in]
kind = "file"
path = "in.ndjson"

[pipelines.p]
inputs = ["in"]
steps = [{steps}]

[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["p"]
"#
    )
}

fn run_finite(dir: &std::path::Path, input: &str, steps: &str) -> Vec<serde_json::Value> {
    write(dir, "in.ndjson", input);
    let config = write(dir, "steps.toml", &finite_config(steps));
    let _ = std::fs::remove_file(dir.join("out.ndjson"));
    let output = run_to_end(dir, &["run", "-c", config.to_str().expect("path")], LIMIT);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    json_lines(&dir.join("out.ndjson"))
}

fn seqs(batch: &serde_json::Value) -> Vec<u64> {
    batch["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["seq"].as_u64().expect("seq"))
        .collect()
}

#[test]
fn partition_keeps_each_keys_order_across_two_lanes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = 13u64;
    let input: String = (0..30_000u64)
        .map(|seq| format!("{{\"key\":\"k{}\",\"seq\":{seq}}}\n", (seq * 7) % keys))
        .collect();
    let output = run_finite(
        dir.path(),
        &input,
        "{ kind = \"partition\", key = \".key\", lanes = 2 }, { kind = \"transform\", source = '.seen = true' }",
    );
    assert_eq!(output.len(), 30_000, "every event, once");
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in &output {
        assert_eq!(event["seen"], true, "the step after the partition ran");
        by_key
            .entry(event["key"].as_str().expect("key").to_owned())
            .or_default()
            .push(event["seq"].as_u64().expect("seq"));
    }
    // The reference: the input's order, per key.
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for seq in 0..30_000u64 {
        expected
            .entry(format!("k{}", (seq * 7) % keys))
            .or_default()
            .push(seq);
    }
    assert_eq!(by_key, expected);
}

#[test]
fn batch_closes_by_count_and_bytes_and_flushes_the_rest_at_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input: String = (0..25u64)
        .map(|seq| format!("{{\"seq\":{seq}}}\n"))
        .collect();
    let batches = run_finite(
        dir.path(),
        &input,
        "{ kind = \"batch\", max_events = 10, timeout = \"60s\" }",
    );
    let counts: Vec<u64> = batches
        .iter()
        .map(|b| b["count"].as_u64().expect("count"))
        .collect();
    assert_eq!(
        counts,
        vec![10, 10, 5],
        "by count, then the rest flushed at the end"
    );
    assert_eq!(seqs(&batches[2]), (20..25).collect::<Vec<u64>>());

    // Bytes: each event is about 40 bytes of JSON; a 100-byte cap holds two of them.
    let input: String = (0..7u64)
        .map(|seq| format!("{{\"seq\":{seq},\"pad\":\"{}\"}}\n", "x".repeat(20)))
        .collect();
    let batches = run_finite(
        dir.path(),
        &input,
        "{ kind = \"batch\", max_events = 100, max_bytes = 100, timeout = \"60s\" }",
    );
    let sizes: Vec<usize> = batches.iter().map(|b| seqs(b).len()).collect();
    assert_eq!(sizes, vec![2, 2, 2, 1]);
}

#[test]
fn batch_keeps_one_open_batch_per_group_with_the_group_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let regions = ["eu", "us", "eu", "eu", "ap", "us", "eu", "us", "ap", "eu"];
    let input: String = regions
        .iter()
        .enumerate()
        .map(|(seq, region)| format!("{{\"seq\":{seq},\"region\":\"{region}\"}}\n"))
        .collect();
    let batches = run_finite(
        dir.path(),
        &input,
        "{ kind = \"batch\", max_events = 3, timeout = \"60s\", group_by = { region = \".region\" } }",
    );
    // The reference: per region, runs of three in input order.
    let mut expected: Vec<(String, Vec<u64>)> = Vec::new();
    let mut open: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (seq, region) in regions.iter().enumerate() {
        let batch = open.entry(region).or_default();
        batch.push(seq as u64);
        if batch.len() == 3 {
            expected.push(((*region).to_owned(), std::mem::take(batch)));
        }
    }
    let mut got: Vec<(String, Vec<u64>)> = batches
        .iter()
        .map(|b| (b["region"].as_str().expect("region").to_owned(), seqs(b)))
        .collect();
    let closed_by_count = expected.len();
    for (region, rest) in open {
        if !rest.is_empty() {
            expected.push((region.to_owned(), rest));
        }
    }
    // Batches closed by count come out in order; the ones flushed at the end in any order.
    got[closed_by_count..].sort();
    expected[closed_by_count..].sort();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn batch_closes_on_timeout_per_stream_and_flushes_at_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tcp_port, http_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "streams.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.tcp]
kind = "tcp_server"
address = "127.0.0.1:{tcp_port}"

[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
interceptors = [{{ kind = "lines" }}]

[pipelines.per_stream]
inputs = ["tcp"]
steps = [{{ kind = "batch", max_events = 100, timeout = "60s", per_stream = true }}]

[pipelines.timed]
inputs = ["web"]
steps = [{{ kind = "batch", max_events = 100, timeout = "200ms" }}]

[connectors.streams]
kind = "file"
path = "streams.ndjson"
inputs = ["per_stream"]

[connectors.timed_out]
kind = "file"
path = "timed.ndjson"
inputs = ["timed"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, tcp_port, LIMIT);
    wait_for_port(&mut child, http_port, LIMIT);

    // Timeout: three events wait in an open batch; it closes 200 ms after the first, and
    // the request is answered once the batch is written.
    let started = std::time::Instant::now();
    let response = http_client()
        .post(format!("http://127.0.0.1:{http_port}/"))
        .body("{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3}\n")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "held until the timeout"
    );
    let timed = json_lines(&dir.path().join("timed.ndjson"));
    assert_eq!(timed.len(), 1);
    assert_eq!(seqs(&timed[0]), vec![1, 2, 3]);

    // Per stream: two connections interleave; each gets its own batch, flushed at shutdown.
    let mut first = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port))
        .await
        .expect("connect");
    let mut second = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port))
        .await
        .expect("connect");
    for seq in 0..6u64 {
        let socket = if seq % 2 == 0 {
            &mut first
        } else {
            &mut second
        };
        socket
            .write_all(format!("{{\"seq\":{seq}}}\n").as_bytes())
            .await
            .expect("write");
        socket.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        json_lines(&dir.path().join("streams.ndjson")).is_empty(),
        "open batches wait for their timeout or a flush"
    );
    stop_and_expect_drained(child, LIMIT);
    let mut batches: Vec<Vec<u64>> = json_lines(&dir.path().join("streams.ndjson"))
        .iter()
        .map(seqs)
        .collect();
    batches.sort();
    assert_eq!(batches, vec![vec![0, 2, 4], vec![1, 3, 5]]);
}
