//! Compiling one VRL program of a step, and running it on one event.
//!
//! A program has a role. A transform may rewrite the event. A condition (filter, route) and
//! an expression (partition key, batch `group_by`) only read it: they are compiled with the
//! event and its metadata read-only, so VRL itself rejects `.x = 1` or `del(.x)` with a
//! position. A condition must also be able to return a boolean, which is checked against
//! VRL's type information at build time rather than found out on the first event.

use vrl::compiler::state::ExternalEnv;
use vrl::compiler::{CompileConfig, Function, Program, TargetValue, TimeZone, runtime::Runtime};
use vrl::diagnostic::{DiagnosticList, Formatter};
use vrl::path::PathPrefix;
use vrl::value::{Kind, ObjectMap, Secrets, Value};

use crate::error::VrlDiagnostic;
use crate::functions::RESTRICTED_FUNCTIONS;

/// What a program is for, which decides what it may do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ProgramRole {
    /// Rewrites the event.
    Transform,
    /// Answers true or false about the event, without changing it. A condition whose only
    /// compile errors are unhandled fallible expressions (`.value > 100` on a field of
    /// unknown type) is compiled as `{ condition } ?? false`: when it fails at run time it
    /// does not hold.
    Condition,
    /// Computes a value from the event (a partition key, a batch group), without changing
    /// it. A run-time failure sends the event to `_errors`.
    Expression,
}

/// VRL's code for "expression can result in runtime error" left unhandled.
const UNHANDLED_ERROR_CODE: usize = 100;

/// VRL's code for an assignment to, or a mutation of, a read-only path.
const READ_ONLY_MUTATION_CODE: usize = 315;

/// The VRL runtime and time zone a pipeline's programs run with; one per pipeline, reused
/// for every event so no program run allocates a runtime.
#[derive(Default)]
pub(crate) struct VrlRuntime {
    runtime: Runtime,
    timezone: TimeZone,
}

/// A compiled VRL program plus what the runner needs to know about it.
#[derive(Clone)]
pub(crate) struct CompiledProgram {
    program: Program,
    // Invariant: true when the program reads or writes `%...`, so metadata must be built.
    uses_metadata: bool,
    // Invariant: true when the program can fail at run time, so the input must be kept
    // to send the unmodified event to `_errors`.
    can_fail: bool,
}

/// The outcome of running a program on one value.
pub(crate) enum RunOutcome {
    /// The program finished: the rewritten value and the program's result.
    Finished { value: Value, result: Value },
    /// The program failed: the original value (if it could be kept) and the message.
    Failed { value: Value, message: String },
}

impl CompiledProgram {
    /// Compiles `source`; errors name the program's `location` in the pipeline.
    pub(crate) fn compile(
        source: &str,
        functions: &[Box<dyn Function>],
        location: String,
        allowed: &[String],
        role: ProgramRole,
    ) -> Result<Self, VrlDiagnostic> {
        let compile = |text: &str| {
            let mut config = CompileConfig::default();
            if role != ProgramRole::Transform {
                config.set_read_only();
            }
            vrl::compiler::compile_with_external(text, functions, &ExternalEnv::default(), config)
        };
        let mut compiled = compile(source);
        let mut wrapped = false;
        if role == ProgramRole::Condition
            && let Err(diagnostics) = &compiled
            && diagnostics.iter().all(|diagnostic| {
                diagnostic.code == UNHANDLED_ERROR_CODE || !diagnostic.is_problem()
            })
        {
            // A block on lines of its own, so a trailing comment cannot swallow the wrapper.
            // Only a wrapped program that compiles is taken; otherwise VRL's diagnostics for
            // the program as written are reported.
            let attempt = compile(&format!("{{\n{source}\n}} ?? false"));
            if attempt.is_ok() {
                compiled = attempt;
                wrapped = true;
            }
        }
        let compiled = match compiled {
            Ok(compiled) => compiled,
            Err(diagnostics) => {
                return Err(describe_failure(
                    source,
                    diagnostics,
                    location,
                    allowed,
                    role,
                ));
            }
        };
        if role == ProgramRole::Condition {
            // The wrapper's `false` would hide a condition that can never be a boolean, so a
            // wrapped condition is typed again with a `null` fallback, which adds no boolean.
            let result_kind = if wrapped {
                compile(&format!("{{\n{source}\n}} ?? null"))
                    .ok()
                    .map(|typed| {
                        let mut kind = typed.program.final_type_info().result.kind().clone();
                        kind.remove_null();
                        kind
                    })
            } else {
                Some(compiled.program.final_type_info().result.kind().clone())
            };
            if let Some(kind) = result_kind
                && !kind.contains_boolean()
            {
                return Err(not_a_boolean(source, &kind, location));
            }
        }
        let info = compiled.program.info();
        let uses_metadata = info
            .target_queries
            .iter()
            .chain(info.target_assignments.iter())
            .any(|path| path.prefix == PathPrefix::Metadata);
        let can_fail = info.fallible || info.abortable;
        Ok(Self {
            program: compiled.program,
            uses_metadata,
            can_fail,
        })
    }

