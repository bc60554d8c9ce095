//! The `zstd` interceptor: streaming Zstandard decompression on receive, compression on send.
//!
//! Like gzip, output goes through a fixed 32 KiB window and is handed on at once, so the
//! `max_decompressed` cap is enforced while streaming. The decoder's window size is also capped
//! (to what `max_decompressed` needs, within zstd's usual 8 to 128 MiB), so a frame header
//! alone cannot make it allocate more. Concatenated frames are decoded in order.

use zstd::stream::raw::{DParameter, Decoder, Encoder, InBuffer, Operation, OutBuffer};

use super::ByteSink;
use super::transform::ByteTransform;
use crate::error::{DecodeError, Decoded, EncodeError};

/// Decompressed bytes produced per decompression step.
const OUTPUT_WINDOW_BYTES: usize = 32 * 1024;
/// Compression level used on send: zstd's default, a good speed/ratio balance.
const COMPRESSION_LEVEL: i32 = 3;
/// Bounds of the decoder's window-size cap, as powers of two (8 MiB and 128 MiB).
const MIN_WINDOW_LOG: u32 = 23;
const MAX_WINDOW_LOG: u32 = 27;

/// Streaming zstd decoder with a cap on total output.
pub(crate) struct ZstdDecompressor {
    /// Created on first use, since creation can fail and construction cannot.
    decoder: Option<Decoder<'static>>,
    output_window: Vec<u8>,
    /// Whether the last step left a frame unfinished (zstd's hint was not zero).
    frame_in_progress: bool,
    /// Invariant: never above `max_decompressed`; reaching past it is an error.
    decompressed_total: usize,
    max_decompressed: usize,
}

impl ZstdDecompressor {
    pub(crate) fn new(max_decompressed: usize) -> Self {
        Self {
            decoder: None,
            output_window: vec![0; OUTPUT_WINDOW_BYTES],
            frame_in_progress: false,
            decompressed_total: 0,
            max_decompressed,
        }
    }

    fn window_log_max(&self) -> u32 {
        let needed = usize::BITS - self.max_decompressed.saturating_sub(1).leading_zeros();
        needed.clamp(MIN_WINDOW_LOG, MAX_WINDOW_LOG)
    }

    fn create_decoder(&self) -> std::io::Result<Decoder<'static>> {
        let mut decoder = Decoder::new()?;
        decoder.set_parameter(DParameter::WindowLogMax(self.window_log_max()))?;
        Ok(decoder)
    }

    fn check_total(&mut self, produced: usize, chunk: &[u8]) -> Result<(), DecodeError> {
        self.decompressed_total = self.decompressed_total.saturating_add(produced);
        if self.decompressed_total > self.max_decompressed {
            return Err(DecodeError::too_large(
                format!(
                    "zstd data decompresses to more than max_decompressed of {} bytes",
                    self.max_decompressed
                ),
                chunk,
            ));
        }
        Ok(())
    }
}

impl ByteTransform for ZstdDecompressor {
    fn push(
        &mut self,
        chunk: &[u8],
        out: &mut Decoded,
        sink: &mut ByteSink<'_>,
    ) -> Result<(), DecodeError> {
        if self.decoder.is_none() {
            let decoder = self.create_decoder().map_err(|error| {
                DecodeError::invalid(format!("could not create zstd decoder: {error}"), chunk)
            })?;
            self.decoder = Some(decoder);
        }
        let mut input = InBuffer::around(chunk);
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(());
            };
            let input_position_before = input.pos();
            let mut output = OutBuffer::around(self.output_window.as_mut_slice());
            let hint = decoder.run(&mut input, &mut output).map_err(|error| {
                DecodeError::invalid(format!("corrupt zstd stream: {error}"), chunk)
            })?;
            let produced = output.pos();
            if produced == 0 && input.pos() == input_position_before && input.pos() < chunk.len() {
                return Err(DecodeError::invalid(
                    "corrupt zstd stream: decoder made no progress",
                    chunk,
                ));
            }
            self.frame_in_progress = hint != 0;
            self.check_total(produced, chunk)?;
            sink(self.output_window.get(..produced).unwrap_or_default(), out);
            // A window left unfilled means zstd holds no more output for the input given.
            if produced < OUTPUT_WINDOW_BYTES && input.pos() == chunk.len() {
                return Ok(());
            }
        }
    }

    fn finish(&mut self, _out: &mut Decoded, _sink: &mut ByteSink<'_>) -> Result<(), DecodeError> {
        if self.frame_in_progress {
            return Err(DecodeError::invalid("truncated zstd stream", &[]));
        }
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(decoder) = self.decoder.as_mut()
            && decoder.reinit().is_err()
        {
            self.decoder = None;
        }
        self.frame_in_progress = false;
        self.decompressed_total = 0;
    }
}

/// Streaming zstd encoder. Each [`ZstdCompressor::finish`] ends a frame; writing again starts a
/// new one, which decoders read as a concatenation.
pub(crate) struct ZstdCompressor {
    /// Created on first use, since creation can fail and construction cannot.
    encoder: Option<Encoder<'static>>,
    output_window: Vec<u8>,
    frame_started: bool,
}

impl ZstdCompressor {
    pub(crate) fn new() -> Self {
        Self {
            encoder: None,
            output_window: vec![0; OUTPUT_WINDOW_BYTES],
            frame_started: false,
        }
    }

