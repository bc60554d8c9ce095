//! What every connector shares: the builder and run traits, the run context, the fan-out
//! sender, metrics handles, the reconnect loop of clients, the life cycle of a server's
//! streams, reply routing, the write path, and the helpers for decoding input.

mod backoff;
mod client;
mod context;
pub mod defaults;
mod errors;
mod fanout;
mod http_request;
mod http_serve;
mod ingest;
mod input;
mod metrics;
pub(crate) mod parallel_reader;
mod positions;
pub(crate) mod reader;
mod redact;
mod remote;
mod routing;
mod sink;
mod status;
mod stream_server;
mod streams;
mod tasks;
mod template;
mod tls;
mod traits;

pub use backoff::{Backoff, connect_with_backoff, pause};
pub use client::{
    ClientOutputs, ClientProtocol, ClientSession, HalvesEnd, SessionEnd, WriteEnd, keep_sendable,
    run_client, serve_halves,
};
pub use context::ConnectorContext;
pub use errors::{
    BuildError, ConnectorError, check_bindable, error_chain, parse_config, validate_address,
};
pub use fanout::{FanoutControl, OutputSender, SendRejected, Subscription, Unconnected};
pub use http_request::{header_map, http_url};
pub use http_serve::serve_http;
pub use ingest::{StreamDecoder, decode_error_event};
pub use input::{InputBatch, InputQueue};
pub use metrics::{ConnectorMetrics, latency_buckets};
pub use positions::{PositionTracker, Ticket};
pub use reader::{
    AtEnd, ChunkAck, IngestTarget, MAX_MESSAGES_PER_BATCH, MessageAck, MessageIn, ingest_message,
    ingest_messages, ingest_reader, take_ready,
};
pub use redact::{REDACTED, is_credential_name, redact_query, redact_url};
pub use remote::Remote;
pub use routing::{Foreign, ReplyStreams, route_replies};
pub use sink::{
    ByteStream, FrameWriter, complete_events, complete_written, encode_batch, encode_message,
    write_batches,
};
pub use status::{ComponentStatus, StatusCell, StatusRecord};
pub use stream_server::{StreamServer, bind, serve_router};
pub use streams::{LAG_GRACE, StreamWriters, fail_outgoing};
pub use tasks::{OwnedTask, spawn_owned};
pub use template::FieldTemplate;
pub use tls::{http_client_builder, rustls_client_config};
pub use traits::{
    Connector, ConnectorBuilder, Roles, RunningConnector, StartFuture, start_running,
};
