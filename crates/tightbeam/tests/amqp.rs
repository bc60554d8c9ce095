//! The `amqp` connector against the real RabbitMQ on 127.0.0.1:5672 (guest/guest): messages
//! from a queue through a pipeline to an exchange, each confirmed to the broker only after
//! the broker confirmed its result; a message the pipeline rejects goes to the queue's
//! dead-letter exchange, once, instead of coming back forever.
//!
//! Skipped with the reason when RabbitMQ is unreachable, unless
//! `TIGHTBEAM_REQUIRE_SERVICES=1`: then it fails.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const LIMIT: Duration = Duration::from_secs(60);

/// Held by each test: one of them stops the broker, which the others must not see.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A connection of the test's own, or `None` (the reason printed) when RabbitMQ is down and
/// services are not required.
async fn broker() -> Option<Connection> {
    let connected = Connection::connect(URL, ConnectionProperties::default()).await;
    required("RabbitMQ at 127.0.0.1:5672", connected)
}

/// Stops a consumer of the test's own, so it takes nothing more.
async fn cancel(channel: &lapin::Channel, tag: &str) {
    channel
        .basic_cancel(tag.into(), lapin::options::BasicCancelOptions::default())
        .await
        .expect("cancel the consumer");
}

async fn publish_all(channel: &lapin::Channel, queue: &str, bodies: &[String]) {
    publish_with(channel, queue, bodies, BasicProperties::default()).await;
}

