//! The master's scheduler: which task goes where, what happens when an attempt is lost, and
//! the one outcome each task gets.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::{Assignment, Outcome, Report, TaskId, TaskPolicy};

/// The scheduler's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most tasks in one batch to a node.
    pub batch_max: usize,
    /// How long a queued task waits for a node that can run its kind (after every such node
    /// went away) before it fails with [`Final::NoWorker`].
    pub no_worker_timeout: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            batch_max: 256,
            no_worker_timeout: Duration::from_secs(30),
        }
    }
}

/// A task as submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Its kind.
    pub kind: String,
    /// Its input, MessagePack.
    pub input: Vec<u8>,
    /// How it is retried and watched.
    pub policy: TaskPolicy,
}

/// Why a task was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// No known worker node runs this kind.
    #[error("no worker runs tasks of kind `{0}`")]
    NoWorker(String),
    /// The id is already in use.
    #[error("task {0} is already submitted")]
    Duplicate(TaskId),
}

/// A task's final outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Final {
    /// The output (MessagePack).
    Ok(Vec<u8>),
    /// The handler returned an error, and the policy allowed no (further) retry.
    Failed {
        /// The last error.
        error: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Its attempts killed this many workers; it is not run again.
    Poison {
        /// Workers killed.
        kills: u32,
        /// What happened to the last one.
        last: String,
    },
    /// Cancelled by the caller.
    Cancelled,
    /// No node could run its kind for the configured time.
    NoWorker(String),
    /// A worker could not decode its input.
    BadInput(String),
}

/// What the master must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send these attempts to `node` in one message, numbered `seq` for that node.
    Dispatch {
        /// The node.
        node: String,
        /// The batch's number (per node, from 1).
        seq: u64,
        /// The attempts.
        assignments: Vec<Assignment>,
    },
    /// Tell `node` to drop these tasks if it has not started them.
    Cancel {
        /// The node.
        node: String,
        /// The tasks.
        ids: Vec<TaskId>,
    },
    /// The task's final outcome: given exactly once per task.
    Done {
        /// The task.
        id: TaskId,
        /// The node whose report decided it (none for cancel, poison after a loss, no worker).
        node: Option<String>,
        /// Attempts dispatched.
        attempts: u32,
        /// The outcome.
        outcome: Final,
    },
}

/// Counts of the master's tasks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Tasks submitted.
    pub total: u64,
    /// Finished with an output.
    pub done: u64,
    /// Finished without one (failed, poison, cancelled, no worker, bad input).
    pub failed: u64,
    /// Waiting for a retry after an error (backoff).
    pub retrying: u64,
    /// Held by a node.
    pub running: u64,
    /// Waiting for a node.
    pub queued: u64,
    /// Attempts run again after a loss, a crash or an error.
    pub retries: u64,
    /// Reports of superseded attempts, dropped.
    pub stale_reports: u64,
}

/// What one node did for this master.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Tasks whose final output came from it.
    pub completed: u64,
    /// Attempts it lost (down, lease ran out, worker died).
    pub lost: u64,
    /// Whether it is still up.
    pub up: bool,
}

#[derive(Debug)]
enum Phase {
    Queued,
    Backoff,
    Running { node: String, deadline: Instant },
}

#[derive(Debug)]
struct Entry {
    task: Task,
    attempt: u32,
    kills: u32,
    failures: u32,
    phase: Phase,
}

#[derive(Debug, Default)]
struct NodeState {
    kinds: HashSet<String>,
    capacity: u32,
    /// Attempts sent and not yet reported, with the batch that carried them.
    held: HashMap<(TaskId, u32), u64>,
    /// The last batch number sent.
    seq: u64,
    /// The node's incarnation, from its heartbeats.
    incarnation: Option<u64>,
}

impl NodeState {
    fn credit(&self) -> usize {
        (self.capacity as usize).saturating_sub(self.held.len())
    }
}

