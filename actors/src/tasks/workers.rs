//! A worker node's side: the task actor (exposed as `cadre.tasks`) that takes batches from
//! masters, hands them to a pool of worker actors, and sends back reports and heartbeats.
//!
//! ```text
//! workers   (rest-for-one)
//! ├── pool  dynamic pool of TaskWorker, each running one batch at a time
//! └── tasks the node's task actor: queue, credit, reports, heartbeats, draining
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cadre_cluster::tasks::{Assignment, Outcome, Report};
use cadre_runtime::{
    ActorRef, ChildSpec, Intensity, PoolRef, PoolSpec, Strategy, SupervisorError, SupervisorSpec,
};
use tokio::sync::mpsc;

use super::messages::{CancelTasks, MasterAddr, RunBatch, TaskHeartbeat, TaskReports};
use super::registry::{Handler as TaskFn, TaskRegistry};
use crate::{Node, RemoteRef, RemoteTellError};

/// How a worker node runs tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Worker actors in the pool (default: the number of CPUs).
    pub workers: usize,
    /// Tasks one worker takes at a time (default 4); the node holds at most
    /// `workers × inflight`.
    pub inflight: usize,
    /// How often the node renews the leases of the tasks it holds (default 1 s; keep it well
    /// under the shortest lease).
    pub heartbeat: Duration,
    /// Most reports in one message to a master (default 256).
    pub result_batch: usize,
    /// How long a report may wait for others to share its message (default 1 ms; reports go
    /// at once when the node has nothing else to do).
    pub result_delay: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            inflight: 4,
            heartbeat: Duration::from_secs(1),
            result_batch: 256,
            result_delay: Duration::from_millis(1),
        }
    }
}

/// Why the workers could not be resized.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    /// The pool did not add a worker.
    #[error(transparent)]
    Pool(#[from] SupervisorError),
    /// The node's task actor did not answer.
    #[error("the task actor did not answer: {0}")]
    Unavailable(String),
}

/// A worker node's task workers: resize the pool, see what it holds.
#[derive(Clone)]
pub struct TaskWorkers {
    tasks: ActorRef<TaskNode>,
    pool: PoolRef<TaskWorker>,
}

impl std::fmt::Debug for TaskWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskWorkers").finish_non_exhaustive()
    }
}

const LOCAL: Duration = Duration::from_secs(5);

impl TaskWorkers {
    /// The workers supervisor for a node (`node`'s transport, the kinds of `registry`), to be
    /// started as a child of the node's root, and its handle.
    pub(crate) fn prepare(
        node: Node,
        registry: TaskRegistry,
        config: WorkerConfig,
    ) -> (TaskWorkers, SupervisorSpec) {
        let registry = Arc::new(registry);
        let worker = ChildSpec::new("worker", move || TaskWorker {
            registry: registry.clone(),
        });
        // A poison task kills a few workers before it is stopped; many of them at once must
        // not take the node down, so the pool tolerates many restarts.
        let pool = PoolSpec::new("pool", worker)
            .size(config.workers.max(1))
            .intensity(Intensity::new(1000, Duration::from_secs(10)));
        let pool_ref = pool.pool_ref();
        let p = pool_ref.clone();
        let tasks = ChildSpec::new("tasks", move || {
            TaskNode::new(node.clone(), p.clone(), config)
        })
        .mailbox(16 * 1024);
        let tasks_ref = tasks.actor_ref();
        let spec = SupervisorSpec::new("workers")
            .strategy(Strategy::RestForOne)
            .child(pool)
            .child(tasks);
        (
            TaskWorkers {
                tasks: tasks_ref,
                pool: pool_ref,
            },
            spec,
        )
    }

    pub(crate) fn actor(&self) -> ActorRef<TaskNode> {
        self.tasks.clone()
    }

    /// The workers in the pool (not counting those finishing their last tasks).
    pub async fn size(&self) -> usize {
        self.stats().await.map_or(0, |s| s.workers)
    }

    /// The workers in the pool and the tasks the node holds now (queued or running), from one
    /// question to the task actor.
    pub async fn usage(&self) -> Option<(usize, usize)> {
        self.stats().await.map(|s| (s.workers, s.held))
    }

    /// How many tasks the node holds now (queued or running), and at most.
    pub async fn load(&self) -> Option<(usize, usize)> {
        self.stats().await.map(|s| (s.held, s.capacity))
    }

    async fn stats(&self) -> Option<Stats> {
        self.tasks.ask(GetStats, LOCAL).await.ok()
    }

