//! A sending connector of the core (file, stdout, tcp_client, ws_client, http_client) as a
//! destination: each job's payload goes to the connector as an event with an
//! acknowledgement of its own, and how that ends is the job's verdict (delivered:
//! succeeded; errored: retried; rejected: discarded).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tb_connectors::{
    Connector, ConnectorContext, ConnectorMetrics, InputBatch, InputQueue, OutputSender, StatusCell,
};
use tb_event::{AckStatus, Acknowledgement, ComponentId, Event, EventMeta, StreamId};
use tb_store::Claimed;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::http::LoadResult;
use crate::retry::Verdict;

/// Batches waiting for the connector.
const QUEUE_BATCHES: usize = 8;

/// A connector not started yet, and the receiving end of its queue.
type Unstarted = (Box<dyn Connector>, mpsc::Receiver<InputBatch>);

/// A connector, built and checked, and the queue that feeds it once started.
pub struct ConnectorLoader {
    id: ComponentId,
    /// Taken when the destination's run starts it.
    pending: Mutex<Option<Unstarted>>,
    sender: mpsc::Sender<InputBatch>,
    timeout: Duration,
}

impl ConnectorLoader {
    /// Builds the connector of `table` (`kind` and its keys) for destination `id`.
    ///
    /// # Errors
    ///
    /// The key that is wrong (under `connector.`), and why.
    pub fn new(
        id: &str,
        table: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<Self, (String, String)> {
        let Some(serde_json::Value::Object(table)) = table else {
            return Err((
                "connector".to_owned(),
                "a `connector` destination needs `connector = { kind = \"file\", path = \"out.ndjson\" }`".to_owned(),
            ));
        };
        let mut settings = table.clone();
        let kind = match settings.remove("kind") {
            Some(serde_json::Value::String(kind)) => kind,
            _ => {
                return Err((
                    "connector".to_owned(),
                    "the connector needs a `kind`, such as \"file\"".to_owned(),
                ));
            }
        };
        let builders = tb_connectors::builtin_connectors();
        let sending: Vec<&str> = builders
            .iter()
            .filter(|builder| !builder.is_hidden() && builder.roles(true).consumes)
            .map(|builder| builder.kind())
            .collect();
        let Some(builder) = builders
            .iter()
            .find(|builder| builder.kind() == kind && builder.roles(true).consumes)
        else {
            return Err((
                "connector.kind".to_owned(),
                format!(
                    "`{kind}` is not a sending connector; one of: {}",
                    sending.join(", ")
                ),
            ));
        };
        let id = ComponentId::new(id);
        let connector = builder
            .build(&id, serde_json::Value::Object(settings), true)
            .map_err(|error| (format!("connector.{}", error.path), error.message))?;
        let (sender, receiver) = mpsc::channel(QUEUE_BATCHES);
        Ok(Self {
            id,
            pending: Mutex::new(Some((connector, receiver))),
            sender,
            timeout,
        })
    }

    /// Starts the connector (opening its file, say); it runs until the destination's run
    /// drops its queue. Returns the running connector's task.
    ///
    /// # Errors
    ///
    /// It could not start.
    pub async fn start(&self, data_dir: PathBuf) -> Result<tokio::task::JoinHandle<()>, String> {
        let taken = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some((connector, receiver)) = taken else {
            return Err("the connector was started already".to_owned());
        };
        let context = ConnectorContext {
            id: self.id.clone(),
            output: OutputSender::disconnected(),
            errors: OutputSender::disconnected(),
            input: Some(InputQueue::standalone(receiver)),
            intake: CancellationToken::new(),
            status: StatusCell::new(),
            metrics: ConnectorMetrics::unregistered(),
            data_dir,
        };
        let running = connector
            .start(context)
            .await
            .map_err(|error| format!("its connector could not start: {error}"))?;
        let id = self.id.clone();
        Ok(tokio::spawn(async move {
            if let Err(error) = running.await {
                tracing::error!(destination = %id, %error, "The destination's connector stopped.");
            }
        }))
    }

    /// Sends `jobs` to the connector and waits (at most the destination's `timeout`) for
    /// each one's acknowledgement.
    pub async fn load(&self, jobs: &[Claimed]) -> Vec<LoadResult> {
        let started = Instant::now();
        let mut receipts = Vec::with_capacity(jobs.len());
        let mut events = Vec::with_capacity(jobs.len());
        for (seq, job) in jobs.iter().enumerate() {
            let (handle, receipt) = Acknowledgement::new_unit();
            let meta = EventMeta::new(self.id.clone(), StreamId(0), seq as u64);
            let value = vrl::value::Value::from(job.payload.to_value());
            events.push(Event::new(value, meta, handle));
            receipts.push(receipt);
        }
        let batch = InputBatch { input: 0, events };
        let failed = |error: &str| LoadResult {
            verdict: Verdict::Retry { after: None },
            code: None,
            error: Some(error.to_owned()),
            body_excerpt: None,
            duration: started.elapsed(),
        };
        if self.sender.send(batch).await.is_err() {
            return vec![failed("the destination's connector has stopped"); jobs.len()];
        }
        let mut results = Vec::with_capacity(jobs.len());
        let deadline = tokio::time::Instant::now() + self.timeout;
        for receipt in receipts {
            let outcome = match tokio::time::timeout_at(deadline, receipt.wait()).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    results.push(failed("the connector did not acknowledge in time"));
                    continue;
                }
            };
            let verdict = match outcome.status {
                AckStatus::Delivered => Verdict::Succeeded,
                AckStatus::Errored => Verdict::Retry { after: None },
                AckStatus::Rejected => Verdict::Discard,
            };
            results.push(LoadResult {
                error: (verdict != Verdict::Succeeded)
                    .then(|| outcome.reason_or_status().to_owned()),
                verdict,
                code: None,
                body_excerpt: None,
                duration: started.elapsed(),
            });
        }
        results
    }
}
