//! The `zmq` connector against libzmq peers (pyzmq, `tests/peers/zmq_peer.py`): PULL to
//! PUSH through a pipeline, SUB by prefix to PUB under a topic made from each event, REP and
//! ROUTER answering several peers at once (each reply to the peer that asked), REQ and
//! DEALER asking a peer, and a PUSH whose peer restarts.
//!
//! Skipped with the reason when pyzmq is missing, unless `TIGHTBEAM_REQUIRE_SERVICES=1`:
//! then it fails.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Whether pyzmq can be imported; prints why not when the test is skipped.
fn pyzmq() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import zmq"])
        .status()
        .is_ok_and(|status| status.success());
    let missing = "python3 -c 'import zmq' failed: pip install pyzmq";
    required("pyzmq", if found { Ok(()) } else { Err(missing) }).is_some()
}

/// A libzmq peer in its own process, killed when dropped.
struct Peer {
    child: Child,
    lines: Option<std::sync::mpsc::Receiver<String>>,
}

impl Peer {
    fn spawn(args: &[&str]) -> Self {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/zmq_peer.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the peer");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines: Some(lines),
        }
    }

    /// A bound peer, once it listens.
    fn bound(args: &[&str]) -> Self {
        let peer = Self::spawn(args);
        let first = peer.next_line().expect("the peer's first line");
        assert_eq!(first, "ready");
        peer
    }

    fn next_line(&self) -> Option<String> {
        self.lines.as_ref()?.recv_timeout(LIMIT).ok()
    }

    /// Waits for the peer to exit 0 and returns the JSON lines it printed.
    fn finish(mut self) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "the peer failed: {status}");
                break;
            }
            assert!(Instant::now() < deadline, "the peer did not finish in time");
            std::thread::sleep(Duration::from_millis(20));
        }
        let lines = self.lines.take().expect("lines");
        let mut values = Vec::new();
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
            values.push(serde_json::from_str(&line).expect("JSON"));
        }
        values
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn endpoint(port: u16) -> String {
    format!("tcp://127.0.0.1:{port}")
}

/// Starts an engine on `config` (the API on `api_port`) and waits for its API.
fn engine(dir: &std::path::Path, api_port: u16, config: &str) -> Child {
    let config = format!("[api]\naddress = \"127.0.0.1:{api_port}\"\n\n{config}");
    let path = write(dir, "zmq.toml", &config);
    let mut child = start(dir, &path);
    wait_for_port(&mut child, api_port, LIMIT);
    child
}

/// The W1-like pipeline every test relays through: `n` an integer, `relayed` set.
const MARK: &str = r#"[pipelines.mark]
inputs = ["zin"]
steps = [{ kind = "transform", source = '''
.n = to_int!(.n)
.relayed = true
''' }]
"#;

/// PULL bound on `in_port`, through the pipeline, PUSH connected to `out_port` (with
/// `push_extra` keys).
fn pull_to_push(in_port: u16, out_port: u16, push_extra: &str) -> String {
    format!(
        r#"[connectors.zin]
kind = "zmq"
socket = "pull"
bind = "{}"

{MARK}
[connectors.zout]
kind = "zmq"
socket = "push"
connect = "{}"
inputs = ["mark"]
{push_extra}"#,
        endpoint(in_port),
        endpoint(out_port)
    )
}

