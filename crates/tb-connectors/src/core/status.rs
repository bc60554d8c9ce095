//! A component's life as the runtime and the API see it: its status, since when, and the
//! last error it met. Connectors set `reconnecting` and `running` themselves; the runtime's
//! supervisor sets the rest.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

/// Where a component is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComponentStatus {
    /// Being built or started (binding sockets, opening files), or restarting.
    Starting,
    /// Doing its work.
    Running,
    /// Its peer is away; it is trying to connect again with backoff.
    Reconnecting,
    /// Intake stopped; finishing what is in flight before it stops or is replaced.
    Draining,
    /// Stopped for good after repeated failures, with its last error.
    Failed,
    /// Finished by itself, drained at shutdown, or removed by a reload.
    Stopped,
}

impl ComponentStatus {
    /// Every status, for metrics that show one series per status.
    pub const ALL: [Self; 6] = [
        Self::Starting,
        Self::Running,
        Self::Reconnecting,
        Self::Draining,
        Self::Failed,
        Self::Stopped,
    ];

    /// Lowercase name for the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Reconnecting => "reconnecting",
            Self::Draining => "draining",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }

    /// Whether the component is doing its work, or has finished it (`/ready` asks this of
    /// every component). A draining one takes nothing new, so it is not ready.
    pub fn is_ready(self) -> bool {
        matches!(self, Self::Running | Self::Stopped)
    }
}

/// A snapshot of a component's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRecord {
    /// The status now.
    pub status: ComponentStatus,
    /// When it took this status.
    pub since: DateTime<Utc>,
    /// The last error the component met, if any (kept after it recovers).
    pub last_error: Option<String>,
}

/// The shared, live status of one component. Cloning shares it.
#[derive(Clone, Debug)]
pub struct StatusCell {
    record: Arc<Mutex<StatusRecord>>,
}

impl Default for StatusCell {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusCell {
    /// A component that is starting.
    pub fn new() -> Self {
        Self {
            record: Arc::new(Mutex::new(StatusRecord {
                status: ComponentStatus::Starting,
                since: Utc::now(),
                last_error: None,
            })),
        }
    }

    /// Moves to `status`; `since` changes only when the status does.
    pub fn set(&self, status: ComponentStatus) {
        let mut record = self.lock();
        if record.status != status {
            record.status = status;
            record.since = Utc::now();
        }
    }

    /// Moves to `status` because of `error`, which becomes the last error.
    pub fn set_with_error(&self, status: ComponentStatus, error: impl Into<String>) {
        self.set(status);
        self.lock().last_error = Some(error.into());
    }

    /// The status now.
    pub fn status(&self) -> ComponentStatus {
        self.lock().status
    }

    /// A copy of the whole record.
    pub fn snapshot(&self) -> StatusRecord {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusRecord> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_moves_only_when_the_status_changes_and_the_error_is_kept() {
        let cell = StatusCell::new();
        cell.set_with_error(ComponentStatus::Reconnecting, "connection refused");
        let first = cell.snapshot();
        cell.set(ComponentStatus::Reconnecting);
        assert_eq!(cell.snapshot().since, first.since);
        cell.set(ComponentStatus::Running);
        let running = cell.snapshot();
        assert_eq!(running.status, ComponentStatus::Running);
        assert_eq!(running.last_error.as_deref(), Some("connection refused"));
    }
}
