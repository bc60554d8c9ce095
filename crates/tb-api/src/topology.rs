//! The JSON shape of `/api/v1/topology`.

use serde::Serialize;
use tb_runtime::{ComponentMetrics, ComponentType, RuntimeHandle};

/// `{"components": [...], "edges": [...]}`.
#[derive(Serialize)]
pub struct TopologyDto {
    components: Vec<ComponentDto>,
    edges: Vec<EdgeDto>,
}

#[derive(Serialize)]
struct ComponentDto {
    id: String,
    #[serde(rename = "type")]
    component_type: &'static str,
    kind: String,
    status: &'static str,
    /// When it took its status (RFC 3339).
    since: String,
    last_error: Option<String>,
    restarts: u64,
    metrics: serde_json::Value,
}

#[derive(Serialize)]
struct EdgeDto {
    from: String,
    to: String,
}

impl TopologyDto {
    /// Reads the live state of every component.
    pub fn from_handle(handle: &RuntimeHandle) -> Self {
        let components = handle
            .components()
            .iter()
            .map(|component| {
                let mut metrics = match &component.metrics {
                    ComponentMetrics::Connector(counters) => serde_json::json!({
                        "recv": counters.received.get(),
                        "out": counters.output.get(),
                        "in": counters.input.get(),
                        "send": counters.sent.get(),
                        "err": counters.errors.get(),
                        "unconfirmed": counters.unconfirmed.get(),
                        "redelivered": counters.redelivered.get(),
                    }),
                    ComponentMetrics::Pipeline(counters) => serde_json::json!({
                        "in": counters.input.get(),
                        "out": counters.output.get(),
                        "dropped": counters.dropped.get(),
                        "err": counters.errors.get(),
                    }),
                    ComponentMetrics::Destination { actions, breaker } => serde_json::json!({
                        "actions": actions,
                        "circuit": breaker.state().as_str(),
                    }),
                };
                if let Some(fill) = component.queue_fill() {
                    metrics["queue_fill"] = fill.into();
                }
                let record = component.status_record();
                ComponentDto {
                    id: component.id.clone(),
                    component_type: match component.component_type {
                        ComponentType::Connector => "connector",
                        ComponentType::Pipeline => "pipeline",
                        ComponentType::Destination => "destination",
                    },
                    kind: component.kind.clone(),
                    status: record.status.as_str(),
                    since: record.since.to_rfc3339(),
                    last_error: record.last_error,
                    restarts: component.restarts.get(),
                    metrics,
                }
            })
            .collect();
        let edges = handle
            .edges()
            .iter()
            .map(|edge| EdgeDto {
                from: edge.from.clone(),
                to: edge.to.clone(),
            })
            .collect();
        Self { components, edges }
    }
}
