//! Fuzzes tb-codec's decoders: arbitrary bytes, through every codec and the common interceptor
//! chains, in arbitrary chunk sizes, must never panic, hang or allocate without bound.
//!
//! Input layout: byte 0 picks the codec (modulo 5) and the chain (divided by 5, modulo the
//! number of chains); byte 1 picks the chunk size (1 to 256); the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tb_codec::{CodecKind, Decoded, Decoder, InterceptorConfig};

const CODECS: [CodecKind; 5] = [
    CodecKind::Json,
    CodecKind::Msgpack,
    CodecKind::Csv,
    CodecKind::String,
    CodecKind::Bytes,
];

/// Small limits, so the too-large paths are reached by small inputs.
fn lines(delimiter: &str) -> InterceptorConfig {
    InterceptorConfig::Lines {
        delimiter: delimiter.to_owned(),
        max_length: 256,
    }
}

fn length_prefixed() -> InterceptorConfig {
    InterceptorConfig::LengthPrefixed { max_length: 256 }
}

fn gzip() -> InterceptorConfig {
    InterceptorConfig::Gzip {
        max_decompressed: 64 * 1024,
    }
}

fn zstd() -> InterceptorConfig {
    InterceptorConfig::Zstd {
        max_decompressed: 64 * 1024,
    }
}

fn chain(selector: usize) -> Vec<InterceptorConfig> {
    let chains: [Vec<InterceptorConfig>; 12] = [
        vec![],
        vec![lines("\n")],
        vec![lines("\r\n")],
        vec![length_prefixed()],
        vec![gzip()],
        vec![gzip(), lines("\n")],
        vec![zstd(), lines("\n")],
        vec![lines("\n"), InterceptorConfig::Base64],
        vec![InterceptorConfig::Base64, lines("\n")],
        vec![length_prefixed(), gzip()],
        vec![lines("\n"), zstd()],
        vec![length_prefixed(), lines("<>")],
    ];
    chains[selector % chains.len()].clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((&chunk_size, stream)) = rest.split_first() else {
        return;
    };
    let selector = usize::from(selector);
    let codec = CODECS[selector % CODECS.len()];
    let mut decoder = Decoder::new(codec, &chain(selector / CODECS.len()));
    let mut out = Decoded::default();
    for chunk in stream.chunks(usize::from(chunk_size) + 1) {
        decoder.decode_chunk(chunk, &mut out);
        out.clear();
    }
    decoder.finish(&mut out);
    // The decoder must be reusable after finish: decode the stream again in one piece.
    decoder.decode_chunk(stream, &mut out);
    decoder.finish(&mut out);
});
