//! A compiled pipeline: its steps, its output ports, and the runner that moves events
//! through the steps.
//!
//! The runner moves a whole batch through one step before the next, each step's output
//! becoming the next step's input buffer (two vectors reused for the pipeline's life).
//! Events a step emits from a timer or a flush enter the steps after it the same way.
//!
//! `_unmatched`: an event that a route step did not match owes `_unmatched` one copy. The
//! copy is made when the event reaches the end of the pipeline, or when it enters a step
//! that keeps events or hands them to lanes (`batch`, `partition`), whichever comes first;
//! after such a step the event starts with no debt. So the rule is the same whether or not
//! the pipeline is split into lanes: the head makes the copies for route steps before the
//! `partition`, and each lane for route steps after it, on the same `_unmatched` port.

mod build;

use std::time::Instant;

use tb_event::Event;

use crate::config::PipelineConfig;
use crate::error::BuildError;
use crate::program::VrlRuntime;
use crate::step::{Flow, Step, StepContext};

/// Index of an output port of a pipeline; see [`OutputPorts`].
pub type PortId = usize;

/// The names of a pipeline's outputs, by [`PortId`]: `main` first, then each route in
/// config order, then the ports steps add for themselves (names starting with `_`), then
/// `_unmatched`, then `_errors`.
#[derive(Clone, Debug)]
pub struct OutputPorts {
    names: Vec<String>,
}

impl OutputPorts {
    /// Port of the main output `<id>`.
    pub const MAIN: PortId = 0;

    /// Every port name, in [`PortId`] order; the main port's name is empty.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Port of `_unmatched`.
    pub fn unmatched(&self) -> PortId {
        self.names.len() - 2
    }

    /// Port of `_errors`.
    pub fn errors(&self) -> PortId {
        self.names.len() - 1
    }

    /// Port for an output name (`""` for main, `hot`, `_errors`...).
    pub fn find(&self, name: &str) -> Option<PortId> {
        self.names.iter().position(|port| port == name)
    }
}

/// Where one call of a pipeline puts its events: one batch per port and, for the head of a
/// split pipeline, one batch per lane. The caller takes the events out between calls.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Events per port, indexed by [`PortId`].
    pub ports: Vec<Vec<Event>>,
    /// Events per lane, for the head of a split pipeline (see [`Pipeline::split_lanes`]);
    /// empty otherwise.
    pub lanes: Vec<Vec<Event>>,
}

impl Outputs {
    /// Empty outputs shaped for `pipeline`.
    pub fn for_pipeline(pipeline: &Pipeline) -> Self {
        Self {
            ports: pipeline.ports.names.iter().map(|_| Vec::new()).collect(),
            lanes: (0..pipeline.output_lanes()).map(|_| Vec::new()).collect(),
        }
    }

    /// Whether no port and no lane holds an event.
    pub fn is_empty(&self) -> bool {
        self.ports
            .iter()
            .chain(self.lanes.iter())
            .all(Vec::is_empty)
    }

    /// Makes sure there is a batch for every port and lane, so a step never indexes out of
    /// bounds whatever the caller built.
    fn shape_for(&mut self, ports: usize, lanes: usize) {
        if self.ports.len() < ports {
            self.ports.resize_with(ports, Vec::new);
        }
        if self.lanes.len() != lanes {
            self.lanes.resize_with(lanes, Vec::new);
        }
    }
}

/// What one call did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    /// Events that came in.
    pub input: u64,
    /// Events emitted on the main output, routes and steps' own ports (not `_errors`, not
    /// the `_unmatched` copies, which also go on to the main output, and not events
    /// written to lanes, which the lanes count when they emit them).
    pub output: u64,
    /// Events a filter dropped, or a transform turned into an empty array.
    pub dropped: u64,
    /// Events sent to `_errors`.
    pub errors: u64,
}

/// A step in place: the step and its position in the config, for error envelopes (a lane
/// holds the steps after the partition, which keep their config positions).
struct PlacedStep {
    config_index: usize,
    step: Box<dyn Step>,
}

/// Where the `partition` step is.
#[derive(Clone, Copy, Debug)]
struct PartitionPlace {
    // Invariant: index in `Pipeline::steps` of the partition step.
    position: usize,
    // Invariant: at least 1.
    lanes: usize,
}

