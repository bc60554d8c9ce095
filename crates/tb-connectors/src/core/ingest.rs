//! Turning a stream's bytes into events: per-stream decoder state, sequence numbers,
//! metadata, and the `_errors` envelope for bytes that would not decode.

use std::sync::Arc;

use chrono::Utc;
use tb_codec::{CodecKind, DecodeError, Decoded, Decoder, InterceptorConfig};
use tb_event::{AckHandle, ComponentId, Event, EventMeta, KeyString, ObjectMap, StreamId, Value};

/// The decoding state of one stream (a connection, a request, a file).
pub struct StreamDecoder {
    decoder: Decoder,
    codec: CodecKind,
    interceptors: Arc<[InterceptorConfig]>,
    connector: ComponentId,
    stream: StreamId,
    next_seq: u64,
    fields: Option<Arc<ObjectMap>>,
    decoded: Decoded,
}

impl StreamDecoder {
    /// A decoder for `stream` of `connector`; `fields` become `%tightbeam.*` metadata.
    pub fn new(
        connector: ComponentId,
        stream: StreamId,
        codec: CodecKind,
        interceptors: &[InterceptorConfig],
        fields: Option<Arc<ObjectMap>>,
    ) -> Self {
        Self {
            decoder: Decoder::new(codec, interceptors),
            codec,
            interceptors: interceptors.into(),
            connector,
            stream,
            next_seq: 0,
            fields,
            decoded: Decoded::default(),
        }
    }

    /// When the chain is exactly one `lines` interceptor and the codec keeps no state from
    /// frame to frame, whole lines decode the same anywhere: this returns the delimiter and
    /// the longest line, so a reader may decode runs of whole lines on other threads.
    pub fn parallel_lines(&self) -> Option<(Vec<u8>, usize)> {
        match (&*self.interceptors, self.codec) {
            (
                [
                    InterceptorConfig::Lines {
                        delimiter,
                        max_length,
                    },
                ],
                codec,
            ) if codec != CodecKind::Csv && !delimiter.is_empty() => {
                Some((delimiter.as_bytes().to_vec(), *max_length))
            }
            _ => None,
        }
    }

    /// A fresh decoder with this stream's codec and interceptors, for decoding elsewhere.
    pub fn detached_decoder(&self) -> Decoder {
        Decoder::new(self.codec, &self.interceptors)
    }

    /// Turns values decoded elsewhere (in stream order) into this stream's events.
    pub fn adopt(
        &mut self,
        decoded: &mut Decoded,
        ack: &AckHandle,
        events: &mut Vec<Event>,
        errors: &mut Vec<DecodeError>,
    ) {
        std::mem::swap(&mut self.decoded, decoded);
        self.drain(ack, events, errors);
        std::mem::swap(&mut self.decoded, decoded);
    }

    /// Sets the `%tightbeam.*` fields of the events decoded from now on (a message
    /// transport's per-message metadata: routing key, subject, headers).
    pub fn set_fields(&mut self, fields: Option<Arc<ObjectMap>>) {
        self.fields = fields;
    }

    /// The `%tightbeam.*` fields events get now.
    pub fn fields(&self) -> Option<Arc<ObjectMap>> {
        self.fields.clone()
    }

    /// Events decoded on this stream so far.
    pub fn events_decoded(&self) -> u64 {
        self.next_seq
    }

    /// The stream this decoder belongs to.
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// Decodes the next chunk. Each value becomes an event carrying a clone of `ack`;
    /// each decode failure is appended to `errors`.
    pub fn decode(
        &mut self,
        chunk: &[u8],
        ack: &AckHandle,
        events: &mut Vec<Event>,
        errors: &mut Vec<DecodeError>,
    ) {
        self.decoded.clear();
        self.decoder.decode_chunk(chunk, &mut self.decoded);
        self.drain(ack, events, errors);
    }

    /// Ends the stream: a last unterminated frame, a truncated compressed stream.
    pub fn finish(
        &mut self,
        ack: &AckHandle,
        events: &mut Vec<Event>,
        errors: &mut Vec<DecodeError>,
    ) {
        self.decoded.clear();
        self.decoder.finish(&mut self.decoded);
        self.drain(ack, events, errors);
    }

    fn drain(&mut self, ack: &AckHandle, events: &mut Vec<Event>, errors: &mut Vec<DecodeError>) {
        let received_at = Utc::now();
        events.reserve(self.decoded.values.len());
        for value in self.decoded.values.drain(..) {
            let meta = EventMeta {
                id: tb_event::EventId {
                    connector: self.connector.clone(),
                    stream: self.stream,
                    seq: self.next_seq,
                },
                received_at,
                fields: self.fields.clone(),
            };
            self.next_seq += 1;
            events.push(Event::new(value, meta, ack.clone()));
        }
        errors.append(&mut self.decoded.errors);
    }
}

/// The event put on `<connector>._errors` for bytes that would not decode: the reason, the
/// connector and stream, and the raw bytes (as a string, lossily, so any codec can write it).
pub fn decode_error_event(
    connector: &ComponentId,
    stream: StreamId,
    error: &DecodeError,
    ack: AckHandle,
) -> Event {
    let mut details = ObjectMap::new();
    details.insert(
        KeyString::from("message"),
        Value::from(error.reason.as_str()),
    );
    details.insert(
        KeyString::from("connector"),
        Value::from(connector.as_str()),
    );
    details.insert(KeyString::from("stream_id"), Value::from(stream.0));
    let mut envelope = ObjectMap::new();
    envelope.insert(KeyString::from("error"), Value::Object(details));
    envelope.insert(
        KeyString::from("raw"),
        Value::from(String::from_utf8_lossy(&error.raw).into_owned()),
    );
    Event::new(
        Value::Object(envelope),
        EventMeta::new(connector.clone(), stream, 0),
        ack,
    )
}
