//! `http_server`: HTTP ingest, and request/response when the connector also has `inputs`.
//!
//! Each request is a stream. Its body (`max_body` caps it, 413 past that; `max_buffered`
//! caps the bodies held at once, 503 past it) is decoded a bounded piece at a time
//! (`body.rs`), its events sent on in slices as they come; the first decode error stops it
//! with 400, the reason and how many events went on before it, and the bad bytes go to
//! `<id>._errors`. Good requests are answered only after every event is acknowledged:
//! `200 {"accepted":N}`. With `inputs`, events that come back to this connector from one of
//! its pending requests become that request's response body (204 if there are none).

mod body;
mod budget;
mod config;
mod replies;
mod server;

pub use config::HttpServerConfig;

use tb_event::ComponentId;

use crate::core::{BuildError, Connector, ConnectorBuilder, Roles, parse_config};

/// Builds HTTP servers.
pub struct HttpServerBuilder;

impl ConnectorBuilder for HttpServerBuilder {
    fn kind(&self) -> &'static str {
        "http_server"
    }

    fn roles(&self, has_inputs: bool) -> Roles {
        Roles::source_sending_when(has_inputs)
    }

    fn build(
        &self,
        _id: &ComponentId,
        config: serde_json::Value,
        has_inputs: bool,
    ) -> Result<Box<dyn Connector>, BuildError> {
        let config: HttpServerConfig = parse_config(config)?;
        config.validate()?;
        Ok(Box::new(server::HttpServer::new(config, has_inputs)))
    }
}
