//! What every connector shares: the builder and run traits, the run context, the fan-out
//! sender, metrics handles, and the helpers for decoding input and completing output.

mod context;
mod errors;
mod ingest;
mod metrics;
mod reader;
mod sink;
mod traits;

pub use context::{ConnectorContext, OutputSender, SendRejected, Unconnected};
pub use errors::{BuildError, ConnectorError, parse_config};
pub use ingest::{StreamDecoder, decode_error_event};
pub use metrics::{ConnectorMetrics, latency_buckets};
pub use reader::{AtEnd, IngestTarget, ingest_reader};
pub use sink::{complete_written, encode_batch, write_batches};
pub use traits::{Connector, ConnectorBuilder, Roles, RunningConnector, StartFuture};
