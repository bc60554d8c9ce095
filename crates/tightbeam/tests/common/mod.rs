//! Helpers for tests that run the real `tightbeam` binary on 127.0.0.1.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn tightbeam() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tightbeam"));
    command.env("RUST_LOG", "warn");
    command
}

/// The examples folder.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("an ephemeral port")
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

/// Runs `tightbeam <args>` in `dir` to completion, failing the test after `limit`.
pub fn run_to_end(dir: &Path, args: &[&str], limit: Duration) -> Output {
    let child = tightbeam()
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tightbeam");
    wait_with_limit(child, limit)
}

/// Starts `tightbeam run -c config` in `dir`.
pub fn start(dir: &Path, config: &Path) -> Child {
    tightbeam()
        .args(["run", "-c"])
        .arg(config)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tightbeam")
}

/// Waits for the child to exit, killing it and failing after `limit`.
pub fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let output = child.wait_with_output().expect("output");
                panic!(
                    "tightbeam did not exit within {limit:?}; stderr:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits until something accepts connections on `port`, or fails after `limit`.
pub fn wait_for_port(child: &mut Child, port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("tightbeam exited early with {status}");
        }
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to the child.
pub fn terminate(child: &Child) {
    // SAFETY: kill(2) on a pid we spawned and have not reaped.
    let result = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(result, 0, "kill(SIGTERM) failed");
}

/// Whole lines of a file, parsed as JSON. A last line without its newline is still being
/// written, and is left for the next look.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    whole
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_str(line).expect("output line is JSON"))
        .collect()
}

/// An HTTP client. reqwest is built with rustls but no crypto provider (VRL chooses
/// ring), so the provider is installed once per test process.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Sends SIGTERM and expects the drain to end with exit 0 within `limit`.
pub fn stop_and_expect_drained(child: Child, limit: Duration) {
    terminate(&child);
    let output = wait_with_limit(child, limit);
    assert!(
        output.status.success(),
        "tightbeam did not drain cleanly ({}); stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until `path` holds at least `count` JSON lines, failing after `limit`, and
/// returns them.
pub async fn wait_for_json_lines(
    path: &Path,
    count: usize,
    limit: Duration,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let lines = json_lines(path);
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held {count} lines (it has {})",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GETs `url` and returns the status code and the body as JSON (`null` if it is not JSON).
pub async fn get_json(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = client.get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// The text of `/metrics` of the API on `api_port`.
pub async fn metrics_text(client: &reqwest::Client, api_port: u16) -> String {
    client
        .get(format!("http://127.0.0.1:{api_port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The component `id` in `/api/v1/topology` of the API on `api_port`.
pub async fn component(client: &reqwest::Client, api_port: u16, id: &str) -> serde_json::Value {
    let (_, topology) = get_json(
        client,
        &format!("http://127.0.0.1:{api_port}/api/v1/topology"),
    )
    .await;
    topology["components"]
        .as_array()
        .and_then(|components| components.iter().find(|c| c["id"] == id).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Polls `check` every 20 ms until it returns `Some`, failing with `what` after `limit`.
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until component `id` of the engine whose API is on `api_port` shows `status`;
/// returns what the API showed of it then.
pub async fn wait_for_status(
    client: &reqwest::Client,
    api_port: u16,
    id: &str,
    status: &str,
    limit: Duration,
) -> serde_json::Value {
    wait_until(&format!("{id} {status}"), limit, || async {
        let found = component(client, api_port, id).await;
        (found["status"] == status).then_some(found)
    })
    .await
}

/// Serves `app` on a free port of 127.0.0.1 (a peer the engine talks to) and returns the
/// port; `port` 0 picks one.
pub async fn serve_app(app: axum::Router, port: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// Names no other test (of this run or another) uses: a free port alone may come twice, and
/// a queue or stream shared with an earlier test would lose messages to that test's consumer.
pub fn unique(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or_default();
    let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}_{}_{nanos}_{next}", std::process::id())
}

/// Counts the messages a test takes until it has seen `expected` distinct values of `n`.
pub struct DistinctN {
    seen: std::cell::RefCell<std::collections::BTreeSet<i64>>,
    taken: std::cell::Cell<usize>,
    expected: usize,
}

impl DistinctN {
    pub fn new(expected: usize) -> Self {
        Self {
            seen: std::cell::RefCell::default(),
            taken: std::cell::Cell::new(0),
            expected,
        }
    }

    /// Counts `body`; true once `expected` distinct values were seen.
    pub fn see(&self, body: &serde_json::Value) -> bool {
        self.taken.set(self.taken.get() + 1);
        let mut seen = self.seen.borrow_mut();
        seen.insert(body["n"].as_i64().expect("n"));
        seen.len() == self.expected
    }

    /// How far it got, for a timeout's message.
    pub fn progress(&self) -> String {
        format!("{} of {} distinct", self.seen.borrow().len(), self.expected)
    }

    /// Distinct values seen so far.
    pub fn distinct(&self) -> usize {
        self.seen.borrow().len()
    }

    /// Messages taken, duplicates included.
    pub fn taken(&self) -> usize {
        self.taken.get()
    }
}

/// `Some(found)`; or, when what a test needs is missing (`found` is the error saying why),
/// a failure if `TIGHTBEAM_REQUIRE_SERVICES=1` (CI sets it) and otherwise `None`, the test
/// skipped with the reason printed.
pub fn required<T, E: std::fmt::Display>(what: &str, found: Result<T, E>) -> Option<T> {
    match found {
        Ok(found) => Some(found),
        Err(error) => {
            assert!(
                std::env::var("TIGHTBEAM_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{what} is required (TIGHTBEAM_REQUIRE_SERVICES=1): {error}"
            );
            println!("skipping: {what} is missing: {error}");
            None
        }
    }
}
