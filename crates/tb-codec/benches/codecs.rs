//! Codec throughput on the hot path: newline-delimited JSON of the standard ~224-byte sensor
//! event, decoded, encoded, and decoded through gzip. Throughput is in input bytes so runs with
//! different event shapes compare.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tb_codec::{CodecKind, Decoded, Decoder, Encoder, InterceptorConfig};
use tb_event::Value;

const EVENT_COUNT: usize = 10_000;
/// Bytes fed per `decode_chunk` call, like one socket read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

fn standard_event_line(sequence: usize) -> String {
    format!(
        concat!(
            r#"{{"ts":"2026-11-22T10:00:00.000Z","sensor_id":"s-0042","kind":"temp","value":12.345,"#,
            r#""unit":"C","site":"plant-3","tags":["alpha","bravo"],"seq":{},"#,
            r#""note":"alpha bravo charlie delta echo foxtrot golf hotel india juliet"}}"#,
            "\n"
        ),
        sequence
    )
}

fn json_lines_stream() -> Vec<u8> {
    (1..=EVENT_COUNT)
        .map(standard_event_line)
        .collect::<String>()
        .into_bytes()
}

fn lines() -> InterceptorConfig {
    InterceptorConfig::Lines {
        delimiter: "\n".into(),
        max_length: 1024 * 1024,
    }
}

fn gzip() -> InterceptorConfig {
    InterceptorConfig::Gzip {
        max_decompressed: 100 * 1024 * 1024,
    }
}

fn decode_in_reads(decoder: &mut Decoder, stream: &[u8], out: &mut Decoded) {
    for chunk in stream.chunks(READ_CHUNK_BYTES) {
        decoder.decode_chunk(chunk, out);
        black_box(&out.values);
        out.clear();
    }
    decoder.finish(out);
    out.clear();
}

fn decode_values(stream: &[u8]) -> Vec<Value> {
    let mut decoder = Decoder::new(CodecKind::Json, &[lines()]);
    let mut out = Decoded::default();
    decoder.decode_chunk(stream, &mut out);
    decoder.finish(&mut out);
    out.values
}

fn json_lines_decode(criterion: &mut Criterion) {
    let stream = json_lines_stream();
    let mut group = criterion.benchmark_group("json_lines");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    let mut decoder = Decoder::new(CodecKind::Json, &[lines()]);
    let mut out = Decoded::default();
    group.bench_function("decode_10k_events", |bencher| {
        bencher.iter(|| decode_in_reads(&mut decoder, black_box(&stream), &mut out));
    });
    // The floor: serde_json into VRL values with no framing, no chain, no error handling.
    // The gap between this and decode_10k_events is what this crate adds.
    group.bench_function("serde_json_baseline_10k_events", |bencher| {
        let mut values = Vec::new();
        bencher.iter(|| {
            for read in black_box(&stream).chunks(READ_CHUNK_BYTES) {
                for line in read.split(|byte| *byte == b'\n') {
                    if let Ok(value) = serde_json::from_slice::<Value>(line) {
                        values.push(value);
                    }
                }
                black_box(&values);
                values.clear();
            }
        });
    });
    let values = decode_values(&stream);
    let mut encoder = Encoder::new(CodecKind::Json, &[lines()]);
    let mut encoded = Vec::with_capacity(stream.len());
    group.bench_function("encode_10k_events", |bencher| {
        bencher.iter(|| {
            encoded.clear();
            for value in &values {
                let _ = encoder.encode(black_box(value), &mut encoded);
            }
            black_box(&encoded);
        });
    });
    group.finish();
}

fn gzip_json_lines_decode(criterion: &mut Criterion) {
    let stream = json_lines_stream();
    let chain = [gzip(), lines()];
    let mut encoder = Encoder::new(CodecKind::Json, &chain);
    let mut compressed = Vec::new();
    for value in decode_values(&stream) {
        let _ = encoder.encode(&value, &mut compressed);
    }
    let _ = encoder.finish(&mut compressed);
    let mut group = criterion.benchmark_group("gzip_json_lines");
    // Decompressed bytes, so the figure compares with plain json_lines.
    group.throughput(Throughput::Bytes(stream.len() as u64));
    let mut decoder = Decoder::new(CodecKind::Json, &chain);
    let mut out = Decoded::default();
    group.bench_function("decode_10k_events", |bencher| {
        bencher.iter(|| decode_in_reads(&mut decoder, black_box(&compressed), &mut out));
    });
    group.finish();
}

criterion_group!(benches, json_lines_decode, gzip_json_lines_decode);
criterion_main!(benches);