    /// Compresses `input`, appending what the compressor releases to `out`.
    pub(crate) fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.frame_started = true;
        let encoder = match &mut self.encoder {
            Some(encoder) => encoder,
            empty => empty.insert(Encoder::new(COMPRESSION_LEVEL).map_err(zstd_error)?),
        };
        let mut input_buffer = InBuffer::around(input);
        while input_buffer.pos() < input.len() {
            let mut output = OutBuffer::around(self.output_window.as_mut_slice());
            encoder
                .run(&mut input_buffer, &mut output)
                .map_err(zstd_error)?;
            let produced = output.pos();
            out.extend_from_slice(self.output_window.get(..produced).unwrap_or_default());
        }
        Ok(())
    }

    /// Flushes buffered data so the peer can decode everything written so far.
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.drain(out, DrainMode::Flush)
    }

    /// Ends the frame. Does nothing when nothing was written.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.drain(out, DrainMode::EndFrame)?;
        if self.frame_started {
            self.frame_started = false;
            if let Some(encoder) = self.encoder.as_mut() {
                encoder.reinit().map_err(zstd_error)?;
            }
        }
        Ok(())
    }

    /// Compresses one whole frame into a complete zstd frame.
    pub(crate) fn compress_frame(
        &mut self,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.write(frame, out)?;
        self.finish(out)
    }

    fn drain(&mut self, out: &mut Vec<u8>, mode: DrainMode) -> Result<(), EncodeError> {
        if !self.frame_started {
            return Ok(());
        }
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(());
        };
        loop {
            let mut output = OutBuffer::around(self.output_window.as_mut_slice());
            let remaining = match mode {
                DrainMode::Flush => encoder.flush(&mut output),
                DrainMode::EndFrame => encoder.finish(&mut output, true),
            }
            .map_err(zstd_error)?;
            let produced = output.pos();
            out.extend_from_slice(self.output_window.get(..produced).unwrap_or_default());
            if remaining == 0 {
                return Ok(());
            }
        }
    }
}

#[derive(Clone, Copy)]
enum DrainMode {
    Flush,
    EndFrame,
}

fn zstd_error(error: std::io::Error) -> EncodeError {
    EncodeError::Compression {
        algorithm: "zstd",
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecodeErrorKind;
    use crate::interceptor::transform::TransformStage;

    fn unzstd(max_decompressed: usize, chunks: &[&[u8]]) -> (Vec<u8>, Decoded) {
        let mut stage = TransformStage::new(ZstdDecompressor::new(max_decompressed));
        let mut out = Decoded::default();
        let mut output = Vec::new();
        let mut sink = |piece: &[u8], _: &mut Decoded| output.extend_from_slice(piece);
        for chunk in chunks {
            stage.push_stream(chunk, &mut out, &mut sink);
        }
        stage.finish_stream(&mut out, &mut sink);
        (output, out)
    }

    #[test]
    fn zstd_stream_decodes_byte_by_byte() {
        let data = b"zstd zstd zstd data".repeat(50);
        let compressed = zstd::encode_all(&data[..], 3).unwrap();
        let chunks: Vec<&[u8]> = compressed.chunks(1).collect();
        let (output, out) = unzstd(usize::MAX, &chunks);
        assert_eq!(output, data);
        assert!(out.errors.is_empty());
    }

    #[test]
    fn concatenated_zstd_frames_decode_in_order() {
        let mut compressed = zstd::encode_all(&b"first "[..], 3).unwrap();
        compressed.extend(zstd::encode_all(&b"second"[..], 3).unwrap());
        let (output, out) = unzstd(usize::MAX, &[&compressed]);
        assert_eq!(output, b"first second");
        assert!(out.errors.is_empty());
    }

    #[test]
    fn zstd_bomb_over_max_decompressed_is_too_large_error() {
        let compressed = zstd::encode_all(&vec![0; 10 * 1024 * 1024][..], 3).unwrap();
        let (output, out) = unzstd(1024 * 1024, &[&compressed]);
        assert!(output.len() <= 1024 * 1024);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::TooLarge);
    }

    #[test]
    fn truncated_zstd_is_reported_at_finish() {
        let compressed = zstd::encode_all(&b"some data that will be cut"[..], 3).unwrap();
        let (_, out) = unzstd(usize::MAX, &[&compressed[..compressed.len() - 3]]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].reason, "truncated zstd stream");
    }

    #[test]
    fn corrupt_zstd_is_invalid() {
        let (_, out) = unzstd(usize::MAX, &[b"definitely not zstd"]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].kind, DecodeErrorKind::Invalid);
    }

    #[test]
    fn zstd_compressor_flush_makes_data_decodable_and_finish_ends_frame() {
        let mut compressor = ZstdCompressor::new();
        let mut compressed = Vec::new();
        compressor.write(b"flushed part", &mut compressed).unwrap();
        compressor.flush(&mut compressed).unwrap();
        let (output, _) = unzstd(usize::MAX, &[&compressed]);
        assert_eq!(output, b"flushed part");
        compressor.finish(&mut compressed).unwrap();
        compressor
            .compress_frame(b" and a frame", &mut compressed)
            .unwrap();
        assert_eq!(
            zstd::decode_all(&compressed[..]).unwrap(),
            b"flushed part and a frame"
        );
    }

    #[test]
    fn window_log_cap_follows_max_decompressed_within_bounds() {
        assert_eq!(ZstdDecompressor::new(1024).window_log_max(), MIN_WINDOW_LOG);
        assert_eq!(
            ZstdDecompressor::new(usize::MAX).window_log_max(),
            MAX_WINDOW_LOG
        );
        assert_eq!(ZstdDecompressor::new(1 << 25).window_log_max(), 25);
    }
}
