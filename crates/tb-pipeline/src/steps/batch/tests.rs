//! Tests of the batch step: boundaries against a reference model, groups, streams, flush
//! and acknowledgements.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tb_event::{
    AckHandle, AckStatus, Acknowledgement, ComponentId, Event, EventMeta, StreamId, Value,
};

use super::estimated_json_bytes;
use crate::config::{PipelineConfig, StepConfig};
use crate::pipeline::{OutputPorts, Outputs, Pipeline};

const TIMEOUT: Duration = Duration::from_secs(1);

fn batch_pipeline(
    max_events: usize,
    max_bytes: Option<usize>,
    group_by: &[(&str, &str)],
    per_stream: bool,
) -> Pipeline {
    let config = PipelineConfig {
        inputs: vec!["in".to_owned()],
        steps: vec![StepConfig::Batch {
            max_events,
            max_bytes,
            timeout: TIMEOUT,
            group_by: group_by
                .iter()
                .map(|(name, source)| ((*name).to_owned(), (*source).to_owned()))
                .collect(),
            per_stream,
        }],
        allow_functions: Vec::new(),
    };
    Pipeline::build("p", &config).unwrap_or_else(|errors| panic!("{errors:?}"))
}

fn event(seq: u64, group: u8, stream: u64, pad: usize) -> Event {
    let value: Value = serde_json::from_str(&format!(
        r#"{{"seq": {seq}, "g": {group}, "pad": "{}"}}"#,
        "x".repeat(pad)
    ))
    .expect("test json");
    let meta = EventMeta::new(ComponentId::new("src"), StreamId(stream), seq);
    Event::new(value, meta, AckHandle::untracked())
}

/// The `seq` of every event in each batch event on the main port, in emission order.
fn batches(outputs: &Outputs) -> Vec<Vec<u64>> {
    outputs.ports[OutputPorts::MAIN]
        .iter()
        .map(|batch| {
            let fields = batch.value.as_object().expect("batch object");
            let Some(Value::Array(events)) = fields.get("events") else {
                panic!("no events array: {:?}", batch.value)
            };
            assert_eq!(fields.get("count"), Some(&Value::from(events.len() as i64)));
            events
                .iter()
                .map(
                    |event| match event.as_object().and_then(|object| object.get("seq")) {
                        Some(Value::Integer(seq)) => *seq as u64,
                        other => panic!("no seq: {other:?}"),
                    },
                )
                .collect()
        })
        .collect()
}

#[test]
fn batch_closes_at_max_events_and_keeps_the_rest_open() {
    let mut pipeline = batch_pipeline(2, None, &[], false);
    let mut outputs = Outputs::for_pipeline(&pipeline);
    let events = (0..5).map(|seq| event(seq, 0, 0, 0)).collect();
    pipeline.process(events, 0, &mut outputs);
    assert_eq!(batches(&outputs), vec![vec![0, 1], vec![2, 3]]);
    pipeline.flush(&mut outputs);
    assert_eq!(batches(&outputs), vec![vec![0, 1], vec![2, 3], vec![4]]);
}

#[test]
fn batch_closes_before_passing_max_bytes_and_a_large_event_is_alone() {
    let size = estimated_json_bytes(&event(0, 0, 0, 10).value);
    let mut pipeline = batch_pipeline(100, Some(size * 2 + 1), &[], false);
    let mut outputs = Outputs::for_pipeline(&pipeline);
    let events = vec![
        event(0, 0, 0, 10),
        event(1, 0, 0, 10),
        event(2, 0, 0, 10),
        event(3, 0, 0, 500),
        event(4, 0, 0, 10),
    ];
    pipeline.process(events, 0, &mut outputs);
    pipeline.flush(&mut outputs);
    assert_eq!(
        batches(&outputs),
        vec![vec![0, 1], vec![2], vec![3], vec![4]]
    );
}