/// A pipeline ready to run: compiled steps and a VRL runtime.
pub struct Pipeline {
    id: String,
    steps: Vec<PlacedStep>,
    ports: OutputPorts,
    vrl: VrlRuntime,
    // Invariant: both empty between calls; `current` holds the events entering a step and
    // `next` what it emits. Kept to reuse their capacity.
    current: Vec<Flow>,
    next: Vec<Flow>,
    partition: Option<PartitionPlace>,
    // Invariant: true only for the head returned by `split_lanes`, whose partition step
    // writes to `Outputs::lanes`.
    is_head: bool,
}

impl Pipeline {
    /// Compiles every step of `config`.
    ///
    /// # Errors
    ///
    /// Every VRL program that does not compile or is not fit for its place, every bad route
    /// name and every step setting that cannot work, all at once.
    pub fn build(id: &str, config: &PipelineConfig) -> Result<Self, Vec<BuildError>> {
        let built = build::build_steps(id, config)?;
        Ok(Self::assemble(
            id,
            built.steps,
            built.route_names,
            built.partition,
        ))
    }

    /// A pipeline of the given steps, for tests of steps that no config builds.
    #[cfg(test)]
    pub(crate) fn from_steps(id: &str, steps: Vec<Box<dyn Step>>) -> Self {
        let steps = steps
            .into_iter()
            .enumerate()
            .map(|(config_index, step)| PlacedStep { config_index, step })
            .collect();
        Self::assemble(id, steps, Vec::new(), None)
    }

    fn assemble(
        id: &str,
        mut steps: Vec<PlacedStep>,
        route_names: Vec<String>,
        partition: Option<PartitionPlace>,
    ) -> Self {
        let mut names = vec![String::new()];
        names.extend(route_names);
        for placed in &steps {
            for extra in placed.step.extra_ports() {
                if !names.iter().any(|name| name == extra) {
                    names.push((*extra).to_owned());
                }
            }
        }
        names.push("_unmatched".to_owned());
        names.push("_errors".to_owned());
        let ports = OutputPorts { names };
        for placed in &mut steps {
            placed.step.bind_ports(&ports);
        }
        Self {
            id: id.to_owned(),
            steps,
            ports,
            vrl: VrlRuntime::default(),
            current: Vec::new(),
            next: Vec::new(),
            partition,
            is_head: false,
        }
    }

    /// The pipeline's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The pipeline's output ports.
    pub fn ports(&self) -> &OutputPorts {
        &self.ports
    }

    /// The number of lanes of its `partition` step, if it has one (the whole pipeline
    /// before [`Pipeline::split_lanes`], the head after it).
    pub fn lanes(&self) -> Option<usize> {
        self.partition.map(|partition| partition.lanes)
    }

    fn output_lanes(&self) -> usize {
        match self.partition {
            Some(partition) if self.is_head => partition.lanes,
            _ => 0,
        }
    }

    /// Splits a pipeline with a `partition` step into the head (the steps up to and
    /// including the partition, which then writes each event to `Outputs::lanes`) and one
    /// pipeline per lane holding fresh copies of the steps after it. Every lane has the
    /// whole pipeline's [`OutputPorts`], so its port outputs go where the whole pipeline's
    /// would. Events of one key always reach the same lane, so running each lane on its own
    /// task keeps per-key order end to end.
    ///
    /// Split before the first batch: steps after the partition are replaced by fresh
    /// copies, so events they hold are dropped (which fails them at their sources). A
    /// pipeline without a partition step, or already split, comes back whole with no lanes.
    pub fn split_lanes(mut self) -> (Pipeline, Vec<Pipeline>) {
        let Some(partition) = self.partition.filter(|_| !self.is_head) else {
            return (self, Vec::new());
        };
        let rest = self.steps.split_off(partition.position + 1);
        let lanes = (0..partition.lanes)
            .map(|_| Pipeline {
                id: self.id.clone(),
                steps: rest
                    .iter()
                    .map(|placed| PlacedStep {
                        config_index: placed.config_index,
                        step: placed.step.fresh_copy(),
                    })
                    .collect(),
                ports: self.ports.clone(),
                vrl: VrlRuntime::default(),
                current: Vec::new(),
                next: Vec::new(),
                partition: None,
                is_head: false,
            })
            .collect();
        self.is_head = true;
        (self, lanes)
    }

    /// Runs every event of `batch`, which came from input `input` (its position in the
    /// pipeline's `inputs`), through the steps, appending results to `outputs`. Filtered
    /// events are acknowledged as delivered here. A lane pipeline's input is the one the
    /// head's batch came from, which the runtime passes on.
    pub fn process(
        &mut self,
        batch: Vec<Event>,
        input: usize,
        outputs: &mut Outputs,
    ) -> PipelineCounts {
        self.process_at(batch, input, Instant::now(), outputs)
    }

