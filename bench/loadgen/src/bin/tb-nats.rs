//! W5's NATS JetStream variant, with the client crate the `nats` connector uses
//! (async-nats):
//!
//! - `fill`: publishes the first COUNT lines of a file into a stream (created anew, file
//!   storage), each publish acknowledged;
//! - `relay`: the server's own limit, the reference: pulls from one stream through a durable
//!   consumer, publishes each message unchanged into another stream, and acks it once its
//!   publish is acknowledged, as Tightbeam does, with no processing; prints messages/s;
//! - `drain`: takes COUNT messages from a stream and prints when the last came.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer::pull, stream};
use clap::{Parser, Subcommand};
use futures::StreamExt;

#[derive(Parser)]
struct Cli {
    /// The server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publishes the first `count` lines of `file` into `stream` (subject `<stream>.in`),
    /// the stream made anew.
    Fill {
        #[arg(long)]
        stream: String,
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(long)]
        count: usize,
    },
    /// Moves `count` messages from stream `from` to stream `to` (made anew), each acked
    /// after its publish is acknowledged.
    Relay {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        max_ack_pending: i64,
    },
    /// Takes `count` messages from `stream` and prints the time of the last in µs since the
    /// Unix epoch.
    Drain {
        #[arg(long)]
        stream: String,
        #[arg(long)]
        count: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let client = async_nats::connect(&cli.url)
        .await
        .context("connect to the server")?;
    let js = jetstream::new(client);
    match cli.command {
        Command::Fill {
            stream,
            file,
            count,
        } => fill(&js, &stream, &file, count).await,
        Command::Relay {
            from,
            to,
            count,
            max_ack_pending,
        } => relay(&js, &from, &to, count, max_ack_pending).await,
        Command::Drain { stream, count } => drain(&js, &stream, count).await,
    }
}

/// Makes `name` anew, storing `<name>.>` on file.
async fn recreate(js: &jetstream::Context, name: &str) -> Result<()> {
    let _ = js.delete_stream(name).await;
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        ..stream::Config::default()
    })
    .await
    .with_context(|| format!("create stream {name}"))?;
    Ok(())
}

/// Publish acks awaited at once, at most.
const WINDOW: usize = 2_000;

async fn fill(
    js: &jetstream::Context,
    stream: &str,
    file: &std::path::Path,
    count: usize,
) -> Result<()> {
    recreate(js, stream).await?;
    let text = std::fs::read_to_string(file).context("read the events")?;
    let mut acks = VecDeque::with_capacity(WINDOW);
    let started = Instant::now();
    for line in text.lines().take(count) {
        if acks.len() >= WINDOW
            && let Some(ack) = acks.pop_front()
        {
            ack.await?;
        }
        acks.push_back(
            js.publish(format!("{stream}.in"), line.to_owned().into())
                .await?,
        );
    }
    for ack in acks {
        ack.await?;
    }
    println!(
        "filled {stream} with {count} messages in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn messages(
    js: &jetstream::Context,
    stream: &str,
    max_ack_pending: i64,
) -> Result<pull::Stream> {
    let consumer = js
        .get_stream(stream)
        .await?
        .create_consumer(pull::Config {
            durable_name: Some(format!("{stream}-tool")),
            max_ack_pending,
            ..pull::Config::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

async fn relay(
    js: &jetstream::Context,
    from: &str,
    to: &str,
    count: usize,
    max_ack_pending: i64,
) -> Result<()> {
    recreate(js, to).await?;
    let mut messages = messages(js, from, max_ack_pending).await?;
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut relayed = 0;
    let mut started = None;
    while relayed < count {
        tokio::select! {
            Some(done) = pending.next(), if !pending.is_empty() => {
                let acker: jetstream::message::Acker = done?;
                acker.ack().await.map_err(|error| anyhow::anyhow!(error))?;
                relayed += 1;
            }
            message = messages.next() => {
                let Some(message) = message else { bail!("the messages ended") };
                let message = message?;
                started.get_or_insert_with(Instant::now);
                let (message, acker) = message.split();
                let ack = js.publish(format!("{to}.in"), message.payload).await?;
                pending.push(async move {
                    ack.await?;
                    Ok::<_, anyhow::Error>(acker)
                });
            }
        }
    }
    tb_loadgen::print_relayed(count, started);
    Ok(())
}

async fn drain(js: &jetstream::Context, stream: &str, count: usize) -> Result<()> {
    let mut messages = messages(js, stream, 2_000).await?;
    let mut taken = 0;
    while taken < count {
        let Some(message) = messages.next().await else {
            bail!("the messages ended after {taken}")
        };
        message?
            .ack()
            .await
            .map_err(|error| anyhow::anyhow!(error))?;
        taken += 1;
    }
    tb_loadgen::print_drained(count)
}
