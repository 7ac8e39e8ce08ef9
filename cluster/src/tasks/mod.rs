//! Task scheduling: the master's state machine, and the messages between a master and the
//! worker nodes.
//!
//! # Model
//! A master holds every task it was given until the task has a final outcome. Worker nodes
//! offer task kinds and a capacity (how many tasks they hold at once: queued or running). The
//! master sends each node batches of [`Assignment`]s, never more than the node's free
//! capacity (credit-based flow control); the node answers with batched [`Report`]s, each of
//! which frees one unit of credit, and with heartbeats that renew the leases of the tasks it
//! holds.
//!
//! # Delivery semantics: at-least-once execution, exactly-once results
//! Every dispatch of a task is a new attempt (1, 2, …). A task runs again elsewhere when its
//! attempt is lost:
//! - its node goes down (or leaves) while it holds the attempt;
//! - its lease runs out: no heartbeat mentioned the attempt for the task's lease
//!   ([`TaskPolicy::lease`]) — a stuck handler, a hung node, or a partition;
//! - its worker died running it (a panic in the handler; reported by the node).
//!
//! Each of these counts as a *kill*; a task whose attempts killed [`TaskPolicy::poison_kills`]
//! workers fails as [`Final::Poison`] instead of being tried again. A task that *returned an
//! error* is retried only if its policy allows it ([`TaskPolicy::max_retries`]), after an
//! exponential backoff with jitter.
//!
//! The first report of the current attempt decides the outcome; reports of older attempts
//! (a node that was thought lost but was not) are counted and dropped, so each task has exactly
//! one [`Effect::Done`]. A task may therefore have *run* more than once; its result is given
//! once.

mod scheduler;

pub use scheduler::{
    Effect, Final, NodeStats, Progress, Scheduler, SchedulerConfig, SubmitError, Task,
};

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A task's id, unique per master.
pub type TaskId = u64;

/// How a task kind is retried and watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskPolicy {
    /// How many times a task that returned an error is run again (0: never).
    pub max_retries: u32,
    /// The first retry's delay; doubled for each further retry.
    pub backoff_min: Duration,
    /// The longest delay between retries.
    pub backoff_max: Duration,
    /// How many workers a task may kill (die or get stuck running it, or be on a node that
    /// went down) before it fails as poison.
    pub poison_kills: u32,
    /// How long an attempt may go without a heartbeat from its node before it is run again
    /// elsewhere; a running attempt is heartbeated for at most this long, so it is also the
    /// longest one attempt may run.
    pub lease: Duration,
}

impl Default for TaskPolicy {
    fn default() -> Self {
        TaskPolicy {
            max_retries: 0,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            poison_kills: 3,
            lease: Duration::from_secs(30),
        }
    }
}

impl TaskPolicy {
    /// The delay before retry number `retry` (1-based), `unit` uniform in `[0, 1)`: doubling
    /// from `backoff_min` up to `backoff_max`, ±25 %.
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let base = self
            .backoff_min
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max);
        base.mul_f64(0.75 + 0.5 * unit)
    }
}

/// One attempt of a task, sent to a worker node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The task.
    pub id: TaskId,
    /// The attempt (1 for the first run).
    pub attempt: u32,
    /// The task kind's name.
    pub kind: String,
    /// The task's input, MessagePack.
    #[serde(with = "serde_bytes")]
    pub input: Vec<u8>,
    /// How long the node heartbeats the attempt once it runs, in milliseconds.
    pub lease_ms: u64,
}

/// What became of one attempt on a worker node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The task.
    pub id: TaskId,
    /// The attempt.
    pub attempt: u32,
    /// Its outcome.
    pub outcome: Outcome,
}

/// The outcome of one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The handler returned this output (MessagePack).
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The handler returned an error.
    Failed(String),
    /// The worker died running it (a panic in the handler).
    Crashed(String),
    /// The node has no handler for the kind.
    UnknownKind,
    /// The input did not decode as the kind's input type.
    BadInput(String),
    /// Cancelled before it ran.
    Cancelled,
    /// The node did not take it (it shrank below what it holds); run it elsewhere.
    Refused,
}
