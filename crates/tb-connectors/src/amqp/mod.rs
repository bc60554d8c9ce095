//! `amqp`: RabbitMQ (AMQP 0-9-1) through lapin. It consumes a queue (`queue`) and confirms
//! each message only once its events' acknowledgement resolves: delivered is `basic.ack`,
//! errored is `basic.nack` with requeue (the broker delivers it again), rejected is
//! `basic.reject` without requeue (a dead-letter exchange gets it). It publishes what its
//! `inputs` send to `exchange` with a routing key made from each event, waits for the
//! broker's publisher confirm, and only then calls an event delivered.
//!
//! Each half has its own connection, made again with backoff when lost (status
//! `reconnecting` with the last error meanwhile). Messages delivered on a lost connection
//! are delivered again by the broker: at least once, never lost.

mod config;
mod sink;
mod source;

pub use config::{AmqpConfig, Binding, Declarations, ExchangeDeclaration, QueueDeclaration};

use tb_event::ComponentId;

use crate::core::{
    BuildError, Connector, ConnectorBuilder, ConnectorContext, FieldTemplate, Remote, Roles,
    StartFuture, parse_config, redact_url, start_running,
};

/// Builds AMQP connectors.
pub struct AmqpBuilder;

impl ConnectorBuilder for AmqpBuilder {
    fn kind(&self) -> &'static str {
        "amqp"
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
        let config: AmqpConfig = parse_config(config)?;
        let wrong = |path: &str, message: String| BuildError {
            path: path.to_owned(),
            message,
        };
        if let Err(error) = config.url.parse::<lapin::uri::AMQPUri>() {
            return Err(wrong(
                "url",
                format!(
                    "`{}` is not an AMQP URL ({error}); write amqp://user:password@host:5672/vhost",
                    redact_url(&config.url)
                ),
            ));
        }
        if config.queue.is_none() && !has_inputs {
            return Err(wrong(
                "queue",
                "an amqp connector needs `queue` to consume, or `inputs` to publish".to_owned(),
            ));
        }
        if config.prefetch == 0 {
            return Err(wrong("prefetch", "prefetch must be at least 1".to_owned()));
        }
        for (index, exchange) in config.declare.exchanges.iter().enumerate() {
            if !matches!(
                exchange.kind.as_str(),
                "direct" | "fanout" | "topic" | "headers"
            ) {
                return Err(wrong(
                    &format!("declare.exchanges[{index}].kind"),
                    format!(
                        "exchange kind `{}` must be direct, fanout, topic or headers",
                        exchange.kind
                    ),
                ));
            }
        }
        let routing_key = FieldTemplate::compile("routing_key", &config.routing_key)?;
        Ok(Box::new(Amqp {
            config,
            routing_key,
        }))
    }
}

/// A built AMQP connector.
struct Amqp {
    config: AmqpConfig,
    routing_key: FieldTemplate,
}

impl Connector for Amqp {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        start_running(async move {
            let ConnectorContext {
                id,
                output,
                errors,
                input,
                intake,
                status,
                metrics,
                data_dir: _,
            } = context;
            let broker = Broker {
                remote: Remote::new(id.clone(), &self.config.url, status, metrics, intake),
                config: self.config.clone(),
            };
            let consuming = async {
                match &self.config.queue {
                    Some(queue) => source::consume(&broker, queue, &output, &errors).await,
                    None => {
                        output.finish();
                        errors.finish();
                    }
                }
            };
            let publishing = async {
                if let Some(input) = input {
                    sink::publish(&broker, &self.routing_key, input).await;
                }
            };
            tokio::join!(consuming, publishing);
            Ok(())
        })
    }
}

/// What both halves share: the broker's address and settings, and where they report.
struct Broker {
    remote: Remote,
    config: AmqpConfig,
}

impl Broker {
    /// A connection and a channel on it, with what `declare` asks declared.
    async fn open(&self, purpose: &str) -> Result<(lapin::Connection, lapin::Channel), String> {
        let properties = lapin::ConnectionProperties::default().with_connection_name(
            format!("tightbeam {} {purpose}", self.remote.id.as_str()).into(),
        );
        let connection = lapin::Connection::connect(&self.config.url, properties)
            .await
            .map_err(|error| crate::core::error_chain(&error))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|error| crate::core::error_chain(&error))?;
        self.declare(&channel)
            .await
            .map_err(|error| crate::core::error_chain(&error))?;
        Ok((connection, channel))
    }

    async fn declare(&self, channel: &lapin::Channel) -> lapin::Result<()> {
        use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::{AMQPValue, FieldTable};
        let declare = &self.config.declare;
        for exchange in &declare.exchanges {
            let kind = match exchange.kind.as_str() {
                "fanout" => lapin::ExchangeKind::Fanout,
                "topic" => lapin::ExchangeKind::Topic,
                "headers" => lapin::ExchangeKind::Headers,
                _ => lapin::ExchangeKind::Direct,
            };
            let options = ExchangeDeclareOptions {
                durable: exchange.durable,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    exchange.name.as_str().into(),
                    kind,
                    options,
                    FieldTable::default(),
                )
                .await?;
        }
        for queue in &declare.queues {
            let mut arguments = FieldTable::default();
            if let Some(exchange) = &queue.dead_letter_exchange {
                arguments.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString(exchange.as_str().into()),
                );
            }
            let options = QueueDeclareOptions {
                durable: queue.durable,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(queue.name.as_str().into(), options, arguments)
                .await?;
        }
        for binding in &declare.bindings {
            channel
                .queue_bind(
                    binding.queue.as_str().into(),
                    binding.exchange.as_str().into(),
                    binding.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}
