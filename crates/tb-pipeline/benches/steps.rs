//! The step runner on the W1 steps: filter debug, set a field, rename another.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tb_event::{AckHandle, ComponentId, Event, EventMeta, StreamId, Value};
use tb_pipeline::{Outputs, Pipeline, PipelineConfig, StepConfig};

const STANDARD_EVENT: &str = r#"{"ts":"2026-11-22T10:00:00.000Z","sensor_id":"s-0042","kind":"temp","value":12.345,"unit":"C","site":"plant-3","tags":["alpha","bravo"],"seq":1,"note":"alpha bravo charlie delta echo foxtrot golf hotel india juliet"}"#;

fn w1_pipeline() -> Pipeline {
    let config = PipelineConfig {
        inputs: vec!["in".to_owned()],
        steps: vec![
            StepConfig::Filter {
                condition: r#".kind != "debug""#.to_owned(),
            },
            StepConfig::Transform {
                source: ".processed = true\n.reading = del(.value)".to_owned(),
            },
        ],
        allow_functions: Vec::new(),
    };
    Pipeline::build("w1", &config).unwrap_or_else(|errors| panic!("{errors:?}"))
}

fn batch(value: &Value, size: usize) -> Vec<Event> {
    (0..size)
        .map(|seq| {
            let meta = EventMeta::new(ComponentId::new("bench"), StreamId(0), seq as u64);
            Event::new(value.clone(), meta, AckHandle::untracked())
        })
        .collect()
}

fn w1_steps(criterion: &mut Criterion) {
    let value: Value = serde_json::from_str(STANDARD_EVENT).expect("standard event");
    let mut pipeline = w1_pipeline();
    let mut outputs = Outputs::for_pipeline(&pipeline);
    let mut group = criterion.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("w1_steps_batch_1000", |bencher| {
        bencher.iter_batched(
            || batch(&value, 1000),
            |events| {
                pipeline.process(events, 0, &mut outputs);
                outputs.ports.iter_mut().for_each(Vec::clear);
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, w1_steps);
criterion_main!(benches);
