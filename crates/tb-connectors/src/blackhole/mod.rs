//! `blackhole`: accepts every event and discards it, acknowledging it as delivered.
//! For benchmarks and for wiring a topology before its real output exists.

use serde::Deserialize;
use tb_event::{AckStatus, ComponentId};

use crate::core::{
    BuildError, Connector, ConnectorBuilder, ConnectorContext, Roles, StartFuture, parse_config,
};

/// `kind = "blackhole"` has no settings of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {}

/// Builds blackholes.
pub struct BlackholeBuilder;

impl ConnectorBuilder for BlackholeBuilder {
    fn kind(&self) -> &'static str {
        "blackhole"
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
        let _config: BlackholeConfig = parse_config(config)?;
        Ok(Box::new(Blackhole))
    }
}

struct Blackhole;

impl Connector for Blackhole {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let running: crate::RunningConnector = Box::pin(async move {
                let Some(mut input) = context.input else {
                    return Ok(());
                };
                while let Some(batch) = input.recv().await {
                    let count = batch.len() as u64;
                    context.metrics.input.inc_by(count);
                    context.metrics.sent.inc_by(count);
                    batch
                        .into_iter()
                        .for_each(|event| event.complete(AckStatus::Delivered));
                }
                Ok(())
            });
            Ok(running)
        })
    }
}
