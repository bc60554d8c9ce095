//! The `tightbeam` binary: command line, logging, and the process's life cycle.
//!
//! Everything that can fail at the edge (config, start, the API address) is reported in one
//! line naming the file or component and the cause, with a non-zero exit code: never a panic.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tb_runtime::{RunOutcome, RunningTopology, Topology};

/// mimalloc instead of glibc malloc: events are allocated on one thread (the decoding
/// source) and freed on another (the sink), and glibc's arena locks made that cross-thread
/// traffic 40% of W1's time (perf, 200k events).
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXAMPLES: &str = "Examples:
  tightbeam run -c examples/quickstart.toml
  tightbeam run -c base.toml -c local.yaml
  tightbeam validate -c examples/quickstart.toml
  tightbeam graph -c examples/quickstart.toml | dot -Tsvg > topology.svg";

/// Tightbeam moves events between systems, in real time, without losing any.
#[derive(Parser)]
#[command(version, about, after_help = EXAMPLES)]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a topology until every source finishes, or SIGINT/SIGTERM drains it.
    Run {
        /// Config files (TOML or YAML, by extension); several are merged.
        #[arg(short, long = "config", required = true)]
        config: Vec<PathBuf>,
    },
    /// Check config files and list every problem as FILE:LINE:COL: message.
    Validate {
        /// Config files.
        #[arg(short, long = "config", required = true)]
        config: Vec<PathBuf>,
    },
    /// Print the topology as Graphviz DOT.
    Graph {
        /// Config files.
        #[arg(short, long = "config", required = true)]
        config: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Validate { config } => match build(&config) {
            Ok(topology) => {
                println!(
                    "ok: {} components, {} edges",
                    topology.config().components.len(),
                    topology.edges().len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Graph { config } => match build(&config) {
            Ok(topology) => {
                print!("{}", topology.to_dot());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config } => match build(&config) {
            Ok(topology) => match run(topology) {
                Ok(code) => code,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            },
            Err(code) => code,
        },
    }
}

/// Loads and builds, printing every problem.
fn build(paths: &[PathBuf]) -> Result<Topology, ExitCode> {
    let config = tb_runtime::config::load(paths).map_err(print_problems)?;
    Topology::build(config, &tb_connectors::builtin_connectors()).map_err(print_problems)
}

fn print_problems(problems: tb_runtime::config::Problems) -> ExitCode {
    for problem in &problems.0 {
        eprintln!("{problem}");
    }
    eprintln!(
        "{} problem{} found",
        problems.0.len(),
        if problems.0.len() == 1 { "" } else { "s" }
    );
    ExitCode::FAILURE
}

fn run(topology: Topology) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let code = runtime.block_on(async move {
        let api_address = topology.config().api.address.clone();
        let api_listener = match &api_address {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("api: cannot listen on {address}"))?,
            ),
            None => None,
        };
        let running = topology.start().await?;
        let handle = running.handle();
        let api_stop = tokio_util::sync::CancellationToken::new();
        let api_task = api_listener.map(|listener| {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(%address, "API listening.");
            }
            let stop = api_stop.clone();
            tokio::spawn(tb_api::serve(
                listener,
                handle.clone(),
                stop.cancelled_owned(),
            ))
        });
        tracing::info!(components = handle.components().len(), "Topology running.");
        let outcome = running.run_until(shutdown_signal()).await;
        api_stop.cancel();
        if let Some(task) = api_task {
            let _ = task.await;
        }
        let failed = RunningTopology::any_failed(&handle);
        let unconfirmed = handle.unconfirmed_events();
        Ok(exit_code(outcome, failed, unconfirmed))
    });
    // A blocking read (stdin waiting for a producer that is idle) cannot be cancelled; the
    // drain is done, so do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// A run that ended by itself must have delivered everything it read; a drained one only
/// needs to have drained (what it refused, its peers were told of and will send again).
fn exit_code(outcome: RunOutcome, failed: bool, unconfirmed: u64) -> ExitCode {
    if unconfirmed > 0 {
        let message = format!(
            "{unconfirmed} event{} received but not delivered; their sources were not told they were",
            if unconfirmed == 1 { " was" } else { "s were" }
        );
        if outcome == RunOutcome::Finished {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
        tracing::warn!(unconfirmed, "{message}.");
    }
    match (outcome, failed) {
        (RunOutcome::Finished | RunOutcome::Drained, false) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "SIGTERM handler could not be installed; only SIGINT stops the process.");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("Signal received.");
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
