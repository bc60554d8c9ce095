//! `tcp_server` and `tcp_client`: byte streams over TCP, one stream per connection.

mod client;
mod config;
mod server;

pub use config::{TcpClientConfig, TcpServerConfig};

use tb_event::ComponentId;

use crate::core::{BuildError, Connector, ConnectorBuilder, Roles, parse_config};

/// Builds TCP servers.
pub struct TcpServerBuilder;

/// Builds TCP clients.
pub struct TcpClientBuilder;

impl ConnectorBuilder for TcpServerBuilder {
    fn kind(&self) -> &'static str {
        "tcp_server"
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
        let config: TcpServerConfig = parse_config(config)?;
        crate::core::validate_address("address", &config.address)?;
        Ok(Box::new(server::TcpServer::new(config)))
    }
}

impl ConnectorBuilder for TcpClientBuilder {
    fn kind(&self) -> &'static str {
        "tcp_client"
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
        let config: TcpClientConfig = parse_config(config)?;
        crate::core::validate_address("address", &config.address)?;
        Ok(Box::new(client::TcpClient::new(config)))
    }
}
