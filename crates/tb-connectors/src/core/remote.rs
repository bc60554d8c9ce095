//! What a connector that talks to one remote peer (a broker, a server, a feed) keeps about
//! it: its own id, where the peer is (credentials hidden), its status and counters, and the
//! token that says intake stopped; and the two things every such connector does with them:
//! connect with backoff, and show a lost connection.

use tb_codec::{CodecKind, InterceptorConfig};
use tb_event::{ComponentId, StreamId};
use tokio_util::sync::CancellationToken;

use super::backoff::{Backoff, connect_with_backoff};
use super::fanout::OutputSender;
use super::ingest::StreamDecoder;
use super::metrics::ConnectorMetrics;
use super::reader::IngestTarget;
use super::redact::redact_url;
use super::status::{ComponentStatus, StatusCell};

/// A connector's view of its peer.
pub struct Remote {
    /// The connector's id.
    pub id: ComponentId,
    /// Where the peer is, without credentials: what logs, errors and the API show.
    pub shown_url: String,
    /// The connector's status.
    pub status: StatusCell,
    /// The connector's counters.
    pub metrics: ConnectorMetrics,
    /// Cancelled when intake must stop.
    pub intake: CancellationToken,
}

impl Remote {
    /// The view of the peer at `url` (its credentials hidden).
    pub fn new(
        id: ComponentId,
        url: &str,
        status: StatusCell,
        metrics: ConnectorMetrics,
        intake: CancellationToken,
    ) -> Self {
        Self {
            id,
            shown_url: redact_url(url),
            status,
            metrics,
            intake,
        }
    }

    /// Where the events this connector receives go (`output`, and `errors` for bytes that
    /// would not decode), counted in its metrics.
    pub fn ingest_target<'a>(
        &'a self,
        output: &'a OutputSender,
        errors: &'a OutputSender,
    ) -> IngestTarget<'a> {
        IngestTarget {
            id: &self.id,
            output,
            errors,
            metrics: &self.metrics,
            intake: &self.intake,
        }
    }

    /// The decoder of a message transport: one stream, each message decoded whole
    /// ([`super::ingest_messages`] sets each message's `%tightbeam` fields).
    pub fn message_decoder(
        &self,
        codec: CodecKind,
        interceptors: &[InterceptorConfig],
    ) -> StreamDecoder {
        StreamDecoder::new(self.id.clone(), StreamId(0), codec, interceptors, None)
    }

    /// Tries `attempt` until it succeeds (status `reconnecting` with its error meanwhile,
    /// then `running`); `None` when intake stopped first and `stoppable`.
    pub async fn with_backoff<T, F, Fut>(
        &self,
        attempt: F,
        backoff: &mut Backoff,
        stoppable: bool,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        connect_with_backoff(
            attempt,
            backoff,
            &self.intake,
            stoppable,
            &self.id,
            &self.shown_url,
            &self.status,
        )
        .await
    }

    /// Shows a lost connection in the status (`reconnecting`, with the error) and the log,
    /// with what follows from it (`consequence`).
    pub fn report_lost(&self, error: &str, consequence: &str) {
        tracing::warn!(connector = %self.id, url = %self.shown_url, %error, consequence, "Lost the connection.");
        self.status.set_with_error(
            ComponentStatus::Reconnecting,
            format!("lost the connection to {}: {error}", self.shown_url),
        );
    }
}
