//! The command line as a user meets it: validate, graph, and errors at start.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn every_example_validates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("examples dir") {
        let path = entry.expect("entry").path();
        let Some("toml" | "yaml" | "yml") = path.extension().and_then(|e| e.to_str()) else {
            continue;
        };
        // The files only: examples name data files and ports of the machine they run on.
        let output = run_to_end(
            dir.path(),
            &[
                "validate",
                "--no-environment",
                "-c",
                path.to_str().expect("utf-8 path"),
            ],
            LIMIT,
        );
        assert!(
            output.status.success(),
            "{} failed validation:\n{}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 3, "expected several examples, found {checked}");
}

#[test]
fn validate_lists_every_problem_with_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "bad.toml",
        r#"[connectors.web]
kind = "http_server"
adress = "127.0.0.1:1"

[connectors.typo]
kind = "htp_server"

[pipelines.p]
inputs = ["nowhere"]
steps = [
  { kind = "transform", source = '.a = nope()' },
]
"#,
    );
    let output = run_to_end(dir.path(), &["validate", "-c", "bad.toml"], LIMIT);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "bad.toml:3:1: connector web: unknown key `adress` (did you mean `address`?)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "bad.toml:6:1: unknown connector kind `htp_server` (did you mean `http_server`?)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.toml:11:40: pipeline p: VRL in steps[0].source does not compile"),
        "{stderr}"
    );
    assert!(stderr.contains("call to undefined function"), "{stderr}");
}

#[test]
fn unknown_input_and_cycles_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "graph.toml",
        r#"[pipelines.a]
inputs = ["b"]

[pipelines.b]
inputs = ["a", "nowhere.x"]
"#,
    );
    let output = run_to_end(dir.path(), &["validate", "-c", "graph.toml"], LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("graph.toml:5:1: input `nowhere.x` names no output"),
        "{stderr}"
    );
}

#[test]
fn pipeline_cycle_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "cycle.toml",
        "[pipelines.a]\ninputs = [\"b\"]\n\n[pipelines.b]\ninputs = [\"a\"]\n",
    );
    let output = run_to_end(dir.path(), &["validate", "-c", "cycle.toml"], LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("pipelines form a cycle"), "{stderr}");
}

#[test]
fn graph_prints_dot_with_every_edge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = examples_dir().join("quickstart.toml");
    let output = run_to_end(
        dir.path(),
        &["graph", "-c", example.to_str().expect("path")],
        LIMIT,
    );
    assert!(output.status.success());
    let dot = String::from_utf8_lossy(&output.stdout);
    assert!(dot.starts_with("digraph tightbeam {"), "{dot}");
    assert!(dot.contains("\"sensors\" -> \"enrich\";"), "{dot}");
    assert!(
        dot.contains("\"enrich\" -> \"out\" [label=\"hot\"];"),
        "{dot}"
    );
}

#[test]
fn port_in_use_is_a_one_line_error_naming_the_connector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = write(
        dir.path(),
        "busy.toml",
        &format!(
            "[api]\naddress = \"off\"\n[connectors.web]\nkind = \"http_server\"\naddress = \"127.0.0.1:{port}\"\n[connectors.sink]\nkind = \"blackhole\"\ninputs = [\"web\"]\n"
        ),
    );
    let output = run_to_end(
        dir.path(),
        &["run", "-c", config.to_str().expect("path")],
        LIMIT,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("connector web: cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_input_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(
        dir.path(),
        "missing.toml",
        "[api]\naddress = \"off\"\n[connectors.in]\nkind = \"file\"\npath = \"no-such-file.ndjson\"\n[connectors.sink]\nkind = \"blackhole\"\ninputs = [\"in\"]\n",
    );
    let output = run_to_end(
        dir.path(),
        &["run", "-c", config.to_str().expect("path")],
        LIMIT,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("connector in: cannot open no-such-file.ndjson"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn unknown_codec_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "codec.toml",
        "[connectors.in]\nkind = \"stdin\"\ncodec = \"jsn\"\n[connectors.out]\nkind = \"stdout\"\ninputs = [\"in\"]\n",
    );
    let output = run_to_end(dir.path(), &["validate", "-c", "codec.toml"], LIMIT);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("codec.toml:3:1: connector in: `codec`: unknown variant `jsn`"),
        "{stderr}"
    );
}

