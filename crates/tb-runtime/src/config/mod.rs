//! Reading config files: TOML or YAML by extension, `${VAR}` and `${VAR:-default}` from the
//! environment, several files merged, and every problem reported as `FILE:LINE:COL: message`.

mod interpolate;
mod model;
mod parse;
mod problem;
mod source;

/// Helpers for describing problems, shared with the graph checks.
pub mod model_support {
    pub use super::model::{KeyProblem, closest, read_every_key, unknown_key_message};
}

pub use interpolate::Substitution;
pub use model::{
    ApiConfig, ComponentClass, ComponentSpec, Config, load, load_from_sources, load_pushed,
};
pub use problem::{Problem, Problems};
pub use source::{Format, Place, Places, Segment, SourceFile, parse_path};
