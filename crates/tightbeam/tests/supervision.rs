//! Supervision, statuses and `/ready`, against the real binary (built for tests with the
//! `chaos` connector, which panics on demand).

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn chaos_config(http_port: u16, api_port: u16) -> String {
    format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
interceptors = [{{ kind = "lines" }}]

[pipelines.split]
inputs = ["web"]
steps = [{{ kind = "route", routes = {{ boom = '.panic == true' }} }}]

[connectors.boom]
kind = "chaos"
inputs = ["split.boom"]

[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["split"]
"#
    )
}

async fn post(client: &reqwest::Client, url: &str, body: &str) -> (u16, String) {
    let response = client
        .post(url)
        .body(body.to_owned())
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_panicking_component_restarts_then_fails_while_the_rest_keeps_delivering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http_port, api_port) = (free_port(), free_port());
    let config = write(dir.path(), "chaos.toml", &chaos_config(http_port, api_port));
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, api_port, LIMIT);
    wait_for_port(&mut child, http_port, LIMIT);
    let client = http_client();
    let url = format!("http://127.0.0.1:{http_port}/");
    let ready_url = format!("http://127.0.0.1:{api_port}/ready");
    wait_until("ready answers 200", LIMIT, || async {
        (get_json(&client, &ready_url).await.0 == 200).then_some(())
    })
    .await;

    // The event that made the sink panic was in flight: its source hears it errored (503).
    let (status, body) = post(&client, &url, "{\"panic\":true}\n").await;
    assert_eq!(
        status, 503,
        "a panic in flight is an errored delivery: {body}"
    );
    let boom = wait_until("boom has restarted once", LIMIT, || async {
        let boom = component(&client, api_port, "boom").await;
        (boom["restarts"] == 1).then_some(boom)
    })
    .await;
    assert!(
        boom["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("panicked"),
        "the last error says it panicked: {boom}"
    );

    // The rest goes on delivering while boom restarts, and after.
    let (status, _) = post(&client, &url, "{\"seq\":1}\n").await;
    assert_eq!(status, 200);

    // Repeated panics within the window: boom is failed for good, named by /ready.
    wait_until("boom is failed", LIMIT, || async {
        let boom = component(&client, api_port, "boom").await;
        if boom["status"] == "failed" {
            return Some(());
        }
        let (status, _) = post(&client, &url, "{\"panic\":true}\n").await;
        assert_eq!(status, 503);
        None
    })
    .await;
    let boom = component(&client, api_port, "boom").await;
    assert_eq!(
        boom["restarts"], 5,
        "restarted MAX_RESTARTS times, then failed: {boom}"
    );
    let (status, ready) = get_json(&client, &ready_url).await;
    assert_eq!(status, 503);
    let named = &ready["components"][0];
    assert_eq!(named["id"], "boom");
    assert_eq!(named["status"], "failed");
    assert!(
        named["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("panicked")
    );

    // Events routed to the failed component are refused at once, not left hanging; the
    // others are still delivered.
    let (status, body) = post(&client, &url, "{\"panic\":true}\n").await;
    assert_eq!(status, 503);
    assert!(body.contains("component boom failed"), "{body}");
    let (status, _) = post(&client, &url, "{\"seq\":2}\n").await;
    assert_eq!(status, 200);
    let lines = json_lines(&dir.path().join("out.ndjson"));
    let seqs: Vec<u64> = lines
        .iter()
        .filter_map(|line| line["seq"].as_u64())
        .collect();
    assert_eq!(seqs, vec![1, 2]);

    let metrics = metrics_text(&client, api_port).await;
    assert!(
        metrics.contains("tightbeam_component_restarts_total{component=\"boom\"} 5"),
        "restarts are counted in metrics"
    );
    assert!(metrics.contains("tightbeam_component_status{component=\"boom\",status=\"failed\"} 1"));
    // A failed component makes the run end non-zero even after a clean drain.
    terminate(&child);
    let output = wait_with_limit(child, LIMIT);
    assert!(
        !output.status.success(),
        "a failed component is an error at exit"
    );
}

#[tokio::test]
async fn tcp_client_is_reconnecting_while_its_server_is_down_and_ready_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server_port, api_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "client.toml",
        &format!(
            r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.feed]
kind = "tcp_client"
address = "127.0.0.1:{server_port}"
reconnect_min = "50ms"
reconnect_max = "200ms"

[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["feed"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, api_port, LIMIT);
    let client = http_client();
    let ready_url = format!("http://127.0.0.1:{api_port}/ready");
    let feed = wait_until("feed is reconnecting", LIMIT, || async {
        let feed = component(&client, api_port, "feed").await;
        (feed["status"] == "reconnecting").then_some(feed)
    })
    .await;
    assert!(
        feed["last_error"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("127.0.0.1:{server_port}")),
        "the last error names the peer: {feed}"
    );
    let (status, ready) = get_json(&client, &ready_url).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["components"][0]["id"], "feed");

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", server_port))
        .await
        .expect("bind the server");
    let (mut socket, _) = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .expect("the client connects")
        .expect("accept");
    tokio::io::AsyncWriteExt::write_all(&mut socket, b"{\"hello\":1}\n")
        .await
        .expect("write");
    wait_until("feed is running", LIMIT, || async {
        (component(&client, api_port, "feed").await["status"] == "running").then_some(())
    })
    .await;
    wait_until("ready answers 200", LIMIT, || async {
        (get_json(&client, &ready_url).await.0 == 200).then_some(())
    })
    .await;
    wait_for_json_lines(&dir.path().join("out.ndjson"), 1, LIMIT).await;
    drop(socket);
    terminate(&child);
    let output = wait_with_limit(child, LIMIT);
    assert!(output.status.success());
    // Every log line from a component names it, by its span.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warning = stderr
        .lines()
        .find(|line| line.contains("Cannot connect"))
        .unwrap_or_else(|| panic!("the reconnect warnings were logged: {stderr}"));
    assert!(warning.contains("component{id=feed}"), "{warning}");
}
