//! The chain's built-in handlers: the audit log, the fault reporter, the status handler and
//! the command executor.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cadre_cluster::agent::{CommandKind, RunState};
use cadre_runtime::{EventKind, SupervisorRef};
use parking_lot::Mutex;

use super::chain::{AgentEvent, ChainCx, ChainHandler, Flow};
use super::LogControl;
use crate::node::view::ClusterEvent;
use crate::tasks::TaskWorkers;

/// Logs every event: commands, results, state changes and faults at `info` or `warn`, the rest
/// at `debug`. Always passes.
pub(crate) struct AuditLog;

impl ChainHandler for AuditLog {
    fn name(&self) -> &str {
        "audit"
    }

    fn handle(&mut self, event: &AgentEvent, _: &mut ChainCx) -> Flow {
        match event {
            AgentEvent::Command(c) => tracing::info!(
                id = %c.id, command = %c.kind.name(), issuer = %c.issuer, "command received"
            ),
            AgentEvent::CommandDone(r) => tracing::info!(
                id = %r.id, command = %r.command, state = r.state.as_str(), message = %r.message,
                "command result recorded"
            ),
            AgentEvent::StateChanged(s) => tracing::info!(state = s.as_str(), "run state"),
            AgentEvent::Supervision(e) => match &e.kind {
                EventKind::Escalated { reason } => {
                    tracing::warn!(supervisor = %e.supervisor, child = %e.child, %reason, "escalation")
                }
                _ => tracing::debug!(child = %e.path(), kind = ?e.kind, "supervision event"),
            },
            AgentEvent::Cluster(ClusterEvent::MemberDown { name, addr }) => {
                tracing::warn!(member = %name, %addr, "member down")
            }
            AgentEvent::Cluster(e) => tracing::debug!(event = ?e, "cluster event"),
            AgentEvent::StoreReachability(_) => {} // the agent logs it once per change
        }
        Flow::Pass
    }
}

/// Marks the node `faulty` when an escalation reaches one of its supervisors' parents (a part
/// of the node failed for good and was restarted whole), and `normal` again once every part
/// that failed has started again. Always passes.
#[derive(Default)]
pub(crate) struct FaultReporter {
    /// Paths of the supervisors that escalated and have not started again.
    failed: BTreeSet<String>,
}

impl ChainHandler for FaultReporter {
    fn name(&self) -> &str {
        "fault"
    }

    fn handle(&mut self, event: &AgentEvent, cx: &mut ChainCx) -> Flow {
        let AgentEvent::Supervision(e) = event else {
            return Flow::Pass;
        };
        match &e.kind {
            EventKind::Escalated { .. } => {
                // `supervisor` is the one that gave up; its parent restarts it (or escalates).
                self.failed.insert(e.supervisor.to_string());
                cx.set_state(RunState::Faulty);
            }
            EventKind::Started { .. }
                if self.failed.remove(&e.path()) && self.failed.is_empty() =>
            {
                cx.set_state(RunState::Normal);
            }
            _ => {}
        }
        Flow::Pass
    }
}

/// What the status handler counts, read by the agent for each report.
#[derive(Debug, Default)]
pub(crate) struct Board {
    /// When each restart of the last minute was decided.
    restarts: VecDeque<Instant>,
}

/// The window of [`Board::restarts_within`].
pub(crate) const RESTART_WINDOW: Duration = Duration::from_secs(60);

impl Board {
    /// Restarts decided within the last [`RESTART_WINDOW`] before `now`.
    pub(crate) fn restarts_within(&mut self, now: Instant) -> u64 {
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RESTART_WINDOW)
        {
            self.restarts.pop_front();
        }
        self.restarts.len() as u64
    }
}

/// Counts the node's restarts for its status record. Always passes.
pub(crate) struct StatusHandler {
    pub(crate) board: Arc<Mutex<Board>>,
}

impl ChainHandler for StatusHandler {
    fn name(&self) -> &str {
        "status"
    }

    fn handle(&mut self, event: &AgentEvent, _: &mut ChainCx) -> Flow {
        if let AgentEvent::Supervision(e) = event {
            if matches!(e.kind, EventKind::Restarting { .. }) {
                self.board.lock().restarts.push_back(Instant::now());
            }
        }
        Flow::Pass
    }
}

/// Carries out the built-in commands; answers any other command with an error naming it. The
/// last handler of the chain.
pub(crate) struct CommandExecutor {
    pub(crate) root: SupervisorRef,
    pub(crate) workers: Option<TaskWorkers>,
    pub(crate) log: Option<LogControl>,
}

/// How long a restart or a resize may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl ChainHandler for CommandExecutor {
    fn name(&self) -> &str {
        "commands"
    }

    fn handle(&mut self, event: &AgentEvent, cx: &mut ChainCx) -> Flow {
        let AgentEvent::Command(command) = event else {
            return Flow::Pass;
        };
        if cx.answered() {
            return Flow::Stop;
        }
        match &command.kind {
            CommandKind::Ping => cx.reply(Ok("pong".into())),
            CommandKind::LogLevel { filter } => cx.reply(match &self.log {
                Some(apply) => apply(filter).map(|()| format!("log filter is now `{filter}`")),
                None => Err(
                    "this node's logging cannot be changed at run time (its program \
                             installed no log control)"
                        .into(),
                ),
            }),
            CommandKind::ScaleWorkers { workers: n } => match self.workers.clone() {
                Some(workers) => {
                    let n = *n;
                    cx.reply_later(async move {
                        workers
                            .resize(n)
                            .await
                            .map_err(|e| format!("resize to {n} workers failed: {e}"))?;
                        Ok(format!("{} workers", workers.size().await))
                    })
                }
                None => cx.reply(Err(
                    "this node runs no task workers (start it with `--roles worker`)".into(),
                )),
            },
            CommandKind::RestartActor { path } => {
                let root = self.root.clone();
                let below = path
                    .strip_prefix(&format!("{}/", root.path()))
                    .unwrap_or(path)
                    .to_owned();
                let path = path.clone();
                cx.reply_later(async move {
                    let generation = root
                        .restart_child(&below, COMMAND_TIMEOUT)
                        .await
                        .map_err(|e| format!("cannot restart `{path}`: {e}"))?;
                    Ok(format!(
                        "`{path}` generation {generation} killed; its supervisor restarts it"
                    ))
                })
            }
            CommandKind::Stop => {
                cx.reply(Ok("stopping: the node leaves the cluster and exits".into()))
            }
            CommandKind::Drain => cx.reply(Err(
                "drain is not available in this version of cadre: use `stop` (a graceful leave)"
                    .into(),
            )),
            CommandKind::Custom { name, .. } => cx.reply(Err(format!(
                "unknown command `{name}`: no handler in this node's chain takes it \
                 (built in: ping, log-level, scale-workers, restart-actor, drain, stop)"
            ))),
        }
        Flow::Stop
    }
}
