//! `http_client`: sends batches of events as HTTP requests. A batch is acknowledged as
//! delivered when the server answers 2xx, and failed otherwise, so its sources know.

mod config;
mod sender;

pub use config::{BodyShape, HttpClientConfig};

use tb_event::ComponentId;

use crate::core::{BuildError, Connector, ConnectorBuilder, Roles, parse_config};

/// Builds HTTP clients.
pub struct HttpClientBuilder;

impl ConnectorBuilder for HttpClientBuilder {
    fn kind(&self) -> &'static str {
        "http_client"
    }

    fn roles(&self, _has_inputs: bool) -> Roles {
        Roles::SINK
    }

    fn build(
        &self,
        _id: &ComponentId,
        config: serde_json::Value,
        _has_inputs: bool,
    ) -> Result<Box<dyn Connector>, BuildError> {
        let config: HttpClientConfig = parse_config(config)?;
        let prepared = config.prepare()?;
        Ok(Box::new(sender::HttpClient::new(config, prepared)))
    }
}
