//! Tests of config loading, one `check(input, expected)` per behaviour.

use super::*;

fn load_one(name: &str, text: &str) -> Result<Config, Problems> {
    load_from_sources(vec![(PathBuf::from(name), text.to_owned())], |name| {
        (name == "PORT").then(|| "9100".to_owned())
    })
}

/// Problems that stop reading come back as `Err`; the others travel in `Config::problems`.
fn all_problems(loaded: Result<Config, Problems>) -> Vec<Problem> {
    match loaded {
        Ok(config) => config.problems,
        Err(problems) => problems.0,
    }
}

fn check_problems(name: &str, text: &str, expected: &[&str]) {
    let problems = all_problems(load_one(name, text));
    let printed: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(printed, expected);
}

#[test]
fn unknown_top_level_key_suggests_the_closest() {
    check_problems(
        "a.toml",
        "data_dri = \"x\"\n",
        &[
            "a.toml:1:1: unknown key `data_dri` (did you mean `data_dir`?); expected one of: data_dir, api, shutdown_grace, store, connectors, pipelines, destinations",
        ],
    );
}

#[test]
fn unknown_step_key_points_at_the_key() {
    check_problems(
        "p.toml",
        "[pipelines.p]\ninputs = [\"x\"]\nsteps = [\n  { kind = \"transform\", sorce = '.a = 1' },\n]\n",
        &[
            "p.toml:4:25: pipeline p: unknown key `sorce` (did you mean `source`?); expected one of: source",
        ],
    );
}

#[test]
fn unset_variable_without_default_is_a_problem() {
    check_problems(
        "e.toml",
        "[connectors.web]\nkind = \"http_server\"\naddress = \"${HOST}:${PORT}\"\n",
        &[
            "e.toml:3:12: environment variable `HOST` is not set; set it, or give a default as ${HOST:-value}",
        ],
    );
}

#[test]
fn variables_and_defaults_are_substituted() {
    let config = load_one(
        "v.toml",
        "[connectors.web]\nkind = \"http_server\"\naddress = \"${HOST:-127.0.0.1}:${PORT}\"\n",
    )
    .expect("valid");
    let ComponentClass::Connector { settings, .. } = &config.components["web"].class else {
        panic!("connector expected")
    };
    assert_eq!(settings["address"], "127.0.0.1:9100");
}

#[test]
fn yaml_is_read_by_extension() {
    let config = load_one(
        "c.yaml",
        "api:\n  address: \"off\"\nconnectors:\n  gen:\n    kind: generator\n    count: 3\n",
    )
    .expect("valid");
    assert_eq!(config.api.address, None);
    assert!(config.components.contains_key("gen"));
}

#[test]
fn same_id_in_two_files_is_rejected() {
    let problems = all_problems(load_from_sources(
        vec![
            (
                PathBuf::from("a.toml"),
                "[connectors.x]\nkind = \"stdin\"\n".to_owned(),
            ),
            (
                PathBuf::from("b.toml"),
                "[pipelines.x]\ninputs = []\n".to_owned(),
            ),
        ],
        |_| None,
    ));
    assert!(
        problems[0]
            .to_string()
            .starts_with("b.toml:1:12: component id `x` is already defined (in a.toml)"),
        "{problems:?}"
    );
}

#[test]
fn toml_syntax_error_has_line_and_column() {
    let problems = load_one("s.toml", "[connectors.x]\nkind = \n").expect_err("syntax");
    assert_eq!(problems.0[0].line, 2);
    assert!(problems.0[0].message.starts_with("invalid TOML"));
}

#[test]
fn positions_after_a_substitution_refer_to_the_text_as_written() {
    // `${PORT}` (7 bytes) becomes `9100` (4 bytes): the unknown key after it on the same
    // line must still be reported at its column in the file.
    check_problems(
        "shift.toml",
        "[api]\naddress = \"127.0.0.1:${PORT}\" ; adress = 1\n",
        &["shift.toml:2:31: invalid TOML: unexpected key or value, expected newline, `#`"],
    );
}

#[test]
fn key_positions_after_a_substitution_refer_to_the_text_as_written() {
    // `${PORT}` (7 bytes) becomes `9100` (4 bytes); the parser's place for `adress` is in
    // the substituted text, and must be reported at its column in the file.
    check_problems(
        "shift.toml",
        "api = { address = \"127.0.0.1:${PORT}\", adress = \"x\" }\n",
        &[
            "shift.toml:1:40: unknown key `adress` (did you mean `address`?); expected one of: address, header_timeout, body_timeout",
        ],
    );
    check_problems(
        "shift.yaml",
        "api: {address: \"127.0.0.1:${PORT}\", adress: x}\n",
        &[
            "shift.yaml:1:37: unknown key `adress` (did you mean `address`?); expected one of: address, header_timeout, body_timeout",
        ],
    );
}
