//! The node agent's records and rules: where a node's status, commands and results live in
//! the status store, what they hold, and the two pure cores the agent actor drives.
//!
//! # Key layout
//! Keys route to shards by their first two segments ([`routing`](crate::store::routing)), so
//! everything under `nodes/{node}/` lives in one shard with the node's lease:
//!
//! ```text
//! nodes/{node}/status          StatusRecord, bound to the node's lease: gone a TTL after a kill -9
//! nodes/{node}/commands/{id}   Command for that node (kind, args, deadline), deleted once done
//! nodes/{node}/results/{id}    CommandResult: running, then ok / failed / expired / interrupted
//! commands/all/{id}            Command for every node; each node writes its own result above
//! ```
//!
//! Records are MessagePack maps (field names included: [`encode`] / [`decode`]), so a newer
//! node can add fields that an older reader skips; every record carries a `version`.
//!
//! # Layout
//! - [`StatusRecord`], [`RunState`], [`Load`]: what a node reports.
//! - [`Command`], [`CommandKind`], [`CommandResult`], [`ResultState`]: a command and its result.
//! - [`commands`]: the at-most-once rule for commands ([`commands::CommandBook`]).
//! - [`reporter`]: when the status is written, the lease kept, and reachability logged
//!   ([`reporter::Reporter`]).

pub mod commands;
pub mod reporter;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The version of the records below; a reader accepts any version (unknown fields are
/// skipped, missing ones take their defaults).
pub const RECORD_VERSION: u16 = 1;

/// The prefix of every node's keys.
pub const NODES_PREFIX: &str = "nodes/";

/// The prefix of commands for every node.
pub const ALL_COMMANDS_PREFIX: &str = "commands/all/";

/// `nodes/{node}/status`.
pub fn status_key(node: &str) -> String {
    format!("nodes/{node}/status")
}

/// `nodes/{node}/commands/`: the prefix of a node's commands.
pub fn commands_prefix(node: &str) -> String {
    format!("nodes/{node}/commands/")
}

/// `nodes/{node}/commands/{id}`.
pub fn command_key(node: &str, id: &str) -> String {
    format!("nodes/{node}/commands/{id}")
}

/// `commands/all/{id}`.
pub fn all_command_key(id: &str) -> String {
    format!("{ALL_COMMANDS_PREFIX}{id}")
}

/// `nodes/{node}/results/`: the prefix of a node's command results.
pub fn results_prefix(node: &str) -> String {
    format!("nodes/{node}/results/")
}

/// `nodes/{node}/results/{id}`.
pub fn result_key(node: &str, id: &str) -> String {
    format!("nodes/{node}/results/{id}")
}

/// The node of a `nodes/{node}/status` key.
pub fn node_of_status_key(key: &[u8]) -> Option<&str> {
    let key = std::str::from_utf8(key).ok()?;
    key.strip_prefix(NODES_PREFIX)?.strip_suffix("/status")
}

/// The command id at the end of a command key (`…/commands/{id}` or `commands/all/{id}`).
pub fn id_of_command_key(key: &[u8]) -> Option<&str> {
    let key = std::str::from_utf8(key).ok()?;
    let id = key.rsplit('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// A record that could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record does not serialize (never for the types of this module).
    #[error("the record does not encode: {0}")]
    Encode(String),
    /// The bytes are not such a record: the message says what did not fit. Nothing of it is
    /// used; an agent records a command that does not decode as failed.
    #[error("{0}")]
    Decode(String),
}

/// Encodes a record as a MessagePack map (field names included).
///
/// # Errors
/// [`RecordError::Encode`] (never for the types of this module).
pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, RecordError> {
    rmp_serde::to_vec_named(record).map_err(|e| RecordError::Encode(e.to_string()))
}

/// Decodes a record written by [`encode`].
///
/// # Errors
/// [`RecordError::Decode`]: the bytes are not such a record.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, RecordError> {
    rmp_serde::from_slice(bytes).map_err(|e| RecordError::Decode(e.to_string()))
}

/// A command's words that do not make a command: the message gives its usage.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandParseError(pub String);

/// A node's run state, as its agent reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Started, not yet serving (its first report).
    #[default]
    Starting,
    /// Serving.
    Normal,
    /// Asked to drain: takes no new work.
    Draining,
    /// Stopping gracefully (its last report before its lease is revoked).
    Stopping,
    /// A fatal local failure (an escalation reached a part of the node).
    Faulty,
}

impl RunState {
    /// The state's name, as shown by `cadre status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Starting => "starting",
            RunState::Normal => "normal",
            RunState::Draining => "draining",
            RunState::Stopping => "stopping",
            RunState::Faulty => "faulty",
        }
    }
}

