//! The W2 load client (../shared/bench/README.md): POSTs batches of NDJSON lines from a file
//! to an HTTP endpoint with a fixed number of requests in flight, and prints acknowledged
//! events per second and request latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

/// POSTs NDJSON batches and reports acknowledged events/s and p50/p99 latency.
#[derive(Parser)]
struct Args {
    /// Where to POST.
    #[arg(long, default_value = "http://127.0.0.1:8081/")]
    url: String,
    /// NDJSON file of events.
    #[arg(long)]
    file: std::path::PathBuf,
    /// Events in all (taken from the start of the file).
    #[arg(long, default_value_t = 200_000)]
    count: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Events per second to send at (paced per request); as fast as acknowledged without it.
    #[arg(long)]
    rate: Option<f64>,
    /// Stamp each event with `"sent_us"` (Unix microseconds when its request is sent), for
    /// the W3 receiver's ingest-to-receipt latency.
    #[arg(long)]
    stamp: bool,
}

/// `body` with `"sent_us":now` put first in each line's object.
fn stamped(body: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros());
    let mut out = String::with_capacity(body.len() + body.len() / 8);
    for line in body.lines() {
        match line.strip_prefix('{') {
            Some(rest) => {
                out.push_str(&format!("{{\"sent_us\":{now},"));
                out.push_str(rest);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let lines: Vec<&str> = text.lines().take(args.count).collect();
    let bodies: Arc<Vec<String>> = Arc::new(
        lines
            .chunks(args.batch.max(1))
            .map(|chunk| chunk.join("\n") + "\n")
            .collect(),
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, bodies, next, url) = (
            client.clone(),
            bodies.clone(),
            next.clone(),
            args.url.clone(),
        );
        let (rate, stamp, batch) = (args.rate, args.stamp, args.batch.max(1));
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut refused = 0usize;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(index) else { break };
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64((index * batch) as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let body = if stamp { stamped(body) } else { body.clone() };
                let sent = Instant::now();
                let response = client.post(&url).body(body).send().await;
                match response {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        latencies.push(sent.elapsed());
                    }
                    _ => refused += 1,
                }
            }
            (latencies, refused)
        }));
    }
    let mut latencies = Vec::new();
    let mut refused = 0;
    for worker in workers {
        let (mut worker_latencies, worker_refused) = worker.await?;
        latencies.append(&mut worker_latencies);
        refused += worker_refused;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let percentile = |p: f64| -> Duration {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let acknowledged: usize = latencies.len() * args.batch;
    println!(
        "{} events acknowledged in {:.2} s: {:.0} events/s; request latency p50 {:.2} ms, p99 {:.2} ms; {} requests refused or failed",
        acknowledged,
        elapsed.as_secs_f64(),
        acknowledged as f64 / elapsed.as_secs_f64(),
        percentile(0.50).as_secs_f64() * 1000.0,
        percentile(0.99).as_secs_f64() * 1000.0,
        refused
    );
    Ok(())
}
