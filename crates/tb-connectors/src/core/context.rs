//! The run context a connector receives.

use std::path::PathBuf;

use tb_event::ComponentId;
use tokio_util::sync::CancellationToken;

use super::fanout::OutputSender;
use super::input::InputQueue;
use super::metrics::ConnectorMetrics;
use super::status::StatusCell;

/// Everything a running connector may touch; no globals.
pub struct ConnectorContext {
    /// The connector's id.
    pub id: ComponentId,
    /// The main output, `<id>`.
    pub output: OutputSender,
    /// The error output, `<id>._errors`.
    pub errors: OutputSender,
    /// Events routed to this connector to send out; `None` when it has no `inputs`.
    pub input: Option<InputQueue>,
    /// Cancelled when shutdown begins: stop taking new input, finish what is in flight.
    pub intake: CancellationToken,
    /// This connector's live status: clients set `reconnecting` and `running` on it.
    pub status: StatusCell,
    /// This connector's counters.
    pub metrics: ConnectorMetrics,
    /// Where connectors keep state (checkpoints).
    pub data_dir: PathBuf,
}