/// A node's load, measured over the last report period. `None`: not measured by the writer's
/// version of cadre.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Load {
    /// CPU used by the node's process, in % of one CPU (may exceed 100 on several).
    pub process_cpu_percent: f32,
    /// CPU used on the host, in % of all its CPUs.
    pub host_cpu_percent: f32,
    /// The process's resident memory, in bytes.
    pub rss_bytes: u64,
    /// Memory available on the host, in bytes.
    pub host_available_bytes: u64,
    /// Messages per second handled by the node's actors, sent locally.
    pub local_msgs_per_sec: Option<f64>,
    /// Messages per second received over the network (tells and asks; replies are not counted).
    pub remote_in_per_sec: Option<f64>,
    /// Messages per second sent over the network (tells and asks).
    pub remote_out_per_sec: Option<f64>,
    /// Remote ask round trips over the period: median, in microseconds (none without asks).
    pub ask_p50_us: Option<u64>,
    /// Remote ask round trips over the period: 99th percentile, in microseconds.
    pub ask_p99_us: Option<u64>,
    /// The deepest mailbox among the node's supervised actors, in messages.
    pub deepest_mailbox: Option<u64>,
    /// Actors alive (supervised instances running).
    pub actors_alive: Option<u64>,
    /// Restarts by the node's supervisors over the last window (a minute).
    pub restarts_last_minute: u64,
    /// Task workers busy (holding a task).
    pub workers_busy: u64,
    /// Task workers idle.
    pub workers_idle: u64,
    /// Tasks queued or running on the node.
    pub tasks_held: u64,
}

/// What a node's agent reports to the store, under the node's lease, every period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusRecord {
    /// [`RECORD_VERSION`] of the writer.
    pub version: u16,
    /// The node's name.
    pub node: String,
    /// The node's incarnation: when this process started, in ms since the epoch (a node
    /// restarted under the same name has a new one).
    pub incarnation: u64,
    /// The cluster's name.
    pub cluster: String,
    /// The gossip (UDP) and transport (TCP) address.
    pub addr: Option<SocketAddr>,
    /// The admin HTTP address, if the node serves one.
    pub admin_addr: Option<SocketAddr>,
    /// Services the node offers, with their ports.
    pub services: Vec<(String, SocketAddr)>,
    /// Its roles.
    pub roles: Vec<String>,
    /// The host's name.
    pub hostname: String,
    /// The process id.
    pub pid: u32,
    /// The cadre version.
    pub cadre_version: String,
    /// The run state.
    pub state: RunState,
    /// Since when (ms since the epoch).
    pub state_since_ms: u64,
    /// When this record was written (ms since the epoch, the node's clock).
    pub reported_ms: u64,
    /// How long the node has been up, in ms.
    pub uptime_ms: u64,
    /// The report period, in ms (a reader can tell a stale record).
    pub period_ms: u64,
    /// Its load.
    pub load: Load,
}

impl StatusRecord {
    /// Whether the record is over three report periods old at `now_ms` (the reader's wall
    /// clock): the node stopped reporting, and its lease has not run out yet.
    pub fn is_stale(&self, now_ms: u64) -> bool {
        self.period_ms > 0 && now_ms.saturating_sub(self.reported_ms) > 3 * self.period_ms
    }
}

/// A management command, as written under a node's (or every node's) commands prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// [`RECORD_VERSION`] of the writer.
    #[serde(default)]
    pub version: u16,
    /// Its id: unique in the cluster (issuers draw it from the time and 64 random bits).
    pub id: String,
    /// What to do.
    pub kind: CommandKind,
    /// When it was issued (ms since the epoch, the issuer's clock).
    #[serde(default)]
    pub issued_ms: u64,
    /// Not run at or after this time (ms since the epoch, the agent's clock): its result is
    /// then `expired`.
    pub deadline_ms: u64,
    /// Who issued it (for the audit log).
    #[serde(default)]
    pub issuer: String,
}

