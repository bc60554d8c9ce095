//! `tightbeam jobs ...`: the jobs API of a running process, from the command line.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

/// What to do with jobs.
#[derive(Subcommand)]
pub enum JobsCommand {
    /// List jobs, oldest first (a page at a time: pass the printed `next_cursor` as --cursor).
    List {
        /// Only this destination's.
        #[arg(long)]
        destination: Option<String>,
        /// Only this action's.
        #[arg(long)]
        action: Option<String>,
        /// Only jobs in this status (scheduled, available, running, succeeded, retrying,
        /// discarded, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Most jobs to list.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Where the previous page ended.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one job with its attempts.
    Show {
        /// The job's id.
        id: String,
    },
    /// Retry a dead letter (a discarded or cancelled job) at once, or with --all every dead
    /// letter matching the filters.
    Retry {
        /// The job's id.
        id: Option<String>,
        /// Retry every matching dead letter.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// With --all: only this destination's.
        #[arg(long, requires = "all")]
        destination: Option<String>,
        /// With --all: only this action's.
        #[arg(long, requires = "all")]
        action: Option<String>,
    },
    /// Cancel a job that has not ended.
    Cancel {
        /// The job's id.
        id: String,
    },
}

/// Runs `command` against the API at `api` (`host:port`), printing its JSON answer.
pub fn run(api: &str, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(call(api, command))
}

async fn call(api: &str, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let client = tb_connectors::core::http_client_builder()
        .build()
        .context("cannot make an HTTP client")?;
    let base = format!("http://{api}/api/v1");
    let request = match command {
        JobsCommand::List {
            destination,
            action,
            status,
            limit,
            cursor,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            let filters = [
                ("destination", destination),
                ("action", action),
                ("status", status),
                ("cursor", cursor),
            ];
            query.extend(
                filters
                    .into_iter()
                    .filter_map(|(key, value)| Some((key, value?))),
            );
            client.get(format!("{base}/jobs")).query(&query)
        }
        JobsCommand::Show { id } => client.get(format!("{base}/jobs/{id}")),
        JobsCommand::Retry { id: Some(id), .. } => client.post(format!("{base}/jobs/{id}/retry")),
        JobsCommand::Retry {
            id: None,
            all: true,
            destination,
            action,
        } => client
            .post(format!("{base}/jobs/retry"))
            .json(&serde_json::json!({
                "destination": destination,
                "action": action,
            })),
        JobsCommand::Retry { .. } => {
            anyhow::bail!("give a job id, or --all to retry every dead letter")
        }
        JobsCommand::Cancel { id } => client.post(format!("{base}/jobs/{id}/cancel")),
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the API at {api} (is `tightbeam run` running, with [api] address = \"{api}\"?)"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    if status.is_success() {
        println!("{}", serde_json::to_string_pretty(&body)?);
        Ok(ExitCode::SUCCESS)
    } else {
        let reason = body["error"].as_str().unwrap_or("no reason given");
        eprintln!("error: {status}: {reason}");
        Ok(ExitCode::FAILURE)
    }
}
