//! The `mqtt` connector against the real Mosquitto on 127.0.0.1:1883: messages from topics
//! through a pipeline to topics made from each event, each acknowledged (PUBACK) only once
//! its result was acknowledged by the broker; Mosquitto restarted while the engine runs; the
//! engine killed with -9 in the middle of 10,000 messages.
//!
//! Skipped with the reason when Mosquitto is unreachable, unless
//! `TIGHTBEAM_REQUIRE_SERVICES=1`: then it fails.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// The Mosquitto `.ci/run` starts.
const PORT: u16 = 1883;
const LIMIT: Duration = Duration::from_secs(60);

/// Held by each test: one of them restarts the broker, which the others must not see.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A connected client of the test's own (a clean session), its event loop polled on a task
/// of its own; `None` (the reason printed) when Mosquitto is down and services are not
/// required.
async fn connect(
    name: &str,
    port: u16,
) -> Option<(AsyncClient, mpsc::Receiver<(String, serde_json::Value)>)> {
    let mut options = MqttOptions::new(unique(name), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 1_024);
    required(
        &format!("Mosquitto at 127.0.0.1:{port}"),
        connected(&mut eventloop).await,
    )?;
    // Room for every message a test takes, so the event loop never waits on the test.
    let (sender, received) = mpsc::channel(20_000);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let body = serde_json::from_slice(&publish.payload).expect("JSON");
                    if sender.send((publish.topic, body)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // The broker restarts in one test: try again until the test drops the client.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Some((client, received))
}

async fn connected(eventloop: &mut EventLoop) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no CONNACK in 5 s".to_owned())?
}

/// Subscribes `client` to what the engine relaying under `base` publishes, at QoS 1, and
/// waits until the broker has the subscription (a message published to it comes back).
async fn subscribe_output(
    client: &AsyncClient,
    received: &mut mpsc::Receiver<(String, serde_json::Value)>,
    base: &str,
) {
    let (filter, probe_topic) = (format!("{base}/out/#"), format!("{base}/out/probe"));
    let (filter, probe_topic) = (filter.as_str(), probe_topic.as_str());
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        client
            .publish(probe_topic, QoS::AtLeastOnce, false, r#"{"probe":true}"#)
            .await
            .expect("probe");
        let probe = tokio::time::timeout(Duration::from_millis(200), received.recv()).await;
        if matches!(probe, Ok(Some(_))) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no subscription to {filter}"
        );
    }
    // Probes still on their way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while received.try_recv().is_ok() {}
}

async fn publish_all(client: &AsyncClient, topic: &str, bodies: impl IntoIterator<Item = String>) {
    for body in bodies {
        client
            .publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .expect("publish");
    }
}

/// Takes messages until `expected` distinct `n` were seen (probes left out), keeping
/// `distinct_so_far` current; returns how many messages that took.
async fn take_distinct(
    received: &mut mpsc::Receiver<(String, serde_json::Value)>,
    expected: usize,
    distinct_so_far: &AtomicUsize,
) -> usize {
    let distinct = DistinctN::new(expected);
    loop {
        let (_, body) = tokio::time::timeout(LIMIT, received.recv())
            .await
            .unwrap_or_else(|_| panic!("{} in time", distinct.progress()))
            .expect("a message");
        if body["probe"] == true {
            continue;
        }
        let enough = distinct.see(&body);
        distinct_so_far.store(distinct.distinct(), Ordering::Relaxed);
        if enough {
            return distinct.taken();
        }
    }
}

/// A config moving `<base>/in/#` to `<base>/out/<kind>` through a pipeline.
fn relay_config(api_port: u16, base: &str, port: u16) -> String {
    format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.mqtt_in]
kind = "mqtt"
url = "mqtt://127.0.0.1:{port}"
client_id = "{base}-engine"
topics = ["{base}/in/#"]

[pipelines.mark]
inputs = ["mqtt_in"]
steps = [{{ kind = "transform", source = '''
.n = to_int!(.n)
.relayed = true
.came_on = %tightbeam.topic
''' }}]

[connectors.mqtt_out]
kind = "mqtt"
url = "mqtt://127.0.0.1:{port}"
client_id = "{base}-engine"
inputs = ["mark"]
publish_topic = "{base}/out/{{{{ .kind }}}}"
"#
    )
}