#[test]
fn batch_closes_at_timeout_after_its_first_event() {
    let mut pipeline = batch_pipeline(100, None, &[], false);
    let mut outputs = Outputs::for_pipeline(&pipeline);
    let start = Instant::now();
    pipeline.process_at(vec![event(0, 0, 0, 0)], 0, start, &mut outputs);
    pipeline.process_at(
        vec![event(1, 0, 0, 0)],
        0,
        start + TIMEOUT / 2,
        &mut outputs,
    );
    assert_eq!(pipeline.next_deadline(), Some(start + TIMEOUT));
    pipeline.on_timer(start + TIMEOUT - Duration::from_millis(1), &mut outputs);
    assert!(batches(&outputs).is_empty());
    pipeline.on_timer(start + TIMEOUT, &mut outputs);
    assert_eq!(batches(&outputs), vec![vec![0, 1]]);
    assert_eq!(pipeline.next_deadline(), None);
}

#[test]
fn batch_per_group_and_stream_carries_the_group_fields_and_first_metadata() {
    let mut pipeline = batch_pipeline(100, None, &[("group", ".g")], true);
    let mut outputs = Outputs::for_pipeline(&pipeline);
    let events = vec![
        event(0, 1, 7, 0),
        event(1, 2, 7, 0),
        event(2, 1, 8, 0),
        event(3, 1, 7, 0),
    ];
    pipeline.process(events, 0, &mut outputs);
    pipeline.flush(&mut outputs);
    assert_eq!(batches(&outputs), vec![vec![0, 3], vec![1], vec![2]]);
    let first = &outputs.ports[OutputPorts::MAIN][0];
    assert_eq!(
        first
            .value
            .as_object()
            .and_then(|fields| fields.get("group")),
        Some(&Value::from(1))
    );
    assert_eq!(first.meta.id.seq, 0);
    assert_eq!(
        outputs.ports[OutputPorts::MAIN][2].meta.id.stream,
        StreamId(8)
    );
}

#[test]
fn failing_group_by_sends_the_event_to_errors() {
    let mut pipeline = batch_pipeline(100, None, &[("group", "to_int!(.pad)")], false);
    let mut outputs = Outputs::for_pipeline(&pipeline);
    let counts = pipeline.process(vec![event(0, 0, 0, 3)], 0, &mut outputs);
    assert_eq!(counts.errors, 1);
    assert_eq!(outputs.ports[pipeline.ports().errors()].len(), 1);
}

#[test]
fn reserved_group_name_and_zero_limits_are_build_errors() {
    let config = PipelineConfig {
        inputs: vec!["in".to_owned()],
        steps: vec![StepConfig::Batch {
            max_events: 0,
            max_bytes: Some(0),
            timeout: TIMEOUT,
            group_by: BTreeMap::from([("count".to_owned(), ".g".to_owned())]),
            per_stream: false,
        }],
        allow_functions: Vec::new(),
    };
    let errors = Pipeline::build("p", &config).err().expect("must fail");
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[tokio::test]
async fn completing_a_batch_completes_every_original() {
    let mut pipeline = batch_pipeline(2, None, &[], false);
    let mut outputs = Outputs::for_pipeline(&pipeline);
    let mut receipts = Vec::new();
    let mut events = Vec::new();
    for seq in 0..4 {
        let (ack, receipt) = Acknowledgement::new_unit();
        let original = event(seq, 0, 0, 0);
        let (value, meta, _) = original.into_parts();
        events.push(Event::new(value, meta, ack));
        receipts.push(receipt);
    }
    pipeline.process(events, 0, &mut outputs);
    let mut emitted = std::mem::take(&mut outputs.ports[OutputPorts::MAIN]).into_iter();
    emitted
        .next()
        .expect("first batch")
        .complete(AckStatus::Delivered);
    emitted
        .next()
        .expect("second batch")
        .complete_with(AckStatus::Errored, "sink timed out");
    let mut outcomes = Vec::new();
    for receipt in receipts {
        outcomes.push(receipt.wait().await);
    }
    assert!(outcomes[0].is_delivered() && outcomes[1].is_delivered());
    for outcome in &outcomes[2..] {
        assert_eq!(outcome.status, AckStatus::Errored);
        assert_eq!(outcome.reason.as_deref(), Some("sink timed out"));
    }
}

/// One step of a generated run: an event, or time passing (then timers fire).
#[derive(Clone, Debug)]
enum Operation {
    Event { group: u8, stream: u64, pad: usize },
    Advance { millis: u64 },
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        3 => (0u8..3, 0u64..2, 0usize..40)
            .prop_map(|(group, stream, pad)| Operation::Event { group, stream, pad }),
        1 => (0u64..1500).prop_map(|millis| Operation::Advance { millis }),
    ]
}

