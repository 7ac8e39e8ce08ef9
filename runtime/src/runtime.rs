//! [`Runtime`]: what one actor system shares: its node name, registry and event bus.

use std::fmt;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::events::SupervisionEvent;
use crate::registry::Registry;

/// Capacity of each event subscription; a subscriber that falls further behind gets
/// `RecvError::Lagged` with the number of events it missed (never a silent gap).
pub const EVENT_BUFFER: usize = 4096;

/// What the supervision trees of one node share: the node's name (for logs), the local
/// [`Registry`] and the supervision event bus.
///
/// Several runtimes can live in one process (an in-process cluster in a test): each has its
/// own registry and bus.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    node: Arc<str>,
    registry: Registry,
    events: broadcast::Sender<SupervisionEvent>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new("local")
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("node", &self.inner.node)
            .finish()
    }
}

impl Runtime {
    /// A runtime for the node called `node` (the name appears in every actor's tracing span).
    ///
    /// The first runtime of a process installs a panic hook: a panic inside an actor, which
    /// the runtime catches and turns into that actor's abnormal exit, is logged as one `error`
    /// line (message and location) instead of a message and a backtrace on stderr; any other
    /// panic goes to the hook that was installed before. `CADRE_PANIC_BACKTRACE=1` (or
    /// `RUST_BACKTRACE`) keeps the previous hook for every panic.
    pub fn new(node: impl Into<Arc<str>>) -> Self {
        crate::instance::install_panic_hook();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Runtime {
            inner: Arc::new(Inner {
                node: node.into(),
                registry: Registry::default(),
                events,
            }),
        }
    }

    /// The node's name.
    pub fn node(&self) -> &Arc<str> {
        &self.inner.node
    }

    /// The local registry of named actors.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Subscribes to every supervision event of this runtime's trees, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SupervisionEvent> {
        self.inner.events.subscribe()
    }

    pub(crate) fn publish(&self, event: SupervisionEvent) {
        use crate::events::EventKind::*;
        // Field values are only evaluated when the level is enabled: no formatting otherwise.
        let e = &event;
        match &e.kind {
            Started { generation } => {
                tracing::debug!(child = %e.path(), generation, "child started")
            }
            StartFailed { generation, reason } => {
                tracing::warn!(child = %e.path(), generation, %reason, "child failed to start")
            }
            Exited { generation, reason } if reason.is_abnormal() => {
                tracing::warn!(child = %e.path(), generation, %reason, "child exited")
            }
            Exited { generation, reason } => {
                tracing::debug!(child = %e.path(), generation, %reason, "child exited")
            }
            Restarting { delay } => tracing::info!(child = %e.path(), ?delay, "restarting child"),
            NotRestarted { reason } => {
                tracing::debug!(child = %e.path(), %reason, "child not restarted")
            }
            Escalated { reason } => {
                tracing::error!(supervisor = %e.supervisor, %reason, "supervisor escalates")
            }
        }
        // No subscriber is not an error.
        let _ = self.inner.events.send(event);
    }
}
