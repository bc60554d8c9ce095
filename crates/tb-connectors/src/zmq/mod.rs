//! `zmq`: one ZeroMQ socket (zeromq, a native Rust ZMTP implementation), bound or
//! connected: PULL, SUB (topic prefixes), REP and ROUTER receive; PUSH and PUB send; REQ
//! sends each event as a request and hands the reply on; DEALER does both.
//!
//! ZeroMQ confirms nothing: a received message is handed on (receiving pauses while
//! `max_pending` of its events are unacknowledged, so ZeroMQ's queues push back on the
//! peers), and an event sent is delivered once the socket took it. What a process holds when
//! it dies is lost, as with any ZeroMQ peer. REP and ROUTER replies find their way back
//! through the request's envelope, kept in the event's `%tightbeam` fields: an event born on
//! the connector that comes back to it through its `inputs` goes to the peer that asked.
//!
//! A connected socket whose peer goes away is made again with backoff (status
//! `reconnecting` meanwhile); a bound one waits for peers.

mod config;
mod socket;

pub use config::{SocketKind, ZmqConfig};

use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tb_codec::Encoder;
use tb_event::{AckStatus, ComponentId, Event, KeyString, ObjectMap, Value};
use zeromq::{SocketEvent, ZmqMessage};

use crate::core::{
    Backoff, BuildError, Connector, ConnectorBuilder, ConnectorContext, FieldTemplate,
    IngestTarget, InputQueue, MAX_MESSAGES_PER_BATCH, MessageIn, OutputSender, Remote, Roles,
    StartFuture, StreamDecoder, complete_events, encode_message, ingest_messages, parse_config,
    pause, start_running,
};
use socket::Sock;

/// How long connecting may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds ZeroMQ connectors.
pub struct ZmqBuilder;

impl ConnectorBuilder for ZmqBuilder {
    fn kind(&self) -> &'static str {
        "zmq"
    }

    fn roles(&self, has_inputs: bool) -> Roles {
        Roles::source_sending_when(has_inputs)
    }

    fn build(
        &self,
        id: &ComponentId,
        config: serde_json::Value,
        has_inputs: bool,
    ) -> Result<Box<dyn Connector>, BuildError> {
        let config: ZmqConfig = parse_config(config)?;
        let endpoint = endpoint_of(&config)?;
        let kind = config.socket;
        if has_inputs && !kind.sends() {
            return Err(BuildError::at(
                "inputs",
                format!(
                    "a {kind:?} socket only receives: drop `inputs`, or use push, pub, dealer or req"
                ),
            ));
        }
        if !has_inputs && matches!(kind, SocketKind::Push | SocketKind::Pub | SocketKind::Req) {
            return Err(BuildError::at(
                "inputs",
                format!("a {kind:?} socket sends what its `inputs` bring: name them"),
            ));
        }
        if !config.subscribe.is_empty() && kind != SocketKind::Sub {
            return Err(BuildError::at("subscribe", "only a sub socket subscribes"));
        }
        let topic = match (&config.topic, kind) {
            (Some(topic), SocketKind::Pub) => Some(FieldTemplate::compile("topic", topic)?),
            (Some(_), _) => {
                return Err(BuildError::at(
                    "topic",
                    "only a pub socket sends under a topic",
                ));
            }
            (None, _) => None,
        };
        if config.max_pending == 0 {
            return Err(BuildError::at(
                "max_pending",
                "max_pending must be at least 1",
            ));
        }
        Ok(Box::new(Zmq {
            id: id.clone(),
            config,
            endpoint,
            topic,
        }))
    }
}

/// Where the socket binds or connects.
#[derive(Clone, Debug)]
enum Endpoint {
    Bind(String),
    Connect(String),
}

impl Endpoint {
    fn address(&self) -> &str {
        match self {
            Self::Bind(address) | Self::Connect(address) => address,
        }
    }
}