async fn publish_with(
    channel: &lapin::Channel,
    queue: &str,
    bodies: &[String],
    properties: BasicProperties,
) {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm_select");
    for body in bodies {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                properties.clone(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirmed");
    }
}

/// Takes messages from `queue` on a channel of its own (so consuming shares nothing with
/// the test's publishing), acking each, until `enough` says so; fails after `LIMIT`, saying
/// what `progress` gives.
async fn take_until(
    connection: &Connection,
    queue: &str,
    mut enough: impl FnMut(String, serde_json::Value) -> bool,
    progress: impl Fn() -> String,
) {
    let channel = &connection.create_channel().await.expect("channel");
    let tag = unique("test");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    loop {
        let delivery = tokio::time::timeout(LIMIT, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("{} in {queue} in time", progress()))
            .expect("a delivery")
            .expect("no error");
        let body: serde_json::Value = serde_json::from_slice(&delivery.data).expect("JSON");
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
        if enough(delivery.routing_key.to_string(), body) {
            break;
        }
    }
    cancel(channel, &tag).await;
}

/// Takes `count` messages from `queue`, as JSON with their routing keys.
async fn take(
    connection: &Connection,
    queue: &str,
    count: usize,
) -> Vec<(String, serde_json::Value)> {
    let taken = std::cell::RefCell::new(Vec::with_capacity(count));
    take_until(
        connection,
        queue,
        |routing_key, body| {
            let mut taken = taken.borrow_mut();
            taken.push((routing_key, body));
            taken.len() == count
        },
        || format!("{} of {count} messages", taken.borrow().len()),
    )
    .await;
    taken.into_inner()
}

/// Deletes a test's queues and exchanges.
async fn clean_up(channel: &lapin::Channel, queues: &[&str], exchanges: &[&str]) {
    for queue in queues {
        let _ = channel
            .queue_delete(
                (*queue).into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
    for exchange in exchanges {
        let _ = channel
            .exchange_delete(
                (*exchange).into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await;
    }
}

/// Waits until `queue` exists: the engine declares it once connected, which may be after
/// its status reads `running` (a message published to a queue not yet declared is dropped
/// by the broker, and would look lost).
async fn wait_for_queue(connection: &Connection, queue: &str) {
    wait_until(&format!("queue {queue} declared"), LIMIT, || async {
        // A failed passive declare closes its channel: a fresh one each time.
        let channel = connection.create_channel().await.ok()?;
        passive_declare(&channel, queue).await.ok().map(drop)
    })
    .await;
}

/// `queue` as the broker has it, without declaring it.
async fn passive_declare(channel: &lapin::Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}

async fn ready_messages(channel: &lapin::Channel, queue: &str) -> u32 {
    passive_declare(channel, queue)
        .await
        .expect("passive declare")
        .message_count()
}

/// 1,000 messages through a pipeline: each reaches the output exchange with its routing key
/// made from the event and the source's routing key readable in VRL, and the input queue is
/// empty once the engine has stopped (every message was acked, none left to come again).
/// A message the pipeline fails on is rejected to the dead-letter exchange, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_queue_to_exchange_and_a_rejected_one_is_dead_lettered() {
    let _alone = BROKER.lock().await;
    let Some(connection) = broker().await else {
        return;
    };
    let channel = connection.create_channel().await.expect("channel");
    let (input, output, exchange, dead, dead_exchange) = (
        unique("tb_in"),
        unique("tb_out"),
        unique("tb_x"),
        unique("tb_dead"),
        unique("tb_dlx"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let config = format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.rabbit_in]
kind = "amqp"
url = "{URL}"
queue = "{input}"
prefetch = 200
declare.exchanges = [{{ name = "{dead_exchange}", kind = "fanout", durable = false }}]
declare.queues = [
  {{ name = "{input}", durable = false, dead_letter_exchange = "{dead_exchange}" }},
  {{ name = "{dead}", durable = false }},
]
declare.bindings = [{{ queue = "{dead}", exchange = "{dead_exchange}" }}]

[pipelines.tag]
inputs = ["rabbit_in"]
steps = [{{ kind = "transform", source = '''
.n = to_int!(.n)
.processed = true
.came_by = %tightbeam.routing_key
''' }}]

[connectors.rabbit_out]
kind = "amqp"
url = "{URL}"
inputs = ["tag"]
exchange = "{exchange}"
routing_key = "readings.{{{{ .kind }}}}"
declare.exchanges = [{{ name = "{exchange}", kind = "topic", durable = false }}]
declare.queues = [{{ name = "{output}", durable = false }}]
declare.bindings = [{{ queue = "{output}", exchange = "{exchange}", routing_key = "readings.#" }}]
"#
    );
    let path = write(dir.path(), "rabbit.toml", &config);
    let mut child = start(dir.path(), &path);
    wait_for_port(&mut child, api_port, LIMIT);
    wait_for_status(&http_client(), api_port, "rabbit_in", "running", LIMIT).await;

    let kinds = ["temp", "humidity"];
    let mut bodies: Vec<String> = (0..1_000)
        .map(|n| format!(r#"{{"n":{n},"kind":"{}"}}"#, kinds[n % 2]))
        .collect();
    // The pipeline fails on this one (`n` is no integer); nothing reads its `_errors`, so the
    // message is rejected.
    bodies.insert(500, r#"{"n":"poison","kind":"temp"}"#.to_owned());
    wait_for_queue(&connection, &input).await;
    publish_all(&channel, &input, &bodies).await;

    let taken = take(&connection, &output, 1_000).await;
    let mut numbers: Vec<i64> = taken
        .iter()
        .map(|(routing_key, body)| {
            assert_eq!(body["processed"], true, "{body}");
            assert_eq!(body["came_by"], input.as_str(), "{body}");
            assert_eq!(
                *routing_key,
                format!("readings.{}", body["kind"].as_str().unwrap_or(""))
            );
            body["n"].as_i64().expect("n")
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..1_000).collect::<Vec<_>>(), "each message once");

    let dead_letters = take(&connection, &dead, 1).await;
    assert_eq!(dead_letters[0].1["n"], "poison");

    stop_and_expect_drained(child, LIMIT);
    assert_eq!(
        ready_messages(&channel, &input).await,
        0,
        "every message was acked"
    );
    assert_eq!(
        ready_messages(&channel, &dead).await,
        0,
        "dead-lettered once, not again"
    );
    assert_eq!(
        ready_messages(&channel, &output).await,
        0,
        "no duplicates published"
    );
}

/// `rabbitmqctl` with `args`; panics when it fails.
fn rabbitmqctl(args: &[&str]) {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts the broker's application again when dropped, so a failed test leaves it running.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
    }
}

/// The broker stopped (`rabbitmqctl stop_app`) and started while the engine runs: both
/// halves show `reconnecting` with the error meanwhile, come back by themselves, and every
/// message (persistent, in durable queues) reaches the output, at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_stopped_and_started_while_the_engine_runs_loses_nothing() {
    let _alone = BROKER.lock().await;
    if broker().await.is_none() {
        return;
    }
    let (input, output) = (unique("tb_in"), unique("tb_out"));
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let config = format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.rabbit_in]
kind = "amqp"
url = "{URL}"
queue = "{input}"
reconnect_max = "1s"
declare.queues = [{{ name = "{input}" }}, {{ name = "{output}" }}]

[connectors.rabbit_out]
kind = "amqp"
url = "{URL}"
inputs = ["rabbit_in"]
routing_key = "{output}"
reconnect_max = "1s"
"#
    );
    let path = write(dir.path(), "restart.toml", &config);
    let mut child = start(dir.path(), &path);
    wait_for_port(&mut child, api_port, LIMIT);
    let client = http_client();
    wait_for_status(&client, api_port, "rabbit_in", "running", LIMIT).await;
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let first: Vec<String> = (0..500).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    let second: Vec<String> = (500..1_000).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    {
        let connection = broker().await.expect("broker");
        let channel = connection.create_channel().await.expect("channel");
        wait_for_queue(&connection, &input).await;
        publish_with(&channel, &input, &first, persistent.clone()).await;
        wait_until("the first 500 at the output", LIMIT, || {
            let channel = channel.clone();
            let output = output.clone();
            async move { (ready_messages(&channel, &output).await >= 500).then_some(()) }
        })
        .await;
    }

    let restarted = std::time::Instant::now();
    rabbitmqctl(&["stop_app"]);
    let restart = RestartOnDrop;
    let away = wait_for_status(&client, api_port, "rabbit_in", "reconnecting", LIMIT).await;
    assert!(
        away["last_error"]
            .as_str()
            .is_some_and(|error| !error.contains("guest:guest")),
        "the error is shown, the password is not: {away}"
    );
    drop(restart);
    wait_for_status(&client, api_port, "rabbit_in", "running", LIMIT).await;
    println!(
        "broker stopped and started: the engine consumed again {:.1} s after the stop",
        restarted.elapsed().as_secs_f64()
    );

    let connection = broker().await.expect("broker is back");
    let channel = connection.create_channel().await.expect("channel");
    wait_for_queue(&connection, &input).await;
    publish_with(&channel, &input, &second, persistent).await;
    let taken = take(&connection, &output, 1_000).await;
    let distinct: std::collections::BTreeSet<i64> = taken
        .iter()
        .filter_map(|(_, body)| body["n"].as_i64())
        .collect();
    stop_and_expect_drained(child, LIMIT);
    let duplicates = ready_messages(&channel, &output).await;
    println!(
        "{} distinct of 1,000 delivered, {} duplicates",
        distinct.len(),
        taken.len() - distinct.len() + duplicates as usize
    );
    assert_eq!(distinct.len(), 1_000, "nothing lost");
    assert_eq!(
        ready_messages(&channel, &input).await,
        0,
        "every message was acked"
    );
    clean_up(&channel, &[&input, &output], &[]).await;
}

/// Takes messages from `queue` until `expected` distinct `n` have come; returns how many
/// came in all (duplicates included).
async fn take_distinct(connection: &Connection, queue: &str, expected: usize) -> usize {
    let distinct = DistinctN::new(expected);
    take_until(
        connection,
        queue,
        |_, body| distinct.see(&body),
        || distinct.progress(),
    )
    .await;
    distinct.taken()
}

/// A config moving `input` to `output` through a pipeline, with the API on `api_port`.
fn relay_config(api_port: u16, input: &str, output: &str) -> String {
    format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.rabbit_in]
kind = "amqp"
url = "{URL}"
queue = "{input}"
prefetch = 500
declare.queues = [{{ name = "{input}" }}, {{ name = "{output}" }}]

[pipelines.mark]
inputs = ["rabbit_in"]
steps = [{{ kind = "transform", source = ".relayed = true" }}]

[connectors.rabbit_out]
kind = "amqp"
url = "{URL}"
inputs = ["mark"]
routing_key = "{output}"
"#
    )
}

