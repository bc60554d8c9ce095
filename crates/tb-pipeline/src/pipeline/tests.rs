//! Tests of the batch runner.

use super::*;
use crate::config::StepConfig;
use crate::error::BuildError;
use std::collections::BTreeMap;
use tb_event::{AckReceipt, Acknowledgement, ComponentId, EventMeta, StreamId, Value};

fn pipeline(steps: Vec<StepConfig>) -> Pipeline {
    let config = PipelineConfig {
        inputs: vec!["in".to_owned()],
        steps,
        allow_functions: Vec::new(),
    };
    match Pipeline::build("p", &config) {
        Ok(pipeline) => pipeline,
        Err(errors) => panic!("build failed: {errors:?}"),
    }
}

fn build_errors(steps: Vec<StepConfig>) -> Vec<BuildError> {
    let config = PipelineConfig {
        inputs: vec!["in".to_owned()],
        steps,
        allow_functions: Vec::new(),
    };
    match Pipeline::build("p", &config) {
        Ok(_) => panic!("build should fail"),
        Err(errors) => errors,
    }
}

fn event(json: &str) -> (Event, AckReceipt) {
    let (ack, receipt) = Acknowledgement::new_unit();
    let value: Value = serde_json::from_str(json).expect("test json");
    let meta = EventMeta::new(ComponentId::new("src"), StreamId(4), 9);
    (Event::new(value, meta, ack), receipt)
}

fn run(pipeline: &mut Pipeline, events: Vec<Event>) -> (Vec<Vec<Event>>, PipelineCounts) {
    let mut outputs = Outputs::for_pipeline(pipeline);
    let counts = pipeline.process(events, 0, &mut outputs);
    (outputs.ports, counts)
}

fn transform(source: &str) -> StepConfig {
    StepConfig::Transform {
        source: source.to_owned(),
    }
}

fn filter(condition: &str) -> StepConfig {
    StepConfig::Filter {
        condition: condition.to_owned(),
    }
}

