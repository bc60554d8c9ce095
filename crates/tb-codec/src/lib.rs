//! Tightbeam's codecs and interceptors: bytes to event values and back.
//!
//! A connector's config names a codec (`json`, `msgpack`, `csv`, `string`, `bytes`) and a list
//! of interceptors in receive order (`lines`, `length_prefixed`, `gzip`, `zstd`, `base64`).
//! A [`Decoder`] runs that chain over one input stream, chunk by chunk, and yields VRL
//! [`Value`](tb_event::Value)s; an [`Encoder`] runs it backwards for one output stream.
//!
//! Key design choices:
//! - **Pure and synchronous.** This crate knows nothing of sockets, tokio or HTTP; callers feed
//!   it whatever chunks their transport produces, and framing is correct under any chunking.
//! - **Never fails a stream, never panics.** A bad or oversized frame becomes a [`DecodeError`]
//!   (with its raw bytes, for an `_errors` output) next to the values that did decode, and
//!   decoding goes on where it safely can. Every size is capped (lines, frames, decompressed
//!   output, a stream buffered whole), so hostile input costs an error, not memory.
//! - **Fast on the hot path.** Values are deserialized straight into VRL's `Value`, frames that
//!   are complete inside a chunk are decoded from the chunk without copying, and buffers live in
//!   the per-stream `Decoder`/`Encoder` to be reused.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]

mod codec;
mod config;
mod decoder;
mod encoder;
mod error;
mod interceptor;

pub use codec::{JsonArrayReader, write_json};
pub use config::{
    CodecKind, DEFAULT_LINE_DELIMITER, DEFAULT_MAX_DECOMPRESSED, DEFAULT_MAX_FRAME_LENGTH,
    DEFAULT_MAX_LINE_LENGTH, InterceptorConfig, InterceptorConfigError, UnknownCodecError,
};
pub use decoder::Decoder;
pub use encoder::Encoder;
pub use error::{DecodeError, DecodeErrorKind, Decoded, EncodeError, MAX_RAW_ERROR_BYTES};
