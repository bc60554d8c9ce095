//! `ws_server` and `ws_client`: WebSocket sessions, one stream per session, one frame per
//! message. A reply goes back to the session it came from; an event from elsewhere goes to
//! every open session.

mod client;
mod config;
mod server;

pub use config::{WsClientConfig, WsServerConfig};

use tb_event::ComponentId;

use crate::core::{BuildError, Connector, ConnectorBuilder, Roles, parse_config};

/// Builds WebSocket servers.
pub struct WsServerBuilder;

/// Builds WebSocket clients.
pub struct WsClientBuilder;

impl ConnectorBuilder for WsServerBuilder {
    fn kind(&self) -> &'static str {
        "ws_server"
    }

    fn roles(&self, has_inputs: bool) -> Roles {
        Roles::source_sending_when(has_inputs)
    }

    fn build(
        &self,
        _id: &ComponentId,
        config: serde_json::Value,
        _has_inputs: bool,
    ) -> Result<Box<dyn Connector>, BuildError> {
        let config: WsServerConfig = parse_config(config)?;
        crate::core::validate_address("address", &config.address)?;
        Ok(Box::new(server::WsServer::new(config)))
    }
}

impl ConnectorBuilder for WsClientBuilder {
    fn kind(&self) -> &'static str {
        "ws_client"
    }

    fn roles(&self, has_inputs: bool) -> Roles {
        Roles::source_sending_when(has_inputs)
    }

    fn build(
        &self,
        _id: &ComponentId,
        config: serde_json::Value,
        _has_inputs: bool,
    ) -> Result<Box<dyn Connector>, BuildError> {
        let config: WsClientConfig = parse_config(config)?;
        if !(config.url.starts_with("ws://") || config.url.starts_with("wss://")) {
            return Err(BuildError::at(
                "url",
                format!("`{}` is not a ws:// or wss:// URL", redact_url(&config.url)),
            ));
        }
        Ok(Box::new(client::WsClient::new(config)))
    }
}

pub(crate) use crate::core::redact_url;

/// Whether encoded bytes go as a text message (valid UTF-8) or a binary one.
pub(crate) fn is_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok()
}
