//! Tightbeam's runtime: from config files to a running topology.
//!
//! Construct, connect, spawn: [`config::load`] reads and checks the files, [`Topology::build`]
//! compiles every pipeline and builds every connector (collecting *all* problems, each with
//! its file, line and column), [`Topology::start`] wires bounded channels between outputs and
//! inputs, starts connectors (binding sockets, opening files) and spawns one task per
//! component; [`RunningTopology::run_until`] drains on shutdown.
//!
//! Shutdown drains by closure: sources stop taking input and drop their senders, so each
//! pipeline sees its input close, finishes, and drops its own; sinks end when their input
//! closes. Nothing is cut off until the grace period expires.
#![deny(missing_docs)]

pub mod config;
mod graph;
mod metrics;
mod pipeline_task;
mod reload;
mod run;
mod supervise;
mod view;

pub use graph::Topology;
pub use metrics::{Latency, MetricsFormat, MetricsRegistry, PipelineMetrics};
pub use reload::{ReloadOutcome, ReloadRequest, ReloadSummary, Reloader};
pub use run::{INPUT_QUEUE_BATCHES, MAX_BATCH_EVENTS, RunOutcome, RunningTopology, StartError};
pub use supervise::{
    Builders, MAX_RESTARTS, RESTART_BACKOFF_MAX, RESTART_BACKOFF_MIN, RESTART_WINDOW,
};
pub use view::{ComponentMetrics, ComponentType, ComponentView, EdgeView, RuntimeHandle, Status};
