//! The task master: an actor on the submitting node driving the pure scheduler, and
//! [`Master`], its handle.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use cadre_cluster::tasks::{
    Effect, Final, NodeStats, Progress, Scheduler, SchedulerConfig, Task as CoreTask, TaskId,
};
use cadre_cluster::wire::{decode_body, encode_body};
use cadre_runtime::{ActorRef, ChildSpec, Runtime, SupervisorRef, SupervisorSpec};
use futures_core::Stream;
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::messages::{CancelTasks, MasterAddr, RunBatch, TaskHeartbeat, TaskReports, TASKS_ACTOR};
use super::{Task, TASKS_SERVICE};
use crate::node::view::ClusterEvent;
use crate::node::ClusterNode;
use crate::RemoteTellError;

const LOCAL: Duration = Duration::from_secs(5);

/// A master's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterConfig {
    /// The name its actor is exposed under (default `cadre.tasks.master`; one master per name
    /// and node).
    pub name: String,
    /// Most tasks admitted whose results the caller has not taken yet; submitting waits for
    /// room (default 65 536).
    pub window: usize,
    /// Most tasks in one batch to a node (default 256).
    pub batch_max: usize,
    /// How long a batch that is not full waits for more tasks (default 1 ms).
    pub batch_delay: Duration,
    /// How often leases, retries and lost batches are checked (default 100 ms).
    pub tick: Duration,
    /// How long queued tasks wait once no node runs their kind any more, before they fail
    /// with [`TaskError::NoWorker`] (default 30 s).
    pub no_worker_timeout: Duration,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            name: "cadre.tasks.master".into(),
            window: 65_536,
            batch_max: 256,
            batch_delay: Duration::from_millis(1),
            tick: Duration::from_millis(100),
            no_worker_timeout: Duration::from_secs(30),
        }
    }
}

/// Why tasks were not submitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// No known worker node runs this kind.
    #[error("no worker runs tasks of kind `{0}`")]
    NoWorker(String),
    /// The input does not encode.
    #[error("the input does not encode: {0}")]
    Encode(String),
    /// The master is not running.
    #[error("the task master is not running: {0}")]
    MasterStopped(String),
    /// No such worker node became known in time.
    #[error("fewer than {wanted} nodes run `{kind}` after {waited:?}")]
    NotEnoughWorkers {
        /// The kind.
        kind: String,
        /// The nodes wanted.
        wanted: usize,
        /// How long it waited.
        waited: Duration,
    },
}

/// Why a task has no output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The handler returned an error and the kind's policy allowed no (further) retry.
    #[error("the task failed after {attempts} attempts: {error}")]
    Failed {
        /// The last error.
        error: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The task killed this many workers and is not run again.
    #[error("poison task: killed {kills} workers (last: {last})")]
    Poison {
        /// Workers killed.
        kills: u32,
        /// What happened the last time.
        last: String,
    },
    /// Cancelled.
    #[error("cancelled")]
    Cancelled,
    /// No node ran its kind for the master's `no_worker_timeout`.
    #[error("no worker runs tasks of kind `{0}`")]
    NoWorker(String),
    /// A worker could not decode the input (the master's and the worker's types differ).
    #[error("the worker could not decode the input: {0}")]
    BadInput(String),
    /// The output did not decode as the kind's output type.
    #[error("the output does not decode: {0}")]
    BadOutput(String),
    /// The master stopped before the task finished.
    #[error("the task master stopped")]
    MasterStopped,
}

/// A final outcome on its way to the caller, with the caller's window permit.
struct Delivered {
    id: TaskId,
    outcome: Final,
    _permit: Option<OwnedSemaphorePermit>,
}

fn into_result<O: DeserializeOwned>(outcome: Final) -> Result<O, TaskError> {
    match outcome {
        Final::Ok(bytes) => decode_body(&bytes).map_err(TaskError::BadOutput),
        Final::Failed { error, attempts } => Err(TaskError::Failed { error, attempts }),
        Final::Poison { kills, last } => Err(TaskError::Poison { kills, last }),
        Final::Cancelled => Err(TaskError::Cancelled),
        Final::NoWorker(kind) => Err(TaskError::NoWorker(kind)),
        Final::BadInput(e) => Err(TaskError::BadInput(e)),
    }
}

