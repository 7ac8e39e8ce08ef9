//! The node agent (CDRAF's SmartAgent): on every node, one actor under the node's root that
//! reports the node's status to the store under a lease, carries out the management commands
//! that reach it through the store, and passes every event the node sees through a chain of
//! handlers.
//!
//! # Layout
//! - `actor.rs`: the agent actor, driving the pure cores of
//!   [`cadre_cluster::agent`] (the status [`Reporter`](cadre_cluster::agent::reporter::Reporter)
//!   and the [`CommandBook`](cadre_cluster::agent::commands::CommandBook)).
//! - [`chain`]: the event handler chain: [`ChainHandler`], [`AgentEvent`], [`Flow`].
//! - `handlers.rs`: the built-in handlers (audit log, fault reporter, status, commands).
//! - `load.rs`: the host's and the process's CPU and memory (`sysinfo`).
//! - This file: the client side, for any node, the CLI or a test: [`statuses`],
//!   [`issue`] and [`wait_result`].
//!
//! # Keys
//! ```text
//! nodes/{node}/status          StatusRecord, bound to the node's lease
//! nodes/{node}/commands/{id}   a command for that node, deleted once its result is recorded
//! nodes/{node}/results/{id}    its result (kept: it is what keeps its command from running again)
//! commands/all/{id}            a command for every node (kept; each writes its own result)
//! ```
//! Values are MessagePack maps ([`cadre_cluster::agent::encode`]).
//!
//! # Guarantees
//! - **Status.** Written every `status_period_ms` (1 s) under a lease of `status_ttl_ms` (5 s)
//!   granted in the node's shard; a node killed with SIGKILL has no status a TTL after its
//!   last report; a graceful stop writes `stopping`, then revokes the lease (its status goes
//!   at once). With no store reachable the agent keeps its state, retries with a backoff up to
//!   10 s, and logs once per change of reachability.
//! - **Commands** run at most once per node, never after their deadline, and none is missed
//!   across agent restarts or store leader changes (see
//!   [`commands`](cadre_cluster::agent::commands)): the agent lists, then watches from the
//!   revision after its listing, and claims each command (a create-only write of a `running`
//!   result) before it runs it. A command the agent was running when it died is recorded
//!   `interrupted`, not run again.
//! - **Chain.** See [`chain`]: fixed order, panic isolation, escalation.
//!
//! # Run states
//! `starting` until the agent has listed its commands, then `normal`; `faulty` while a part of
//! the node that escalated has not started again; `stopping` in the last record of a graceful
//! stop. (`draining` arrives with graceful drain.)
//!
//! # Commands
//! | command | arguments | effect |
//! |---|---|---|
//! | `ping` | — | answers `pong` |
//! | `log-level` | `FILTER` | applies a tracing filter live (a node whose program installed a [`LogControl`]) |
//! | `scale-workers` | `N` | resizes the task-worker pool (held tasks are finished first, none lost) |
//! | `restart-actor` | `PATH` | kills the actor at `PATH` in the node's tree (`node/view`); its supervisor restarts it |
//! | `drain` | — | not yet available: answered with an error |
//! | `stop` | — | records the result, writes `stopping`, revokes the lease, leaves the cluster; `cadre node` exits 0 |
//! | anything else | any | for a user's chain handler; without one, an error result naming it |
//!
//! # Load figures
//! CPU and memory come from `sysinfo`; message rates, remote ask round trips (p50 and p99,
//! within 25 %) and actors alive from the runtime's counters ([`cadre_runtime::stats`]),
//! over the time since the previous record. They are the process's: nodes sharing one process
//! (a test) share them. The deepest mailbox is not measured yet (`None`).

mod actor;
pub mod chain;
mod handlers;
mod load;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cadre_cluster::agent::{
    self as records, Command, CommandKind, CommandResult, StatusRecord, RECORD_VERSION,
};
use cadre_cluster::store::{PutRequest, RangeRequest, Request, WatchUpdate};

pub(crate) use actor::{Agent, Farewell, GetState, FAREWELL};
pub use chain::{AgentEvent, ChainCx, ChainHandler, Flow, HandlerFactory};

use crate::node::ClusterNode;
use crate::store::{Kv, KvError};
use crate::tasks::TaskWorkers;

/// Applies a tracing filter (as `RUST_LOG`) to the node's logs. The program that installed
/// the tracing subscriber provides it (`cadre node` does, with a reloadable filter).
pub type LogControl = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The agent's settings.
#[derive(Clone, Debug)]
pub(crate) struct AgentConfig {
    pub(crate) period: Duration,
    pub(crate) ttl: Duration,
    pub(crate) cluster: String,
    pub(crate) roles: Vec<String>,
    pub(crate) shards: u16,
}

