//! Interceptors: the byte transforms between the wire and a codec.
//!
//! Framers (`lines`, `length_prefixed`) cut a byte stream into frames and must be right under any
//! chunking, since TCP splits data wherever it likes. Transforms (`gzip`, `zstd`, `base64`)
//! rewrite bytes, either as a stream (chunk by chunk, state carried between chunks) or one whole
//! frame at a time. Everything here pushes its output into a caller-supplied sink instead of
//! returning buffers, so a chain of stages runs without intermediate allocations and frames
//! complete inside a chunk are passed on as slices of that chunk.

pub(crate) mod base64_text;
pub(crate) mod gzip;
pub(crate) mod length_prefixed;
pub(crate) mod lines;
pub(crate) mod transform;
pub(crate) mod zstandard;

use crate::error::Decoded;

/// Where a stage sends what it produced: frames (after a framer) or stream pieces (after a
/// transform), with the output buffer passed along so the receiver can report errors too.
pub(crate) type ByteSink<'sink> = dyn FnMut(&[u8], &mut Decoded) + 'sink;