enum Sink {
    One(oneshot::Sender<Delivered>),
    Many {
        group: u64,
        tx: mpsc::UnboundedSender<Delivered>,
    },
}

struct Pending {
    sink: Sink,
    permit: Option<OwnedSemaphorePermit>,
}

/// Submit tasks (all or none).
#[derive(Message)]
#[rtype(result = "Result<(), cadre_cluster::tasks::SubmitError>")]
struct Submit {
    tasks: Vec<(TaskId, CoreTask, OwnedSemaphorePermit)>,
    /// The stream the results go to, or none: one task with its own `reply`.
    group: Option<(u64, mpsc::UnboundedSender<Delivered>)>,
    reply: Option<oneshot::Sender<Delivered>>,
}

#[derive(Message)]
#[rtype(result = "()")]
enum Cancel {
    Task(TaskId),
    /// Every task of a batch or stream, also those still to come.
    Group(u64),
    /// A batch or stream starts submitting.
    Feeding(u64),
    /// A batch or stream has submitted its last task.
    GroupFed(u64),
}

#[derive(Message)]
#[rtype(result = "(Progress, BTreeMap<String, NodeStats>)")]
struct Snapshot;

#[derive(Message)]
#[rtype(result = "usize")]
struct NodesFor(String);

/// The master's actor.
pub(crate) struct MasterActor {
    addr: MasterAddr,
    cluster: ClusterNode,
    sched: Scheduler,
    config: MasterConfig,
    pending: HashMap<TaskId, Pending>,
    /// Batches or streams still submitting, and those of them cancelled.
    feeding: std::collections::HashSet<u64>,
    cancelled: std::collections::HashSet<u64>,
    flush_armed: bool,
    progress: watch::Sender<Progress>,
    topology: watch::Sender<u64>,
}

impl MasterActor {
    fn node_up(&mut self, node: &str, service: &cadre_cluster::discovery::Service) {
        let (kinds, capacity) = offer(service);
        self.sched.node_up(node, kinds, capacity);
        self.topology.send_modify(|v| *v += 1);
    }

    fn node_down(&mut self, node: &str) {
        self.sched.node_down(node);
        self.topology.send_modify(|v| *v += 1);
    }

    /// Sends what can go, then carries out every effect.
    fn pump(&mut self, partial: bool) {
        self.sched.pump(Instant::now(), partial);
        self.apply();
    }

    fn apply(&mut self) {
        loop {
            let effects = self.sched.take_effects();
            if effects.is_empty() {
                break;
            }
            for effect in effects {
                self.carry_out(effect);
            }
        }
        let p = self.sched.progress();
        self.progress.send_if_modified(|old| {
            let changed = *old != p;
            *old = p;
            changed
        });
    }

    fn carry_out(&mut self, effect: Effect) {
        match effect {
            Effect::Dispatch {
                node,
                seq,
                assignments,
            } => {
                let msg = RunBatch {
                    master: self.addr.clone(),
                    seq,
                    assignments,
                };
                let target = self.cluster.transport().actor(&node, TASKS_ACTOR);
                match target.tell(msg) {
                    Ok(()) => {}
                    Err(
                        RemoteTellError::QueueFull(msg)
                        | RemoteTellError::NodeUnreachable(msg)
                        | RemoteTellError::Encode(msg, _),
                    ) => self.sched.not_sent(&node, &msg.assignments),
                    // Only for this node's own task actor, when it is restarting: the leases
                    // bring the tasks back.
                    Err(RemoteTellError::Remote(e)) => {
                        tracing::warn!(error = %e, "a batch for this node was not taken");
                    }
                }
            }
            Effect::Cancel { node, ids } => {
                let msg = CancelTasks {
                    master: self.addr.clone(),
                    ids,
                };
                let _ = self.cluster.transport().actor(&node, TASKS_ACTOR).tell(msg);
            }
            Effect::Done { id, outcome, .. } => {
                if let Some(Pending { sink, permit }) = self.pending.remove(&id) {
                    let delivered = Delivered {
                        id,
                        outcome,
                        _permit: permit,
                    };
                    let _ = match sink {
                        Sink::One(tx) => tx.send(delivered).is_ok(),
                        Sink::Many { tx, .. } => tx.send(delivered).is_ok(),
                    };
                }
            }
        }
    }
}

