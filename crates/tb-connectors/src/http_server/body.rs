//! A request body on its way to events, a bounded amount at a time.
//!
//! Memory follows the number of events decoded at once, not the bytes of the body: a 10 MB
//! body of `{}` lines is 3.4 million events. So a body is never decoded whole. Its
//! (decompressed) bytes go to the decoder [`PIECE_BYTES`] at a time, and a JSON array with no
//! framing is read [`ARRAY_ELEMENTS`] elements at a time; the caller sends the events on in
//! slices as they come. A compressed body is first read through once, keeping nothing, so
//! one that expands past `max_decompressed` is refused before any of it is decoded.

use std::io::Read;

use axum::http::{HeaderMap, header};
use tb_codec::{CodecKind, DecodeError, Decoded, JsonArrayReader};
use tb_event::{AckHandle, Event};

use super::config::HttpServerConfig;
use crate::core::StreamDecoder;

/// Bytes of (decompressed) body handed to the decoder at a time: at most about 5,000
/// events of the smallest JSON lines.
const PIECE_BYTES: usize = 16 * 1024;

/// Elements of a JSON array decoded at a time.
const ARRAY_ELEMENTS: usize = 1024;

/// A body's `Content-Encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    /// The encoding the request declares.
    ///
    /// # Errors
    ///
    /// The reason for a 415: an encoding Tightbeam cannot read.
    pub(super) fn of(headers: &HeaderMap) -> Result<Self, String> {
        let declared = headers
            .get(header::CONTENT_ENCODING)
            .map(|value| value.to_str().unwrap_or("").trim().to_ascii_lowercase());
        match declared.as_deref() {
            None | Some("" | "identity") => Ok(Self::Identity),
            Some("gzip" | "x-gzip") => Ok(Self::Gzip),
            Some("zstd") => Ok(Self::Zstd),
            Some(other) => Err(format!(
                "Content-Encoding `{other}` is not supported; send gzip, zstd or none"
            )),
        }
    }
}

/// Why a body cannot be decoded at all.
#[derive(Debug)]
pub(super) enum BodyError {
    /// It expands past `max_decompressed` (413).
    TooLarge(String),
    /// Its compression is corrupt (400).
    Corrupt(String),
}

/// The body's bytes, decompressed as they are read.
fn reader<'a>(body: &'a [u8], encoding: Encoding) -> Result<Box<dyn Read + Send + 'a>, BodyError> {
    Ok(match encoding {
        Encoding::Identity => Box::new(body),
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Encoding::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|error| BodyError::Corrupt(format!("corrupt zstd body: {error}")))?,
        ),
    })
}

/// Reads the next piece into `buffer`, refusing more than `limit` bytes in all.
fn read_piece(
    reader: &mut dyn Read,
    buffer: &mut [u8],
    total: &mut usize,
    limit: usize,
    encoding: Encoding,
) -> Result<usize, BodyError> {
    let read = reader.read(buffer).map_err(|error| {
        BodyError::Corrupt(format!(
            "corrupt {} body: {error}",
            if encoding == Encoding::Zstd {
                "zstd"
            } else {
                "gzip"
            }
        ))
    })?;
    *total += read;
    if *total > limit {
        return Err(BodyError::TooLarge(format!(
            "the body expands past max_decompressed ({limit} bytes)"
        )));
    }
    Ok(read)
}

/// Reads a compressed body through once, keeping nothing, to check that it is sound and
/// expands to at most `max_decompressed`; returns the size it expands to (an uncompressed
/// body's own, at once).
///
/// # Errors
///
/// [`BodyError`] for a corrupt body or one that expands too far.
pub(super) fn check_expansion(
    body: &[u8],
    encoding: Encoding,
    max_decompressed: usize,
) -> Result<usize, BodyError> {
    if encoding == Encoding::Identity {
        return Ok(body.len());
    }
    let mut reader = reader(body, encoding)?;
    let mut scratch = vec![0u8; 64 * 1024];
    let mut total = 0;
    while read_piece(
        &mut *reader,
        &mut scratch,
        &mut total,
        max_decompressed,
        encoding,
    )? > 0
    {}
    Ok(total)
}