/// What the agent works with.
#[derive(Clone)]
pub(crate) struct AgentDeps {
    pub(crate) node: ClusterNode,
    pub(crate) runtime: cadre_runtime::Runtime,
    pub(crate) workers: Option<TaskWorkers>,
    pub(crate) log: Option<LogControl>,
    pub(crate) handlers: Vec<HandlerFactory>,
    pub(crate) config: AgentConfig,
}

/// Which nodes a command is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One node, by name.
    Node(String),
    /// Every node (each writes its own result).
    All,
}

/// Why a command could not be issued or its result read.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The store did not take the command or answer: see the cause.
    #[error(transparent)]
    Store(#[from] KvError),
    /// No final result within the time given (the command may still run, until its deadline).
    #[error("no result from node `{node}` within {waited:?} (is the node up? `cadre status` lists the nodes that report)")]
    Timeout {
        /// The node.
        node: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// A record in the store did not decode.
    #[error("an unreadable record at `{key}`: {reason}")]
    Malformed {
        /// Its key.
        key: String,
        /// What did not fit.
        reason: String,
    },
}

/// The wall clock in milliseconds since the epoch, as the agent's records take it (0 before
/// the epoch).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Every node's status record, by node name.
///
/// # Errors
/// [`CommandError::Store`] when the store does not answer; a record that does not decode is
/// [`CommandError::Malformed`].
pub async fn statuses(kv: &Kv) -> Result<Vec<StatusRecord>, CommandError> {
    let range = RangeRequest {
        key: records::NODES_PREFIX.as_bytes().to_vec(),
        prefix: true,
        ..RangeRequest::default()
    };
    let mut out = Vec::new();
    for kv in kv.range(range, false).await?.kvs {
        if records::node_of_status_key(&kv.key).is_none() {
            continue;
        }
        let record = records::decode(&kv.value).map_err(|e| CommandError::Malformed {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            reason: e.to_string(),
        })?;
        out.push(record);
    }
    out.sort_by(|a: &StatusRecord, b| a.node.cmp(&b.node));
    Ok(out)
}

/// Writes a command for `target`, to be run before `deadline` from now; returns it (with its
/// fresh id).
///
/// # Errors
/// [`CommandError::Store`] when the store did not take it.
pub async fn issue(
    kv: &Kv,
    target: &Target,
    kind: CommandKind,
    deadline: Duration,
    issuer: &str,
) -> Result<Command, CommandError> {
    let now = now_ms();
    let command = Command {
        version: RECORD_VERSION,
        id: format!("{now:013}-{:016x}", fastrand::u64(..)),
        kind,
        issued_ms: now,
        deadline_ms: now + deadline.as_millis() as u64,
        issuer: issuer.into(),
    };
    let key = match target {
        Target::Node(node) => records::command_key(node, &command.id),
        Target::All => records::all_command_key(&command.id),
    };
    let value = records::encode(&command).map_err(|e| CommandError::Malformed {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    let put = PutRequest {
        key: key.into_bytes(),
        value,
        lease: None,
        prev_kv: false,
    };
    kv.write(Request::Put(put)).await?;
    Ok(command)
}

/// Waits (at most `timeout`) for node `node`'s final result of command `id`: reads it, and
/// watches its key until it is final.
///
/// # Errors
/// [`CommandError::Timeout`] when no final result came in time; store errors.
pub async fn wait_result(
    kv: &Kv,
    node: &str,
    id: &str,
    timeout: Duration,
) -> Result<CommandResult, CommandError> {
    let key = records::result_key(node, id);
    let decode = |value: &[u8]| {
        records::decode::<CommandResult>(value).map_err(|e| CommandError::Malformed {
            key: key.clone(),
            reason: e.to_string(),
        })
    };
    let wait = async {
        let range = RangeRequest {
            key: key.clone().into_bytes(),
            ..RangeRequest::default()
        };
        let now = kv.range(range, false).await?;
        if let Some(found) = now.kvs.first() {
            let result = decode(&found.value)?;
            if result.state.is_final() {
                return Ok(result);
            }
        }
        let mut watch = kv.watch(key.as_bytes(), now.revision + 1).await?;
        while let Some(update) = watch.next().await {
            let WatchUpdate::Changes { events, .. } = update.update else {
                continue;
            };
            for event in events {
                if event.kind == cadre_cluster::store::EventKind::Put {
                    let result = decode(&event.kv.value)?;
                    if result.state.is_final() {
                        return Ok(result);
                    }
                }
            }
        }
        Err(CommandError::Store(KvError::Unavailable(
            "the watch of the result ended".into(),
        )))
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result,
        Err(_) => Err(CommandError::Timeout {
            node: node.into(),
            waited: timeout,
        }),
    }
}