impl Actor for MasterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.tick, |act, _| {
            act.sched.tick(Instant::now());
            act.pump(true);
        });
        // The events are subscribed to before this actor first starts (see `Master::start`), so
        // every change after the directory answers reaches it too; the scheduler keeps what
        // such an event says over the answer.
        self.sched.lookup_started();
        let cluster = self.cluster.clone();
        ctx.spawn(
            async move { cluster.lookup(TASKS_SERVICE).await }
                .into_actor(self)
                .map(|nodes, act, _| {
                    let nodes = nodes
                        .iter()
                        .map(|(node, service)| {
                            let (kinds, capacity) = offer(service);
                            (node.clone(), kinds, capacity)
                        })
                        .collect();
                    act.sched.looked_up(nodes);
                    act.topology.send_modify(|v| *v += 1);
                    act.pump(true);
                }),
        );
    }
}

/// The task kinds a node's tasks service offers, and its capacity.
fn offer(service: &cadre_cluster::discovery::Service) -> (Vec<String>, u32) {
    let capacity = service
        .meta
        .get("capacity")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (service.tags.clone(), capacity)
}

impl Handler<ClusterEvent> for MasterActor {
    type Result = ();
    fn handle(&mut self, event: ClusterEvent, _: &mut Context<Self>) {
        match event {
            ClusterEvent::ServiceAdded { node, service } if service.name == TASKS_SERVICE => {
                self.node_up(&node, &service);
            }
            ClusterEvent::ServiceRemoved { node, service } if service.name == TASKS_SERVICE => {
                self.node_down(&node);
            }
            ClusterEvent::MemberDown { name, .. } | ClusterEvent::MemberLeft { name, .. } => {
                self.node_down(&name);
            }
            _ => return,
        }
        self.apply();
        self.pump(true);
    }
}

impl Handler<Submit> for MasterActor {
    type Result = Result<(), cadre_cluster::tasks::SubmitError>;
    fn handle(&mut self, m: Submit, ctx: &mut Context<Self>) -> Self::Result {
        // All or none: a kind no node runs refuses the whole submission.
        if let Some((_, task, _)) = m
            .tasks
            .iter()
            .find(|(_, t, _)| !self.sched.can_run(&t.kind))
        {
            let kind = task.kind.clone();
            return Err(cadre_cluster::tasks::SubmitError::NoWorker(kind));
        }
        let mut reply = m.reply;
        let cancelled = m
            .group
            .as_ref()
            .is_some_and(|(g, _)| self.cancelled.contains(g));
        for (id, task, permit) in m.tasks {
            self.sched.submit(id, task)?;
            if cancelled {
                self.sched.cancel(id);
            }
            let sink = match (&m.group, reply.take()) {
                (Some((group, tx)), _) => Sink::Many {
                    group: *group,
                    tx: tx.clone(),
                },
                (None, Some(tx)) => Sink::One(tx),
                (None, None) => unreachable!("a single task comes with its reply"),
            };
            self.pending.insert(
                id,
                Pending {
                    sink,
                    permit: Some(permit),
                },
            );
        }
        self.pump(false);
        if !self.flush_armed {
            self.flush_armed = true;
            ctx.run_later(self.config.batch_delay, |act, _| {
                act.flush_armed = false;
                act.pump(true);
            });
        }
        Ok(())
    }
}

