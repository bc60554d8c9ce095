//! Compiling one VRL program of a step, and what can go wrong doing so.

use vrl::compiler::{Function, Program, TargetValue, TimeZone, runtime::Runtime};
use vrl::diagnostic::{DiagnosticList, Formatter};
use vrl::path::PathPrefix;
use vrl::value::{ObjectMap, Secrets, Value};

use crate::functions::RESTRICTED_FUNCTIONS;

/// A VRL program that did not compile, located within its source text.
#[derive(Clone, Debug)]
pub struct VrlDiagnostic {
    /// Which program: `steps[2].source`, `steps[0].routes.hot`...
    pub location: String,
    /// Byte offset of the first error within the VRL source, if VRL gave one.
    pub offset: Option<usize>,
    /// VRL's own diagnostic, rendered without colour.
    pub message: String,
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A VRL program did not compile.
    #[error("pipeline {pipeline}: VRL in {} does not compile:\n{}", diagnostic.location, diagnostic.message)]
    Vrl {
        /// The pipeline id.
        pipeline: String,
        /// Where and why.
        diagnostic: VrlDiagnostic,
    },
    /// Two route steps use the same route name, or a route uses a reserved name.
    #[error("pipeline {pipeline}: route name `{route}` {reason}")]
    RouteName {
        /// The pipeline id.
        pipeline: String,
        /// The offending name.
        route: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `allow_functions` names something that is not a restricted VRL function.
    #[error(
        "pipeline {pipeline}: allow_functions names `{function}`, which is not a restricted VRL function (restricted: {})",
        RESTRICTED_FUNCTIONS.join(", ")
    )]
    UnknownAllowedFunction {
        /// The pipeline id.
        pipeline: String,
        /// The name given.
        function: String,
    },
}

/// What a program is for: conditions must answer a boolean, and may be fallible.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ProgramRole {
    /// Rewrites the event.
    Transform,
    /// Answers true or false about the event. A condition whose only compile error is an
    /// unhandled fallible expression (`.value > 100` on a field of unknown type) is compiled
    /// as `{ condition } ?? false`: when it fails at run time it does not hold.
    Condition,
}

/// VRL's code for "expression can result in runtime error" left unhandled.
const UNHANDLED_ERROR_CODE: usize = 100;

/// A compiled VRL program plus what the runner needs to know about it.
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
        let mut compiled = vrl::compiler::compile(source, functions);
        if role == ProgramRole::Condition
            && let Err(diagnostics) = &compiled
            && diagnostics.iter().all(|diagnostic| {
                diagnostic.code == UNHANDLED_ERROR_CODE || !diagnostic.is_problem()
            })
        {
            // A block on lines of its own, so a trailing comment cannot swallow the wrapper.
            // Only a wrapped program that compiles is taken; otherwise VRL's diagnostics for
            // the program as written are reported.
            let wrapped = vrl::compiler::compile(&format!("{{\n{source}\n}} ?? false"), functions);
            if wrapped.is_ok() {
                compiled = wrapped;
            }
        }
        match compiled {
            Ok(compiled) => {
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
            Err(diagnostics) => Err(describe_failure(source, diagnostics, location, allowed)),
        }
    }

    /// Runs the program on `value`, building the metadata view only when it is read.
    pub(crate) fn run(
        &self,
        value: Value,
        metadata: impl FnOnce() -> Value,
        runtime: &mut Runtime,
        timezone: &TimeZone,
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
        let resolved = runtime.resolve(&mut target, &self.program, timezone);
        runtime.clear();
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

fn describe_failure(
    source: &str,
    diagnostics: DiagnosticList,
    location: String,
    allowed: &[String],
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
    let mut message = Formatter::new(source, diagnostics).to_string();
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
