//! Tests of the batch runner.

use super::*;
use tb_event::{AckReceipt, Acknowledgement, ComponentId, EventMeta, StreamId};

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

fn event(json: &str) -> (Event, AckReceipt) {
    let (ack, receipt) = Acknowledgement::new_unit();
    let value: Value = serde_json::from_str(json).expect("test json");
    let meta = EventMeta::new(ComponentId::new("src"), StreamId(4), 9);
    (Event::new(value, meta, ack), receipt)
}

fn run(pipeline: &mut Pipeline, events: Vec<Event>) -> (Vec<Vec<Event>>, PipelineCounts) {
    let mut outputs: Vec<Vec<Event>> = pipeline
        .ports()
        .names()
        .iter()
        .map(|_| Vec::new())
        .collect();
    let counts = pipeline.process(events, &mut outputs);
    (outputs, counts)
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
