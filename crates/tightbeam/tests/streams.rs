//! Streams: several TCP connections and WebSocket sessions at once, each getting its own
//! replies, acknowledgement lines, and broadcast of events without an origin.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn tcp_connections_are_distinct_streams_and_replies_go_home() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write(
        dir.path(),
        "tcp.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.tcp]
kind = "tcp_server"
address = "127.0.0.1:{port}"
inputs = ["tag"]

[pipelines.tag]
inputs = ["tcp"]
steps = [{{ kind = "transform", source = '.stream = %tightbeam.stream_id; .seq = %tightbeam.id.seq' }}]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, port, LIMIT);

    let clients = (0..4).map(|client| async move {
        let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (read, mut write) = socket.into_split();
        for n in 0..5 {
            let line = format!("{{\"client\":{client},\"n\":{n}}}\n");
            write.write_all(line.as_bytes()).await.expect("write");
        }
        let mut lines = BufReader::new(read).lines();
        let mut replies = Vec::new();
        while replies.len() < 5 {
            let line = tokio::time::timeout(LIMIT, lines.next_line())
                .await
                .expect("reply in time")
                .expect("read")
                .expect("a line");
            replies.push(serde_json::from_str::<serde_json::Value>(&line).expect("json"));
        }
        replies
    });
    let all = futures::future::join_all(clients).await;
    let mut streams = BTreeSet::new();
    for (client, replies) in all.iter().enumerate() {
        assert!(
            replies.iter().all(|reply| reply["client"] == client),
            "replies went home"
        );
        let stream_ids: BTreeSet<i64> = replies
            .iter()
            .map(|reply| reply["stream"].as_i64().expect("stream"))
            .collect();
        assert_eq!(stream_ids.len(), 1, "one stream per connection");
        streams.extend(stream_ids);
        let seqs: Vec<_> = replies
            .iter()
            .map(|reply| reply["seq"].as_i64().expect("seq"))
            .collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4], "per-stream sequence numbers");
    }
    assert_eq!(streams.len(), 4, "four connections, four stream ids");
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn tcp_server_sends_ack_lines_after_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write(
        dir.path(),
        "ack.toml",
        &format!(
            "[api]\naddress = \"off\"\n[connectors.tcp]\nkind = \"tcp_server\"\naddress = \"127.0.0.1:{port}\"\nack_lines = true\n[connectors.out]\nkind = \"file\"\npath = \"out.ndjson\"\ninputs = [\"tcp\"]\n"
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, port, LIMIT);
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (read, mut write) = socket.into_split();
    let body: String = (0..10).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    write.write_all(body.as_bytes()).await.expect("write");
    let mut lines = BufReader::new(read).lines();
    loop {
        let line = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .expect("ack in time")
            .expect("read")
            .expect("a line");
        let ack: serde_json::Value = serde_json::from_str(&line).expect("json");
        if ack["acked"] == 10 {
            break;
        }
    }
    assert_eq!(
        json_lines(&dir.path().join("out.ndjson")).len(),
        10,
        "acked means written"
    );
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn websocket_replies_go_to_their_session_and_others_broadcast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ws_port, http_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "ws.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.ws]
kind = "ws_server"
address = "127.0.0.1:{ws_port}"
inputs = ["echo", "announce"]

[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"

[pipelines.echo]
inputs = ["ws"]
steps = [{{ kind = "transform", source = '.echo = true' }}]

[pipelines.announce]
inputs = ["web"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, ws_port, LIMIT);
    wait_for_port(&mut child, http_port, LIMIT);
    let url = format!("ws://127.0.0.1:{ws_port}/");
    let (mut first, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("first session");
    let (mut second, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("second session");

    first
        .send(Message::text("{\"from\":\"first\"}"))
        .await
        .expect("send");
    second
        .send(Message::text("{\"from\":\"second\"}"))
        .await
        .expect("send");
    for (session, name) in [(&mut first, "first"), (&mut second, "second")] {
        let reply = next_json(session).await;
        assert_eq!(reply["from"], name, "a reply goes to its own session");
        assert_eq!(reply["echo"], true);
    }

    let response = http_client()
        .post(format!("http://127.0.0.1:{http_port}/"))
        .body("{\"announcement\":1}")
        .send()
        .await
        .expect("post");
    assert_eq!(
        response.status(),
        200,
        "acknowledged once every session has it"
    );
    for session in [&mut first, &mut second] {
        assert_eq!(
            next_json(session).await["announcement"],
            1,
            "broadcast to every session"
        );
    }
    stop_and_expect_drained(child, LIMIT);
}

async fn next_json<S>(session: &mut S) -> serde_json::Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(LIMIT, session.next())
            .await
            .expect("message in time")
            .expect("open")
            .expect("ok");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("json");
        }
    }
}

