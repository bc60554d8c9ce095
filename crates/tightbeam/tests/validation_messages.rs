//! Every kind of config problem a user can meet, as `tightbeam validate` prints it. Snapshots
//! (insta) make any change of wording or position a reviewed change.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `validate` on `files` (name, text) in a fresh directory and returns stderr.
fn validate(files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["validate", "--no-environment"];
    for (name, text) in files {
        write(dir.path(), name, text);
        args.extend(["-c", name]);
    }
    let output = run_to_end(dir.path(), &args, LIMIT);
    assert!(!output.status.success(), "validate should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unknown_keys_and_kinds() {
    insta::assert_snapshot!(validate(&[(
        "keys.toml",
        r#"data_dri = "x"

[api]
adress = "127.0.0.1:1"

[connectors.web]
kind = "http_sever"

[connectors.out]
kind = "file"
path = "x"
mod = "append"
inputs = ["web"]
"#
    )]));
}

/// Issue 7: `input` for `inputs`, the most common typo, gets its "did you mean".
#[test]
fn input_for_inputs() {
    insta::assert_snapshot!(validate(&[(
        "typo.toml",
        r#"[connectors.gen]
kind = "generator"

[connectors.out]
kind = "stdout"
input = ["gen"]

[pipelines.p]
input = ["gen"]
"#
    )]));
}

/// Issue 7: serde stops at the first key that does not fit; every bad key of a component is
/// reported, each at its own place.
#[test]
fn every_bad_key_of_a_component_is_reported() {
    insta::assert_snapshot!(validate(&[(
        "keys.toml",
        r#"[api]
adress = "127.0.0.1:1"
port = 1

[connectors.gen]
kind = "generator"
cuont = 3
batch_sise = 2

[connectors.out]
kind = "file"
pth = "out.log"
mod = "append"
interceptors = [{ kind = "lines" }, { kind = "gzp" }]
inputs = ["gen"]

[pipelines.p]
input = ["gen"]
alow_functions = ["get_hostname"]
"#
    )]));
}

/// Issue 7: a step that cannot be read (here an unknown kind) no longer hides the problems
/// of the other steps, which keep their own indices.
#[test]
fn an_unknown_step_kind_does_not_hide_the_other_steps() {
    insta::assert_snapshot!(validate(&[(
        "steps.toml",
        r#"[connectors.in]
kind = "stdin"

[pipelines.p]
inputs = ["in"]
steps = [
  { kind = "trnsform", source = '.a = 1' },
  { kind = "transform", source = '.b = nope()' },
  { kind = "filter", conditon = 'true' },
  { kind = "route", routes = { _hot = 'true' } },
]
"#
    )]));
}

/// Issue 7: a missing `inputs` names its pipeline, and a value of the wrong type names its
/// key (without the value, which may be a secret).
#[test]
fn missing_inputs_and_wrong_types_name_the_pipeline_and_the_key() {
    insta::assert_snapshot!(validate(&[(
        "types.toml",
        r#"[connectors.gen]
kind = "generator"
count = -5

[pipelines.p]
steps = []
"#
    )]));
}

#[test]
fn inputs_cycles_and_route_names() {
    insta::assert_snapshot!(validate(&[(
        "graph.toml",
        r#"[pipelines.a]
inputs = ["c"]

[pipelines.b]
inputs = ["a", "a.nope"]

[pipelines.c]
inputs = ["b"]
steps = [{ kind = "route", routes = { _errors = 'true' } }]
"#
    )]));
}

#[test]
fn vrl_that_does_not_compile_points_into_the_file() {
    insta::assert_snapshot!(validate(&[(
        "vrl.yaml",
        r#"connectors:
  in:
    kind: stdin
pipelines:
  p:
    inputs: [in]
    steps:
      - kind: transform
        source: ".a = 1; .b = upcase(.a"
      - kind: filter
        condition: 'get_hostname!() == "x"'
"#
    )]));
}

/// Issue 7: positions come from the YAML parser, which knows `''` in a single-quoted string
/// stands for one quote; the text search counted two, and pointed one column too far.
#[test]
fn vrl_after_a_quoted_quote_in_yaml_points_at_its_column() {
    insta::assert_snapshot!(validate(&[(
        "quote.yaml",
        r#"connectors:
  in:
    kind: stdin
pipelines:
  p:
    inputs: [in]
    steps:
      - kind: transform
        source: '.a = "it''s"; .b = nope()'
"#
    )]));
}

#[test]
fn environment_syntax_and_duplicates() {
    insta::assert_snapshot!(validate(&[
        (
            "a.toml",
            "[connectors.x]\nkind = \"tcp_server\"\naddress = \"${NOT_SET_ANYWHERE_42}\"\n"
        ),
        (
            "b.toml",
            "[connectors.y]\nkind = \"stdin\"\n[pipelines.y]\ninputs = [\"y\"]\n"
        ),
        ("c.toml", "[connectors.z\nkind = \"stdin\"\n"),
    ]));
}

/// Issue 7: a key written twice is a problem naming the key. YAML took the last one silently;
/// TOML said only "duplicate key".
#[test]
fn duplicate_keys_name_the_key() {
    insta::assert_snapshot!(validate(&[
        (
            "config.yaml",
            "connectors:\n  in:\n    kind: stdin\n  out:\n    kind: stdout\n    inputs: [in]\n  in:\n    kind: generator\n"
        ),
        (
            "config.json",
            "{\"connectors\": {\"x\": {\"kind\": \"stdin\", \"kind\": \"generator\"}}}\n"
        ),
        (
            "config.toml",
            "[connectors.y]\nkind = \"stdin\"\nkind = \"generator\"\n"
        ),
    ]));
}

#[test]
fn connector_values_that_cannot_work() {
    insta::assert_snapshot!(validate(&[(
        "values.toml",
        r#"[connectors.logs]
kind = "file"
path = "app.csv"
mode = "tail"
codec = "csv"

[connectors.web]
kind = "http_server"
address = "nowhere"
codec = "jsno"

[connectors.push]
kind = "http_client"
url = "ftp://example"
inputs = ["logs"]
"#
    )]));
}

#[test]
fn conditions_that_write_or_cannot_be_boolean_and_bad_step_settings() {
    insta::assert_snapshot!(validate(&[(
        "steps.toml",
        r#"[connectors.in]
kind = "stdin"

[pipelines.p]
inputs = ["in"]
steps = [
  { kind = "filter", condition = '.seen = true' },
  { kind = "route", routes = { big = '.a + 1' } },
  { kind = "partition", key = ".user" },
  { kind = "partition", key = ".host", lanes = 0 },
  { kind = "batch", max_events = 0, group_by = { count = ".kind" } },
]
"#
    )]));
}
