//! W5's RabbitMQ tool, with the client crate the `amqp` connector uses (lapin):
//!
//! - `fill`: publishes the first COUNT lines of a file to a queue (persistent, confirmed);
//! - `relay`: the broker's own limit, the reference of W5: consumes a queue with a prefetch,
//!   publishes each message unchanged to another with publisher confirms, and acks it once
//!   its publish is confirmed, as Tightbeam does, with no processing; prints messages/s;
//! - `drain`: consumes COUNT messages from a queue and prints when the last came.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

#[derive(Parser)]
struct Cli {
    /// The broker.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publishes the first `count` lines of `file` to `queue` (declared durable, emptied).
    Fill {
        #[arg(long)]
        queue: String,
        #[arg(long)]
        file: std::path::PathBuf,
        #[arg(long)]
        count: usize,
        /// Keep what the queue holds (and whoever consumes it) instead of emptying it.
        #[arg(long)]
        keep: bool,
    },
    /// Moves `count` messages from `from` to `to`, each acked after its publish is confirmed.
    Relay {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        prefetch: u16,
    },
    /// Takes `count` messages from `queue` and prints the time of the last in µs since the
    /// Unix epoch.
    Drain {
        #[arg(long)]
        queue: String,
        #[arg(long)]
        count: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let connection = Connection::connect(&cli.url, ConnectionProperties::default())
        .await
        .context("connect to the broker")?;
    match cli.command {
        Command::Fill {
            queue,
            file,
            count,
            keep,
        } => fill(&connection, &queue, &file, count, keep).await,
        Command::Relay {
            from,
            to,
            count,
            prefetch,
        } => relay(&connection, &from, &to, count, prefetch).await,
        Command::Drain { queue, count } => drain(&connection, &queue, count).await,
    }
}

async fn declare(channel: &Channel, queue: &str) -> Result<()> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Confirms in flight at once while filling.
const WINDOW: usize = 2_000;

async fn fill(
    connection: &Connection,
    queue: &str,
    file: &std::path::Path,
    count: usize,
    keep: bool,
) -> Result<()> {
    let channel = connection.create_channel().await?;
    if !keep {
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await?;
    }
    declare(&channel, queue).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let text = std::fs::read_to_string(file).context("read the events")?;
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let mut confirms = VecDeque::with_capacity(WINDOW);
    let started = Instant::now();
    for line in text.lines().take(count) {
        if confirms.len() >= WINDOW
            && let Some(confirm) = confirms.pop_front()
        {
            confirm.await?;
        }
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                line.as_bytes(),
                persistent.clone(),
            )
            .await?;
        confirms.push_back(confirm);
    }
    for confirm in confirms {
        confirm.await?;
    }
    println!(
        "filled {queue} with {count} messages in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn relay(
    connection: &Connection,
    from: &str,
    to: &str,
    count: usize,
    prefetch: u16,
) -> Result<()> {
    let consuming = connection.create_channel().await?;
    let publishing = connection.create_channel().await?;
    declare(&publishing, to).await?;
    publishing
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    consuming
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = consuming
        .basic_consume(
            from.into(),
            "tb-amqp-relay".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut relayed = 0;
    let mut started = None;
    while relayed < count {
        tokio::select! {
            Some(done) = pending.next(), if !pending.is_empty() => {
                let acker: lapin::Acker = done?;
                acker.ack(BasicAckOptions::default()).await?;
                relayed += 1;
            }
            delivery = consumer.next() => {
                let Some(delivery) = delivery else { bail!("the consumer ended") };
                let delivery = delivery?;
                started.get_or_insert_with(Instant::now);
                let confirm = publishing
                    .basic_publish(
                        "".into(),
                        to.into(),
                        BasicPublishOptions::default(),
                        &delivery.data,
                        persistent.clone(),
                    )
                    .await?;
                let acker = delivery.acker;
                pending.push(async move {
                    confirm.await?;
                    Ok::<_, anyhow::Error>(acker)
                });
            }
        }
    }
    tb_loadgen::print_relayed(count, started);
    Ok(())
}

async fn drain(connection: &Connection, queue: &str, count: usize) -> Result<()> {
    let channel = connection.create_channel().await?;
    declare(&channel, queue).await?;
    channel.basic_qos(2_000, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "tb-amqp-drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut taken = 0;
    while taken < count {
        let Some(delivery) = consumer.next().await else {
            bail!("the consumer ended after {taken}")
        };
        delivery?.acker.ack(BasicAckOptions::default()).await?;
        taken += 1;
    }
    tb_loadgen::print_drained(count)
}