impl Handler<Cancel> for MasterActor {
    type Result = ();
    fn handle(&mut self, m: Cancel, _: &mut Context<Self>) {
        match m {
            Cancel::Task(id) => self.sched.cancel(id),
            Cancel::Feeding(group) => {
                self.feeding.insert(group);
            }
            Cancel::GroupFed(group) => {
                self.feeding.remove(&group);
                self.cancelled.remove(&group);
            }
            Cancel::Group(group) => {
                if self.feeding.contains(&group) {
                    self.cancelled.insert(group);
                }
                let mut ids: Vec<TaskId> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| matches!(p.sink, Sink::Many { group: g, .. } if g == group))
                    .map(|(id, _)| *id)
                    .collect();
                ids.sort_unstable();
                for id in ids {
                    self.sched.cancel(id);
                }
            }
        }
        self.apply();
    }
}

impl Handler<TaskReports> for MasterActor {
    type Result = ();
    fn handle(&mut self, m: TaskReports, _: &mut Context<Self>) {
        self.sched
            .reports(&m.node, m.capacity, m.reports, Instant::now());
        self.pump(true);
    }
}

impl Handler<TaskHeartbeat> for MasterActor {
    type Result = ();
    fn handle(&mut self, m: TaskHeartbeat, _: &mut Context<Self>) {
        self.sched.heartbeat(
            &m.node,
            m.capacity,
            m.incarnation,
            m.seen_seq,
            &m.holds,
            Instant::now(),
        );
        self.pump(true);
    }
}

impl Handler<Snapshot> for MasterActor {
    type Result = MessageResult<Snapshot>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> MessageResult<Snapshot> {
        MessageResult((self.sched.progress(), self.sched.node_stats().clone()))
    }
}

impl Handler<NodesFor> for MasterActor {
    type Result = usize;
    fn handle(&mut self, m: NodesFor, _: &mut Context<Self>) -> usize {
        self.sched.nodes_for(&m.0)
    }
}

/// A task master on this node (see the [module docs](super)). Cheap to clone.
#[derive(Clone)]
pub struct Master {
    actor: ActorRef<MasterActor>,
    sup: SupervisorRef,
    window: Arc<Semaphore>,
    ids: Arc<AtomicU64>,
    progress: watch::Receiver<Progress>,
    topology: watch::Receiver<u64>,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master").finish_non_exhaustive()
    }
}

impl Master {
    /// Starts a master on `cluster`'s node, under a supervisor of its own, exposed as
    /// `config.name`; it follows the worker nodes through the service directory.
    ///
    /// # Errors
    /// The master's actor did not start.
    pub async fn start(
        cluster: &ClusterNode,
        config: MasterConfig,
        runtime: &Runtime,
    ) -> Result<Master, cadre_runtime::ExitReason> {
        let (progress_tx, progress) = watch::channel(Progress::default());
        let (topology_tx, topology) = watch::channel(0u64);
        let addr = MasterAddr {
            node: cluster.name().to_string(),
            name: config.name.clone(),
        };
        let window = Arc::new(Semaphore::new(config.window.max(1)));
        let name = config.name.clone();
        let c = cluster.clone();
        let spec = ChildSpec::new("master", move || MasterActor {
            addr: addr.clone(),
            cluster: c.clone(),
            sched: Scheduler::new(
                SchedulerConfig {
                    batch_max: config.batch_max,
                    no_worker_timeout: config.no_worker_timeout,
                },
                fastrand::u64(..),
            ),
            config: config.clone(),
            pending: HashMap::new(),
            feeding: Default::default(),
            cancelled: Default::default(),
            flush_armed: false,
            progress: progress_tx.clone(),
            topology: topology_tx.clone(),
        })
        .mailbox(16 * 1024);
        let actor = spec.actor_ref();
        // Taken before the actor starts and looks the worker nodes up, so that no change after
        // the directory's answer is missed (see `MasterActor::started`).
        let events = cluster.events();
        let sup = SupervisorSpec::new("tasks-master")
            .child(spec)
            .start(runtime)
            .await?;
        cluster
            .transport()
            .expose(&name, actor.clone())
            .accept::<TaskReports>()
            .accept::<TaskHeartbeat>();
        ClusterNode::forward_events(events, actor.clone());
        Ok(Master {
            actor,
            sup,
            window,
            ids: Arc::new(AtomicU64::new(1)),
            progress,
            topology,
        })
    }