/// Where one body's events come from, a bounded number per [`BodyEvents::step`].
pub(super) enum BodyEvents<'a> {
    /// Bytes through the decoder's chain, a piece at a time.
    Pieces {
        reader: Box<dyn Read + Send + 'a>,
        buffer: Vec<u8>,
        total: usize,
        limit: usize,
        encoding: Encoding,
    },
    /// A JSON array with no framing, a few elements at a time.
    Array {
        reader: JsonArrayReader<'a>,
        decoded: Decoded,
    },
}

impl<'a> BodyEvents<'a> {
    /// The events of `body` (already decompressed when it is `expanded`), as `config`
    /// decodes them.
    ///
    /// # Errors
    ///
    /// A corrupt compressed body.
    pub(super) fn new(
        body: &'a [u8],
        encoding: Encoding,
        config: &HttpServerConfig,
    ) -> Result<Self, BodyError> {
        if encoding == Encoding::Identity
            && config.interceptors.is_empty()
            && config.codec == CodecKind::Json
            && let Some(reader) = JsonArrayReader::new(body)
        {
            return Ok(Self::Array {
                reader,
                decoded: Decoded::default(),
            });
        }
        Ok(Self::Pieces {
            reader: reader(body, encoding)?,
            buffer: vec![0u8; PIECE_BYTES],
            total: 0,
            limit: config.max_decompressed,
            encoding,
        })
    }

    /// Whether a compressed JSON body with no framing must be expanded first, to be read as
    /// an array an element at a time.
    pub(super) fn wants_expanded(encoding: Encoding, config: &HttpServerConfig) -> bool {
        encoding != Encoding::Identity
            && config.interceptors.is_empty()
            && config.codec == CodecKind::Json
    }

    /// Decodes the next bounded step of the body into `events` (and `failures`); returns
    /// false once the body is done (the decoder finished).
    pub(super) fn step(
        &mut self,
        decoder: &mut StreamDecoder,
        ack: &AckHandle,
        events: &mut Vec<Event>,
        failures: &mut Vec<DecodeError>,
    ) -> bool {
        match self {
            Self::Pieces {
                reader,
                buffer,
                total,
                limit,
                encoding,
            } => match read_piece(&mut **reader, buffer, total, *limit, *encoding) {
                Ok(0) => {
                    decoder.finish(ack, events, failures);
                    false
                }
                Ok(read) => {
                    decoder.decode(&buffer[..read], ack, events, failures);
                    true
                }
                Err(BodyError::TooLarge(reason)) => {
                    failures.push(DecodeError::too_large(reason, &[]));
                    false
                }
                Err(BodyError::Corrupt(reason)) => {
                    failures.push(DecodeError::invalid(reason, &[]));
                    false
                }
            },
            Self::Array { reader, decoded } => {
                reader.read(ARRAY_ELEMENTS, decoded);
                decoder.adopt(decoded, ack, events, failures);
                !reader.is_done()
            }
        }
    }
}

/// Expands a compressed body whole (it was checked to fit `max_decompressed`).
///
/// # Errors
///
/// [`BodyError`] as [`check_expansion`] gives it.
pub(super) fn expand(
    body: &[u8],
    encoding: Encoding,
    max_decompressed: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut reader = reader(body, encoding)?;
    let mut expanded = Vec::new();
    let mut total = 0;
    let mut piece = vec![0u8; 64 * 1024];
    loop {
        let read = read_piece(
            &mut *reader,
            &mut piece,
            &mut total,
            max_decompressed,
            encoding,
        )?;
        if read == 0 {
            return Ok(expanded);
        }
        expanded.extend_from_slice(&piece[..read]);
    }
}