#[test]
fn transform_rewrites_the_event() {
    let mut pipeline = pipeline(vec![transform(".processed = true\n.reading = del(.value)")]);
    let (input, _receipt) = event(r#"{"value": 3}"#);
    let (outputs, counts) = run(&mut pipeline, vec![input]);
    let value = &outputs[OutputPorts::MAIN][0].value;
    assert_eq!(
        value.as_object().and_then(|o| o.get("reading")),
        Some(&Value::from(3))
    );
    assert_eq!(
        value.as_object().and_then(|o| o.get("processed")),
        Some(&Value::from(true))
    );
    assert_eq!(counts.output, 1);
}

#[tokio::test]
async fn filtered_event_is_counted_and_acknowledged_as_delivered() {
    let mut pipeline = pipeline(vec![filter(r#".kind != "debug""#)]);
    let (input, receipt) = event(r#"{"kind": "debug"}"#);
    let (outputs, counts) = run(&mut pipeline, vec![input]);
    assert!(outputs.iter().all(Vec::is_empty));
    assert_eq!(counts.dropped, 1);
    assert_eq!(receipt.wait().await.status, tb_event::AckStatus::Delivered);
}

#[test]
fn runtime_error_sends_original_event_to_errors_with_message() {
    let mut pipeline = pipeline(vec![transform(".n = to_int!(.text)")]);
    let (input, _receipt) = event(r#"{"text": "not a number"}"#);
    let (outputs, counts) = run(&mut pipeline, vec![input]);
    let errors = &outputs[pipeline.ports().errors()];
    assert_eq!(errors.len(), 1);
    assert_eq!(counts.errors, 1);
    let envelope = errors[0].value.as_object().expect("object");
    let message = envelope["error"].as_object().expect("error")["message"].to_string_lossy();
    assert!(message.contains("to_int"), "{message}");
    assert_eq!(
        envelope["event"].as_object().and_then(|o| o.get("text")),
        Some(&Value::from("not a number"))
    );
}

#[test]
fn route_sends_matching_events_to_route_and_others_on() {
    let mut routes = std::collections::BTreeMap::new();
    routes.insert("hot".to_owned(), ".value > 100".to_owned());
    let mut pipeline = pipeline(vec![StepConfig::Route { routes }]);
    let (hot, _r1) = event(r#"{"value": 150}"#);
    let (cold, _r2) = event(r#"{"value": 5}"#);
    let (outputs, _) = run(&mut pipeline, vec![hot, cold]);
    let hot_port = pipeline.ports().find("hot").expect("hot port");
    assert_eq!(outputs[hot_port].len(), 1);
    assert_eq!(outputs[OutputPorts::MAIN].len(), 1);
    assert_eq!(outputs[pipeline.ports().unmatched()].len(), 1);
}

#[test]
fn metadata_is_readable_in_vrl() {
    let mut pipeline = pipeline(vec![transform(
        ".from = %tightbeam.connector\n.stream = %tightbeam.stream_id",
    )]);
    let (input, _receipt) = event("{}");
    let (outputs, _) = run(&mut pipeline, vec![input]);
    let value = outputs[OutputPorts::MAIN][0]
        .value
        .as_object()
        .expect("object")
        .clone();
    assert_eq!(value.get("from"), Some(&Value::from("src")));
    assert_eq!(value.get("stream"), Some(&Value::from(4)));
}

#[test]
fn bad_vrl_reports_location_and_offset() {
    let config = PipelineConfig {
        inputs: vec!["in".to_owned()],
        steps: vec![transform(".a = 1\n.b = nope(")],
        allow_functions: Vec::new(),
    };
    let errors = Pipeline::build("p", &config).err().expect("must fail");
    let BuildError::Vrl { diagnostic, .. } = &errors[0] else {
        panic!("{errors:?}")
    };
    assert_eq!(diagnostic.location, "steps[0].source");
    assert!(diagnostic.offset.is_some());
}

#[test]
fn restricted_function_error_says_how_to_allow_it() {
    let config = PipelineConfig {
        inputs: vec!["in".to_owned()],
        steps: vec![transform(".host = get_hostname!()")],
        allow_functions: Vec::new(),
    };
    let errors = Pipeline::build("p", &config).err().expect("must fail");
    let text = errors[0].to_string();
    assert!(
        text.contains("allow_functions = [\"get_hostname\"]"),
        "{text}"
    );
    let allowed = PipelineConfig {
        allow_functions: vec!["get_hostname".to_owned()],
        ..config
    };
    assert!(Pipeline::build("p", &allowed).is_ok());
}

#[test]
fn transform_returning_array_splits_into_events() {
    let mut pipeline = pipeline(vec![transform(". = [{\"a\": 1}, {\"a\": 2}]")]);
    let (input, _receipt) = event("{}");
    let (outputs, _) = run(&mut pipeline, vec![input]);
    assert_eq!(outputs[OutputPorts::MAIN].len(), 2);
}

#[test]
fn event_unmatched_by_two_route_steps_is_copied_to_unmatched_once() {
    let mut first = std::collections::BTreeMap::new();
    first.insert("hot".to_owned(), ".value > 100".to_owned());
    let mut second = std::collections::BTreeMap::new();
    second.insert("cold".to_owned(), ".value < 0".to_owned());
    let mut pipeline = pipeline(vec![
        StepConfig::Route { routes: first },
        StepConfig::Route { routes: second },
    ]);
    let (mild, _receipt) = event(r#"{"value": 50}"#);
    let (outputs, _) = run(&mut pipeline, vec![mild]);
    assert_eq!(outputs[pipeline.ports().unmatched()].len(), 1);
    assert_eq!(outputs[OutputPorts::MAIN].len(), 1);
}

#[test]
fn condition_ending_in_a_comment_still_compiles() {
    let mut routes = std::collections::BTreeMap::new();
    routes.insert("hot".to_owned(), ".value > 100 # hot readings".to_owned());
    let mut pipeline = pipeline(vec![StepConfig::Route { routes }]);
    let (hot, _receipt) = event(r#"{"value": 150}"#);
    let (outputs, _) = run(&mut pipeline, vec![hot]);
    assert_eq!(
        outputs[pipeline.ports().find("hot").expect("port")].len(),
        1
    );
}

#[test]
fn transform_returning_an_empty_array_counts_as_dropped() {
    let mut pipeline = pipeline(vec![transform(". = []")]);
    let (input, _receipt) = event("{}");
    let (outputs, counts) = run(&mut pipeline, vec![input]);
    assert!(outputs.iter().all(Vec::is_empty));
    assert_eq!(counts.dropped, 1);
}

fn route(name: &str, condition: &str) -> StepConfig {
    let mut routes = std::collections::BTreeMap::new();
    routes.insert(name.to_owned(), condition.to_owned());
    StepConfig::Route { routes }
}

fn partition(key: &str, lanes: usize) -> StepConfig {
    StepConfig::Partition {
        key: key.to_owned(),
        lanes,
    }
}

fn untracked(json: &str, seq: u64) -> Event {
    let value: Value = serde_json::from_str(json).expect("test json");
    let meta = EventMeta::new(ComponentId::new("src"), StreamId(1), seq);
    Event::new(value, meta, tb_event::AckHandle::untracked())
}

fn field(event: &Event, name: &str) -> Value {
    event
        .value
        .as_object()
        .and_then(|object| object.get(name))
        .cloned()
        .unwrap_or(Value::Null)
}

fn vrl_message(errors: &[BuildError]) -> String {
    match errors {
        [BuildError::Vrl { diagnostic, .. }] => diagnostic.message.clone(),
        other => panic!("expected one VRL error, got {other:?}"),
    }
}

#[test]
fn test_step_keeps_state_fires_its_timer_and_uses_its_own_port() {
    use crate::steps::test_step::{DELAY, DelayStep};
    let mut pipeline = Pipeline::from_steps("p", vec![Box::new(DelayStep::new())]);
    let late = pipeline.ports().find("_late").expect("the step's own port");
    assert_eq!(late, pipeline.ports().unmatched() - 1, "before _unmatched");
    let mut outputs = Outputs::for_pipeline(&pipeline);
    let start = Instant::now();
    pipeline.process_at(vec![untracked("{}", 0)], 0, start, &mut outputs);
    pipeline.process_at(vec![untracked("{}", 1)], 1, start, &mut outputs);
    assert!(
        outputs.ports[OutputPorts::MAIN].is_empty(),
        "held until the timer"
    );
    assert_eq!(field(&outputs.ports[late][0], "seen"), Value::from(2));
    assert_eq!(pipeline.next_deadline(), Some(start + DELAY));
    let counts = pipeline.on_timer(start + DELAY, &mut outputs);
    assert_eq!(counts.output, 1);
    assert_eq!(
        field(&outputs.ports[OutputPorts::MAIN][0], "seen"),
        Value::from(1)
    );
    assert_eq!(pipeline.next_deadline(), None);
    pipeline.process_at(vec![untracked("{}", 2)], 0, start, &mut outputs);
    pipeline.flush(&mut outputs);
    assert_eq!(outputs.ports[OutputPorts::MAIN].len(), 2);
}

#[test]
fn event_unmatched_before_a_holding_step_gets_its_copy_as_it_enters() {
    use crate::steps::test_step::DelayStep;
    let mut pipeline = pipeline(vec![route("hot", ".value > 100")]);
    pipeline.steps.push(PlacedStep {
        config_index: 1,
        step: Box::new(DelayStep::new()),
    });
    let mut outputs = Outputs::for_pipeline(&pipeline);
    pipeline.process(vec![untracked(r#"{"value": 1}"#, 0)], 0, &mut outputs);
    assert_eq!(outputs.ports[pipeline.ports().unmatched()].len(), 1);
    pipeline.flush(&mut outputs);
    assert_eq!(outputs.ports[OutputPorts::MAIN].len(), 1);
    assert_eq!(outputs.ports[pipeline.ports().unmatched()].len(), 1, "once");
}

#[test]
fn unsplit_partition_passes_events_on_in_order() {
    let mut pipeline = pipeline(vec![partition(".user", 4), transform(".seen = true")]);
    assert_eq!(pipeline.lanes(), Some(4));
    let batch = (0..10)
        .map(|seq| untracked(&format!(r#"{{"user": "u{}"}}"#, seq % 3), seq))
        .collect();
    let mut outputs = Outputs::for_pipeline(&pipeline);
    assert!(outputs.lanes.is_empty());
    pipeline.process(batch, 0, &mut outputs);
    let seqs: Vec<u64> = outputs.ports[OutputPorts::MAIN]
        .iter()
        .map(|event| event.meta.id.seq)
        .collect();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
}

#[test]
fn split_partition_sends_each_key_to_one_lane_in_input_order() {
    let whole = pipeline(vec![
        transform(".n = 1"),
        partition(".user", 3),
        route("hot", ".value > 100"),
    ]);
    let whole_ports = whole.ports().names().to_vec();
    let (mut head, lanes) = whole.split_lanes();
    assert_eq!(lanes.len(), 3);
    assert!(lanes.iter().all(|lane| lane.ports().names() == whole_ports));
    assert!(lanes.iter().all(|lane| lane.lanes().is_none()));
    let mut outputs = Outputs::for_pipeline(&head);
    assert_eq!(outputs.lanes.len(), 3);
    let users = ["ann", "bob", "cy", "dee", "eve"];
    let mut expected: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut batch = Vec::new();
    for seq in 0..50u64 {
        let user = users[(seq as usize * 7 + seq as usize / 3) % users.len()];
        expected.entry(user).or_default().push(seq);
        batch.push(untracked(&format!(r#"{{"user": "{user}"}}"#), seq));
    }
    let counts = head.process(batch, 0, &mut outputs);
    assert_eq!(counts.output, 0, "lanes count their own outputs");
    let mut lane_of_user: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (lane, events) in outputs.lanes.iter().enumerate() {
        for event in events {
            let user = field(event, "user").to_string_lossy().into_owned();
            assert_eq!(*lane_of_user.entry(user.clone()).or_insert(lane), lane);
            assert_eq!(
                lane,
                crate::steps::partition::lane_for(&Value::from(user.as_str()), 3)
            );
            seen.entry(user).or_default().push(event.meta.id.seq);
        }
    }
    for (user, seqs) in expected {
        assert_eq!(seen.get(user), Some(&seqs), "order of {user}");
    }
    // A lane runs the rest of the steps and uses the whole pipeline's ports.
    let mut lanes = lanes;
    let lane_events = std::mem::take(&mut outputs.lanes[0]);
    let lane_count = lane_events.len();
    let mut lane_outputs = Outputs::for_pipeline(&lanes[0]);
    lanes[0].process(lane_events, 0, &mut lane_outputs);
    assert_eq!(lane_outputs.ports[OutputPorts::MAIN].len(), lane_count);
}

#[test]
fn partition_key_failure_goes_to_errors() {
    let mut pipeline = pipeline(vec![partition("to_int!(.user)", 2)]);
    let (outputs, counts) = run(&mut pipeline, vec![untracked(r#"{"user": "x"}"#, 0)]);
    assert_eq!(counts.errors, 1);
    let errors = &outputs[pipeline.ports().errors()];
    let message = field(&errors[0], "error")
        .as_object()
        .and_then(|error| error.get("message"))
        .map(|message| message.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(message.starts_with("partition key failed"), "{message}");
}

#[test]
fn second_partition_step_is_a_build_error_naming_it() {
    let errors = build_errors(vec![
        partition(".a", 2),
        transform(".b = 1"),
        partition(".c", 0),
    ]);
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        texts.iter().any(|text| text
            .contains("steps[2].key belongs to a second `partition` step (steps[0] is the first)")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|text| text.contains("steps[2].lanes must be at least 1")),
        "{texts:?}"
    );
}

#[test]
fn condition_that_assigns_is_rejected() {
    for condition in [".x = 1\ntrue", "%tightbeam.x = 1\ntrue", "del(.x) == 1"] {
        let message = vrl_message(&build_errors(vec![filter(condition)]));
        assert!(
            message.contains("a condition only reads the event"),
            "{condition}: {message}"
        );
    }
    let message = vrl_message(&build_errors(vec![route("hot", ".hot = true\ntrue")]));
    assert!(
        message.contains("a condition only reads the event"),
        "{message}"
    );
}

#[test]
fn condition_that_cannot_be_a_boolean_is_rejected() {
    for (condition, kind) in [
        (".a + 1", "string, integer or float"),
        (r#""yes""#, "string"),
    ] {
        let message = vrl_message(&build_errors(vec![filter(condition)]));
        assert!(
            message.contains(&format!("this condition returns {kind}, never a boolean")),
            "{condition}: {message}"
        );
    }
}

#[test]
fn fallible_comparison_and_untyped_field_conditions_are_accepted() {
    let mut pipeline = pipeline(vec![filter(".value > 100"), filter(".flag")]);
    let (outputs, counts) = run(
        &mut pipeline,
        vec![
            untracked(r#"{"value": 150, "flag": true}"#, 0),
            untracked(r#"{"value": "text", "flag": true}"#, 1),
        ],
    );
    assert_eq!(outputs[OutputPorts::MAIN].len(), 1);
    assert_eq!(counts.dropped, 1);
}

#[test]
fn key_expression_that_assigns_is_rejected() {
    let message = vrl_message(&build_errors(vec![partition(".k = 1\n.k", 2)]));
    assert!(
        message.contains("this expression only reads the event"),
        "{message}"
    );
}
