//! The W3 receiver (../shared/bench/README.md): answers every request 200 at once, counts
//! the events it was sent (a JSON body, a JSON array, or NDJSON lines), and once it has
//! `--expect` of them prints when the last arrived (Unix microseconds) and, for events
//! carrying `sent_us` (stamped by `tb-loadgen --stamp`), the ingest-to-receipt latency.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;

/// Counts delivered events until it has `expect`, then reports and exits.
#[derive(Parser)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9000")]
    address: String,
    /// Events to wait for.
    #[arg(long)]
    expect: usize,
}

#[derive(Default)]
struct Tally {
    events: usize,
    requests: usize,
    latencies_us: Vec<i64>,
    last_us: i64,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as i64)
}

/// Each event's `sent_us`, or `None` for an event without one.
fn stamps(body: &[u8]) -> Vec<Option<i64>> {
    let stamp =
        |value: &serde_json::Value| value.get("sent_us").and_then(serde_json::Value::as_i64);
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(items)) => items.iter().map(stamp).collect(),
        Ok(value) => vec![stamp(&value)],
        Err(_) => body
            .split(|byte| *byte == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_slice::<serde_json::Value>(line)
                    .ok()
                    .as_ref()
                    .and_then(stamp)
            })
            .collect(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let done = Arc::new(tokio::sync::Notify::new());
    let app = {
        let (tally, done, expect) = (tally.clone(), done.clone(), args.expect);
        axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (tally, done) = (tally.clone(), done.clone());
            async move {
                let received = now_us();
                let found = stamps(&body);
                let mut tally = tally
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                tally.requests += 1;
                tally.events += found.len();
                tally.last_us = received;
                tally
                    .latencies_us
                    .extend(found.into_iter().flatten().map(|sent| received - sent));
                if tally.events >= expect {
                    done.notify_one();
                }
                ""
            }
        })
    };
    let listener = tokio::net::TcpListener::bind(&args.address)
        .await
        .with_context(|| format!("cannot listen on {}", args.address))?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    done.notified().await;
    let mut tally = tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tally.latencies_us.sort_unstable();
    let percentile = |p: f64| {
        let latencies = &tally.latencies_us;
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    println!(
        "received {} events in {} requests; last at {} us; ingest-to-receipt p50 {:.2} ms, p99 {:.2} ms ({} stamped)",
        tally.events,
        tally.requests,
        tally.last_us,
        percentile(0.50),
        percentile(0.99),
        tally.latencies_us.len()
    );
    Ok(())
}