#[tokio::test]
async fn tcp_client_reconnects_until_the_server_appears_and_delivers_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write(
        dir.path(),
        "client.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.gen]
kind = "generator"
count = 50
batch_size = 10

[connectors.out]
kind = "tcp_client"
address = "127.0.0.1:{port}"
reconnect_min = "20ms"
reconnect_max = "100ms"
inputs = ["gen"]
"#
        ),
    );
    // The client starts first: it must keep retrying, holding its events, not drop them.
    let child = start(dir.path(), &config);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let (socket, _) = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .expect("client connects")
        .expect("accept");
    let mut lines = BufReader::new(socket).lines();
    let mut seqs = Vec::new();
    while let Some(line) = tokio::time::timeout(LIMIT, lines.next_line())
        .await
        .expect("line in time")
        .expect("read")
    {
        let event: serde_json::Value = serde_json::from_str(&line).expect("json");
        seqs.push(event["seq"].as_i64().expect("seq"));
    }
    assert_eq!(
        seqs,
        (0..50).collect::<Vec<i64>>(),
        "every event, in order, after reconnecting"
    );
    assert!(
        wait_with_limit(child, LIMIT).status.success(),
        "finishes once its input is done"
    );
}

#[tokio::test]
async fn ws_client_sends_events_as_messages_and_reads_replies_as_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = write(
        dir.path(),
        "wsclient.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.gen]
kind = "generator"
count = 5
batch_size = 5

[connectors.peer]
kind = "ws_client"
url = "ws://127.0.0.1:{port}/feed"
inputs = ["gen"]

[connectors.replies]
kind = "file"
path = "replies.ndjson"
inputs = ["peer"]
"#
        ),
    );
    let child = start(dir.path(), &config);
    let (socket, _) = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .expect("connects")
        .expect("accept");
    let mut session = tokio_tungstenite::accept_async(socket)
        .await
        .expect("handshake");
    for expected in 0..5 {
        let event = next_json(&mut session).await;
        assert_eq!(event["seq"], expected);
        session
            .send(Message::text(format!("{{\"reply_to\":{expected}}}")))
            .await
            .expect("reply");
    }
    let replies: Vec<i64> = wait_for_json_lines(&dir.path().join("replies.ndjson"), 5, LIMIT)
        .await
        .iter()
        .map(|r| r["reply_to"].as_i64().expect("reply_to"))
        .collect();
    assert_eq!(replies, vec![0, 1, 2, 3, 4]);
    // Its input is done, but it is also a source: it runs until told to stop.
    stop_and_expect_drained(child, LIMIT);
    drop(session);
}

#[tokio::test]
async fn tcp_client_answering_its_own_server_drains_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = write(
        dir.path(),
        "loop.toml",
        &format!(
            r#"shutdown_grace = "20s"
[api]
address = "off"
[connectors.peer]
kind = "tcp_client"
address = "127.0.0.1:{port}"
inputs = ["answer"]

[pipelines.answer]
inputs = ["peer"]
steps = [{{ kind = "transform", source = '.answered = true' }}]
"#
        ),
    );
    let child = start(dir.path(), &config);
    let (socket, _) = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .expect("connects")
        .expect("accept");
    let (read, mut write) = socket.into_split();
    for n in 0..3 {
        write
            .write_all(format!("{{\"question\":{n}}}\n").as_bytes())
            .await
            .expect("write");
    }
    let mut lines = BufReader::new(read).lines();
    for n in 0..3 {
        let line = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .expect("answer in time")
            .expect("read")
            .expect("a line");
        let answer: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(answer["question"], n);
        assert_eq!(answer["answered"], true);
    }
    // The client feeds the pipeline that feeds the client: a drain must still finish
    // (within the grace period, or the exit code says it expired).
    stop_and_expect_drained(child, LIMIT);
}

