//! TLS end to end, with rustls and the certificate checked: Mosquitto (`mqtts://`), Redis
//! (`rediss://`) and NATS (`tls://`) of the test's own, each serving a certificate from a
//! certificate authority made for the test. Events posted to the engine go out through the
//! TLS connection and come back in through another; without the authority (`tls_ca_file`)
//! the connection is refused for the certificate, and the status says so.
//!
//! Skipped with the reason when `openssl` or a server is missing, unless
//! `TIGHTBEAM_REQUIRE_SERVICES=1`: then it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Whether `program` runs; prints why not when the test is skipped.
fn have(program: &str, probe: &[&str]) -> bool {
    let ran = Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    required(program, ran).is_some()
}
/// A certificate authority and a server certificate for 127.0.0.1 it signed, in `dir`:
/// `ca.pem`, `server.pem`, `server.key`.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tightbeam test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    write(
        dir,
        "server.ext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    // Servers running as another user read the key too.
    let _ = Command::new("chmod")
        .args(["644", "server.key"])
        .current_dir(dir)
        .status();
}

/// A server of the test's own, killed when dropped.
struct Server(Child);

impl Server {
    fn start(command: &mut Command, port: u16) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server starts");
        let deadline = std::time::Instant::now() + LIMIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "listening on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One test's world: certificates, a folder, ports.
struct World {
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl World {
    fn new() -> Option<Self> {
        if !have("openssl", &["version"]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        certificates(dir.path());
        let ca = dir.path().join("ca.pem");
        Some(Self { dir, ca })
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// Posts 100 events to the engine's `http_in` once `tls_in` runs, and checks that all come
/// back through the TLS round trip into `out.ndjson`; `base` is the config with the
/// sending connector `tls_out` and the receiving `tls_in`.
async fn round_trip(world: &World, connectors: &str) {
    let (api_port, http_port) = (free_port(), free_port());
    let config = format!(
        r#"[api]
address = "127.0.0.1:{api_port}"

[connectors.http_in]
kind = "http_server"
address = "127.0.0.1:{http_port}"

{connectors}

[connectors.out]
kind = "file"
path = "out.ndjson"
inputs = ["tls_in"]
"#
    );
    let dir = world.dir.path().join(format!("engine-{api_port}"));
    std::fs::create_dir_all(&dir).expect("folder");
    let path = write(&dir, "tls.toml", &config);
    let mut child = start(&dir, &path);
    wait_for_port(&mut child, api_port, LIMIT);
    let api = http_client();
    wait_for_status(&api, api_port, "tls_in", "running", LIMIT).await;
    wait_for_status(&api, api_port, "tls_out", "running", LIMIT).await;
    // Subscribed a moment after `running`: probes until one comes back.
    let output = dir.join("out.ndjson");
    wait_until("a probe through TLS", LIMIT, || {
        let api = api.clone();
        let output = output.clone();
        async move {
            let _ = api
                .post(format!("http://127.0.0.1:{http_port}/"))
                .body(r#"{"n":-1}"#)
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            (!json_lines(&output).is_empty()).then_some(())
        }
    })
    .await;
    for n in 0..100 {
        let response = api
            .post(format!("http://127.0.0.1:{http_port}/"))
            .body(format!(r#"{{"n":{n}}}"#))
            .send()
            .await
            .expect("POST");
        assert!(response.status().is_success(), "{}", response.status());
    }
    let distinct = DistinctN::new(101);
    wait_until("100 events back through TLS", LIMIT, || {
        let done = json_lines(&output).iter().any(|line| distinct.see(line));
        async move { done.then_some(()) }
    })
    .await;
    stop_and_expect_drained(child, LIMIT);
}

/// Without the test's authority, the engine refuses the server's certificate: the
/// connector stays `reconnecting`, its error naming the certificate.
async fn refused_without_the_authority(world: &World, connector: &str) {
    let api_port = free_port();
    let config = format!("[api]\naddress = \"127.0.0.1:{api_port}\"\n\n{connector}\n");
    let dir = world.dir.path().join(format!("untrusting-{api_port}"));
    std::fs::create_dir_all(&dir).expect("folder");
    let path = write(&dir, "tls.toml", &config);
    let mut child = start(&dir, &path);
    wait_for_port(&mut child, api_port, LIMIT);
    let seen = wait_for_status(&http_client(), api_port, "tls_in", "reconnecting", LIMIT).await;
    println!("without the authority: {}", seen["last_error"]);
    let error = seen["last_error"].as_str().unwrap_or("").to_lowercase();
    assert!(
        error.contains("certificate")
            || error.contains("unknownissuer")
            || error.contains("issuer"),
        "the error names the certificate: {seen}"
    );
    stop_and_expect_drained(child, LIMIT);
}

/// The round trip through `kind` at `url`, `tls_out` sending with `out_keys` and `tls_in`
/// receiving with `in_keys`, both trusting the test's authority; then `tls_in` again
/// without it, refused.
async fn check(world: &World, kind: &str, url: &str, out_keys: &str, in_keys: &str) {
    let ca = world.ca.display();
    let connectors = format!(
        "[connectors.tls_out]\nkind = \"{kind}\"\nurl = \"{url}\"\ntls_ca_file = \"{ca}\"\ninputs = [\"http_in\"]\n{out_keys}\n[connectors.tls_in]\nkind = \"{kind}\"\nurl = \"{url}\"\ntls_ca_file = \"{ca}\"\n{in_keys}"
    );
    round_trip(world, &connectors).await;
    let untrusting = format!("[connectors.tls_in]\nkind = \"{kind}\"\nurl = \"{url}\"\n{in_keys}");
    refused_without_the_authority(world, &untrusting).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_round_trip_with_the_certificate_checked() {
    let Some(world) = World::new() else { return };
    if !have("mosquitto", &["-h"]) {
        return;
    }
    let port = free_port();
    let config = write(
        world.dir.path(),
        "mosquitto.conf",
        &format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n",
            world.ca.display(),
            world.file("server.pem"),
            world.file("server.key")
        ),
    );
    let _broker = Server::start(Command::new("mosquitto").arg("-c").arg(&config), port);
    check(
        &world,
        "mqtt",
        &format!("mqtts://127.0.0.1:{port}"),
        "client_id = \"tls-out\"\npublish_topic = \"tls/readings\"\n",
        "client_id = \"tls-in\"\ntopics = [\"tls/#\"]\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_round_trip_with_the_certificate_checked() {
    let Some(world) = World::new() else { return };
    if !have("redis-server", &["--version"]) {
        return;
    }
    let port = free_port();
    let _server = Server::start(
        Command::new("redis-server").args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &world.file("server.pem"),
            "--tls-key-file",
            &world.file("server.key"),
            "--tls-ca-cert-file",
            &world.ca.display().to_string(),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ]),
        port,
    );
    check(
        &world,
        "redis",
        &format!("rediss://127.0.0.1:{port}"),
        "publish_stream = \"readings\"\n",
        "stream = \"readings\"\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_tls_round_trip_with_the_certificate_checked() {
    let Some(world) = World::new() else { return };
    if !have("nats-server", &["--version"]) {
        return;
    }
    let port = free_port();
    let store = world.dir.path().join("jetstream");
    let _server = Server::start(
        Command::new("nats-server").args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            &store.display().to_string(),
            "--tls",
            "--tlscert",
            &world.file("server.pem"),
            "--tlskey",
            &world.file("server.key"),
        ]),
        port,
    );
    let stream = "declare.streams = [{ name = \"READINGS\", subjects = [\"readings.>\"] }]\n";
    check(
        &world,
        "nats",
        &format!("tls://127.0.0.1:{port}"),
        &format!("publish_subject = \"readings.in\"\npublish_jetstream = true\n{stream}"),
        &format!("stream = \"READINGS\"\n{stream}"),
    )
    .await;
}