/// The master's scheduler (see the [module docs](super)).
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    rng: fastrand::Rng,
    tasks: HashMap<TaskId, Entry>,
    /// Queued tasks by kind, oldest (or retried) first.
    queues: BTreeMap<String, VecDeque<TaskId>>,
    /// Tasks waiting for a retry, by when.
    backoff: BTreeSet<(Instant, TaskId)>,
    nodes: BTreeMap<String, NodeState>,
    /// Kinds with queued tasks and no node, since when.
    orphaned: HashMap<String, Instant>,
    stats: BTreeMap<String, NodeStats>,
    progress: Progress,
    effects: Vec<Effect>,
    /// While a directory lookup is out ([`Scheduler::lookup_started`]): the nodes an event
    /// changed since, whose state the lookup's answer must not undo.
    since_lookup: Option<BTreeSet<String>>,
}

impl Scheduler {
    /// A scheduler with nothing to do; `seed` drives the retry jitter.
    pub fn new(config: SchedulerConfig, seed: u64) -> Self {
        Scheduler {
            config,
            rng: fastrand::Rng::with_seed(seed),
            tasks: HashMap::new(),
            queues: BTreeMap::new(),
            backoff: BTreeSet::new(),
            nodes: BTreeMap::new(),
            orphaned: HashMap::new(),
            stats: BTreeMap::new(),
            progress: Progress::default(),
            effects: Vec::new(),
            since_lookup: None,
        }
    }

    /// The effects produced since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The counts.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// What each node did, by node.
    pub fn node_stats(&self) -> &BTreeMap<String, NodeStats> {
        &self.stats
    }

    /// Whether some node that is up runs `kind`.
    pub fn can_run(&self, kind: &str) -> bool {
        self.nodes.values().any(|n| n.kinds.contains(kind))
    }

    /// The number of nodes that are up and run `kind`.
    pub fn nodes_for(&self, kind: &str) -> usize {
        self.nodes
            .values()
            .filter(|n| n.kinds.contains(kind))
            .count()
    }

    /// Accepts a task; it is queued until [`Scheduler::pump`] sends it.
    ///
    /// # Errors
    /// No node runs its kind, or the id is taken.
    pub fn submit(&mut self, id: TaskId, task: Task) -> Result<(), SubmitError> {
        if !self.can_run(&task.kind) {
            return Err(SubmitError::NoWorker(task.kind));
        }
        if self.tasks.contains_key(&id) {
            return Err(SubmitError::Duplicate(id));
        }
        self.queues
            .entry(task.kind.clone())
            .or_default()
            .push_back(id);
        self.tasks.insert(
            id,
            Entry {
                task,
                attempt: 0,
                kills: 0,
                failures: 0,
                phase: Phase::Queued,
            },
        );
        self.progress.total += 1;
        self.progress.queued += 1;
        Ok(())
    }

