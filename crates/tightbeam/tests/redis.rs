//! The `redis` connector against the real Redis on 127.0.0.1:6379: stream entries through
//! a consumer group and a pipeline into another stream, each acknowledged (`XACK`) only once
//! its result was appended; a rejected entry moved to the dead-letter stream; entries a dead
//! consumer left pending claimed; the engine's connections killed; the engine killed with
//! -9 in the middle of 10,000 entries; two engines in one group; pub/sub channels.
//!
//! Skipped with the reason when Redis is unreachable, unless `TIGHTBEAM_REQUIRE_SERVICES=1`:
//! then it fails.

mod common;

use std::time::Duration;

use common::*;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;

const URL: &str = "redis://127.0.0.1:6379";
const LIMIT: Duration = Duration::from_secs(60);

/// Held by each test: one of them kills every other client's connection (`CLIENT KILL`),
/// which the others' own connections must not meet.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A connection of the test's own, or `None` (the reason printed) when Redis is down and
/// services are not required.
async fn server() -> Option<MultiplexedConnection> {
    let connected = async {
        redis::Client::open(URL)?
            .get_multiplexed_async_connection()
            .await
    };
    required("Redis at 127.0.0.1:6379", connected.await)
}

fn bodies(count: usize) -> Vec<String> {
    let kinds = ["temp", "humidity"];
    (0..count)
        .map(|n| format!(r#"{{"n":{n},"kind":"{}"}}"#, kinds[n % 2]))
        .collect()
}

/// Appends each body as the `data` field of an entry, a pipeline per 500.
async fn append_all(redis: &mut MultiplexedConnection, stream: &str, bodies: &[String]) {
    for chunk in bodies.chunks(500) {
        let mut pipeline = redis::pipe();
        for body in chunk {
            pipeline
                .cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("data")
                .arg(body);
        }
        pipeline.query_async::<()>(redis).await.expect("XADD");
    }
}

/// Every entry of `stream`, oldest first.
async fn entries(redis: &mut MultiplexedConnection, stream: &str) -> Vec<redis::streams::StreamId> {
    let range: StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(redis)
        .await
        .expect("XRANGE");
    range.ids
}

/// The JSON in each entry's `data` field.
async fn bodies_in(redis: &mut MultiplexedConnection, stream: &str) -> Vec<serde_json::Value> {
    entries(redis, stream)
        .await
        .iter()
        .map(|entry| {
            let data: String = entry.get("data").expect("a data field");
            serde_json::from_str(&data).expect("JSON")
        })
        .collect()
}

async fn length(redis: &mut MultiplexedConnection, stream: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(redis)
        .await
        .expect("XLEN")
}

/// Entries of `group` on `stream` delivered and not acknowledged.
async fn pending(redis: &mut MultiplexedConnection, stream: &str, group: &str) -> u64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(redis)
        .await
        .expect("XPENDING");
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(count)) => *count as u64,
            other => panic!("XPENDING count: {other:?}"),
        },
        other => panic!("XPENDING: {other:?}"),
    }
}

/// Waits until `stream` holds `count` distinct `n`; returns the entries it took.
async fn wait_for_distinct(redis: &mut MultiplexedConnection, stream: &str, count: usize) -> usize {
    wait_until(&format!("{count} distinct in {stream}"), LIMIT, || {
        let mut redis = redis.clone();
        async move {
            let bodies = bodies_in(&mut redis, stream).await;
            let distinct = DistinctN::new(count);
            let done = bodies.iter().any(|body| distinct.see(body));
            done.then_some(bodies.len())
        }
    })
    .await
}

/// A config moving stream `input` to stream `output` through a pipeline, with the API on
/// `api_port`; rejected entries go to `<input>_dead`.
fn relay_config(api_port: u16, input: &str, output: &str, consumer: &str) -> String {
    format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.redis_in]
kind = "redis"
url = "{URL}"
stream = "{input}"
group = "relay"
consumer = "{consumer}"
claim_idle = "1s"
dead_letter_stream = "{input}_dead"

[pipelines.mark]
inputs = ["redis_in"]
steps = [{{ kind = "transform", source = '''
.n = to_int!(.n)
.relayed = true
.came_from = %tightbeam.stream
''' }}]