/// A reference batch: group and stream, seqs, bytes, deadline.
type ReferenceBatch = ((u8, Option<u64>), Vec<u64>, usize, Duration);

/// The documented rules, written as plainly as possible.
struct ReferenceBatcher {
    max_events: usize,
    max_bytes: Option<usize>,
    per_stream: bool,
    // In opening order: key, seqs, bytes, deadline.
    open: Vec<ReferenceBatch>,
    emitted: Vec<Vec<u64>>,
}

impl ReferenceBatcher {
    fn close(&mut self, key: (u8, Option<u64>)) {
        if let Some(position) = self.open.iter().position(|open| open.0 == key) {
            let (_, seqs, _, _) = self.open.remove(position);
            self.emitted.push(seqs);
        }
    }

    fn add(&mut self, seq: u64, group: u8, stream: u64, size: usize, now: Duration) {
        let key = (group, self.per_stream.then_some(stream));
        let would_pass = self
            .open
            .iter()
            .any(|open| open.0 == key && self.max_bytes.is_some_and(|max| open.2 + size > max));
        if would_pass {
            self.close(key);
        }
        if !self.open.iter().any(|open| open.0 == key) {
            self.open.push((key, Vec::new(), 0, now + TIMEOUT));
        }
        let Some(open) = self.open.iter_mut().find(|open| open.0 == key) else {
            unreachable!("opened above")
        };
        open.1.push(seq);
        open.2 += size;
        let full =
            open.1.len() >= self.max_events || self.max_bytes.is_some_and(|max| open.2 >= max);
        if full {
            self.close(key);
        }
    }

    fn advance(&mut self, now: Duration) {
        while let Some(position) = self.open.iter().position(|open| open.3 <= now) {
            let key = self.open[position].0;
            self.close(key);
        }
    }

    fn flush(&mut self) {
        while let Some(open) = self.open.first() {
            let key = open.0;
            self.close(key);
        }
    }
}

proptest! {
    #[test]
    fn batch_boundaries_match_the_reference(
        operations in proptest::collection::vec(operation(), 0..80),
        max_events in 1usize..6,
        max_bytes in proptest::option::of(30usize..150),
        per_stream in any::<bool>(),
    ) {
        let mut pipeline = batch_pipeline(max_events, max_bytes, &[("g", ".g")], per_stream);
        let mut outputs = Outputs::for_pipeline(&pipeline);
        let mut reference = ReferenceBatcher {
            max_events,
            max_bytes,
            per_stream,
            open: Vec::new(),
            emitted: Vec::new(),
        };
        let start = Instant::now();
        let mut elapsed = Duration::ZERO;
        for (seq, operation) in operations.into_iter().enumerate() {
            let seq = seq as u64;
            match operation {
                Operation::Event { group, stream, pad } => {
                    let event = event(seq, group, stream, pad);
                    let size = estimated_json_bytes(&event.value);
                    reference.add(seq, group, stream, size, elapsed);
                    pipeline.process_at(vec![event], 0, start + elapsed, &mut outputs);
                }
                Operation::Advance { millis } => {
                    elapsed += Duration::from_millis(millis);
                    reference.advance(elapsed);
                    if pipeline.next_deadline().is_some_and(|deadline| deadline <= start + elapsed) {
                        pipeline.on_timer(start + elapsed, &mut outputs);
                    }
                }
            }
            prop_assert_eq!(batches(&outputs), reference.emitted.clone());
        }
        pipeline.flush(&mut outputs);
        reference.flush();
        prop_assert_eq!(batches(&outputs), reference.emitted);
    }

    #[test]
    fn estimate_is_exact_for_plain_json(pad in 0usize..200, seq in any::<u32>(), group in any::<u8>()) {
        let value = event(u64::from(seq), group, 0, pad).value;
        let exact = serde_json::to_string(&value).expect("serialises").len();
        prop_assert_eq!(estimated_json_bytes(&value), exact);
    }
}
