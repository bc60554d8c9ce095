//! Tightbeam's connectors: everything that talks to the world outside the process.
//!
//! Each kind lives in its own folder and is registered once in [`builtin_connectors`]. The
//! runtime knows connectors only through [`ConnectorBuilder`] (validate a config, make a
//! [`Connector`]) and [`Connector::start`] (acquire sockets and files, then run), and talks
//! to them only through the channels and tokens of a [`ConnectorContext`].
//!
//! Every connector follows the same contract: events it receives from outside carry an
//! acknowledgement handle, and it confirms upstream only once that acknowledgement resolves;
//! events it sends out are completed (delivered or failed) exactly once; bad bytes become
//! events on `<id>._errors`, never a panic.
#![deny(missing_docs)]

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod blackhole;
#[cfg(feature = "chaos")]
pub mod chaos;
pub mod core;
pub mod file;
pub mod generator;
pub mod http_client;
pub mod http_server;
#[cfg(feature = "http_stream")]
pub mod http_stream;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "redis")]
pub mod redis;
pub mod stdio;
pub mod tcp;
pub mod ws;
#[cfg(feature = "zmq")]
pub mod zmq;

pub use crate::core::{
    BuildError, ComponentStatus, Connector, ConnectorBuilder, ConnectorContext, ConnectorError,
    ConnectorMetrics, FanoutControl, InputBatch, InputQueue, OutputSender, Roles, RunningConnector,
    SendRejected, StartFuture, StatusCell, StatusRecord, Subscription, Unconnected,
};

/// Every connector kind this build knows, for the runtime to look up by `kind`.
pub fn builtin_connectors() -> Vec<Box<dyn ConnectorBuilder>> {
    // In the order of their names, as `validate` lists them; optional kinds in their place.
    #[allow(unused_mut, reason = "the test-only kind pushes itself")]
    let mut builders: Vec<Box<dyn ConnectorBuilder>> = vec![
        #[cfg(feature = "amqp")]
        Box::new(amqp::AmqpBuilder),
        Box::new(blackhole::BlackholeBuilder),
        Box::new(file::FileBuilder),
        Box::new(generator::GeneratorBuilder),
        Box::new(http_client::HttpClientBuilder),
        Box::new(http_server::HttpServerBuilder),
        #[cfg(feature = "http_stream")]
        Box::new(http_stream::HttpStreamBuilder),
        #[cfg(feature = "mqtt")]
        Box::new(mqtt::MqttBuilder),
        #[cfg(feature = "nats")]
        Box::new(nats::NatsBuilder),
        #[cfg(feature = "redis")]
        Box::new(redis::RedisBuilder),
        Box::new(stdio::StdinBuilder),
        Box::new(stdio::StdoutBuilder),
        Box::new(tcp::TcpClientBuilder),
        Box::new(tcp::TcpServerBuilder),
        Box::new(ws::WsClientBuilder),
        Box::new(ws::WsServerBuilder),
        #[cfg(feature = "zmq")]
        Box::new(zmq::ZmqBuilder),
    ];
    #[cfg(feature = "chaos")]
    builders.push(Box::new(chaos::ChaosBuilder));
    builders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_connectors_have_unique_kinds() {
        let mut kinds: Vec<&str> = builtin_connectors().iter().map(|b| b.kind()).collect();
        let count = kinds.len();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), count);
    }
}