#[test]
fn unwritable_output_is_a_one_line_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "blocker", "a file where a directory should be");
    let config = write(
        dir.path(),
        "unwritable.toml",
        "[api]\naddress = \"off\"\n[connectors.gen]\nkind = \"generator\"\ncount = 1\n[connectors.out]\nkind = \"file\"\npath = \"blocker/out.ndjson\"\ninputs = [\"gen\"]\n",
    );
    let output = run_to_end(
        dir.path(),
        &["run", "-c", config.to_str().expect("path")],
        LIMIT,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("connector out: cannot open for writing blocker/out.ndjson"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn stdin_to_stdout_exits_when_input_ends() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(
        dir.path(),
        "pipe.toml",
        "[api]\naddress = \"off\"\n[connectors.in]\nkind = \"stdin\"\n[pipelines.p]\ninputs = [\"in\"]\nsteps = [{ kind = \"transform\", source = '.doubled = (int(.n) ?? 0) * 2' }]\n[connectors.out]\nkind = \"stdout\"\ninputs = [\"p\"]\n",
    );
    let mut child = tightbeam()
        .args(["run", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    for n in 0..100 {
        writeln!(stdin, "{{\"n\":{n}}}").expect("write");
    }
    drop(stdin);
    let output = wait_with_limit(child, LIMIT);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    assert_eq!(lines.len(), 100);
    assert_eq!(lines[99]["doubled"], 198);
}

#[test]
fn json_log_format_writes_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(
        dir.path(),
        "gen.toml",
        "[api]\naddress = \"off\"\n[connectors.gen]\nkind = \"generator\"\ncount = 10\n[connectors.sink]\nkind = \"blackhole\"\ninputs = [\"gen\"]\n",
    );
    let output = tightbeam()
        .env("RUST_LOG", "info")
        .args(["--log-format", "json", "run", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr.lines().next().expect("a log line");
    let parsed: serde_json::Value = serde_json::from_str(first).expect("log line is JSON");
    assert_eq!(parsed["level"], "INFO");
}

#[test]
fn version_and_help_with_examples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let version = run_to_end(dir.path(), &["--version"], LIMIT);
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("tightbeam "));
    let help = run_to_end(dir.path(), &["--help"], LIMIT);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("tightbeam validate -c examples/quickstart.toml"),
        "{text}"
    );
}

/// Issue 7: `validate` checks what would fail at start on this machine (an address in use, an
/// input file that is missing, an output folder that cannot be written), each at its key;
/// `--no-environment` checks the files alone.
#[test]
fn validate_checks_the_machine_unless_told_not_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    write(
        dir.path(),
        "env.toml",
        &format!(
            "[api]\naddress = \"off\"\n[connectors.in]\nkind = \"file\"\npath = \"missing.ndjson\"\n[connectors.web]\nkind = \"http_server\"\naddress = \"127.0.0.1:{port}\"\n[connectors.out]\nkind = \"file\"\npath = \"in.ndjson/out.ndjson\"\ninputs = [\"in\", \"web\"]\n"
        ),
    );
    // A file where the output's folder should be.
    write(dir.path(), "in.ndjson", "");
    let output = run_to_end(dir.path(), &["validate", "-c", "env.toml"], LIMIT);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("env.toml:5:1: connector in: cannot read missing.ndjson"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "env.toml:8:1: connector web: cannot listen on 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("env.toml:11:1: connector out: in.ndjson is not a folder"),
        "{stderr}"
    );
    let output = run_to_end(
        dir.path(),
        &["validate", "--no-environment", "-c", "env.toml"],
        LIMIT,
    );
    assert!(output.status.success());
    drop(taken);
}

#[test]
fn validate_checks_destinations_and_warns_of_a_deprecated_action_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write(
        dir.path(),
        "crm.toml",
        r#"[connectors.web]
kind = "http_server"
address = "127.0.0.1:0"

[destinations.crm]
kind = "http"
url = "http://127.0.0.1:9000"

[destinations.crm.actions.identify]
inputs = ["web"]
version = "1"
deprecated_after = "2020-01-31"
on_succeeded = ["crm.track", "billing.charge"]

[destinations.crm.actions.track]
inputs = ["web"]
path = "/track/{{ .id"
"#,
    );
    let (output, stderr) = validate_files_only(dir.path(), "crm.toml");
    assert!(!output.status.success());
    assert!(
        stderr.contains("crm.toml:17:1: destination crm: `{{` is not closed by `}}`"),
        "{stderr}"
    );
    edit(&config, "{{ .id", "{{ .id }}");
    let (output, stderr) = validate_files_only(dir.path(), "crm.toml");
    assert!(!output.status.success());
    assert!(
        stderr.contains(
            "crm.toml:13:30: destination crm: `billing.charge` names no destination `billing`"
        ),
        "{stderr}"
    );
    edit(&config, r#", "billing.charge""#, "");
    let (output, stderr) = validate_files_only(dir.path(), "crm.toml");
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: crm.toml:12:1: destination crm: action identify version 1 is deprecated since 2020-01-31"),
        "{stderr}"
    );
}

/// `validate --no-environment -c file` in `dir`: its output and its stderr as text.
fn validate_files_only(dir: &std::path::Path, file: &str) -> (std::process::Output, String) {
    let output = run_to_end(dir, &["validate", "--no-environment", "-c", file], LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}

/// Replaces `from` with `to` in the file at `path`.
fn edit(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    std::fs::write(path, text.replace(from, to)).expect("write");
}
