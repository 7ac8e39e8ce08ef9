//! Distributed tasks: a master distributes user-defined tasks to task-worker actors across
//! nodes, collects their results, and runs again the work of workers that fail.
//!
//! # Defining a task
//! A task kind is a type implementing [`Task`]: a stable name, a serde input and output, and
//! a [`TaskPolicy`] (retries after errors, backoff, the poison cutoff, the lease). Worker
//! nodes register a handler per kind in a [`TaskRegistry`] — sync (run on tokio's blocking
//! pool, so a long computation never stalls the node's actors) or async (run on the worker's
//! arbiter) — and start with [`ClusterNode::start_with_workers`].
//!
//! ```no_run
//! use cadre_actors::tasks::{Task, TaskRegistry};
//!
//! struct CountPrimes;
//! impl Task for CountPrimes {
//!     const NAME: &'static str = "primes.count";
//!     type Input = (u64, u64);
//!     type Output = u64;
//! }
//!
//! let registry = TaskRegistry::new().sync::<CountPrimes, _, _>(|(lo, hi)| {
//!     Ok::<_, String>((lo..hi).filter(|n| is_prime(*n)).count() as u64)
//! });
//! # fn is_prime(_: u64) -> bool { true }
//! ```
//!
//! # Running tasks
//! A [`Master`] is an actor on the submitting node. It finds worker nodes through service
//! discovery (each offers the service [`TASKS_SERVICE`], its kinds as tags), and submits one
//! task ([`Master::submit`], a future per result) or a batch or stream of them
//! ([`Master::submit_batch`], [`Master::submit_stream`]: results in completion order), with
//! progress counts ([`Master::progress`]) and cancellation.
//!
//! # Flow control and batching
//! Credit-based: a worker node holds at most `workers × inflight` tasks (queued or running),
//! and the master never sends it more than that; each worker takes at most `inflight` at a
//! time, and only when it is free, so a slow worker is not swamped. The master admits at most
//! [`MasterConfig::window`] tasks whose results the caller has not taken yet (submitting waits
//! for room). Tasks travel in batches of up to [`MasterConfig::batch_max`], sent when full or
//! after [`MasterConfig::batch_delay`]; results come back in batches the same way.
//!
//! # Delivery semantics: at-least-once execution, exactly-once results
//! Every task has an id and an attempt number. An attempt is lost, and the task runs again
//! elsewhere, when its node goes down or leaves, when its worker dies running it (a panic in
//! the handler is a supervised failure: the worker restarts), or when its lease runs out (no
//! heartbeat for [`TaskPolicy::lease`]: a stuck handler, a hung node, a partition). Each of
//! these counts as a kill; a task that killed [`TaskPolicy::poison_kills`] workers (3 by
//! default) fails with [`TaskError::Poison`]. A handler's error is retried only if the kind
//! opts in ([`TaskPolicy::max_retries`], exponential backoff with jitter). A task may thus
//! *run* more than once, but the caller receives its result exactly once: the first report
//! of its current attempt decides, later ones are dropped. Results live in the master: if
//! the master's node dies, its callers' tasks are lost with it.
//!
//! # Scaling
//! [`TaskWorkers::resize`] grows or shrinks a node's pool at run time; a worker being removed
//! takes no new tasks and finishes the ones it holds first.

mod master;
pub(crate) mod messages;
mod registry;
mod workers;

pub use cadre_cluster::tasks::{NodeStats, Progress, TaskId, TaskPolicy};
pub use master::{Master, MasterConfig, Results, SubmitError, TaskError, TaskHandle};
pub use registry::TaskRegistry;
pub use workers::{TaskWorkers, WorkerConfig, WorkersError};

use serde::de::DeserializeOwned;
use serde::Serialize;

#[allow(unused_imports)] // for the docs
use crate::node::ClusterNode;

/// The service a worker node offers: its task kinds are the tags, its capacity the
/// `capacity` entry of the metadata.
pub const TASKS_SERVICE: &str = "cadre.tasks";

/// A task kind.
pub trait Task: 'static {
    /// Its name, the same on the master and on the workers; stable across versions.
    const NAME: &'static str;
    /// What it is given.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// What it returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// How it is retried and watched (default: no retry after an error, poison after 3
    /// kills, a 30 s lease).
    fn policy() -> TaskPolicy {
        TaskPolicy::default()
    }
}