/// What a command asks of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CommandKind {
    /// Answer `pong` (checks the command path end to end).
    Ping,
    /// Apply a tracing filter (as `RUST_LOG`) to the node's logs, live.
    LogLevel {
        /// The filter, e.g. `debug` or `info,cadre_actors::store=debug`.
        filter: String,
    },
    /// Resize the node's task-worker pool to `workers` (held tasks are not lost: a worker
    /// removed finishes what it holds first).
    ScaleWorkers {
        /// The new size.
        workers: usize,
    },
    /// Restart an actor through its supervisor (an abnormal exit, so its restart policy and
    /// the supervisor's intensity apply), by its path in the node's tree (`node/view`).
    RestartActor {
        /// The actor's path.
        path: String,
    },
    /// Drain the node: take no new work, finish what it holds, then leave.
    Drain,
    /// Stop the node gracefully (it writes `stopping`, revokes its lease, leaves, exits 0).
    Stop,
    /// A command of the user's own, for a handler in the node's chain.
    Custom {
        /// Its name.
        name: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

impl CommandKind {
    /// The command's name, as `cadre cmd` takes it.
    pub fn name(&self) -> &str {
        match self {
            CommandKind::Ping => "ping",
            CommandKind::LogLevel { .. } => "log-level",
            CommandKind::ScaleWorkers { .. } => "scale-workers",
            CommandKind::RestartActor { .. } => "restart-actor",
            CommandKind::Drain => "drain",
            CommandKind::Stop => "stop",
            CommandKind::Custom { name, .. } => name,
        }
    }

    /// Parses a command from its name and arguments, as `cadre cmd NODE NAME ARGS…` gives
    /// them. A name that is not built in is a [`CommandKind::Custom`] command (for a user's
    /// chain handler; a node without one answers that it does not know it).
    ///
    /// # Errors
    /// [`CommandParseError`]: a built-in command with missing, extra or malformed arguments;
    /// the message gives its usage.
    pub fn parse(name: &str, args: &[String]) -> Result<CommandKind, CommandParseError> {
        Self::parse_words(name, args).map_err(CommandParseError)
    }

    fn parse_words(name: &str, args: &[String]) -> Result<CommandKind, String> {
        let usage = |u: &str| format!("usage: {u}");
        let none = |kind: CommandKind| {
            if args.is_empty() {
                Ok(kind)
            } else {
                Err(format!("`{name}` takes no arguments (got {args:?})"))
            }
        };
        match name {
            "ping" => none(CommandKind::Ping),
            "drain" => none(CommandKind::Drain),
            "stop" => none(CommandKind::Stop),
            "log-level" => match args {
                [filter] if !filter.trim().is_empty() => Ok(CommandKind::LogLevel {
                    filter: filter.clone(),
                }),
                _ => Err(usage(
                    "log-level FILTER (e.g. `debug` or `info,cadre_actors=debug`)",
                )),
            },
            "scale-workers" | "scale" => match args {
                [n] => n
                    .parse()
                    .map(|workers| CommandKind::ScaleWorkers { workers })
                    .map_err(|_| format!("scale-workers: `{n}` is not a number of workers")),
                _ => Err(usage("scale-workers N")),
            },
            "restart-actor" => match args {
                [path] if !path.is_empty() => Ok(CommandKind::RestartActor { path: path.clone() }),
                _ => Err(usage("restart-actor PATH (e.g. node/view)")),
            },
            "" => Err("a command needs a name".into()),
            other => Ok(CommandKind::Custom {
                name: other.into(),
                args: args.to_vec(),
            }),
        }
    }
}

/// Where a command's result stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultState {
    /// Claimed by the agent and running (the claim is what keeps it from running twice).
    Running,
    /// Done.
    Ok,
    /// Done, with an error (or refused: malformed, unknown).
    Failed,
    /// Its deadline had passed when the agent saw it: not run.
    Expired,
    /// The agent restarted while it ran: whether it took effect is unknown; not run again.
    Interrupted,
}

impl ResultState {
    /// Whether the command is over (anything but [`ResultState::Running`]).
    pub fn is_final(self) -> bool {
        self != ResultState::Running
    }

    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultState::Running => "running",
            ResultState::Ok => "ok",
            ResultState::Failed => "failed",
            ResultState::Expired => "expired",
            ResultState::Interrupted => "interrupted",
        }
    }
}

/// A command's result, written by the agent at `nodes/{node}/results/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// [`RECORD_VERSION`] of the writer.
    #[serde(default)]
    pub version: u16,
    /// The command's id.
    pub id: String,
    /// The node that ran it.
    pub node: String,
    /// The command's name (empty when it did not decode).
    #[serde(default)]
    pub command: String,
    /// Where it stands.
    pub state: ResultState,
    /// What it did (`pong`, `4 workers`), or why it failed.
    #[serde(default)]
    pub message: String,
    /// When the agent saw it (ms since the epoch).
    #[serde(default)]
    pub received_ms: u64,
    /// When it finished (ms since the epoch; 0 while running).
    #[serde(default)]
    pub finished_ms: u64,
    /// The agent instance that claimed it (a token drawn at the agent's start): tells this
    /// agent's own claim from an earlier agent's.
    #[serde(default)]
    pub claimer: String,
}
