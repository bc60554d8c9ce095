//! Issue 7: a credential in a URL query or a request's query string is never shown: not in
//! logs, statuses, config errors, the API or `%tightbeam` metadata.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);
const SECRET: &str = "s3cr3tValue42";

#[tokio::test]
async fn a_ws_client_url_secret_stays_out_of_logs_statuses_and_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (closed_port, api_port) = (free_port(), free_port());
    let config = write(
        dir.path(),
        "ws.toml",
        &format!(
            r#"[api]
address = "127.0.0.1:{api_port}"
[connectors.feed]
kind = "ws_client"
url = "ws://127.0.0.1:{closed_port}/feed?apikey={SECRET}&topic=prices"
reconnect_min = "20ms"
reconnect_max = "50ms"
[connectors.out]
kind = "blackhole"
inputs = ["feed"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, api_port, LIMIT);
    let client = http_client();
    let feed = wait_until("the client is reconnecting", LIMIT, || async {
        let feed = component(&client, api_port, "feed").await;
        (feed["status"] == "reconnecting").then_some(feed)
    })
    .await;
    assert!(!feed.to_string().contains(SECRET), "{feed}");
    assert!(
        feed.to_string().contains("topic=prices"),
        "the rest of the URL is kept: {feed}"
    );
    let (_, shown) = get_json(
        &client,
        &format!("http://127.0.0.1:{api_port}/api/v1/config"),
    )
    .await;
    assert!(!shown.to_string().contains(SECRET), "{shown}");
    terminate(&child);
    let output = wait_with_limit(child, LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Cannot connect"),
        "reconnect warnings were logged: {stderr}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");

    let wrong_scheme = write(
        dir.path(),
        "scheme.toml",
        &format!(
            "[connectors.feed]\nkind = \"ws_client\"\nurl = \"http://127.0.0.1:1/?token={SECRET}\"\n"
        ),
    );
    let output = run_to_end(
        dir.path(),
        &["validate", "-c", wrong_scheme.to_str().expect("path")],
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a ws:// or wss:// URL"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
}

#[tokio::test]
async fn a_request_query_credential_is_redacted_in_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http_port = free_port();
    let config = write(
        dir.path(),
        "query.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.web]
kind = "http_server"
address = "127.0.0.1:{http_port}"
[pipelines.show]
inputs = ["web"]
steps = [{{ kind = "transform", source = '.query = %tightbeam.query' }}]
[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["show"]
"#
        ),
    );
    let mut child = start(dir.path(), &config);
    wait_for_port(&mut child, http_port, LIMIT);
    let response = http_client()
        .post(format!(
            "http://127.0.0.1:{http_port}/?access_token={SECRET}&page=2"
        ))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let lines = wait_for_json_lines(&dir.path().join("out.ndjson"), 1, LIMIT).await;
    assert_eq!(lines[0]["query"], "access_token=<redacted>&page=2");
    stop_and_expect_drained(child, LIMIT);
}

/// Issue 7: an http_client failure names the connector, the URL (redacted) and the cause,
/// not just "error sending request".
#[test]
fn http_client_failures_name_the_connector_the_url_and_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed_port = free_port();
    let config = write(
        dir.path(),
        "hook.toml",
        &format!(
            r#"[api]
address = "off"
[connectors.gen]
kind = "generator"
count = 1
[connectors.hook]
kind = "http_client"
url = "http://user:{SECRET}@127.0.0.1:{closed_port}/in?token={SECRET}"
batch_timeout = "1ms"
inputs = ["gen"]
"#
        ),
    );
    let output = run_to_end(
        dir.path(),
        &["run", "-c", config.to_str().expect("path")],
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the event was not delivered: {stderr}"
    );
    let line = stderr
        .lines()
        .find(|line| line.contains("HTTP request failed"))
        .unwrap_or_else(|| panic!("no failure line: {stderr}"));
    assert!(line.contains("connector=hook"), "{line}");
    assert!(
        line.contains(&format!(
            "url=http://user:<redacted>@127.0.0.1:{closed_port}/in?token=<redacted>"
        )),
        "{line}"
    );
    assert!(line.contains("Connection refused"), "the cause: {line}");
    assert!(!stderr.contains(SECRET), "{stderr}");
}