    /// Submits one task; the handle resolves to its result.
    ///
    /// # Errors
    /// [`SubmitError`]: no known node runs `T`, the input does not encode, or the master is
    /// not running.
    pub async fn submit<T: Task>(
        &self,
        input: T::Input,
    ) -> Result<TaskHandle<T::Output>, SubmitError> {
        let permit = self.permit().await?;
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let task = core_task::<T>(&input)?;
        let (tx, rx) = oneshot::channel();
        self.send(Submit {
            tasks: vec![(id, task, permit)],
            group: None,
            reply: Some(tx),
        })
        .await?;
        Ok(TaskHandle {
            id,
            rx,
            master: self.clone(),
            _o: PhantomData,
        })
    }

    /// Submits a batch of tasks; results come in completion order.
    ///
    /// # Errors
    /// As [`Master::submit`], checked before anything is sent.
    pub async fn submit_batch<T: Task>(
        &self,
        inputs: impl IntoIterator<Item = T::Input> + 'static,
    ) -> Result<Results<T::Output>, SubmitError> {
        self.submit_stream::<T, _>(futures_util::stream::iter(inputs))
            .await
    }

    /// Submits every task of a stream as it comes (waiting for room in the window); results
    /// come in completion order, and the stream of results ends after the last one.
    ///
    /// # Errors
    /// As [`Master::submit`], checked before the first task is taken. A later input that
    /// does not encode ends the submission there (its error is logged).
    pub async fn submit_stream<T, S>(&self, inputs: S) -> Result<Results<T::Output>, SubmitError>
    where
        T: Task,
        S: Stream<Item = T::Input> + 'static,
    {
        if self.nodes_for(T::NAME).await == 0 {
            return Err(SubmitError::NoWorker(T::NAME.into()));
        }
        let group = self.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let master = self.clone();
        self.actor
            .tell(Cancel::Feeding(group))
            .map_err(|e| SubmitError::MasterStopped(e.to_string()))?;
        let feeder = async move {
            let mut inputs = std::pin::pin!(inputs);
            'feed: while let Some(first) = inputs.next().await {
                let mut chunk = Vec::new();
                let mut next = Some(first);
                while let Some(input) = next.take() {
                    let Ok(permit) = master.permit().await else {
                        break 'feed;
                    };
                    let task = match core_task::<T>(&input) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!(error = %e, "task submission ended");
                            break 'feed;
                        }
                    };
                    chunk.push((master.ids.fetch_add(1, Ordering::Relaxed), task, permit));
                    if chunk.len() >= 1024 {
                        break;
                    }
                    next = inputs.next().now_or_never().flatten();
                }
                let submit = Submit {
                    tasks: chunk,
                    group: Some((group, tx.clone())),
                    reply: None,
                };
                if let Err(e) = master.send(submit).await {
                    tracing::warn!(error = %e, "task submission ended");
                    break;
                }
                if tx.is_closed() {
                    break; // nobody wants the results any more
                }
            }
            let _ = master.actor.tell(Cancel::GroupFed(group));
        };
        actix::spawn(feeder);
        Ok(Results {
            group,
            rx,
            master: self.clone(),
            _o: PhantomData,
        })
    }

    async fn permit(&self) -> Result<OwnedSemaphorePermit, SubmitError> {
        self.window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SubmitError::MasterStopped("closed".into()))
    }

    async fn send(&self, submit: Submit) -> Result<(), SubmitError> {
        match self.actor.ask(submit, LOCAL).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(cadre_cluster::tasks::SubmitError::NoWorker(kind))) => {
                Err(SubmitError::NoWorker(kind))
            }
            Ok(Err(e)) => Err(SubmitError::MasterStopped(e.to_string())),
            Err(e) => Err(SubmitError::MasterStopped(e.to_string())),
        }
    }

    /// Cancels a task: it ends with [`TaskError::Cancelled`] unless it already ended.
    pub fn cancel(&self, id: TaskId) {
        let _ = self.actor.tell(Cancel::Task(id));
    }

    /// The counts of all of this master's tasks.
    pub async fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// The counts, updated as they change.
    pub fn watch_progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// What each worker node did for this master (completed, lost, up), by node.
    pub async fn node_stats(&self) -> BTreeMap<String, NodeStats> {
        self.actor
            .ask(Snapshot, LOCAL)
            .await
            .map(|(_, s)| s)
            .unwrap_or_default()
    }

    /// The worker nodes known to run `kind`.
    pub async fn nodes_for(&self, kind: &str) -> usize {
        self.actor
            .ask(NodesFor(kind.into()), LOCAL)
            .await
            .unwrap_or(0)
    }

    /// Waits until at least `n` nodes run `kind`, at most `timeout`.
    ///
    /// # Errors
    /// [`SubmitError::NotEnoughWorkers`] after `timeout`.
    pub async fn wait_for_workers(
        &self,
        kind: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<(), SubmitError> {
        let mut topology = self.topology.clone();
        let wait = async {
            loop {
                topology.borrow_and_update();
                if self.nodes_for(kind).await >= n {
                    return;
                }
                if topology.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| SubmitError::NotEnoughWorkers {
                kind: kind.into(),
                wanted: n,
                waited: timeout,
            })
    }

    /// Stops the master: tasks without a result end with [`TaskError::MasterStopped`].
    pub async fn stop(&self, timeout: Duration) {
        let _ = self.sup.stop(timeout).await;
    }
}

fn core_task<T: Task>(input: &T::Input) -> Result<CoreTask, SubmitError> {
    Ok(CoreTask {
        kind: T::NAME.into(),
        input: encode_body(input).map_err(|e| SubmitError::Encode(e.to_string()))?,
        policy: T::policy(),
    })
}

/// One task's result, as a future.
pub struct TaskHandle<O> {
    id: TaskId,
    rx: oneshot::Receiver<Delivered>,
    master: Master,
    _o: PhantomData<fn() -> O>,
}

impl<O> TaskHandle<O> {
    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Cancels the task (the handle then resolves to [`TaskError::Cancelled`], unless it had
    /// already ended).
    pub fn cancel(&self) {
        self.master.cancel(self.id);
    }
}

impl<O: DeserializeOwned> Future for TaskHandle<O> {
    type Output = Result<O, TaskError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(d)) => Poll::Ready(into_result(d.outcome)),
            Poll::Ready(Err(_)) => Poll::Ready(Err(TaskError::MasterStopped)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The results of a batch or stream of tasks, in completion order.
pub struct Results<O> {
    group: u64,
    rx: mpsc::UnboundedReceiver<Delivered>,
    master: Master,
    _o: PhantomData<fn() -> O>,
}

impl<O: DeserializeOwned> Results<O> {
    /// The next result, with its task's id; `None` once every task submitted has its result
    /// (or the master stopped).
    pub async fn next(&mut self) -> Option<(TaskId, Result<O, TaskError>)> {
        let d = self.rx.recv().await?;
        Some((d.id, into_result(d.outcome)))
    }

    /// Cancels every task of the batch that has not ended yet, also those not yet submitted.
    pub fn cancel(&self) {
        let _ = self.master.actor.tell(Cancel::Group(self.group));
    }
}

/// Dropping the results cancels the tasks that have not ended.
impl<O> Drop for Results<O> {
    fn drop(&mut self) {
        if !self.rx.is_closed() {
            let _ = self.master.actor.tell(Cancel::Group(self.group));
        }
    }
}

impl<O: DeserializeOwned> Stream for Results<O> {
    type Item = (TaskId, Result<O, TaskError>);
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.rx
            .poll_recv(cx)
            .map(|d| d.map(|d| (d.id, into_result(d.outcome))))
    }
}