    /// Grows or shrinks the pool to `n` workers. New workers take tasks at once; a worker
    /// being removed takes no new task and leaves once it has finished those it holds.
    ///
    /// # Errors
    /// A worker did not start, or the task actor did not answer.
    pub async fn resize(&self, n: usize) -> Result<(), WorkersError> {
        let now = self.size().await;
        for _ in now..n {
            let worker = self.pool.add(LOCAL).await?;
            self.tasks
                .ask(AddWorker(worker), LOCAL)
                .await
                .map_err(|e| WorkersError::Unavailable(e.to_string()))?;
        }
        if n < now {
            self.tasks
                .ask(Drain(now - n), LOCAL)
                .await
                .map_err(|e| WorkersError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }
}

/// One job a worker runs: a kind and an input.
struct WorkItem {
    kind: String,
    input: Vec<u8>,
}

/// What a worker tells its node's task actor.
enum WorkerEvent {
    /// Job `index` of `batch` finished.
    Done {
        batch: u64,
        index: usize,
        outcome: Outcome,
    },
    /// The batch ended: normally, or because the worker died (`crashed`).
    Ended { batch: u64, crashed: bool },
}

/// Reports the end of a batch when dropped: a worker that dies mid-batch drops it too.
struct BatchGuard {
    batch: u64,
    events: Option<mpsc::UnboundedSender<WorkerEvent>>,
}

impl BatchGuard {
    fn ended(mut self) {
        if let Some(events) = self.events.take() {
            let _ = events.send(WorkerEvent::Ended {
                batch: self.batch,
                crashed: false,
            });
        }
    }

    fn defuse(mut self) {
        self.events = None;
    }
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        if let Some(events) = self.events.take() {
            let _ = events.send(WorkerEvent::Ended {
                batch: self.batch,
                crashed: true,
            });
        }
    }
}

/// Run these jobs, in order.
#[derive(Message)]
#[rtype(result = "()")]
struct Work {
    batch: u64,
    jobs: Vec<WorkItem>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    guard: BatchGuard,
}

/// A task worker: runs one batch at a time, one job after the other. A panic in a handler
/// ends it (and its supervisor starts a fresh one).
pub(crate) struct TaskWorker {
    registry: Arc<TaskRegistry>,
}

impl Actor for TaskWorker {
    type Context = Context<Self>;
}

impl Handler<Work> for TaskWorker {
    type Result = ();
    fn handle(&mut self, work: Work, ctx: &mut Context<Self>) {
        let registry = self.registry.clone();
        ctx.spawn(run_batch(registry, work).into_actor(self));
    }
}

async fn run_batch(registry: Arc<TaskRegistry>, work: Work) {
    let Work {
        batch,
        jobs,
        events,
        guard,
    } = work;
    let done = |index, outcome| {
        let _ = events.send(WorkerEvent::Done {
            batch,
            index,
            outcome,
        });
    };
    let mut jobs = jobs.into_iter().enumerate().peekable();
    while let Some((index, job)) = jobs.next() {
        match registry.get(&job.kind) {
            None => done(index, Outcome::UnknownKind),
            Some(TaskFn::Async(run)) => done(index, run(&job.input).await),
            Some(TaskFn::Sync(run)) => {
                // This job and the sync ones right after it, in one trip to the blocking pool.
                let mut chunk = vec![(index, run.clone(), job.input)];
                while let Some((i, next)) =
                    jobs.next_if(|(_, j)| matches!(registry.get(&j.kind), Some(TaskFn::Sync(_))))
                {
                    if let Some(TaskFn::Sync(run)) = registry.get(&next.kind) {
                        chunk.push((i, run.clone(), next.input));
                    }
                }
                let events = events.clone();
                let ran = tokio::task::spawn_blocking(move || {
                    for (index, run, input) in chunk {
                        let outcome = run(&input);
                        let _ = events.send(WorkerEvent::Done {
                            batch,
                            index,
                            outcome,
                        });
                    }
                })
                .await;
                if let Err(e) = ran {
                    if e.is_panic() {
                        // The worker dies of its handler's panic, as if it ran here.
                        std::panic::resume_unwind(e.into_panic());
                    }
                    return; // the runtime is shutting down: the guard reports the batch
                }
            }
        }
    }
    guard.ended();
}

/// A job held by the node.
struct Job {
    master: MasterAddr,
    a: Assignment,
}

struct Slot {
    worker: ActorRef<TaskWorker>,
    batch: Option<u64>,
    draining: bool,
}

struct Running {
    slot: u64,
    jobs: Vec<Job>,
    /// Jobs finished (they finish in order).
    done: usize,
    /// When the current job started (the previous one finished).
    since: Instant,
    /// The job that overran its lease: the rest of the batch went back to the queue.
    abandoned_at: Option<usize>,
}

#[derive(Default)]
struct MasterLink {
    seen_seq: u64,
    outbox: Vec<Report>,
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    workers: usize,
    held: usize,
    capacity: usize,
}

#[derive(Message)]
#[rtype(result = "Stats")]
struct GetStats;

#[derive(Message)]
#[rtype(result = "()")]
struct AddWorker(ActorRef<TaskWorker>);

#[derive(Message)]
#[rtype(result = "()")]
struct Drain(usize);

/// A worker node's task actor.
pub(crate) struct TaskNode {
    transport: Node,
    pool: PoolRef<TaskWorker>,
    config: WorkerConfig,
    incarnation: u64,
    slots: BTreeMap<u64, Slot>,
    next_slot: u64,
    queue: VecDeque<Job>,
    running: HashMap<u64, Running>,
    next_batch: u64,
    masters: BTreeMap<MasterAddr, MasterLink>,
    events: Option<mpsc::UnboundedSender<WorkerEvent>>,
    flush_armed: bool,
}

impl TaskNode {
    fn new(transport: Node, pool: PoolRef<TaskWorker>, config: WorkerConfig) -> Self {
        TaskNode {
            transport,
            pool,
            config,
            incarnation: fastrand::u64(..),
            slots: BTreeMap::new(),
            next_slot: 0,
            queue: VecDeque::new(),
            running: HashMap::new(),
            next_batch: 0,
            masters: BTreeMap::new(),
            events: None,
            flush_armed: false,
        }
    }