fn bodies(numbers: std::ops::Range<usize>) -> impl Iterator<Item = String> {
    numbers.map(|n| format!(r#"{{"n":{n},"kind":"{}"}}"#, ["temp", "humidity"][n % 2]))
}

/// Starts an engine relaying under `base` in `dir`, and waits until it subscribed.
async fn engine(
    dir: &std::path::Path,
    base: &str,
    api_port: u16,
    port: u16,
) -> std::process::Child {
    let path = write(dir, "mqtt.toml", &relay_config(api_port, base, port));
    let mut child = start(dir, &path);
    wait_for_port(&mut child, api_port, LIMIT);
    wait_for_status(&http_client(), api_port, "mqtt_in", "running", LIMIT).await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_topic_to_topic_through_a_pipeline() {
    let _alone = BROKER.lock().await;
    let Some((client, mut received)) = connect("test", PORT).await else {
        return;
    };
    let (base, dir, api_port) = (
        unique("tb"),
        tempfile::tempdir().expect("tempdir"),
        free_port(),
    );
    let child = engine(dir.path(), &base, api_port, PORT).await;
    subscribe_output(&client, &mut received, &base).await;

    let mut bodies: Vec<String> = bodies(0..1_000).collect();
    // The pipeline fails on this one (`n` is no integer); nothing reads its `_errors`, so it
    // is rejected: acknowledged to the broker (MQTT has no refusal) and counted, not relayed.
    bodies.insert(500, r#"{"n":"poison","kind":"temp"}"#.to_owned());
    publish_all(&client, &format!("{base}/in/readings"), bodies).await;

    let mut numbers = Vec::new();
    while numbers.len() < 1_000 {
        let (topic, body) = tokio::time::timeout(LIMIT, received.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of 1,000 in time", numbers.len()))
            .expect("a message");
        assert_eq!(body["relayed"], true, "{body}");
        assert_eq!(body["came_on"], format!("{base}/in/readings"), "{body}");
        let kind = body["kind"].as_str().unwrap_or("");
        assert_eq!(topic, format!("{base}/out/{kind}"));
        numbers.push(body["n"].as_i64().expect("n"));
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (0..1_000).collect::<Vec<_>>(), "each message once");
    let api = http_client();
    let found = component(&api, api_port, "mqtt_in").await;
    assert_eq!(found["metrics"]["recv"], 1_001, "{found}");
    // Its last PUBACKs may arrive a moment after the subscriber has the messages.
    wait_until("mqtt_out sent 1,000", LIMIT, || async {
        let sent = component(&api, api_port, "mqtt_out").await;
        (sent["metrics"]["send"] == 1_000).then_some(())
    })
    .await;
    stop_and_expect_drained(child, LIMIT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(received.try_recv().is_err(), "no duplicates published");
}

/// Mosquitto as `.ci/run` starts it, or stopped.
fn mosquitto(start: bool) {
    let status = if start {
        std::process::Command::new("mosquitto")
            .args(["-d", "-c", "/etc/mosquitto/mosquitto.conf"])
            .status()
    } else {
        // No `--retry`: a stopped Mosquitto may stay a zombie (its parent need not reap it),
        // which `--retry` would wait for; the port closing says it stopped.
        std::process::Command::new("start-stop-daemon")
            .args(["--stop", "--oknodo", "--exec", "/usr/sbin/mosquitto"])
            .status()
    }
    .expect("mosquitto");
    assert!(status.success(), "mosquitto start={start}: {status}");
    let deadline = std::time::Instant::now() + LIMIT;
    while std::net::TcpStream::connect(("127.0.0.1", PORT)).is_ok() != start {
        assert!(
            std::time::Instant::now() < deadline,
            "Mosquitto start={start} in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_restarted_while_the_engine_runs_loses_nothing() {
    let _alone = BROKER.lock().await;
    let Some((client, mut received)) = connect("test", PORT).await else {
        return;
    };
    let (base, dir, api_port) = (
        unique("tb"),
        tempfile::tempdir().expect("tempdir"),
        free_port(),
    );
    let child = engine(dir.path(), &base, api_port, PORT).await;
    subscribe_output(&client, &mut received, &base).await;
    let taken = AtomicUsize::new(0);
    publish_all(&client, &format!("{base}/in/readings"), bodies(0..500)).await;
    take_distinct(&mut received, 500, &taken).await;

    mosquitto(false);
    let api = http_client();
    let away = wait_for_status(&api, api_port, "mqtt_in", "reconnecting", LIMIT).await;
    assert!(
        away["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("127.0.0.1:1883"),
        "{away}"
    );
    mosquitto(true);
    wait_for_status(&api, api_port, "mqtt_in", "running", LIMIT).await;
    // The test's client lost its (clean) session with the broker: a new one.
    drop((client, received));
    let (client, mut received) = connect("test", PORT).await.expect("Mosquitto back");
    subscribe_output(&client, &mut received, &base).await;
    let mut later = bodies(500..1_000).peekable();
    let first = later.next().expect("a body");
    // The engine's subscription is back with its session; its first relayed message says so.
    publish_all(&client, &format!("{base}/in/readings"), [first]).await;
    let (_, body) = tokio::time::timeout(LIMIT, received.recv())
        .await
        .expect("relayed after the restart")
        .expect("a message");
    assert_eq!(body["n"], 500, "{body}");
    publish_all(&client, &format!("{base}/in/readings"), later).await;
    let distinct = DistinctN::new(499);
    while !distinct.see(
        &tokio::time::timeout(LIMIT, received.recv())
            .await
            .unwrap_or_else(|_| panic!("{} in time", distinct.progress()))
            .expect("a message")
            .1,
    ) {}
    stop_and_expect_drained(child, LIMIT);
    println!(
        "broker restarted: 1,000 relayed, {} duplicates after the restart",
        distinct.taken() - 499
    );
}

/// A Mosquitto of the test's own on a free port, without `persistence` (this machine's
/// Mosquitto has it on), so the test shares no broker state with any other.
struct OwnMosquitto {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl OwnMosquitto {
    /// `None` (the reason printed) when there is no `mosquitto` and services are not
    /// required.
    fn start() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = write(
            dir.path(),
            "mosquitto.conf",
            &format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
        );
        let spawned = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let child = required("mosquitto", spawned)?;
        let deadline = std::time::Instant::now() + LIMIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "mosquitto listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for OwnMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kill -9 of the engine in the middle of 10,000 messages, then a restart: its persistent
/// session keeps what it had not acknowledged, and every message reaches the output (at
/// least once; the duplicates are counted and printed). The test publishes at most 200
/// ahead of what came out, as Mosquitto queues at most 1,000 messages for a client (and
/// drops the rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_in_the_middle_of_10000_messages_loses_none() {
    // `start-stop-daemon --stop --exec /usr/sbin/mosquitto` in the restart test stops every
    // Mosquitto, this test's own too: they must not overlap.
    let _alone = BROKER.lock().await;
    let Some(broker) = OwnMosquitto::start() else {
        return;
    };
    let (client, mut received) = connect("test", broker.port).await.expect("own Mosquitto");
    let (base, dir, api_port) = (
        unique("tb"),
        tempfile::tempdir().expect("tempdir"),
        free_port(),
    );
    let mut child = engine(dir.path(), &base, api_port, broker.port).await;
    subscribe_output(&client, &mut received, &base).await;
    const COUNT: usize = 10_000;
    let taken = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (client, taken) = (client.clone(), taken.clone());
        let topic = format!("{base}/in/readings");
        tokio::spawn(async move {
            let mut published = 0;
            while published < COUNT {
                if published >= taken.load(Ordering::Relaxed) + 200 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let end = (published + 50).min(COUNT);
                publish_all(&client, &topic, bodies(published..end)).await;
                published = end;
            }
        })
    };
    let counting = {
        let taken = taken.clone();
        tokio::spawn(async move {
            let total = take_distinct(&mut received, COUNT, &taken).await;
            (total, received)
        })
    };
    wait_until("1,000 relayed", LIMIT, || async {
        (taken.load(Ordering::Relaxed) >= 1_000).then_some(())
    })
    .await;
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let relayed_at_kill = taken.load(Ordering::Relaxed);
    let started = std::time::Instant::now();
    let child = engine(dir.path(), &base, api_port, broker.port).await;
    let (total, mut received) = counting.await.expect("counted");
    publisher.await.expect("published");
    stop_and_expect_drained(child, LIMIT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut late = 0;
    while received.try_recv().is_ok() {
        late += 1;
    }
    println!(
        "kill -9 after {relayed_at_kill} of {COUNT} relayed: {COUNT} distinct at the output, {} duplicates, {:.1} s after the restart",
        total + late - COUNT,
        started.elapsed().as_secs_f64()
    );
}