    /// Runs the program on `value`, building the metadata view only when it is read.
    pub(crate) fn run(
        &self,
        value: Value,
        metadata: impl FnOnce() -> Value,
        vrl: &mut VrlRuntime,
    ) -> RunOutcome {
        let original = self.can_fail.then(|| value.clone());
        let metadata = if self.uses_metadata {
            metadata()
        } else {
            Value::Object(ObjectMap::new())
        };
        let mut target = TargetValue {
            value,
            metadata,
            secrets: Secrets::default(),
        };
        let resolved = vrl
            .runtime
            .resolve(&mut target, &self.program, &vrl.timezone);
        vrl.runtime.clear();
        match resolved {
            Ok(result) => RunOutcome::Finished {
                value: target.value,
                result,
            },
            Err(terminate) => RunOutcome::Failed {
                value: original.unwrap_or(target.value),
                message: terminate.to_string(),
            },
        }
    }
}

fn not_a_boolean(source: &str, kind: &Kind, location: String) -> VrlDiagnostic {
    let offset = source.len() - source.trim_start().len();
    VrlDiagnostic {
        location,
        offset: Some(offset),
        message: format!(
            "this condition returns {kind}, never a boolean: a condition must be true or \
             false, such as `.level == \"error\"`, `.value > 100` or `exists(.user)`"
        ),
    }
}

fn describe_failure(
    source: &str,
    diagnostics: DiagnosticList,
    location: String,
    allowed: &[String],
    role: ProgramRole,
) -> VrlDiagnostic {
    let offset = diagnostics
        .iter()
        .filter_map(|diagnostic| {
            diagnostic
                .labels
                .iter()
                .find(|label| label.primary)
                .or(diagnostic.labels.first())
        })
        .map(|label| label.span.start())
        .next();
    // A function that mutates (`del(.x)`) reports the read-only error wrapped in its own
    // "function compilation error", so the inner code is looked for in the message too.
    let writes_read_only = diagnostics.iter().any(|diagnostic| {
        diagnostic.code == READ_ONLY_MUTATION_CODE
            || diagnostic
                .message
                .contains(&format!("E{READ_ONLY_MUTATION_CODE}"))
    });
    // VRL names no file (`┌─ :1:6`): the program's place in the pipeline stands for one,
    // so each line and column is read against the program it belongs to.
    let mut message = Formatter::new(source, diagnostics)
        .to_string()
        .replace("┌─ :", &format!("┌─ {location}:"));
    if writes_read_only {
        let what = match role {
            ProgramRole::Condition => "a condition",
            ProgramRole::Expression | ProgramRole::Transform => "this expression",
        };
        message.push_str(&format!(
            "\n{what} only reads the event and cannot change it; make the change in a \
             `transform` step before this one"
        ));
    }
    for name in restricted_functions_called(source, allowed) {
        message.push_str(&format!(
            "\n`{name}` reaches outside the process and is disabled; to allow it, add \
             allow_functions = [\"{name}\"] to this pipeline"
        ));
    }
    VrlDiagnostic {
        location,
        offset,
        message,
    }
}

fn restricted_functions_called<'a>(
    source: &str,
    allowed: &'a [String],
) -> impl Iterator<Item = &'static str> + use<'a> {
    let called: Vec<&'static str> = RESTRICTED_FUNCTIONS
        .iter()
        .copied()
        .filter(|name| {
            source.contains(&format!("{name}(")) || source.contains(&format!("{name}!("))
        })
        .collect();
    called
        .into_iter()
        .filter(move |name| !allowed.iter().any(|allow| allow == name))
}