fn numbers(values: &[serde_json::Value], at: &str) -> Vec<i64> {
    let mut numbers: Vec<i64> = values
        .iter()
        .map(|value| {
            value
                .pointer(at)
                .and_then(serde_json::Value::as_i64)
                .expect("n")
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_to_push_through_a_pipeline() {
    if !pyzmq() {
        return;
    }
    let (api_port, in_port, out_port) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Peer::bound(&["pull", &endpoint(out_port), "1000"]);
    let config = pull_to_push(in_port, out_port, "");
    let child = engine(dir.path(), api_port, &config);
    wait_for_status(&http_client(), api_port, "zout", "running", LIMIT).await;
    let source = Peer::spawn(&["push", &endpoint(in_port), "1000"]);
    let received = sink.finish();
    source.finish();
    assert!(received.iter().all(|value| value["relayed"] == true));
    assert_eq!(
        numbers(&received, "/n"),
        (0..1_000).collect::<Vec<_>>(),
        "each once"
    );
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_by_prefix_to_pub_under_a_topic_made_from_each_event() {
    if !pyzmq() {
        return;
    }
    let (api_port, in_port, out_port) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let _publisher = Peer::spawn(&["pub", &endpoint(in_port)]);
    let config = format!(
        r#"[connectors.zin]
kind = "zmq"
socket = "sub"
connect = "{}"
subscribe = ["a."]

[pipelines.mark]
inputs = ["zin"]
steps = [{{ kind = "transform", source = '''
.came_on = string!(%tightbeam.topic)
''' }}]

[connectors.zout]
kind = "zmq"
socket = "pub"
bind = "{}"
topic = "out.{{{{ .kind }}}}"
inputs = ["mark"]
"#,
        endpoint(in_port),
        endpoint(out_port)
    );
    let child = engine(dir.path(), api_port, &config);
    let subscriber = Peer::spawn(&["sub", &endpoint(out_port), "out.", "50"]);
    let received = subscriber.finish();
    for value in &received {
        assert_eq!(value["topic"], "out.temp", "only a.* passes: {value}");
        assert_eq!(value["body"]["came_on"], "a.readings", "{value}");
    }
    assert_eq!(received.len(), 50);
    stop_and_expect_drained(child, LIMIT);
}

/// REP (or ROUTER) bound, two libzmq peers asking at once: each answer goes to the peer
/// that asked.
async fn answers_reach_the_peer_that_asked(socket: &str, peer_socket: &str) {
    if !pyzmq() {
        return;
    }
    let (api_port, port) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        r#"[connectors.service]
kind = "zmq"
socket = "{socket}"
bind = "{}"
inputs = ["answer"]

[pipelines.answer]
inputs = ["service"]
steps = [{{ kind = "transform", source = '''
.doubled = to_int!(.n) * 2
''' }}]
"#,
        endpoint(port)
    );
    let child = engine(dir.path(), api_port, &config);
    wait_for_status(&http_client(), api_port, "service", "running", LIMIT).await;
    let askers: Vec<Peer> = ["one", "two"]
        .into_iter()
        .map(|name| Peer::spawn(&[peer_socket, &endpoint(port), "200", name]))
        .collect();
    for asker in askers {
        let said = asker.finish();
        assert_eq!(said.len(), 1, "{said:?}");
        assert_eq!(said[0]["answered"], 200);
    }
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rep_answers_each_req_peer() {
    answers_reach_the_peer_that_asked("rep", "req").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_answers_each_dealer_peer() {
    answers_reach_the_peer_that_asked("router", "dealer").await;
}

/// REQ (or DEALER) connected to a libzmq peer that answers: each event goes out as a
/// request, and each answer comes back as an event.
async fn requests_are_answered_by_the_peer(socket: &str, peer_socket: &str) {
    if !pyzmq() {
        return;
    }
    let (api_port, port) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let answerer = Peer::bound(&[peer_socket, &endpoint(port), "100"]);
    let lines: String = (0..100).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    write(dir.path(), "in.ndjson", &lines);
    let config = format!(
        r#"[connectors.requests]
kind = "file"
path = "in.ndjson"

[connectors.asker]
kind = "zmq"
socket = "{socket}"
connect = "{}"
inputs = ["requests"]

[connectors.answers]
kind = "file"
path = "answers.ndjson"
inputs = ["asker"]
"#,
        endpoint(port)
    );
    let child = engine(dir.path(), api_port, &config);
    let answers = wait_for_json_lines(&dir.path().join("answers.ndjson"), 100, LIMIT).await;
    assert!(
        answers
            .iter()
            .all(|answer| answer["answered_by"] == peer_socket)
    );
    assert_eq!(numbers(&answers, "/n"), (0..100).collect::<Vec<_>>());
    assert_eq!(answerer.finish().len(), 100);
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_asks_a_rep_peer() {
    requests_are_answered_by_the_peer("req", "rep").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dealer_asks_a_router_peer() {
    requests_are_answered_by_the_peer("dealer", "router").await;
}

/// A connected PUSH whose PULL peer exits and comes back: the socket is made again, and
/// what is sent once it is arrives, all of it. What was sent into the closed connection
/// before the engine noticed is lost (ZeroMQ confirms nothing); the test prints how much.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reconnects_when_its_peer_restarts() {
    if !pyzmq() {
        return;
    }
    let (api_port, in_port, out_port) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = pull_to_push(
        in_port,
        out_port,
        "reconnect_min = \"50ms\"\nreconnect_max = \"200ms\"\n",
    );
    let first = Peer::bound(&["pull", &endpoint(out_port), "100"]);
    let child = engine(dir.path(), api_port, &config);
    Peer::spawn(&["push", &endpoint(in_port), "100", "0"]).finish();
    assert_eq!(numbers(&first.finish(), "/n"), (0..100).collect::<Vec<_>>());

    let second = Peer::bound(&["pull", &endpoint(out_port), "1000000"]);
    let mut seen = std::collections::BTreeSet::new();
    // Rounds of 10 until one reaches the new peer: the engine noticed, made the socket again.
    let deadline = Instant::now() + LIMIT;
    let mut next = 100;
    while seen.is_empty() {
        assert!(
            Instant::now() < deadline,
            "nothing reached the restarted peer"
        );
        Peer::spawn(&["push", &endpoint(in_port), "10", &next.to_string()]).finish();
        next += 10;
        while let Some(line) = second
            .lines
            .as_ref()
            .and_then(|lines| lines.recv_timeout(Duration::from_millis(300)).ok())
        {
            let value: serde_json::Value = serde_json::from_str(&line).expect("JSON");
            seen.insert(value["n"].as_i64().expect("n"));
        }
    }
    let lost_before_noticed = (100..next).filter(|n| !seen.contains(n)).count();
    Peer::spawn(&["push", &endpoint(in_port), "500", "10000"]).finish();
    while !(10_000..10_500).all(|n| seen.contains(&n)) {
        let line = second.next_line().expect("the rest after the restart");
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        seen.insert(value["n"].as_i64().expect("n"));
    }
    println!(
        "peer restarted: {lost_before_noticed} of {} sent before the engine noticed were lost; 500 of 500 after",
        next - 100
    );
    stop_and_expect_drained(child, LIMIT);
}