fn endpoint_of(config: &ZmqConfig) -> Result<Endpoint, BuildError> {
    let endpoint = match (&config.bind, &config.connect) {
        (Some(bind), None) => Endpoint::Bind(bind.clone()),
        (None, Some(connect)) => Endpoint::Connect(connect.clone()),
        _ => {
            return Err(BuildError::at(
                "bind",
                "set `bind` (listen) or `connect` (to a peer that listens), one of them",
            ));
        }
    };
    let key = match endpoint {
        Endpoint::Bind(_) => "bind",
        Endpoint::Connect(_) => "connect",
    };
    if !endpoint.address().starts_with("tcp://") {
        return Err(BuildError::at(
            key,
            format!(
                "`{}` is not a TCP endpoint; write tcp://127.0.0.1:5555",
                endpoint.address()
            ),
        ));
    }
    Ok(endpoint)
}

/// A built ZeroMQ connector.
struct Zmq {
    id: ComponentId,
    config: ZmqConfig,
    endpoint: Endpoint,
    topic: Option<FieldTemplate>,
}

impl Connector for Zmq {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        start_running(async move {
            let peer = Peer {
                remote: Remote::new(
                    self.id,
                    self.endpoint.address(),
                    context.status,
                    context.metrics,
                    context.intake,
                ),
                config: self.config,
                endpoint: self.endpoint,
                topic: self.topic,
            };
            peer.run(&context.output, &context.errors, context.input)
                .await;
            Ok(())
        })
    }
}

/// Why a session ended.
enum End {
    /// Nothing more to receive or send.
    Done,
    /// The peer went away, or a request went unanswered: make the socket again.
    Lost(String),
}

/// The connector at run time.
struct Peer {
    remote: Remote,
    config: ZmqConfig,
    endpoint: Endpoint,
    topic: Option<FieldTemplate>,
}

/// What a session reads and writes through.
struct Io<'a> {
    decoder: StreamDecoder,
    encoder: Encoder,
    target: IngestTarget<'a>,
    input: Option<InputQueue>,
    /// Whether messages are still taken (until intake stops).
    receiving: bool,
    /// Acknowledgements of events received, to count what is pending.
    pending: FuturesUnordered<BoxFuture<'static, ()>>,
}

impl Peer {
    async fn run(&self, output: &OutputSender, errors: &OutputSender, input: Option<InputQueue>) {
        let config = &self.config;
        let mut io = Io {
            decoder: self
                .remote
                .message_decoder(config.codec, &config.interceptors),
            encoder: Encoder::new(config.codec, &config.interceptors),
            target: self.remote.ingest_target(output, errors),
            input,
            receiving: config.socket.receives(),
            pending: FuturesUnordered::new(),
        };
        if !io.receiving {
            io.target.finish_outputs();
        }
        let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
        loop {
            let opened = self
                .remote
                .with_backoff(|| self.open(), &mut backoff, true)
                .await;
            let Some((mut sock, mut monitor)) = opened else {
                break;
            };
            match self.session(&mut sock, &mut monitor, &mut io).await {
                End::Done => return,
                End::Lost(error) => {
                    self.remote.report_lost(&error, "making the socket again");
                    pause(backoff.next_delay(), &self.remote.intake, true).await;
                }
            }
        }
        // Intake stopped before the peer could be reached: what is still to send fails back.
        io.target.finish_outputs();
        if let Some(mut input) = io.input.take() {
            while let Some(batch) = input.recv().await {
                self.remote.metrics.input.inc_by(batch.len() as u64);
                self.fail(batch, &format!("cannot reach {}", self.endpoint.address()));
            }
        }
    }