#[tokio::test]
async fn websocket_message_over_max_body_closes_with_1009_and_an_errors_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write(
        dir.path(),
        "wsmax.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.ws]
kind = "ws_server"
address = "127.0.0.1:{port}"
max_body = 1000

[connectors.rejects]
kind = "file"
path = "rejects.ndjson"
inputs = ["ws._errors"]

[connectors.sink]
kind = "blackhole"
inputs = ["ws"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, port, LIMIT);
    let (mut session, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/"))
        .await
        .expect("session");
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(5000));
    session.send(Message::text(big)).await.expect("send");
    let close_code = loop {
        match tokio::time::timeout(LIMIT, session.next())
            .await
            .expect("answer in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|frame| u16::from(frame.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(close_code, Some(1009), "closed as too big");
    let rejects = wait_for_json_lines(&dir.path().join("rejects.ndjson"), 1, LIMIT).await;
    assert!(
        rejects[0]["error"]["message"]
            .as_str()
            .expect("message")
            .contains("max_body")
    );
    stop_and_expect_drained(child, LIMIT);
}

/// Issue 7: a ws_client reads while it writes. A server that answers each message before it
/// reads the next, fed more than the socket buffers hold, blocked both sides when the client
/// only read between batches.
#[tokio::test]
async fn ws_client_reads_answers_while_it_sends_a_large_batch() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ws_port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut session) = tokio_tungstenite::accept_async(socket).await else {
            return;
        };
        // One at a time: answer, and only then read the next.
        while let Some(Ok(message)) = session.next().await {
            if message.is_text() && session.send(message).await.is_err() {
                return;
            }
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let http_port = free_port();
    let config = write(
        dir.path(),
        "echo.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
interceptors = [{{ kind = "lines" }}]
max_body = 33554432

[connectors.peer]
kind = "ws_client"
url = "ws://127.0.0.1:{ws_port}/"
inputs = ["web"]

[connectors.out]
kind = "file"
path = "answers.ndjson"
inputs = ["peer"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, http_port, LIMIT);
    let padding = "x".repeat(2000);
    let body: String = (0..5000)
        .map(|n| format!("{{\"n\":{n},\"pad\":\"{padding}\"}}\n"))
        .collect();
    let response = tokio::time::timeout(
        LIMIT,
        http_client()
            .post(format!("http://127.0.0.1:{http_port}/"))
            .body(body)
            .send(),
    )
    .await
    .expect("answered in time")
    .expect("post");
    assert_eq!(response.status(), 200);
    let answers = wait_for_json_lines(&dir.path().join("answers.ndjson"), 5000, LIMIT).await;
    assert_eq!(answers.len(), 5000);
    stop_and_expect_drained(child, LIMIT);
}

/// One WebSocket peer that never reads must not hold back the others: with a write timeout
/// far longer than the test, the healthy sessions still get every broadcast event, while
/// the stalled session's events are failed (counted in `err`, the POST answered 503) or,
/// for those already queued to it, wait for it (504 once `ack_timeout` passes).
#[tokio::test]
async fn a_stalled_websocket_peer_costs_only_its_own_events() {
    const BODIES: usize = 10;
    const LINES: usize = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ws_port, http_port, api_port) = (free_port(), free_port(), free_port());
    let config = write(
        dir.path(),
        "broadcast.toml",
        &format!(
            r#"[api]
address = "127.0.0.1:{api_port}"
[connectors.ws]
kind = "ws_server"
address = "127.0.0.1:{ws_port}"
inputs = ["web"]
write_timeout = "10m"

[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
ack_timeout = "2s"
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, ws_port, LIMIT);
    wait_for_port(&mut child, http_port, LIMIT);
    let url = format!("ws://127.0.0.1:{ws_port}/");
    // Connected first, and never read from again.
    let (_stalled, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("stalled session");
    let mut healthy = Vec::new();
    for _ in 0..2 {
        let (mut session, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("healthy session");
        healthy.push(tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            while seen.len() < BODIES * LINES {
                let Ok(Some(Ok(message))) = tokio::time::timeout(LIMIT, session.next()).await
                else {
                    break;
                };
                if let Message::Text(text) = message {
                    let value: serde_json::Value =
                        serde_json::from_str(text.as_str()).expect("json");
                    seen.insert(value["n"].as_u64().expect("n"));
                }
            }
            seen.len()
        }));
    }

    let padding = "x".repeat(2000);
    let client = http_client();
    let mut answers = BTreeSet::new();
    for body in 0..BODIES {
        let events: Vec<String> = (0..LINES)
            .map(|line| format!("{{\"n\":{},\"pad\":\"{padding}\"}}", body * LINES + line))
            .collect();
        let array = format!("[{}]", events.join(","));
        let response = tokio::time::timeout(
            LIMIT,
            client
                .post(format!("http://127.0.0.1:{http_port}/"))
                .body(array)
                .send(),
        )
        .await
        .expect("every POST is answered in time")
        .expect("post");
        answers.insert(response.status().as_u16());
    }
    for session in healthy {
        assert_eq!(
            session.await.expect("reader"),
            BODIES * LINES,
            "a healthy session gets every event while another session is stalled"
        );
    }
    assert!(
        answers.is_subset(&BTreeSet::from([200, 503, 504])),
        "answers: {answers:?}"
    );
    assert!(
        answers.contains(&503),
        "events the stalled session could not take are errored, so their POST is refused: {answers:?}"
    );
    let errors = component(&client, api_port, "ws").await["metrics"]["err"]
        .as_u64()
        .expect("err");
    assert!(errors > 0, "the stalled session's events count in err");
    let _ = child.kill();
}
