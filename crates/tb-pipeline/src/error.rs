//! What can go wrong building a pipeline.
//!
//! Building reports every problem at once, so each variant names the pipeline and where in
//! its config the problem is; the runtime turns that into `FILE:LINE:COL: message`.

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
    /// A VRL program did not compile, or is not fit for its place (a condition that writes
    /// to the event or can never be a boolean).
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
        /// The route, as a config path: `steps[2].routes.hot`.
        location: String,
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
    /// A step's settings cannot work: a second `partition` step, zero lanes, a batch of at
    /// most zero events...
    #[error("pipeline {pipeline}: {location} {message}")]
    StepSetting {
        /// The pipeline id.
        pipeline: String,
        /// The setting, as a config path: `steps[3].kind`, `steps[1].max_events`...
        location: String,
        /// What is wrong and what would be right.
        message: String,
    },
}