    /// A socket bound or connected, subscribed, with its monitor.
    async fn open(&self) -> Result<(Sock, futures::channel::mpsc::Receiver<SocketEvent>), String> {
        let mut sock = Sock::new(self.config.socket);
        let monitor = sock.monitor();
        let done = match &self.endpoint {
            Endpoint::Bind(address) => sock.bind(address).await,
            Endpoint::Connect(address) => {
                tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(address))
                    .await
                    .unwrap_or(Err(zeromq::ZmqError::Other("no connection within 10s")))
            }
        };
        done.map_err(|error| error.to_string())?;
        let prefixes: &[String] = match self.config.subscribe.is_empty() {
            true => &[String::new()],
            false => &self.config.subscribe,
        };
        for prefix in prefixes {
            sock.subscribe(prefix)
                .await
                .map_err(|error| format!("cannot subscribe to `{prefix}`: {error}"))?;
        }
        Ok((sock, monitor))
    }

    /// Receives and sends until there is nothing more to do or the socket must be made
    /// again.
    async fn session(
        &self,
        sock: &mut Sock,
        monitor: &mut futures::channel::mpsc::Receiver<SocketEvent>,
        io: &mut Io<'_>,
    ) -> End {
        let connected = matches!(self.endpoint, Endpoint::Connect(_));
        let takes_messages = io.receiving && self.config.socket != SocketKind::Req;
        loop {
            if !io.receiving && io.input.is_none() {
                return End::Done;
            }
            let room = io.pending.len() < self.config.max_pending;
            tokio::select! {
                biased;
                () = self.remote.intake.cancelled(), if io.receiving => {
                    io.receiving = false;
                    io.target.finish_outputs();
                }
                event = monitor.next() => {
                    if let Some(SocketEvent::Disconnected(_)) = event
                        && connected
                    {
                        return End::Lost("the peer went away".to_owned());
                    }
                }
                Some(()) = io.pending.next(), if !io.pending.is_empty() => {}
                message = sock.recv(), if takes_messages && io.receiving && room => {
                    let (burst, failed) = match message {
                        Ok(message) => self.ready_after(message, sock, io.pending.len()),
                        Err(error) => (Vec::new(), Some(error)),
                    };
                    if !burst.is_empty() {
                        self.take(burst, io).await;
                    }
                    match failed {
                        Some(error) if connected => return End::Lost(error.to_string()),
                        Some(error) => {
                            tracing::debug!(connector = %self.remote.id, %error, "A peer's connection failed.");
                        }
                        None => {}
                    }
                }
                batch = async { io.input.as_mut().expect("guarded").recv().await }, if io.input.is_some() => match batch {
                    Some(batch) => {
                        self.remote.metrics.input.inc_by(batch.len() as u64);
                        if let Err(error) = self.send(sock, batch, io).await {
                            return End::Lost(error);
                        }
                    }
                    None => io.input = None,
                },
            }
        }
    }

    /// `first` and the messages the socket already holds, up to a batch and the room left
    /// under `max_pending`: a burst costs one send downstream, not one per message. A
    /// failure met while gathering ends the burst and is returned, to be handled as one
    /// met by the session's own receive.
    fn ready_after(
        &self,
        first: ZmqMessage,
        sock: &mut Sock,
        pending: usize,
    ) -> (Vec<ZmqMessage>, Option<zeromq::ZmqError>) {
        let room = self
            .config
            .max_pending
            .saturating_sub(pending)
            .clamp(1, MAX_MESSAGES_PER_BATCH);
        let mut burst = vec![first];
        while burst.len() < room {
            match sock.recv().now_or_never() {
                Some(Ok(message)) => burst.push(message),
                Some(Err(error)) => return (burst, Some(error)),
                None => break,
            }
        }
        (burst, None)
    }

    /// Hands received messages' bodies (each its last frame) on as one batch; the frames
    /// before a body are kept in its `%tightbeam`.
    async fn take(&self, messages: Vec<ZmqMessage>, io: &mut Io<'_>) {
        let received: Vec<(bytes::Bytes, std::sync::Arc<ObjectMap>)> = messages
            .into_iter()
            .filter_map(|message| {
                let mut frames = message.into_vec();
                let body = frames.pop()?;
                Some((body, std::sync::Arc::new(self.fields_of(&frames))))
            })
            .collect();
        let batch: Vec<MessageIn<'_>> = received
            .iter()
            .map(|(body, fields)| (&body[..], Some(fields.clone())))
            .collect();
        let acks = ingest_messages(&mut io.decoder, &batch, &io.target).await;
        for ack in acks.into_iter().flatten() {
            io.pending.push(ack.wait().map(drop).boxed());
        }
    }

    /// `%tightbeam` of a message, from the frames before its body: `envelope` (all of them,
    /// which a reply is sent with) and `identity` (the first) for `rep` and `router`; `topic`
    /// (the first) for `sub`; `frames` (their count, the body included) for every socket.
    fn fields_of(&self, frames: &[bytes::Bytes]) -> ObjectMap {
        let mut fields = ObjectMap::new();
        fields.insert(
            KeyString::from("frames"),
            Value::from(frames.len() as i64 + 1),
        );
        let first = frames.first().map(|frame| Value::Bytes(frame.clone()));
        match self.config.socket {
            SocketKind::Rep | SocketKind::Router => {
                if let Some(identity) = first {
                    fields.insert(KeyString::from("identity"), identity);
                }
                let envelope = frames
                    .iter()
                    .map(|frame| Value::Bytes(frame.clone()))
                    .collect();
                fields.insert(KeyString::from("envelope"), Value::Array(envelope));
            }
            SocketKind::Sub => {
                if let Some(topic) = first {
                    fields.insert(KeyString::from("topic"), topic);
                }
            }
            _ => {}
        }
        fields
    }

    /// Sends a batch. An error means the socket must be made again (a request went
    /// unanswered, or a connected socket failed); the events not sent are errored first.
    async fn send(
        &self,
        sock: &mut Sock,
        batch: Vec<Event>,
        io: &mut Io<'_>,
    ) -> Result<(), String> {
        let mut events = batch.into_iter();
        while let Some(event) = events.next() {
            let message = match self.message_of(&event, &mut io.encoder) {
                Ok(message) => message,
                Err(reason) => {
                    tracing::warn!(connector = %self.remote.id, %reason, "An event cannot be sent as it is; it is rejected.");
                    complete_events(
                        vec![event],
                        AckStatus::Rejected,
                        Some(reason.into()),
                        &self.remote.metrics,
                    );
                    continue;
                }
            };
            let sent = match self.config.socket {
                SocketKind::Req => self.request(sock, message, io).await,
                _ => sock.send(message).await.map_err(|error| error.to_string()),
            };
            match sent {
                Ok(()) => complete_events(
                    vec![event],
                    AckStatus::Delivered,
                    None,
                    &self.remote.metrics,
                ),
                // The peer that asked is gone: there is nowhere else a reply could go.
                Err(reason) if self.config.socket.replies() => complete_events(
                    vec![event],
                    AckStatus::Rejected,
                    Some(format!("the peer that asked is gone: {reason}").into()),
                    &self.remote.metrics,
                ),
                Err(reason) => {
                    let mut failed = vec![event];
                    failed.extend(events);
                    self.fail(failed, &reason);
                    return Err(reason);
                }
            }
        }
        Ok(())
    }

    /// `req`: sends a request and hands its reply on.
    async fn request(
        &self,
        sock: &mut Sock,
        message: ZmqMessage,
        io: &mut Io<'_>,
    ) -> Result<(), String> {
        sock.send(message)
            .await
            .map_err(|error| error.to_string())?;
        let reply = tokio::time::timeout(self.config.request_timeout, sock.recv())
            .await
            .map_err(|_| format!("no reply within {:?}", self.config.request_timeout))?
            .map_err(|error| error.to_string())?;
        if io.receiving {
            self.take(vec![reply], io).await;
        }
        Ok(())
    }

    /// The message for `event`: a reply to its envelope for `rep` and `router`, under its
    /// topic for `pub`, the body alone otherwise.
    fn message_of(&self, event: &Event, encoder: &mut Encoder) -> Result<ZmqMessage, String> {
        let body = bytes::Bytes::from(encode_message(encoder, &event.value)?);
        let mut frames: Vec<bytes::Bytes> = Vec::with_capacity(3);
        if self.config.socket.replies() {
            let envelope = event
                .is_from(&self.remote.id)
                .then(|| event.meta.fields.as_ref()?.get("envelope").cloned())
                .flatten();
            let Some(Value::Array(envelope)) = envelope else {
                return Err("not a reply to a request this connector received: a rep or router socket sends only replies".to_owned());
            };
            for frame in envelope {
                match frame {
                    Value::Bytes(frame) => frames.push(frame),
                    _ => return Err("the request's envelope was changed".to_owned()),
                }
            }
        }
        if let Some(topic) = &self.topic {
            let topic = topic
                .render(&event.value)
                .map_err(|reason| format!("no topic: {reason}"))?;
            frames.push(bytes::Bytes::from(topic));
        }
        frames.push(body);
        let mut frames = frames.into_iter();
        let mut message = ZmqMessage::from(frames.next().unwrap_or_default());
        for frame in frames {
            message.push_back(frame);
        }
        Ok(message)
    }

    fn fail(&self, events: Vec<Event>, reason: &str) {
        complete_events(
            events,
            AckStatus::Errored,
            Some(reason.into()),
            &self.remote.metrics,
        );
    }
}
