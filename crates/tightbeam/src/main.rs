//! The `tightbeam` binary: command line, logging, and the process's life cycle.
//!
//! Everything that can fail at the edge (config, start, the API address) is reported in one
//! line naming the file or component and the cause, with a non-zero exit code: never a panic.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tb_runtime::{RunOutcome, RunningTopology, Topology};

mod jobs;

/// mimalloc instead of glibc malloc: events are allocated on one thread (the decoding
/// source) and freed on another (the sink), and glibc's arena locks made that cross-thread
/// traffic 40% of W1's time (perf, 200k events).
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXAMPLES: &str = "Examples:
  tightbeam run -c examples/quickstart.toml
  tightbeam run -c base.toml -c local.yaml
  tightbeam validate -c examples/quickstart.toml
  tightbeam graph -c examples/quickstart.toml | dot -Tsvg > topology.svg
  tightbeam jobs list --status discarded
  tightbeam jobs retry --all --destination crm";

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
    /// Run a topology until every source finishes, or SIGINT/SIGTERM drains it. SIGHUP
    /// reloads the config files; a second SIGINT/SIGTERM during the drain exits at once.
    Run {
        /// Config files (TOML or YAML, by extension); several are merged.
        #[arg(short, long = "config", required = true)]
        config: Vec<PathBuf>,
        /// Reload when a config file changes (checked every second).
        #[arg(long)]
        watch: bool,
    },
    /// Check config files and list every problem as FILE:LINE:COL: message. It also checks
    /// this machine: addresses can be bound, input files read, output folders written.
    Validate {
        /// Config files.
        #[arg(short, long = "config", required = true)]
        config: Vec<PathBuf>,
        /// Check only the files, not this machine (for a config meant for another one).
        #[arg(long)]
        no_environment: bool,
    },
    /// Print the topology as Graphviz DOT.
    Graph {
        /// Config files.
        #[arg(short, long = "config", required = true)]
        config: Vec<PathBuf>,
    },
    /// List, show, retry and cancel durable delivery's jobs, through a running process's API.
    Jobs {
        /// The API's address.
        #[arg(long, default_value = "127.0.0.1:7878", global = true)]
        api: String,
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Validate {
            config,
            no_environment,
        } => match build(&config).and_then(|topology| {
            if no_environment {
                return Ok(topology);
            }
            topology
                .check_environment()
                .map(|()| topology)
                .map_err(print_problems)
        }) {
            Ok(topology) => {
                for warning in topology.warnings() {
                    eprintln!("warning: {warning}");
                }
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
        Command::Jobs { api, command } => jobs::run(&api, command).unwrap_or_else(|error| {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }),
        Command::Run { config, watch } => match build(&config) {
            Ok(topology) => match run(topology, config, watch) {
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
    let builders: tb_runtime::Builders = tb_connectors::builtin_connectors().into();
    Topology::build(config, &builders).map_err(print_problems)
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

fn run(topology: Topology, paths: Vec<PathBuf>, watch: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    for warning in topology.warnings() {
        tracing::warn!(%warning, "Deprecated.");
    }
    let code = runtime.block_on(async move {
        let topology_api = topology.config().api.clone();
        let api_address = topology_api.address.clone();
        let api_listener = match &api_address {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("api: cannot listen on {address}"))?,
            ),
            None => None,
        };
        let signals = Signals::install();
        let mut running = topology.start().await?;
        let handle = running.handle();
        let reload_stop = tokio_util::sync::CancellationToken::new();
        let reload_task = running.take_reload_requests().map(|requests| {
            let reloader = running.reloader(paths);
            let interval = watch.then(|| std::time::Duration::from_secs(1));
            tokio::spawn(reloader.run(requests, interval, reload_stop.clone()))
        });
        let api_stop = tokio_util::sync::CancellationToken::new();
        let api_task = api_listener.map(|listener| {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(%address, "API listening.");
            }
            let stop = api_stop.clone();
            let (api, handle) = (topology_api.clone(), handle.clone());
            tokio::spawn(async move { tb_api::serve(listener, handle, &api, stop).await })
        });
        tracing::info!(components = handle.components().len(), "Topology running.");
        let outcome = running
            .run_until(signals.nth(1), signals.nth(2))
            .await;
        reload_stop.cancel();
        if outcome == RunOutcome::Abandoned {
            let abandoned = handle.in_flight_events();
            eprintln!(
                "error: stopped at once by a second signal; {abandoned} event{} abandoned unconfirmed (their sources will send them again)",
                if abandoned == 1 { " was" } else { "s were" }
            );
            return Ok(ExitCode::from(130));
        }
        if let Some(task) = reload_task {
            let _ = task.await;
        }
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
            "{unconfirmed} event{} received but not confirmed as delivered (a source confirms a \
             chunk, request or batch as a whole: one event that was not delivered leaves all of \
             its unit unconfirmed)",
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

/// SIGINT and SIGTERM, counted: the first drains, the second abandons the drain.
struct Signals {
    count: tokio::sync::watch::Receiver<u32>,
}

impl Signals {
    fn install() -> Self {
        let (sender, count) = tokio::sync::watch::channel(0u32);
        // Registered now, before anything runs: a signal that came before the task below
        // first ran would otherwise kill the process with the default action.
        let mut stop_signals = StopSignals::install();
        tokio::spawn(async move {
            loop {
                stop_signals.next().await;
                tracing::info!("Signal received.");
                sender.send_modify(|count| *count += 1);
            }
        });
        Self { count }
    }

    /// Resolves once `n` signals have arrived.
    fn nth(&self, n: u32) -> impl std::future::Future<Output = ()> + use<> {
        let mut count = self.count.clone();
        async move {
            if count.wait_for(|count| *count >= n).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// SIGINT and SIGTERM streams, registered once so no signal falls between two waits.
struct StopSignals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(interrupt), Ok(terminate)) => Some((interrupt, terminate)),
                _ => {
                    tracing::warn!(
                        "Signal handlers could not be installed; only Ctrl-C stops the process."
                    );
                    None
                }
            };
            Self { streams }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((interrupt, terminate)) = &mut self.streams {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
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