    /// Cancels a task that has no outcome yet (else does nothing).
    pub fn cancel(&mut self, id: TaskId) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        match &entry.phase {
            Phase::Queued => {
                if let Some(q) = self.queues.get_mut(&entry.task.kind) {
                    q.retain(|t| *t != id);
                }
            }
            Phase::Backoff => self.backoff.retain(|(_, t)| *t != id),
            Phase::Running { node, .. } => self.effects.push(Effect::Cancel {
                node: node.clone(),
                ids: vec![id],
            }),
        }
        self.finish(id, None, Final::Cancelled);
    }

    /// A lookup of the nodes that run tasks was sent to the directory; its answer comes to
    /// [`Scheduler::looked_up`]. Events subscribed to before the lookup was sent and applied
    /// meanwhile ([`Scheduler::node_up`], [`Scheduler::node_down`]) may be newer than the
    /// answer (a node that went down after the directory answered is still in it): the answer
    /// leaves the nodes they changed as they are.
    pub fn lookup_started(&mut self) {
        self.since_lookup = Some(BTreeSet::new());
    }

    /// The directory's answer to the last lookup: each node that runs tasks, with its kinds
    /// and capacity. A node an event changed since the lookup was sent keeps what the event
    /// made of it.
    pub fn looked_up(&mut self, nodes: Vec<(String, Vec<String>, u32)>) {
        let changed = self.since_lookup.take().unwrap_or_default();
        for (node, kinds, capacity) in nodes {
            if !changed.contains(&node) {
                self.node_up(&node, kinds, capacity);
            }
        }
    }

    /// Notes that an event changed `node` while a lookup is out.
    fn changed(&mut self, node: &str) {
        if let Some(changed) = &mut self.since_lookup {
            changed.insert(node.to_string());
        }
    }

    /// A node is up (or changed what it offers).
    pub fn node_up(&mut self, node: &str, kinds: Vec<String>, capacity: u32) {
        self.changed(node);
        let state = self.nodes.entry(node.to_string()).or_default();
        state.kinds = kinds.into_iter().collect();
        state.capacity = capacity;
        self.stats.entry(node.to_string()).or_default().up = true;
        let kinds: Vec<String> = state.kinds.iter().cloned().collect();
        for kind in kinds {
            self.orphaned.remove(&kind);
        }
    }

    /// A node is down or left: every attempt it held is lost and runs again elsewhere.
    pub fn node_down(&mut self, node: &str) {
        self.changed(node);
        let Some(state) = self.nodes.remove(node) else {
            return;
        };
        if let Some(stats) = self.stats.get_mut(node) {
            stats.up = false;
        }
        let mut held: Vec<(TaskId, u32)> = state.held.into_keys().collect();
        // Requeued at the front, last first: they keep their order.
        held.sort_unstable_by(|a, b| b.cmp(a));
        for (id, attempt) in held {
            self.lose(id, attempt, node, "its node went down", true);
        }
    }

    /// A node's batch of reports; `capacity` is what it holds at most from now on.
    pub fn reports(&mut self, node: &str, capacity: u32, reports: Vec<Report>, now: Instant) {
        if let Some(state) = self.nodes.get_mut(node) {
            state.capacity = capacity;
        }
        for report in reports {
            self.report(node, report, now);
        }
    }

    /// A node's heartbeat: the attempts it holds for this master (queued or running within
    /// their lease), the last batch it received, and its incarnation (it changes when the
    /// node's task actor restarts and forgets what it held).
    pub fn heartbeat(
        &mut self,
        node: &str,
        capacity: u32,
        incarnation: u64,
        seen_seq: u64,
        holds: &[(TaskId, u32)],
        now: Instant,
    ) {
        let Some(state) = self.nodes.get_mut(node) else {
            return;
        };
        state.capacity = capacity;
        let restarted = state.incarnation.is_some_and(|i| i != incarnation);
        state.incarnation = Some(incarnation);
        let holds: HashSet<(TaskId, u32)> = holds.iter().copied().collect();
        // Attempts from batches the node has seen but does not hold were lost on the way (or
        // with a restart of its task actor): free their credit and run them again.
        let mut gone: Vec<(TaskId, u32)> = state
            .held
            .iter()
            .filter(|(key, seq)| restarted || (**seq <= seen_seq && !holds.contains(key)))
            .map(|(key, _)| *key)
            .collect();
        gone.sort_unstable_by(|a, b| b.cmp(a));
        for key in &gone {
            state.held.remove(key);
        }
        for (id, attempt) in gone {
            self.lose(id, attempt, node, "its node no longer holds it", restarted);
        }
        for (id, attempt) in holds {
            if let Some(Entry {
                attempt: a,
                phase: Phase::Running { node: n, deadline },
                task,
                ..
            }) = self.tasks.get_mut(&id)
            {
                if *a == attempt && n == node {
                    *deadline = now + task.policy.lease;
                }
            }
        }
    }

    /// A batch that could not be sent: its attempts go back to the queue, no harm done.
    pub fn not_sent(&mut self, node: &str, assignments: &[Assignment]) {
        for a in assignments.iter().rev() {
            if let Some(state) = self.nodes.get_mut(node) {
                state.held.remove(&(a.id, a.attempt));
            }
            let current = self.tasks.get(&a.id).is_some_and(|entry| {
                entry.attempt == a.attempt && matches!(entry.phase, Phase::Running { .. })
            });
            if current {
                self.requeue(a.id);
            }
        }
    }

    /// Timers: leases that ran out, retries that are due, kinds left without nodes.
    pub fn tick(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (node, state) in &self.nodes {
            for &(id, attempt) in state.held.keys() {
                if let Some(Entry {
                    attempt: a,
                    phase: Phase::Running { deadline, .. },
                    ..
                }) = self.tasks.get(&id)
                {
                    if *a == attempt && *deadline <= now {
                        expired.push((node.clone(), id, attempt));
                    }
                }
            }
        }
        expired.sort_unstable_by(|a, b| b.cmp(a));
        for (node, id, attempt) in expired {
            // The attempt keeps its place in the node's credit: the worker may still be busy
            // with it, and no node takes more than it can hold.
            self.lose(id, attempt, &node, "its lease ran out", true);
        }
        while let Some(&(at, id)) = self.backoff.first() {
            if at > now {
                break;
            }
            self.backoff.pop_first();
            if self.tasks.contains_key(&id) {
                self.requeue(id);
            }
        }
        let stranded: Vec<String> = self
            .queues
            .iter()
            .filter(|(kind, q)| !q.is_empty() && !self.can_run(kind))
            .map(|(kind, _)| kind.clone())
            .collect();
        for kind in stranded {
            let since = *self.orphaned.entry(kind.clone()).or_insert(now);
            if now.duration_since(since) >= self.config.no_worker_timeout {
                self.orphaned.remove(&kind);
                let ids: Vec<TaskId> = self.queues.remove(&kind).map(Vec::from).unwrap_or_default();
                for id in ids {
                    self.finish(id, None, Final::NoWorker(kind.clone()));
                }
            }
        }
    }

    /// Sends queued tasks to nodes with free credit, the freest first. Full batches go at
    /// once, and so does anything for a node holding nothing from this master; with `partial`,
    /// smaller batches go too (the caller flushes after its batching delay).
    pub fn pump(&mut self, now: Instant, partial: bool) {
        let mut credit: BTreeMap<&str, usize> = self
            .nodes
            .iter()
            .map(|(n, s)| (n.as_str(), s.credit()))
            .filter(|(_, c)| *c > 0)
            .collect();
        let mut plan: BTreeMap<String, Vec<TaskId>> = BTreeMap::new();
        for (kind, queue) in &mut self.queues {
            while !queue.is_empty() {
                let best = credit
                    .iter()
                    .filter(|(n, c)| **c > 0 && self.nodes[**n].kinds.contains(kind))
                    .max_by_key(|(_, c)| **c)
                    .map(|(n, _)| *n);
                let Some(node) = best else { break };
                let id = queue.pop_front().expect("not empty");
                *credit.get_mut(node).expect("has credit") -= 1;
                plan.entry(node.to_string()).or_default().push(id);
            }
        }
        for (node, ids) in plan {
            let batch = self.config.batch_max.max(1);
            // A node with nothing in hand from us gets what there is at once (nothing to batch
            // with: waiting would only add latency); a busy one gets full batches, and the
            // rest when its reports come back or the batching delay runs out.
            let idle = self.nodes[&node].held.is_empty();
            let send = if partial || idle {
                ids.len()
            } else {
                ids.len() / batch * batch
            };
            for id in ids[send..].iter().rev() {
                let kind = &self.tasks[id].task.kind;
                self.queues.get_mut(kind).expect("queued").push_front(*id);
            }
            for chunk in ids[..send].chunks(batch) {
                self.dispatch(&node, chunk, now);
            }
        }
    }

    fn dispatch(&mut self, node: &str, ids: &[TaskId], now: Instant) {
        let state = self.nodes.get_mut(node).expect("planned on a known node");
        state.seq += 1;
        let seq = state.seq;
        let mut assignments = Vec::with_capacity(ids.len());
        for &id in ids {
            let entry = self.tasks.get_mut(&id).expect("queued task exists");
            entry.attempt += 1;
            if entry.attempt > 1 {
                self.progress.retries += 1;
            }
            entry.phase = Phase::Running {
                node: node.to_string(),
                deadline: now + entry.task.policy.lease,
            };
            state.held.insert((id, entry.attempt), seq);
            assignments.push(Assignment {
                id,
                attempt: entry.attempt,
                kind: entry.task.kind.clone(),
                input: entry.task.input.clone(),
                lease_ms: entry.task.policy.lease.as_millis() as u64,
            });
        }
        self.progress.queued -= ids.len() as u64;
        self.progress.running += ids.len() as u64;
        self.effects.push(Effect::Dispatch {
            node: node.to_string(),
            seq,
            assignments,
        });
    }

    fn report(&mut self, node: &str, report: Report, now: Instant) {
        let Report {
            id,
            attempt,
            outcome,
        } = report;
        if let Some(state) = self.nodes.get_mut(node) {
            state.held.remove(&(id, attempt));
        }
        let current = match self.tasks.get(&id) {
            Some(Entry {
                attempt: a,
                phase: Phase::Running { node: n, .. },
                ..
            }) => *a == attempt && n == node,
            _ => false,
        };
        if !current {
            self.progress.stale_reports += 1;
            return;
        }
        match outcome {
            Outcome::Ok(output) => self.finish(id, Some(node), Final::Ok(output)),
            Outcome::Failed(error) => {
                let entry = self.tasks.get_mut(&id).expect("current");
                entry.failures += 1;
                if entry.failures > entry.task.policy.max_retries {
                    let attempts = entry.attempt;
                    self.finish(id, Some(node), Final::Failed { error, attempts });
                } else {
                    let delay = entry.task.policy.backoff(entry.failures, self.rng.f64());
                    entry.phase = Phase::Backoff;
                    self.progress.running -= 1;
                    self.progress.retrying += 1;
                    self.backoff.insert((now + delay, id));
                }
            }
            Outcome::Crashed(why) => self.lose(id, attempt, node, &why, true),
            Outcome::BadInput(e) => self.finish(id, Some(node), Final::BadInput(e)),
            Outcome::Cancelled => self.finish(id, Some(node), Final::Cancelled),
            Outcome::UnknownKind => {
                let kind = self.tasks[&id].task.kind.clone();
                if let Some(state) = self.nodes.get_mut(node) {
                    state.kinds.remove(&kind);
                }
                self.requeue(id);
            }
            Outcome::Refused => self.requeue(id),
        }
    }

    /// The current attempt of `id` on `node` is lost: run it again, or fail it as poison.
    fn lose(&mut self, id: TaskId, attempt: u32, node: &str, why: &str, kill: bool) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        let current = entry.attempt == attempt
            && matches!(&entry.phase, Phase::Running { node: n, .. } if n == node);
        if !current {
            return;
        }
        self.stats.entry(node.to_string()).or_default().lost += 1;
        if kill {
            entry.kills += 1;
            if entry.kills >= entry.task.policy.poison_kills {
                let kills = entry.kills;
                let last = format!("attempt {attempt} on {node}: {why}");
                self.finish(id, None, Final::Poison { kills, last });
                return;
            }
        }
        self.requeue(id);
    }

    /// Puts a running or backing-off task at the front of its kind's queue.
    fn requeue(&mut self, id: TaskId) {
        let entry = self.tasks.get_mut(&id).expect("requeued task exists");
        match std::mem::replace(&mut entry.phase, Phase::Queued) {
            Phase::Running { .. } => self.progress.running -= 1,
            Phase::Backoff => self.progress.retrying -= 1,
            Phase::Queued => self.progress.queued -= 1,
        }
        self.progress.queued += 1;
        self.queues
            .entry(entry.task.kind.clone())
            .or_default()
            .push_front(id);
    }

    fn finish(&mut self, id: TaskId, node: Option<&str>, outcome: Final) {
        let Some(entry) = self.tasks.remove(&id) else {
            return;
        };
        match entry.phase {
            Phase::Queued => self.progress.queued -= 1,
            Phase::Backoff => self.progress.retrying -= 1,
            Phase::Running { .. } => self.progress.running -= 1,
        }
        if matches!(outcome, Final::Ok(_)) {
            self.progress.done += 1;
            if let Some(node) = node {
                self.stats.entry(node.to_string()).or_default().completed += 1;
            }
        } else {
            self.progress.failed += 1;
        }
        self.effects.push(Effect::Done {
            id,
            node: node.map(str::to_string),
            attempts: entry.attempt,
            outcome,
        });
    }
}

#[cfg(test)]
mod tests;
