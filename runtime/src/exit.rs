//! Why an actor instance ended.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why an actor instance ended, as its supervisor sees it.
///
/// [`Normal`](ExitReason::Normal) and [`Shutdown`](ExitReason::Shutdown) are *normal* exits; every
/// other variant is *abnormal*. A [`Restart::Transient`](crate::Restart::Transient) child is
/// restarted only after an abnormal exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The actor stopped itself (`ctx.stop()`) or ran out of work.
    Normal,
    /// The actor was stopped by its supervisor and stopped within its shutdown policy.
    Shutdown,
    /// The actor stopped with an error (see [`ContextExt::fail`](crate::ContextExt::fail)), or its
    /// start failed with that error.
    Error(Arc<str>),
    /// A handler or lifecycle hook of the actor (or its factory) panicked; the panic message.
    Panic(Arc<str>),
    /// The actor was killed: its task was dropped without a graceful stop, either because its
    /// shutdown policy says so or because it overran its shutdown timeout.
    Killed,
    /// A supervisor gave up: one of its children needed more restarts than the supervisor's
    /// [`Intensity`](crate::Intensity) allows. The supervisor stopped all its children first.
    Escalated {
        /// The id of the child whose exit exceeded the intensity.
        child: Arc<str>,
        /// The number of restarts allowed within `within`.
        max_restarts: u32,
        /// The intensity window.
        within: Duration,
        /// The exit that exceeded the intensity.
        cause: Box<ExitReason>,
    },
    /// A supervisor failed to start one of its children and stopped the ones already started.
    StartFailed {
        /// The id of the child that failed to start.
        child: Arc<str>,
        /// Why the child failed to start.
        cause: Box<ExitReason>,
    },
}

impl ExitReason {
    /// An [`ExitReason::Error`] with the given message.
    pub fn error(msg: impl fmt::Display) -> Self {
        ExitReason::Error(msg.to_string().into())
    }

    /// True for [`Normal`](ExitReason::Normal) and [`Shutdown`](ExitReason::Shutdown).
    pub fn is_normal(&self) -> bool {
        matches!(self, ExitReason::Normal | ExitReason::Shutdown)
    }

    /// True for every reason that is not [normal](ExitReason::is_normal).
    pub fn is_abnormal(&self) -> bool {
        !self.is_normal()
    }

    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        ExitReason::Panic(panic_message(payload).into())
    }
}

/// The message of a panic's payload (a `&str` or a `String`, as `panic!` makes them).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Error(e) => write!(f, "error: {e}"),
            ExitReason::Panic(p) => write!(f, "panic: {p}"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Escalated {
                child,
                max_restarts,
                within,
                cause,
            } => write!(
                f,
                "restart intensity exceeded: child `{child}` needed more than {max_restarts} restarts within {within:?} (last exit: {cause})"
            ),
            ExitReason::StartFailed { child, cause } => {
                write!(f, "child `{child}` failed to start: {cause}")
            }
        }
    }
}

impl std::error::Error for ExitReason {}
