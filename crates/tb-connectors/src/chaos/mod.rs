//! `chaos`: a sink that fails on demand, for tests of supervision. Compiled only with the
//! `chaos` cargo feature, which is off by default, so a release binary never has it.
//!
//! It delivers every event, except that a batch holding an event with `panic = true` makes
//! it panic (the batch is lost in flight, so its events end errored), and one with
//! `fail = true` makes it stop with an error.

use serde::Deserialize;
use tb_event::{AckStatus, ComponentId, Event, Value};

use crate::core::{
    BuildError, Connector, ConnectorBuilder, ConnectorContext, ConnectorError, Roles, StartFuture,
    parse_config,
};

/// `kind = "chaos"` has no settings of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosConfig {}

/// Builds chaos sinks.
pub struct ChaosBuilder;

impl ConnectorBuilder for ChaosBuilder {
    fn kind(&self) -> &'static str {
        "chaos"
    }

    fn is_hidden(&self) -> bool {
        true
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
        let _config: ChaosConfig = parse_config(config)?;
        Ok(Box::new(Chaos))
    }
}

struct Chaos;

fn flag(event: &Event, name: &str) -> bool {
    event
        .value
        .as_object()
        .and_then(|object| object.get(name))
        .is_some_and(|value| *value == Value::Boolean(true))
}

impl Connector for Chaos {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            let running: crate::RunningConnector = Box::pin(async move {
                let Some(mut input) = context.input else {
                    return Ok(());
                };
                while let Some(batch) = input.recv().await {
                    context.metrics.input.inc_by(batch.len() as u64);
                    if batch.iter().any(|event| flag(event, "panic")) {
                        panic!("chaos: an event asked for a panic");
                    }
                    if batch.iter().any(|event| flag(event, "fail")) {
                        return Err(ConnectorError::Io {
                            context: "chaos".to_owned(),
                            source: std::io::Error::other("an event asked for a failure"),
                        });
                    }
                    context.metrics.sent.inc_by(batch.len() as u64);
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
