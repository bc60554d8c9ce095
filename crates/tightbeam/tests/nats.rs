//! The `nats` connector against the real NATS server with JetStream on 127.0.0.1:4222:
//! messages from a JetStream stream through a pipeline into another stream, each
//! acknowledged only after its result was stored; a message the pipeline rejects is
//! terminated, not delivered again; requests on a core subject answered through a pipeline;
//! the server restarted, the engine killed with -9, two engines on one durable consumer.
//!
//! Skipped with the reason when NATS is unreachable, unless `TIGHTBEAM_REQUIRE_SERVICES=1`:
//! then it fails.

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use common::*;
use futures::StreamExt;

const URL: &str = "nats://127.0.0.1:4222";
const LIMIT: Duration = Duration::from_secs(60);

/// Held by each test: one of them restarts the server, which the others must not see.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A client of the test's own, or `None` (the reason printed) when NATS is down and
/// services are not required.
async fn server() -> Option<async_nats::Client> {
    required("NATS at 127.0.0.1:4222", async_nats::connect(URL).await)
}

/// A stream name and a subject prefix no other test uses.
fn unique_stream(prefix: &str) -> (String, String) {
    let name = unique(prefix);
    let subject = name.to_lowercase();
    (name, subject)
}

/// Publishes `bodies` to `subject` in JetStream, waiting for every publish ack (500 at a
/// time: the client holds only so many acks outstanding).
async fn publish_all(js: &jetstream::Context, subject: &str, bodies: &[String]) {
    for chunk in bodies.chunks(500) {
        let mut acks = Vec::with_capacity(chunk.len());
        for body in chunk {
            acks.push(
                js.publish(subject.to_owned(), body.clone().into())
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            ack.await.expect("stored");
        }
    }
}

/// Waits until the engine made `consumer` on `stream`: a message published to a stream
/// before is still there, but this says the connector is up.
async fn wait_for_consumer(js: &jetstream::Context, stream: &str, consumer: &str) {
    wait_until(
        &format!("consumer {consumer} on {stream}"),
        LIMIT,
        || async {
            let stream = js.get_stream(stream).await.ok()?;
            stream.consumer_info(consumer).await.ok().map(drop)
        },
    )
    .await;
}

/// Takes messages from `stream` through a consumer of the test's own, acking each, until
/// `enough` says so; fails after `LIMIT`, saying what `progress` gives.
async fn take_until(
    js: &jetstream::Context,
    stream: &str,
    mut enough: impl FnMut(String, serde_json::Value) -> bool,
    progress: impl Fn() -> String,
) {
    let name = unique("test");
    let consumer = js
        .get_stream(stream)
        .await
        .expect("stream")
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            ..pull::Config::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    loop {
        let message = tokio::time::timeout(LIMIT, messages.next())
            .await
            .unwrap_or_else(|_| panic!("{} in {stream} in time", progress()))
            .expect("a message")
            .expect("no error");
        let body: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON");
        message.ack().await.expect("ack");
        if enough(message.subject.to_string(), body) {
            break;
        }
    }
    drop(messages);
    let _ = js
        .get_stream(stream)
        .await
        .expect("stream")
        .delete_consumer(&name)
        .await;
}

/// Takes until `expected` distinct `n` were seen; returns how many messages that took.
async fn take_distinct(js: &jetstream::Context, stream: &str, expected: usize) -> usize {
    let distinct = DistinctN::new(expected);
    take_until(
        js,
        stream,
        |_, body| distinct.see(&body),
        || distinct.progress(),
    )
    .await;
    distinct.taken()
}

/// Messages in `stream`; 0 while it does not exist yet (the engine's sink declares it when
/// it connects, which may come after the test first looks).
async fn stored(js: &jetstream::Context, stream: &str) -> u64 {
    let mut found = match js.get_stream(stream).await {
        Ok(found) => found,
        Err(error) if error.to_string().contains("stream not found") => return 0,
        Err(error) => panic!("stream {stream}: {error}"),
    };
    found.info().await.expect("info").state.messages
}

/// What `consumer` on `stream` has yet to deliver and has delivered but not seen acked.
async fn unfinished(js: &jetstream::Context, stream: &str, consumer: &str) -> (u64, usize) {
    let info = js
        .get_stream(stream)
        .await
        .expect("stream")
        .consumer_info(consumer)
        .await
        .expect("consumer info")
        .clone();
    (info.num_pending, info.num_ack_pending)
}

async fn delete_streams(js: &jetstream::Context, streams: &[&str]) {
    for stream in streams {
        let _ = js.delete_stream(stream).await;
    }
}

/// A config moving JetStream stream `input` to stream `output` through a pipeline, with
/// the API on `api_port`; both streams are declared by the connectors.
fn relay_config(api_port: u16, input: (&str, &str), output: (&str, &str)) -> String {
    let ((in_stream, in_subject), (out_stream, out_subject)) = (input, output);
    format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.nats_in]
kind = "nats"
url = "{URL}"
stream = "{in_stream}"
consumer = "relay"
ack_wait = "2s"
declare.streams = [{{ name = "{in_stream}", subjects = ["{in_subject}.>"] }}]

[pipelines.mark]
inputs = ["nats_in"]
steps = [{{ kind = "transform", source = '''
.n = to_int!(.n)
.relayed = true
.came_on = %tightbeam.subject
''' }}]

[connectors.nats_out]
kind = "nats"
url = "{URL}"
inputs = ["mark"]
publish_subject = "{out_subject}.{{{{ .kind }}}}"
publish_jetstream = true
declare.streams = [{{ name = "{out_stream}", subjects = ["{out_subject}.>"] }}]
"#
    )
}

