//! The common shape of byte transforms (gzip, zstd, base64) on the decoding side.
//!
//! A transform is written once as a stream transform ([`ByteTransform`]). [`TransformStage`]
//! then runs it either on the stream (errors stop it for the rest of the stream, because a
//! corrupt compressed stream cannot be resynchronised) or on each frame on its own (an error
//! costs only that frame).

use super::ByteSink;
use crate::error::{DecodeError, Decoded, capped_raw_bytes};

/// Capacity kept by a frame-mode output buffer between frames: 1 MiB.
const RETAINED_FRAME_OUTPUT_BYTES: usize = 1024 * 1024;

/// A stream transform: bytes in, bytes out to a sink, state carried between calls.
pub(crate) trait ByteTransform {
    /// Transforms the next piece of input.
    ///
    /// # Errors
    ///
    /// Corrupt input or output over a limit. The caller stops feeding the stream after one.
    fn push(
        &mut self,
        input: &[u8],
        out: &mut Decoded,
        sink: &mut ByteSink<'_>,
    ) -> Result<(), DecodeError>;

    /// End of input: flushes what is left.
    ///
    /// # Errors
    ///
    /// Input that stopped in the middle of a unit (a truncated gzip member or zstd frame).
    fn finish(&mut self, out: &mut Decoded, sink: &mut ByteSink<'_>) -> Result<(), DecodeError>;

    /// Starts over, forgetting everything seen.
    fn reset(&mut self);
}

/// Runs a [`ByteTransform`] on a stream or on single frames.
pub(crate) struct TransformStage<T> {
    transform: T,
    /// Set after an error on the stream: the rest of the stream is dropped until `finish`.
    stream_failed: bool,
    /// The output of [`TransformStage::transform_frame`], reused between frames.
    frame_output: Vec<u8>,
}

impl<T: ByteTransform> TransformStage<T> {
    pub(crate) fn new(transform: T) -> Self {
        Self {
            transform,
            stream_failed: false,
            frame_output: Vec::new(),
        }
    }

    /// Stream mode: transforms the next chunk, sending output pieces to `sink`.
    pub(crate) fn push_stream(&mut self, chunk: &[u8], out: &mut Decoded, sink: &mut ByteSink<'_>) {
        if self.stream_failed {
            return;
        }
        if let Err(error) = self.transform.push(chunk, out, sink) {
            out.errors.push(error);
            self.stream_failed = true;
        }
    }

    /// Stream mode, end of stream. Returns whether the stream ended cleanly; when it did not,
    /// the caller drops what later stages hold instead of flushing a cut-off tail. Resets.
    pub(crate) fn finish_stream(&mut self, out: &mut Decoded, sink: &mut ByteSink<'_>) -> bool {
        let mut ended_cleanly = !self.stream_failed;
        if ended_cleanly && let Err(error) = self.transform.finish(out, sink) {
            out.errors.push(error);
            ended_cleanly = false;
        }
        self.reset();
        ended_cleanly
    }

    /// Frame mode: transforms one whole frame, or reports it and returns `None`.
    pub(crate) fn transform_frame(&mut self, frame: &[u8], out: &mut Decoded) -> Option<&[u8]> {
        self.transform.reset();
        self.frame_output.clear();
        // One huge frame should not pin its size for the life of the stream.
        self.frame_output.shrink_to(RETAINED_FRAME_OUTPUT_BYTES);
        let frame_output = &mut self.frame_output;
        let mut append = |piece: &[u8], _: &mut Decoded| frame_output.extend_from_slice(piece);
        let result = self
            .transform
            .push(frame, out, &mut append)
            .and_then(|()| self.transform.finish(out, &mut append));
        self.transform.reset();
        match result {
            Ok(()) => Some(&self.frame_output),
            Err(mut error) => {
                // Per frame, the frame is the useful evidence, not the piece being read.
                error.raw = capped_raw_bytes(frame);
                out.errors.push(error);
                None
            }
        }
    }

    /// Forgets the stream.
    pub(crate) fn reset(&mut self) {
        self.transform.reset();
        self.stream_failed = false;
    }
}