[connectors.redis_out]
kind = "redis"
url = "{URL}"
inputs = ["mark"]
publish_stream = "{output}"
"#
    )
}

/// Starts an engine on `config` in `folder` and waits for its API.
fn engine(folder: &std::path::Path, config: &str, api_port: u16) -> std::process::Child {
    std::fs::create_dir_all(folder).expect("folder");
    let path = write(folder, "redis.toml", config);
    let mut child = start(folder, &path);
    wait_for_port(&mut child, api_port, LIMIT);
    child
}

/// One relay test's world: two streams of its own and a folder for engines.
struct Relay {
    _alone: tokio::sync::MutexGuard<'static, ()>,
    redis: MultiplexedConnection,
    input: String,
    output: String,
    dir: tempfile::TempDir,
}

impl Relay {
    async fn new() -> Option<Self> {
        let alone = SERVER.lock().await;
        Some(Self {
            _alone: alone,
            redis: server().await?,
            input: unique("tb_in"),
            output: unique("tb_out"),
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// Starts an engine in folder `name`, consumer `name`, with its API on `api_port`, and
    /// waits until its source runs.
    async fn start(&self, name: &str, api_port: u16) -> std::process::Child {
        let config = relay_config(api_port, &self.input, &self.output, name);
        let child = engine(&self.dir.path().join(name), &config, api_port);
        wait_for_status(&http_client(), api_port, "redis_in", "running", LIMIT).await;
        child
    }

    /// Deletes the test's keys.
    async fn finish(mut self) {
        let dead = format!("{}_dead", self.input);
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(&self.input)
            .arg(&self.output)
            .arg(&dead)
            .query_async(&mut self.redis)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_flow_stream_to_stream_and_a_rejected_one_is_dead_lettered() {
    let Some(mut relay) = Relay::new().await else {
        return;
    };
    let api_port = free_port();
    let child = relay.start("engine", api_port).await;
    let mut bodies = bodies(1_000);
    // The pipeline fails on this one (`n` is no integer); nothing reads its `_errors`, so
    // the entry is rejected: moved to the dead-letter stream and acknowledged.
    bodies.insert(500, r#"{"n":"poison","kind":"temp"}"#.to_owned());
    let (input, output) = (relay.input.clone(), relay.output.clone());
    append_all(&mut relay.redis, &input, &bodies).await;
    // An entry without the `data` field is taken whole: its fields as a JSON object.
    let _: String = redis::cmd("XADD")
        .arg(&input)
        .arg("*")
        .arg("n")
        .arg("1000")
        .arg("kind")
        .arg("temp")
        .query_async(&mut relay.redis)
        .await
        .expect("XADD");
    let taken = wait_for_distinct(&mut relay.redis, &output, 1_001).await;
    assert_eq!(taken, 1_001, "each entry once");
    for body in bodies_in(&mut relay.redis, &output).await {
        assert_eq!(body["relayed"], true, "{body}");
        assert_eq!(body["came_from"], input.as_str(), "{body}");
    }
    let dead = format!("{input}_dead");
    wait_until("the poison entry dead-lettered", LIMIT, || {
        let mut redis = relay.redis.clone();
        let dead = dead.clone();
        async move { (length(&mut redis, &dead).await == 1).then_some(()) }
    })
    .await;
    let dead_entry = &entries(&mut relay.redis, &dead).await[0];
    let data: String = dead_entry.get("data").expect("data");
    assert_eq!(data, r#"{"n":"poison","kind":"temp"}"#);
    let source: String = dead_entry.get("source_stream").expect("source_stream");
    assert_eq!(source, input);
    // Past `claim_idle` (1 s): an entry left pending would be claimed and handled again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let found = component(&http_client(), api_port, "redis_in").await;
    assert_eq!(found["metrics"]["recv"], 1_002, "{found}");
    assert_eq!(
        pending(&mut relay.redis, &input, "relay").await,
        0,
        "all acknowledged"
    );
    stop_and_expect_drained(child, LIMIT);
    assert_eq!(
        length(&mut relay.redis, &output).await,
        1_001,
        "no duplicates"
    );
    relay.finish().await;
}

/// Entries another consumer of the group took and never acknowledged (it died) are claimed
/// after `claim_idle` and relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_dead_consumer_left_pending_are_claimed() {
    let Some(mut relay) = Relay::new().await else {
        return;
    };
    let input = relay.input.clone();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&input)
        .arg("relay")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut relay.redis)
        .await
        .expect("XGROUP CREATE");
    append_all(&mut relay.redis, &input, &bodies(100)).await;
    // A consumer that takes everything and dies.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("relay")
        .arg("ghost")
        .arg("COUNT")
        .arg(1_000)
        .arg("STREAMS")
        .arg(&input)
        .arg(">")
        .query_async(&mut relay.redis)
        .await
        .expect("XREADGROUP");
    assert_eq!(pending(&mut relay.redis, &input, "relay").await, 100);
    let api_port = free_port();
    let child = relay.start("engine", api_port).await;
    let output = relay.output.clone();
    let taken = wait_for_distinct(&mut relay.redis, &output, 100).await;
    assert_eq!(taken, 100);
    wait_until("nothing pending", LIMIT, || {
        let mut redis = relay.redis.clone();
        let input = input.clone();
        async move { (pending(&mut redis, &input, "relay").await == 0).then_some(()) }
    })
    .await;
    stop_and_expect_drained(child, LIMIT);
    relay.finish().await;
}

/// The engine's connections killed by the server while it relays: it reconnects, and every
/// entry arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_while_the_engine_runs_lose_nothing() {
    let Some(mut relay) = Relay::new().await else {
        return;
    };
    let api_port = free_port();
    let child = relay.start("engine", api_port).await;
    let (input, output) = (relay.input.clone(), relay.output.clone());
    append_all(&mut relay.redis, &input, &bodies(1_000)).await;
    wait_for_distinct(&mut relay.redis, &output, 1_000).await;
    // Every client but the test's own: the engine's reader, acker and sender.
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut relay.redis)
        .await
        .expect("CLIENT KILL");
    assert!(killed >= 2, "the engine's connections: {killed}");
    let later: Vec<String> = (1_000..2_000)
        .map(|n| format!(r#"{{"n":{n},"kind":"temp"}}"#))
        .collect();
    append_all(&mut relay.redis, &input, &later).await;
    let taken = wait_for_distinct(&mut relay.redis, &output, 2_000).await;
    wait_for_status(&http_client(), api_port, "redis_in", "running", LIMIT).await;
    stop_and_expect_drained(child, LIMIT);
    println!(
        "connections killed: 2,000 distinct at the output, {} duplicates",
        taken - 2_000
    );
    relay.finish().await;
}

/// kill -9 of the engine in the middle of 10,000 entries, then a restart: every entry
/// reaches the output (at least once; the duplicates are counted and printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_in_the_middle_of_10000_entries_loses_none() {
    let Some(mut relay) = Relay::new().await else {
        return;
    };
    let api_port = free_port();
    let mut child = relay.start("engine", api_port).await;
    const COUNT: usize = 10_000;
    let (input, output) = (relay.input.clone(), relay.output.clone());
    append_all(&mut relay.redis, &input, &bodies(COUNT)).await;
    wait_until("1,000 relayed", LIMIT, || {
        let mut redis = relay.redis.clone();
        let output = output.clone();
        async move { (length(&mut redis, &output).await >= 1_000).then_some(()) }
    })
    .await;
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let relayed_at_kill = length(&mut relay.redis, &output).await;
    let started = std::time::Instant::now();
    let child = relay.start("engine", api_port).await;
    let taken = wait_for_distinct(&mut relay.redis, &output, COUNT).await;
    stop_and_expect_drained(child, LIMIT);
    println!(
        "kill -9 after {relayed_at_kill} of {COUNT} relayed: {COUNT} distinct at the output, {} duplicates, {:.1} s after the restart",
        taken - COUNT,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(pending(&mut relay.redis, &input, "relay").await, 0);
    relay.finish().await;
}

/// Two engines in one consumer group share its entries: when nothing fails, each entry is
/// relayed once in all, and both engines took part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_in_one_group_relay_each_entry_once() {
    let Some(mut relay) = Relay::new().await else {
        return;
    };
    let engines = [("a", free_port()), ("b", free_port())];
    let mut children = Vec::new();
    for (name, api_port) in engines {
        children.push(relay.start(name, api_port).await);
    }
    const COUNT: usize = 4_000;
    let (input, output) = (relay.input.clone(), relay.output.clone());
    append_all(&mut relay.redis, &input, &bodies(COUNT)).await;
    let taken = wait_for_distinct(&mut relay.redis, &output, COUNT).await;
    let api = http_client();
    let mut shares = Vec::new();
    for (_, api_port) in engines {
        let found = component(&api, api_port, "redis_in").await;
        shares.push(found["metrics"]["recv"].as_u64().unwrap_or(0));
    }
    for child in children {
        stop_and_expect_drained(child, LIMIT);
    }
    println!("two engines in one group: {shares:?} entries each, {taken} relayed");
    assert_eq!(taken, COUNT, "each entry once in all");
    assert_eq!(shares.iter().sum::<u64>(), COUNT as u64, "{shares:?}");
    assert!(
        shares.iter().all(|share| *share > 0),
        "both took part: {shares:?}"
    );
    relay.finish().await;
}

/// Messages on a channel (matched by a pattern) through a pipeline to a channel made from
/// each event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_messages_flow_channel_to_channel() {
    let _alone = SERVER.lock().await;
    let Some(mut redis) = server().await else {
        return;
    };
    let base = unique("tb_chan");
    let api_port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.chan_in]
kind = "redis"
url = "{URL}"
patterns = ["{base}.in.*"]

[pipelines.mark]
inputs = ["chan_in"]
steps = [{{ kind = "transform", source = '''
.came_on = %tightbeam.channel
.pattern = %tightbeam.pattern
''' }}]

[connectors.chan_out]
kind = "redis"
url = "{URL}"
inputs = ["mark"]
publish_channel = "{base}.out.{{{{ .kind }}}}"
"#
    );
    let child = engine(dir.path(), &config, api_port);
    wait_for_status(&http_client(), api_port, "chan_in", "running", LIMIT).await;
    let mut subscriber = redis::Client::open(URL)
        .expect("client")
        .get_async_pubsub()
        .await
        .expect("pubsub");
    subscriber
        .psubscribe(format!("{base}.out.*"))
        .await
        .expect("PSUBSCRIBE");
    let mut messages = subscriber.on_message();
    // Subscribed a moment after `running`: publish a probe until one comes back.
    let probe = r#"{"n":-1,"kind":"probe"}"#;
    wait_until("a probe relayed", LIMIT, || {
        let mut redis = redis.clone();
        let channel = format!("{base}.in.probe");
        async move {
            let _: u64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(probe)
                .query_async(&mut redis)
                .await
                .ok()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some(())
        }
    })
    .await;
    use futures::StreamExt;
    let first = tokio::time::timeout(LIMIT, messages.next())
        .await
        .expect("the probe in time")
        .expect("a message");
    assert_eq!(first.get_channel_name(), format!("{base}.out.probe"));
    for n in 0..100 {
        let _: u64 = redis::cmd("PUBLISH")
            .arg(format!("{base}.in.readings"))
            .arg(format!(r#"{{"n":{n},"kind":"temp"}}"#))
            .query_async(&mut redis)
            .await
            .expect("PUBLISH");
    }
    let mut numbers = Vec::new();
    while numbers.len() < 100 {
        let message = tokio::time::timeout(LIMIT, messages.next())
            .await
            .expect("100 messages in time")
            .expect("a message");
        let body: serde_json::Value =
            serde_json::from_slice(message.get_payload_bytes()).expect("JSON");
        if body["kind"] == "probe" {
            continue;
        }
        assert_eq!(message.get_channel_name(), format!("{base}.out.temp"));
        assert_eq!(body["came_on"], format!("{base}.in.readings"), "{body}");
        assert_eq!(body["pattern"], format!("{base}.in.*"), "{body}");
        numbers.push(body["n"].as_i64().expect("n"));
    }
    assert_eq!(numbers, (0..100).collect::<Vec<_>>(), "each once, in order");
    stop_and_expect_drained(child, LIMIT);
}
