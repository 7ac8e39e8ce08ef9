//! Supervision events: every start, exit, restart and escalation, as values.

use std::sync::Arc;
use std::time::Duration;

use crate::exit::ExitReason;

/// Something a supervisor did or saw. Published on the runtime's bus
/// ([`Runtime::subscribe`](crate::Runtime::subscribe)) and logged through `tracing`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisionEvent {
    /// The path of the supervisor (`root/app`); empty for the root itself.
    pub supervisor: Arc<str>,
    /// The id of the child the event is about (for [`EventKind::Escalated`], the child whose
    /// exit exceeded the intensity).
    pub child: Arc<str>,
    /// What happened.
    pub kind: EventKind,
}

impl SupervisionEvent {
    /// The child's full path (`root/app/db`).
    pub fn path(&self) -> String {
        if self.supervisor.is_empty() {
            self.child.to_string()
        } else {
            format!("{}/{}", self.supervisor, self.child)
        }
    }
}

/// What happened to a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An instance started (its `started` hook ran, or its deferred start was confirmed).
    Started {
        /// The instance's generation.
        generation: u64,
    },
    /// An instance failed to start.
    StartFailed {
        /// The instance's generation.
        generation: u64,
        /// Why.
        reason: ExitReason,
    },
    /// An instance ended.
    Exited {
        /// The instance's generation.
        generation: u64,
        /// Why.
        reason: ExitReason,
    },
    /// The supervisor will restart the child (and, by its strategy, some siblings) after
    /// `delay`.
    Restarting {
        /// The backoff delay before the restart (zero without backoff).
        delay: Duration,
    },
    /// The child will not be restarted: its restart type says so for this exit.
    NotRestarted {
        /// The exit.
        reason: ExitReason,
    },
    /// The supervisor gave up: too many restarts. It stops all its children and exits with
    /// `reason`, so its own supervisor sees a failed child.
    Escalated {
        /// The supervisor's exit reason ([`ExitReason::Escalated`]).
        reason: ExitReason,
    },
}
