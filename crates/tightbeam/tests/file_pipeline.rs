//! File to file through the W1 steps, with bad lines on `_errors`, and tail checkpoints.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn w1_config(input: &str, output: &str, rejects: &str, mode: &str) -> String {
    format!(
        r#"data_dir = "state"
[api]
address = "off"

[connectors.input]
kind = "file"
path = "{input}"
mode = "{mode}"

[pipelines.w1]
inputs = ["input"]
steps = [
  {{ kind = "filter", condition = '.kind != "debug"' }},
  {{ kind = "transform", source = '''
.processed = true
.reading = del(.value)
''' }},
]

[connectors.output]
kind = "file"
path = "{output}"
mode = "append"
inputs = ["w1"]

[connectors.rejects]
kind = "file"
path = "{rejects}"
mode = "append"
inputs = ["input._errors", "w1._errors"]
"#
    )
}

#[test]
fn file_to_file_runs_w1_steps_and_exits_when_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut input = String::new();
    for seq in 0..5000 {
        let kind = if seq % 10 == 0 { "debug" } else { "temp" };
        input.push_str(&format!(
            "{{\"seq\":{seq},\"kind\":\"{kind}\",\"value\":{seq}.5}}\n"
        ));
    }
    input.push_str("this is not json\n");
    input.push_str("{\"seq\":5000,\"kind\":\"temp\",\"value\":1}"); // no final newline
    write(dir.path(), "in.ndjson", &input);
    let config = write(
        dir.path(),
        "w1.toml",
        &w1_config("in.ndjson", "out/out.ndjson", "out/rejects.ndjson", "read"),
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

    let events = json_lines(&dir.path().join("out/out.ndjson"));
    assert_eq!(
        events.len(),
        4501,
        "4500 non-debug lines plus the unterminated last one"
    );
    assert!(
        events
            .iter()
            .all(|event| event["processed"] == true && event.get("value").is_none())
    );
    assert_eq!(events[0]["reading"], 1.5);
    let seqs: Vec<i64> = events
        .iter()
        .map(|event| event["seq"].as_i64().expect("seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "order is kept"
    );

    let rejects = json_lines(&dir.path().join("out/rejects.ndjson"));
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0]["raw"], "this is not json");
    assert!(
        rejects[0]["error"]["message"]
            .as_str()
            .expect("message")
            .contains("expected")
    );
}

#[test]
fn tail_resumes_from_its_checkpoint_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = |range: std::ops::Range<u32>| {
        range
            .map(|seq| format!("{{\"seq\":{seq},\"kind\":\"temp\",\"value\":1}}\n"))
            .collect::<String>()
    };
    write(dir.path(), "log.ndjson", &lines(0..100));
    let config = write(
        dir.path(),
        "tail.toml",
        &w1_config("log.ndjson", "out.ndjson", "rejects.ndjson", "tail"),
    );
    let output_path = dir.path().join("out.ndjson");

    let mut first = start(dir.path(), &config);
    wait_for_lines(&output_path, 100, &mut first);
    terminate(&first);
    let status = wait_with_limit(first, LIMIT).status;
    assert!(status.success(), "first run drained and exited 0");

    std::fs::write(
        dir.path().join("log.ndjson"),
        lines(0..100) + &lines(100..150),
    )
    .expect("append");
    let mut second = start(dir.path(), &config);
    wait_for_lines(&output_path, 150, &mut second);
    terminate(&second);
    assert!(wait_with_limit(second, LIMIT).status.success());

    let seqs: Vec<i64> = json_lines(&output_path)
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (0..150).collect::<Vec<i64>>(),
        "each line exactly once across the restart"
    );
}

fn wait_for_lines(path: &std::path::Path, count: usize, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + LIMIT;
    while json_lines(path).len() < count {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("tightbeam exited early with {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw {count} lines"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn generator_with_a_count_finishes_and_the_process_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(
        dir.path(),
        "gen.toml",
        "[api]\naddress = \"off\"\n[connectors.gen]\nkind = \"generator\"\ncount = 2500\nbatch_size = 100\n[connectors.out]\nkind = \"file\"\npath = \"gen.ndjson\"\ninputs = [\"gen\"]\n",
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
    let events = json_lines(&dir.path().join("gen.ndjson"));
    assert_eq!(events.len(), 2500);
    assert_eq!(events[2499]["seq"], 2499);
}

#[test]
fn large_file_keeps_order_across_chunks_and_skips_an_overlong_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut input = String::new();
    for seq in 0..20_000 {
        input.push_str(&format!(
            "{{\"seq\":{seq},\"kind\":\"temp\",\"value\":1,\"pad\":\"{}\"}}\n",
            "x".repeat(seq % 300)
        ));
        if seq == 10_000 {
            // Far longer than max_length and than a read chunk: reported once, then skipped.
            input.push_str(&format!("{{\"huge\":\"{}\"}}\n", "y".repeat(400_000)));
        }
    }
    write(dir.path(), "big.ndjson", &input);
    let config = write(
        dir.path(),
        "big.toml",
        r#"[api]
address = "off"
[connectors.input]
kind = "file"
path = "big.ndjson"
interceptors = [{ kind = "lines", max_length = 100000 }]
[connectors.output]
kind = "file"
path = "out.ndjson"
inputs = ["input"]
[connectors.rejects]
kind = "file"
path = "rejects.ndjson"
inputs = ["input._errors"]
"#,
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
    let seqs: Vec<i64> = json_lines(&dir.path().join("out.ndjson"))
        .iter()
        .map(|event| event["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (0..20_000).collect::<Vec<i64>>(),
        "every line once, in order"
    );
    let rejects = json_lines(&dir.path().join("rejects.ndjson"));
    assert_eq!(rejects.len(), 1, "the overlong line is reported once");
    assert!(
        rejects[0]["error"]["message"]
            .as_str()
            .expect("message")
            .contains("max_length")
    );
}