fn bodies(count: usize) -> Vec<String> {
    let kinds = ["temp", "humidity"];
    (0..count)
        .map(|n| format!(r#"{{"n":{n},"kind":"{}"}}"#, kinds[n % 2]))
        .collect()
}

/// Starts an engine on `config` in `folder` and waits for its API.
fn engine(folder: &std::path::Path, config: &str, api_port: u16) -> std::process::Child {
    std::fs::create_dir_all(folder).expect("folder");
    let path = write(folder, "nats.toml", config);
    let mut child = start(folder, &path);
    wait_for_port(&mut child, api_port, LIMIT);
    child
}

/// One relay test's world: the server to itself, two streams of its own, and the config of
/// an engine relaying the first to the second.
struct Relay {
    _alone: tokio::sync::MutexGuard<'static, ()>,
    js: jetstream::Context,
    /// Stream name and subject prefix.
    input: (String, String),
    output: (String, String),
    dir: tempfile::TempDir,
}

impl Relay {
    /// `None` (the reason printed) when NATS is down and services are not required.
    async fn new() -> Option<Self> {
        let alone = SERVER.lock().await;
        let client = server().await?;
        Some(Self {
            _alone: alone,
            js: jetstream::new(client),
            input: unique_stream("TB_IN"),
            output: unique_stream("TB_OUT"),
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// Starts an engine in folder `name` with its API on `api_port`.
    fn start(&self, name: &str, api_port: u16) -> std::process::Child {
        let config = relay_config(
            api_port,
            (&self.input.0, &self.input.1),
            (&self.output.0, &self.output.1),
        );
        engine(&self.dir.path().join(name), &config, api_port)
    }

    /// Starts an engine and waits until it made its consumer.
    async fn started(&self, api_port: u16) -> std::process::Child {
        let child = self.start("engine", api_port);
        wait_for_consumer(&self.js, &self.input.0, "relay").await;
        child
    }

    async fn publish(&self, bodies: &[String]) {
        publish_all(&self.js, &format!("{}.readings", self.input.1), bodies).await;
    }

    /// Messages stored in the output stream.
    async fn relayed(&self) -> u64 {
        stored(&self.js, &self.output.0).await
    }

    async fn wait_for_relayed(&self, count: u64) {
        wait_until(&format!("{count} relayed"), LIMIT, || async {
            (self.relayed().await >= count).then_some(())
        })
        .await;
    }

    /// Asserts the input consumer has nothing left to deliver or see acknowledged, then
    /// deletes both streams.
    async fn finish(self) {
        assert_eq!(
            unfinished(&self.js, &self.input.0, "relay").await,
            (0, 0),
            "every message acknowledged or terminated"
        );
        delete_streams(&self.js, &[&self.input.0, &self.output.0]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_stream_to_stream_and_a_rejected_one_is_terminated() {
    let Some(relay) = Relay::new().await else {
        return;
    };
    let api_port = free_port();
    let child = relay.started(api_port).await;

    let mut bodies = bodies(1_000);
    // The pipeline fails on this one (`n` is no integer); nothing reads its `_errors`, so
    // the message is rejected: terminated, never delivered again.
    bodies.insert(500, r#"{"n":"poison","kind":"temp"}"#.to_owned());
    relay.publish(&bodies).await;

    let (input, output) = (&relay.input, &relay.output);
    let mut numbers = Vec::new();
    take_until(
        &relay.js,
        &output.0,
        |subject, body| {
            assert_eq!(body["relayed"], true, "{body}");
            assert_eq!(body["came_on"], format!("{}.readings", input.1), "{body}");
            let kind = body["kind"].as_str().unwrap_or("");
            assert_eq!(subject, format!("{}.{kind}", output.1));
            numbers.push(body["n"].as_i64().expect("n"));
            numbers.len() == 1_000
        },
        || "1,000 messages".to_owned(),
    )
    .await;
    numbers.sort_unstable();
    assert_eq!(numbers, (0..1_000).collect::<Vec<_>>(), "each message once");

    // Past `ack_wait` (2 s) and `nak_delay`: a poison message not terminated would have come
    // again by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let client = http_client();
    let found = component(&client, api_port, "nats_in").await;
    assert_eq!(found["metrics"]["recv"], 1_001, "{found}");
    stop_and_expect_drained(child, LIMIT);
    assert_eq!(relay.relayed().await, 1_000, "no duplicates published");
    relay.finish().await;
}

/// Requests on a core subject are answered through a pipeline: each reply goes back to the
/// requester that asked, through the connector that took the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_a_core_subject_are_answered_through_a_pipeline() {
    let _alone = SERVER.lock().await;
    let Some(client) = server().await else {
        return;
    };
    let subject = unique("svc").to_lowercase();
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let config = format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.service]
kind = "nats"
url = "{URL}"
subject = "{subject}.*"
queue_group = "answerers"
inputs = ["answer"]

[pipelines.answer]
inputs = ["service"]
steps = [{{ kind = "transform", source = '''
.doubled = to_int!(.n) * 2
.asked_on = %tightbeam.subject
''' }}]
"#
    );
    let child = engine(dir.path(), &config, api_port);
    wait_for_status(&http_client(), api_port, "service", "running", LIMIT).await;
    // Subscribed a moment after `running`: ask until the first answer comes.
    let first = wait_until("a first answer", LIMIT, || {
        let client = client.clone();
        let subject = subject.clone();
        async move {
            let asked = client.request(format!("{subject}.double"), r#"{"n":0}"#.into());
            tokio::time::timeout(Duration::from_secs(2), asked)
                .await
                .ok()?
                .ok()
        }
    })
    .await;
    let first: serde_json::Value = serde_json::from_slice(&first.payload).expect("JSON");
    assert_eq!(first["doubled"], 0);
    let asks = (1..=200).map(|n| {
        let client = client.clone();
        let subject = subject.clone();
        async move {
            let answer = client
                .request(
                    format!("{subject}.double"),
                    format!(r#"{{"n":{n}}}"#).into(),
                )
                .await
                .expect("an answer");
            let answer: serde_json::Value = serde_json::from_slice(&answer.payload).expect("JSON");
            (n, answer)
        }
    });
    for (n, answer) in futures::future::join_all(asks).await {
        assert_eq!(answer["doubled"], n * 2, "{answer}");
        assert_eq!(answer["asked_on"], format!("{subject}.double"), "{answer}");
    }
    stop_and_expect_drained(child, LIMIT);
}

/// `start-stop-daemon` as `.ci/run` uses it for nats-server, with `action`.
fn nats_server(action: &str) {
    let mut command = std::process::Command::new("start-stop-daemon");
    command.args([action, "--oknodo", "--exec", "/usr/sbin/nats-server"]);
    if action == "--start" {
        command.args([
            "--background",
            "--",
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
            "-js",
            "-sd",
            "/var/lib/nats-server",
            "-l",
            "/var/log/nats-server.log",
        ]);
    } else {
        command.args(["--retry", "20"]);
    }
    let status = command.status().expect("start-stop-daemon");
    assert!(status.success(), "start-stop-daemon {action}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_restarted_while_the_engine_runs_loses_nothing() {
    let Some(relay) = Relay::new().await else {
        return;
    };
    let api_port = free_port();
    let child = relay.started(api_port).await;
    relay.publish(&bodies(500)).await;
    relay.wait_for_relayed(500).await;

    nats_server("--stop");
    let api = http_client();
    let seen = wait_for_status(&api, api_port, "nats_in", "reconnecting", LIMIT).await;
    assert!(
        seen["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("127.0.0.1:4222"),
        "{seen}"
    );
    nats_server("--start");
    wait_for_status(&api, api_port, "nats_in", "running", LIMIT).await;
    // The test's own client reconnects by itself too: a request that succeeds says it did.
    wait_until("the test's client back", LIMIT, || async {
        relay.js.get_stream(&relay.input.0).await.ok().map(drop)
    })
    .await;
    let later: Vec<String> = (500..1_000)
        .map(|n| format!(r#"{{"n":{n},"kind":"temp"}}"#))
        .collect();
    relay.publish(&later).await;
    let total = take_distinct(&relay.js, &relay.output.0, 1_000).await;
    stop_and_expect_drained(child, LIMIT);
    println!(
        "server restarted: 1,000 distinct at the output, {} duplicates",
        total - 1_000
    );
    relay.finish().await;
}

/// kill -9 of the engine in the middle of 10,000 messages, then a restart: every message
/// reaches the output (at least once; the duplicates are counted and printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_in_the_middle_of_10000_messages_loses_none() {
    let Some(relay) = Relay::new().await else {
        return;
    };
    let api_port = free_port();
    let mut child = relay.started(api_port).await;
    const COUNT: usize = 10_000;
    relay.publish(&bodies(COUNT)).await;
    relay.wait_for_relayed(1_000).await;
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let relayed_at_kill = relay.relayed().await;

    let started = std::time::Instant::now();
    let child = relay.start("engine", api_port);
    let total = take_distinct(&relay.js, &relay.output.0, COUNT).await;
    stop_and_expect_drained(child, LIMIT);
    println!(
        "kill -9 after {relayed_at_kill} of {COUNT} relayed: {COUNT} distinct at the output ({total} taken), {} duplicates, {:.1} s after the restart",
        relay.relayed().await - COUNT as u64,
        started.elapsed().as_secs_f64()
    );
    relay.finish().await;
}

/// Two engines on one durable consumer share its messages: when nothing fails, each
/// message is relayed once in all, and both engines took part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_durable_consumer_relay_each_message_once() {
    let Some(relay) = Relay::new().await else {
        return;
    };
    // Made before the engines, so neither races the other to create them.
    for (name, subject) in [&relay.input, &relay.output] {
        relay
            .js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{subject}.>")],
                ..stream::Config::default()
            })
            .await
            .expect("stream");
    }
    let engines: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let api_port = free_port();
            (relay.start(name, api_port), api_port)
        })
        .collect();
    wait_for_consumer(&relay.js, &relay.input.0, "relay").await;
    let api = http_client();
    for (_, api_port) in &engines {
        wait_for_status(&api, *api_port, "nats_in", "running", LIMIT).await;
    }
    const COUNT: usize = 4_000;
    relay.publish(&bodies(COUNT)).await;
    let total = take_distinct(&relay.js, &relay.output.0, COUNT).await;
    let mut shares = Vec::new();
    for (_, api_port) in &engines {
        let found = component(&api, *api_port, "nats_in").await;
        shares.push(found["metrics"]["recv"].as_u64().unwrap_or(0));
    }
    for (child, _) in engines {
        stop_and_expect_drained(child, LIMIT);
    }
    println!("two engines on one durable consumer: {shares:?} messages each, {total} relayed");
    assert_eq!(
        relay.relayed().await,
        COUNT as u64,
        "each message once in all"
    );
    assert_eq!(shares.iter().sum::<u64>(), COUNT as u64, "{shares:?}");
    assert!(
        shares.iter().all(|share| *share > 0),
        "both took part: {shares:?}"
    );
    relay.finish().await;
}