/// kill -9 of the engine in the middle of 10,000 messages, then a restart: every message
/// reaches the output (at least once; the duplicates are counted and printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_in_the_middle_of_10000_messages_loses_none() {
    let _alone = BROKER.lock().await;
    let Some(connection) = broker().await else {
        return;
    };
    let channel = connection.create_channel().await.expect("channel");
    let (input, output) = (unique("tb_in"), unique("tb_out"));
    let dir = tempfile::tempdir().expect("tempdir");
    let api_port = free_port();
    let path = write(
        dir.path(),
        "relay.toml",
        &relay_config(api_port, &input, &output),
    );
    let mut child = start(dir.path(), &path);
    wait_for_port(&mut child, api_port, LIMIT);
    const COUNT: usize = 10_000;
    let bodies: Vec<String> = (0..COUNT).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    wait_for_queue(&connection, &input).await;
    publish_with(
        &channel,
        &input,
        &bodies,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await;
    wait_until("some messages relayed", LIMIT, || {
        let channel = channel.clone();
        let output = output.clone();
        async move { (ready_messages(&channel, &output).await >= 1_000).then_some(()) }
    })
    .await;
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let relayed_at_kill = ready_messages(&channel, &output).await;

    let started = std::time::Instant::now();
    let mut child = start(dir.path(), &path);
    wait_for_port(&mut child, api_port, LIMIT);
    let total = take_distinct(&connection, &output, COUNT).await;
    stop_and_expect_drained(child, LIMIT);
    let late = ready_messages(&channel, &output).await as usize;
    println!(
        "kill -9 after {relayed_at_kill} of {COUNT} relayed: {COUNT} distinct at the output, {} duplicates, {:.1} s after the restart",
        total + late - COUNT,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        ready_messages(&channel, &input).await,
        0,
        "every message was acked"
    );
    clean_up(&channel, &[&input, &output], &[]).await;
}