    /// [`Pipeline::process`] with an explicit clock, so tests can drive timeouts.
    pub(crate) fn process_at(
        &mut self,
        batch: Vec<Event>,
        input: usize,
        now: Instant,
        outputs: &mut Outputs,
    ) -> PipelineCounts {
        outputs.shape_for(self.ports.names.len(), self.output_lanes());
        let mut counts = PipelineCounts {
            input: batch.len() as u64,
            ..PipelineCounts::default()
        };
        self.current.extend(batch.into_iter().map(|event| Flow {
            event,
            input,
            unmatched: false,
        }));
        self.run_steps(0, now, outputs, &mut counts);
        counts
    }

    /// The earliest time a step wants [`Pipeline::on_timer`] called; `None` when no step
    /// holds anything timed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.steps
            .iter()
            .filter_map(|placed| placed.step.next_deadline())
            .min()
    }

    /// Lets every step whose deadline is at or before `now` emit what is due; what it emits
    /// runs through the steps after it.
    pub fn on_timer(&mut self, now: Instant, outputs: &mut Outputs) -> PipelineCounts {
        outputs.shape_for(self.ports.names.len(), self.output_lanes());
        let mut counts = PipelineCounts::default();
        for index in 0..self.steps.len() {
            if self.steps[index]
                .step
                .next_deadline()
                .is_some_and(|deadline| deadline <= now)
            {
                self.emit_from(index, now, outputs, &mut counts, |step, context| {
                    step.on_timer(now, context)
                });
            }
        }
        counts
    }

    /// Makes every step give back what it holds, in step order, so what one step flushes
    /// passes through (and is flushed by) the steps after it. Called on drain and before a
    /// reload; for a split pipeline, flush the head, run its lane outputs through the lanes,
    /// then flush the lanes.
    pub fn flush(&mut self, outputs: &mut Outputs) -> PipelineCounts {
        outputs.shape_for(self.ports.names.len(), self.output_lanes());
        let mut counts = PipelineCounts::default();
        let now = Instant::now();
        for index in 0..self.steps.len() {
            self.emit_from(index, now, outputs, &mut counts, |step, context| {
                step.flush(context)
            });
        }
        counts
    }

    /// Lets step `index` emit (from a timer or a flush) and runs what it emits through the
    /// steps after it.
    fn emit_from(
        &mut self,
        index: usize,
        now: Instant,
        outputs: &mut Outputs,
        counts: &mut PipelineCounts,
        emit: impl FnOnce(&mut dyn Step, &mut StepContext<'_>),
    ) {
        let Self {
            id,
            steps,
            ports,
            vrl,
            current,
            ..
        } = self;
        let placed = &mut steps[index];
        let mut context = StepContext {
            vrl,
            next: current,
            outputs,
            counts,
            ports,
            pipeline_id: id,
            step_index: placed.config_index,
            now,
            input: 0,
            unmatched: false,
        };
        emit(placed.step.as_mut(), &mut context);
        self.run_steps(index + 1, now, outputs, counts);
    }

    /// Runs the events in `current` through the steps from `first_step` on, and the
    /// survivors to the main output.
    fn run_steps(
        &mut self,
        first_step: usize,
        now: Instant,
        outputs: &mut Outputs,
        counts: &mut PipelineCounts,
    ) {
        let Self {
            id,
            steps,
            ports,
            vrl,
            current,
            next,
            ..
        } = self;
        let unmatched_port = ports.unmatched();
        for placed in steps.iter_mut().skip(first_step) {
            if current.is_empty() {
                return;
            }
            let holds_events = placed.step.holds_events();
            let mut context = StepContext {
                vrl: &mut *vrl,
                next: &mut *next,
                outputs: &mut *outputs,
                counts: &mut *counts,
                ports,
                pipeline_id: id,
                step_index: placed.config_index,
                now,
                input: 0,
                unmatched: false,
            };
            for Flow {
                event,
                input,
                unmatched,
            } in current.drain(..)
            {
                if unmatched && holds_events {
                    context.outputs.ports[unmatched_port].push(event.fork());
                }
                context.input = input;
                context.unmatched = unmatched && !holds_events;
                placed.step.process(event, input, &mut context);
            }
            std::mem::swap(current, next);
        }
        for Flow {
            event, unmatched, ..
        } in current.drain(..)
        {
            if unmatched {
                outputs.ports[unmatched_port].push(event.fork());
            }
            outputs.ports[OutputPorts::MAIN].push(event);
            counts.output += 1;
        }
    }
}

#[cfg(test)]
mod tests;