    fn add_slot(&mut self, worker: ActorRef<TaskWorker>) {
        self.next_slot += 1;
        self.slots.insert(
            self.next_slot,
            Slot {
                worker,
                batch: None,
                draining: false,
            },
        );
    }

    fn stuck(&self, slot: &Slot) -> bool {
        slot.batch
            .and_then(|b| self.running.get(&b))
            .is_some_and(|r| r.abandoned_at.is_some())
    }

    fn capacity(&self) -> usize {
        let active = self
            .slots
            .values()
            .filter(|s| !s.draining && !self.stuck(s))
            .count();
        active * self.config.inflight.max(1)
    }

    /// Tasks held: queued, or in a batch and not finished (nor given up on).
    fn held(&self) -> usize {
        self.queue.len()
            + self
                .running
                .values()
                .map(|r| r.abandoned_at.unwrap_or(r.jobs.len()) - r.done.min(r.jobs.len()))
                .sum::<usize>()
    }

    fn report(&mut self, master: &MasterAddr, report: Report) {
        self.masters
            .entry(master.clone())
            .or_default()
            .outbox
            .push(report);
    }

    /// Hands queued jobs to idle workers, at most `inflight` each.
    fn assign(&mut self) {
        let Some(events) = self.events.clone() else {
            return;
        };
        let idle: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.batch.is_none() && !s.draining)
            .map(|(id, _)| *id)
            .collect();
        for sid in idle {
            if self.queue.is_empty() {
                break;
            }
            let n = self.config.inflight.max(1).min(self.queue.len());
            let jobs: Vec<Job> = self.queue.drain(..n).collect();
            self.next_batch += 1;
            let batch = self.next_batch;
            let work = Work {
                batch,
                jobs: jobs
                    .iter()
                    .map(|j| WorkItem {
                        kind: j.a.kind.clone(),
                        input: j.a.input.clone(),
                    })
                    .collect(),
                events: events.clone(),
                guard: BatchGuard {
                    batch,
                    events: Some(events.clone()),
                },
            };
            let slot = self.slots.get_mut(&sid).expect("idle slot");
            match slot.worker.tell(work) {
                Ok(()) => {
                    slot.batch = Some(batch);
                    self.running.insert(
                        batch,
                        Running {
                            slot: sid,
                            jobs,
                            done: 0,
                            since: Instant::now(),
                            abandoned_at: None,
                        },
                    );
                }
                Err(e) => {
                    // Restarting or full: the jobs wait for another worker.
                    e.into_inner().guard.defuse();
                    for job in jobs.into_iter().rev() {
                        self.queue.push_front(job);
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: WorkerEvent, ctx: &mut Context<Self>) {
        match event {
            WorkerEvent::Done {
                batch,
                index,
                outcome,
            } => {
                let Some(run) = self.running.get_mut(&batch) else {
                    return; // a batch already ended or given up on
                };
                if run.abandoned_at.is_some_and(|at| index > at) {
                    return; // requeued when the batch was given up on
                }
                run.done = index + 1;
                run.since = Instant::now();
                let job = &run.jobs[index];
                let (master, report) = (
                    job.master.clone(),
                    Report {
                        id: job.a.id,
                        attempt: job.a.attempt,
                        outcome,
                    },
                );
                self.report(&master, report);
                self.after_report(&master, ctx);
            }
            WorkerEvent::Ended { batch, crashed } => {
                let Some(run) = self.running.remove(&batch) else {
                    return;
                };
                let Running {
                    slot,
                    jobs,
                    done,
                    abandoned_at,
                    ..
                } = run;
                let end = abandoned_at.unwrap_or(jobs.len());
                let mut rest = jobs.into_iter().skip(done);
                if crashed && done < end {
                    if let Some(culprit) = rest.next() {
                        let report = Report {
                            id: culprit.a.id,
                            attempt: culprit.a.attempt,
                            outcome: Outcome::Crashed("the worker died running it".into()),
                        };
                        self.report(&culprit.master, report);
                    }
                    let rest: Vec<Job> = rest.take(end - done - 1).collect();
                    for job in rest.into_iter().rev() {
                        self.queue.push_front(job);
                    }
                }
                if let Some(s) = self.slots.get_mut(&slot) {
                    s.batch = None;
                    if s.draining {
                        self.remove_slot(slot, ctx);
                    }
                }
                self.assign();
                self.flush_if_idle(ctx);
            }
        }
    }

    fn remove_slot(&mut self, slot: u64, ctx: &mut Context<Self>) {
        if let Some(s) = self.slots.remove(&slot) {
            let pool = self.pool.clone();
            ctx.spawn(
                async move {
                    if let Err(e) = pool.remove(&s.worker, LOCAL).await {
                        tracing::warn!(error = %e, "could not remove a drained task worker");
                    }
                }
                .into_actor(self),
            );
        }
    }

    fn after_report(&mut self, master: &MasterAddr, ctx: &mut Context<Self>) {
        let full = self
            .masters
            .get(master)
            .is_some_and(|m| m.outbox.len() >= self.config.result_batch.max(1));
        if full {
            self.flush(master);
        } else if !self.flush_if_idle(ctx) && !self.flush_armed {
            self.flush_armed = true;
            ctx.run_later(self.config.result_delay, |act, _| {
                act.flush_armed = false;
                act.flush_all();
            });
        }
    }

    /// Sends every report at once when nothing else is going on; true if it did.
    fn flush_if_idle(&mut self, _ctx: &mut Context<Self>) -> bool {
        let idle = self.queue.is_empty()
            && self
                .running
                .values()
                .all(|r| r.done >= r.abandoned_at.unwrap_or(r.jobs.len()));
        if idle {
            self.flush_all();
        }
        idle
    }

    fn flush_all(&mut self) {
        let masters: Vec<MasterAddr> = self
            .masters
            .iter()
            .filter(|(_, m)| !m.outbox.is_empty())
            .map(|(a, _)| a.clone())
            .collect();
        for m in masters {
            self.flush(&m);
        }
    }

    fn master_ref(&self, master: &MasterAddr) -> RemoteRef {
        self.transport.actor(&master.node, &master.name)
    }

    fn flush(&mut self, master: &MasterAddr) {
        let capacity = self.capacity() as u32;
        let Some(link) = self.masters.get_mut(master) else {
            return;
        };
        let reports = std::mem::take(&mut link.outbox);
        let msg = TaskReports {
            node: self.transport.id().to_string(),
            capacity,
            reports,
        };
        match self.master_ref(master).tell(msg) {
            Ok(()) => {}
            Err(RemoteTellError::QueueFull(msg) | RemoteTellError::NodeUnreachable(msg)) => {
                // Kept for the next flush or heartbeat.
                if let Some(link) = self.masters.get_mut(master) {
                    link.outbox = msg.reports;
                }
            }
            Err(e) => tracing::warn!(error = %e, master = %master.node, "reports not sent"),
        }
    }

    /// Flushes reports, gives up on jobs that overran their lease, and tells each master what
    /// the node holds for it.
    fn heartbeat(&mut self) {
        self.flush_all();
        let now = Instant::now();
        let mut requeue = Vec::new();
        for run in self.running.values_mut() {
            if run.abandoned_at.is_some() || run.done >= run.jobs.len() {
                continue;
            }
            let current = &run.jobs[run.done];
            if now.duration_since(run.since) > Duration::from_millis(current.a.lease_ms) {
                tracing::warn!(
                    task = current.a.id,
                    attempt = current.a.attempt,
                    "a task overran its lease; its worker is stuck"
                );
                run.abandoned_at = Some(run.done);
                requeue.extend(run.jobs.drain(run.done + 1..));
            }
        }
        for job in requeue.into_iter().rev() {
            self.queue.push_front(job);
        }
        let mut holds: BTreeMap<MasterAddr, Vec<(u64, u32)>> = BTreeMap::new();
        for job in &self.queue {
            holds
                .entry(job.master.clone())
                .or_default()
                .push((job.a.id, job.a.attempt));
        }
        for run in self.running.values() {
            if run.abandoned_at.is_some() {
                continue;
            }
            for job in run.jobs.iter().skip(run.done) {
                holds
                    .entry(job.master.clone())
                    .or_default()
                    .push((job.a.id, job.a.attempt));
            }
        }
        let capacity = self.capacity() as u32;
        let me = self.transport.id().to_string();
        let masters: Vec<(MasterAddr, u64)> = self
            .masters
            .iter()
            .map(|(a, l)| (a.clone(), l.seen_seq))
            .collect();
        for (master, seen_seq) in masters {
            let msg = TaskHeartbeat {
                node: me.clone(),
                capacity,
                incarnation: self.incarnation,
                seen_seq,
                holds: holds.remove(&master).unwrap_or_default(),
            };
            let _ = self.master_ref(&master).tell(msg);
        }
        self.assign();
    }
}

impl Actor for TaskNode {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.events = Some(tx);
        // Bounded by construction: one batch per worker, one event per job plus its end.
        let mut rx = rx;
        ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        for worker in self.pool.members() {
            self.add_slot(worker);
        }
        ctx.run_interval(self.config.heartbeat, |act, _| act.heartbeat());
    }
}

impl StreamHandler<WorkerEvent> for TaskNode {
    fn handle(&mut self, event: WorkerEvent, ctx: &mut Context<Self>) {
        self.on_event(event, ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<RunBatch> for TaskNode {
    type Result = ();
    fn handle(&mut self, m: RunBatch, ctx: &mut Context<Self>) {
        let link = self.masters.entry(m.master.clone()).or_default();
        link.seen_seq = link.seen_seq.max(m.seq);
        let capacity = self.capacity();
        let mut held = self.held();
        let mut refused = Vec::new();
        for a in m.assignments {
            if held >= capacity {
                refused.push(a);
                continue;
            }
            held += 1;
            self.queue.push_back(Job {
                master: m.master.clone(),
                a,
            });
        }
        for a in refused {
            let report = Report {
                id: a.id,
                attempt: a.attempt,
                outcome: Outcome::Refused,
            };
            self.report(&m.master, report);
        }
        self.assign();
        if self
            .masters
            .get(&m.master)
            .is_some_and(|l| !l.outbox.is_empty())
        {
            self.after_report(&m.master, ctx);
        }
    }
}

impl Handler<CancelTasks> for TaskNode {
    type Result = ();
    fn handle(&mut self, m: CancelTasks, ctx: &mut Context<Self>) {
        let mut cancelled = Vec::new();
        self.queue.retain(|job| {
            let hit = job.master == m.master && m.ids.contains(&job.a.id);
            if hit {
                cancelled.push((job.a.id, job.a.attempt));
            }
            !hit
        });
        for (id, attempt) in cancelled {
            let report = Report {
                id,
                attempt,
                outcome: Outcome::Cancelled,
            };
            self.report(&m.master, report);
        }
        self.after_report(&m.master, ctx);
    }
}

impl Handler<GetStats> for TaskNode {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> MessageResult<GetStats> {
        MessageResult(Stats {
            workers: self.slots.values().filter(|s| !s.draining).count(),
            held: self.held(),
            capacity: self.capacity(),
        })
    }
}

impl Handler<AddWorker> for TaskNode {
    type Result = ();
    fn handle(&mut self, m: AddWorker, _: &mut Context<Self>) {
        self.add_slot(m.0);
        self.assign();
    }
}

impl Handler<Drain> for TaskNode {
    type Result = ();
    fn handle(&mut self, m: Drain, ctx: &mut Context<Self>) {
        // Idle workers first; busy ones finish their batch and then leave.
        let mut order: Vec<(bool, u64)> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.draining)
            .map(|(id, s)| (s.batch.is_some(), *id))
            .collect();
        order.sort();
        for (busy, id) in order.into_iter().take(m.0) {
            if busy {
                if let Some(s) = self.slots.get_mut(&id) {
                    s.draining = true;
                }
            } else {
                self.remove_slot(id, ctx);
            }
        }
    }
}