/// Two engines on one queue share its messages: when nothing fails, each message is
/// relayed once in all, and both engines took part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_queue_relay_each_message_once() {
    let _alone = BROKER.lock().await;
    let Some(connection) = broker().await else {
        return;
    };
    let channel = connection.create_channel().await.expect("channel");
    let (input, output) = (unique("tb_in"), unique("tb_out"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engines = Vec::new();
    for name in ["a", "b"] {
        let api_port = free_port();
        let folder = dir.path().join(name);
        std::fs::create_dir_all(&folder).expect("folder");
        let path = write(
            &folder,
            "relay.toml",
            &relay_config(api_port, &input, &output),
        );
        let mut child = start(&folder, &path);
        wait_for_port(&mut child, api_port, LIMIT);
        engines.push((child, api_port));
    }
    let client = http_client();
    for (_, api_port) in &engines {
        wait_for_status(&client, *api_port, "rabbit_in", "running", LIMIT).await;
    }
    const COUNT: usize = 4_000;
    let bodies: Vec<String> = (0..COUNT).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    wait_for_queue(&connection, &input).await;
    publish_all(&channel, &input, &bodies).await;
    let total = take_distinct(&connection, &output, COUNT).await;
    let mut shares = Vec::new();
    for (_, api_port) in &engines {
        let found = component(&client, *api_port, "rabbit_in").await;
        shares.push(found["metrics"]["recv"].as_u64().unwrap_or(0));
    }
    for (child, _) in engines {
        stop_and_expect_drained(child, LIMIT);
    }
    let late = ready_messages(&channel, &output).await as usize;
    println!("two engines on one queue: {shares:?} messages each, {total} relayed");
    assert_eq!(total + late, COUNT, "each message once in all");
    assert_eq!(shares.iter().sum::<u64>(), COUNT as u64, "{shares:?}");
    assert!(
        shares.iter().all(|share| *share > 0),
        "both took part: {shares:?}"
    );
    clean_up(&channel, &[&input, &output], &[]).await;
}
