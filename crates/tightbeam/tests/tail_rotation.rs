//! Issue 7: the file tail keeps every line across truncation and rotation, while running and
//! while stopped.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn tail_config() -> &'static str {
    r#"data_dir = "state"
[api]
address = "off"
[connectors.log]
kind = "file"
path = "in.ndjson"
mode = "tail"
[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["log"]
"#
}

fn lines(tag: &str, range: std::ops::Range<u32>) -> String {
    range
        .map(|n| format!("{{\"tag\":\"{tag}\",\"n\":{n}}}\n"))
        .collect()
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open");
    file.write_all(text.as_bytes()).expect("append");
}

/// Every (tag, n) in the output, with how many times it came.
fn seen(dir: &Path) -> BTreeMap<(String, u64), usize> {
    let mut seen = BTreeMap::new();
    for line in json_lines(&dir.join("out.ndjson")) {
        let key = (
            line["tag"].as_str().unwrap_or("").to_owned(),
            line["n"].as_u64().unwrap_or(0),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

fn expect_all(dir: &Path, expected: &[(&str, std::ops::Range<u32>)]) {
    let seen = seen(dir);
    for (tag, range) in expected {
        for n in range.clone() {
            assert_eq!(
                seen.get(&((*tag).to_owned(), u64::from(n))),
                Some(&1),
                "{tag} {n} arrived once"
            );
        }
    }
}

#[tokio::test]
async fn truncated_and_rewritten_while_running_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.ndjson");
    append(&input, &lines("before", 0..100));
    let config = write(dir.path(), "tail.toml", tail_config());
    let child = start(dir.path(), &config);
    wait_for_json_lines(&dir.path().join("out.ndjson"), 100, LIMIT).await;
    // Truncate, then write more than was there before the next poll.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    append(&input, &lines("after", 0..10_000));
    wait_for_json_lines(&dir.path().join("out.ndjson"), 10_100, LIMIT).await;
    stop_and_expect_drained(child, LIMIT);
    expect_all(dir.path(), &[("before", 0..100), ("after", 0..10_000)]);
}

#[tokio::test]
async fn rotated_while_running_finishes_the_old_file_then_reads_the_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.ndjson");
    append(&input, &lines("old", 0..100));
    let config = write(dir.path(), "tail.toml", tail_config());
    let child = start(dir.path(), &config);
    wait_for_json_lines(&dir.path().join("out.ndjson"), 100, LIMIT).await;
    let rotated = dir.path().join("in.ndjson.1");
    std::fs::rename(&input, &rotated).expect("rotate");
    // The writer still had the old file open for a moment.
    append(&rotated, &lines("late", 0..50));
    append(&input, &lines("new", 0..9_000));
    wait_for_json_lines(&dir.path().join("out.ndjson"), 9_150, LIMIT).await;
    stop_and_expect_drained(child, LIMIT);
    expect_all(
        dir.path(),
        &[("old", 0..100), ("late", 0..50), ("new", 0..9_000)],
    );
}

#[tokio::test]
async fn rotated_while_stopped_finishes_the_old_file_on_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.ndjson");
    append(&input, &lines("first", 0..100));
    let config = write(dir.path(), "tail.toml", tail_config());
    let child = start(dir.path(), &config);
    wait_for_json_lines(&dir.path().join("out.ndjson"), 100, LIMIT).await;
    stop_and_expect_drained(child, LIMIT);
    // While stopped: more lines land in the old file, then it is rotated and a new one starts.
    append(&input, &lines("unread", 0..40));
    std::fs::rename(&input, dir.path().join("in.ndjson.1")).expect("rotate");
    append(&input, &lines("new", 0..60));
    let child = start(dir.path(), &config);
    wait_for_json_lines(&dir.path().join("out.ndjson"), 200, LIMIT).await;
    stop_and_expect_drained(child, LIMIT);
    expect_all(
        dir.path(),
        &[("first", 0..100), ("unread", 0..40), ("new", 0..60)],
    );
}
