//! Supervisors: [`SupervisorSpec`] (static children under a [`Strategy`]), [`PoolSpec`] (a
//! dynamic pool of identical children), and the handles to running ones.

pub(crate) mod actor;
pub(crate) mod core;
pub(crate) mod keyed;
pub(crate) mod spec;

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::actor_ref::{ActorRef, Slot};
use crate::error::AskError;
use crate::events::{EventKind, SupervisionEvent};
use crate::exit::ExitReason;
use crate::instance::{self, Early, InstanceEvent, Reporter, Spawned};
use crate::runtime::Runtime;
use actor::{
    AddChild, KillChild, Killed, RemoveChild, StopSupervisor, SupervisorActor, WhichChildren,
};
pub use core::ChildInfo;
use core::Kind;
pub use spec::{Backoff, Child, ChildContext, ChildSpec, Intensity, Restart, Shutdown, Strategy};
use spec::{ChildMeta, ErasedChild, StartCx, DEFAULT_MAILBOX};

/// Why a request to a supervisor failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// The supervisor is not running (not started yet, restarting, or ended).
    #[error("supervisor `{0}` is not running")]
    NotRunning(Arc<str>),
    /// The supervisor's mailbox is full; try again.
    #[error("supervisor `{0}` is overloaded (mailbox full)")]
    Busy(Arc<str>),
    /// The child failed to start.
    #[error("child failed to start: {0}")]
    StartFailed(ExitReason),
    /// No answer within the timeout.
    #[error("no answer from supervisor `{0}` within {1:?}")]
    Timeout(Arc<str>, Duration),
    /// No child at this path (`which_children` lists a supervisor's children).
    #[error("supervisor `{0}` has no child `{1}`")]
    NoSuchChild(Arc<str>, String),
    /// The child at this path is not running (between instances, or ended): nothing to restart.
    #[error("child `{0}` is not running")]
    ChildNotRunning(String),
}

/// How to start a supervisor: its strategy, intensity and children, in start order.
///
/// A `SupervisorSpec` is itself a child ([`SupervisorSpec::child`] of another spec nests it):
/// supervisors are actors and trees nest to any depth. A supervisor child defaults to
/// [`Shutdown::Infinity`] (its children have their own shutdown policies) and
/// [`Restart::Permanent`]. Its clones share the handles of all the children below it, so those
/// handles survive restarts of the supervisor too.
#[derive(Clone)]
pub struct SupervisorSpec {
    meta: ChildMeta,
    kind: Kind,
    intensity: Intensity,
    children: Vec<Child>,
    slot: Arc<Slot<SupervisorActor>>,
}

impl fmt::Debug for SupervisorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorSpec")
            .field("id", &self.meta.id)
            .field("kind", &self.kind)
            .field("intensity", &self.intensity)
            .field("children", &self.children)
            .finish()
    }
}

impl SupervisorSpec {
    /// A one-for-one supervisor called `id` with the default [`Intensity`] and no children.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        let id = id.into();
        SupervisorSpec {
            slot: Slot::new(id.clone(), true),
            meta: ChildMeta::new(id, Restart::Permanent, Shutdown::Infinity),
            kind: Kind::Static(Strategy::OneForOne),
            intensity: Intensity::default(),
            children: Vec::new(),
        }
    }

    /// Sets the strategy (default [`Strategy::OneForOne`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.kind = Kind::Static(strategy);
        self
    }

    /// Sets the restart intensity (default: 3 restarts within 5 s).
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Sets this supervisor's restart type under its parent (default permanent).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.meta.policy_mut().restart = restart;
        self
    }

    /// Sets this supervisor's shutdown policy under its parent (default infinity).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.meta.policy_mut().shutdown = shutdown;
        self
    }

    /// Delays this supervisor's restarts under its parent.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.meta.policy_mut().backoff = Some(backoff);
        self
    }

    /// Appends a child: children start left to right in the order added, and stop right to left.
    pub fn child(mut self, child: impl Into<Child>) -> Self {
        self.children.push(child.into());
        self
    }

    /// The supervisor's handle: valid now, reaches every future instance.
    pub fn handle(&self) -> SupervisorRef {
        SupervisorRef {
            inner: ActorRef::from_slot(self.slot.clone()),
        }
    }

    /// Starts this supervisor as the root of a tree on the current arbiter, and returns once
    /// every child has started (left to right).
    ///
    /// The root is restarted by nothing: when it ends, [`SupervisorRef::terminated`] says why.
    /// An abnormal end (escalation) is logged as an error; [`run_root`](crate::run_root) turns
    /// it into a non-zero exit of the process.
    ///
    /// # Errors
    /// The start failed: [`ExitReason::StartFailed`] names the child and its reason; the children
    /// already started were stopped, right to left.
    ///
    /// # Panics
    /// Outside an actix system.
    pub async fn start(self, runtime: &Runtime) -> Result<SupervisorRef, ExitReason> {
        let handle = self.handle();
        let started = start_root(&self, runtime).await;
        started.map(|()| handle)
    }
}

/// Starts `spec` as a root and waits for its start; its exit marks its slot dead.
async fn start_root(spec: &SupervisorSpec, runtime: &Runtime) -> Result<(), ExitReason> {
    let (tx, rx) = oneshot::channel();
    let tx = RefCell::new(Some(tx));
    let id = spec.meta().id.clone();
    let rt = runtime.clone();
    let slot = spec.slot.clone();
    let report: Reporter = std::rc::Rc::new(move |_, _, event| {
        let reason = match event {
            InstanceEvent::Started(Ok(())) => {
                if let Some(tx) = tx.borrow_mut().take() {
                    let _ = tx.send(Ok(()));
                }
                return;
            }
            InstanceEvent::Started(Err(reason)) => {
                if let Some(tx) = tx.borrow_mut().take() {
                    let _ = tx.send(Err(reason.clone()));
                }
                reason
            }
            InstanceEvent::Exited(reason) => {
                if reason.is_abnormal() {
                    tracing::error!(root = %id, %reason, "root supervisor failed");
                }
                rt.publish(SupervisionEvent {
                    supervisor: "".into(),
                    child: id.clone(),
                    kind: EventKind::Exited {
                        generation: 1,
                        reason: reason.clone(),
                    },
                });
                reason
            }
        };
        slot.mark_dead(reason);
    });
    let cx = StartCx {
        runtime,
        parent_path: &Arc::from(""),
        key: 0,
        report: &report,
        capture: false,
    };
    let _spawned: (Spawned, Early) = spec.start(&cx, 1)?;
    rx.await.unwrap_or(Err(ExitReason::Killed))
}

impl ErasedChild for SupervisorSpec {
    fn meta(&self) -> &ChildMeta {
        &self.meta
    }

    fn start(&self, cx: &StartCx<'_>, generation: u64) -> Result<(Spawned, Early), ExitReason> {
        let path: Arc<str> = if cx.parent_path.is_empty() {
            self.meta.id.clone()
        } else {
            format!("{}/{}", cx.parent_path, self.meta.id).into()
        };
        self.slot.set_place(cx.parent_path, &self.meta.id);
        let actor = SupervisorActor::new(
            path,
            cx.runtime.clone(),
            self.kind,
            self.intensity,
            &self.children,
        );
        Ok(instance::spawn(
            &self.slot,
            generation,
            DEFAULT_MAILBOX,
            actor,
            cx.runtime.node(),
            cx.key,
            cx.report.clone(),
            cx.capture,
        ))
    }

    fn forget(&self, reason: ExitReason) {
        self.slot.mark_dead(reason);
    }

    fn slot_id(&self) -> usize {
        Arc::as_ptr(&self.slot) as usize
    }

    fn last_generation(&self) -> u64 {
        self.slot.last_generation()
    }

    fn as_supervisor(&self) -> Option<SupervisorRef> {
        Some(self.handle())
    }
}

impl From<SupervisorSpec> for Child {
    fn from(spec: SupervisorSpec) -> Self {
        Child(Arc::new(spec))
    }
}

/// A handle to a supervisor; survives its restarts.
#[derive(Clone, Debug)]
pub struct SupervisorRef {
    inner: ActorRef<SupervisorActor>,
}

impl SupervisorRef {
    /// The supervisor's path (`root/app`).
    pub fn path(&self) -> Arc<str> {
        self.inner.path()
    }

    /// True while the supervisor runs.
    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    /// The generation of the running instance.
    pub fn generation(&self) -> Option<u64> {
        self.inner.generation()
    }

    /// Why the supervisor ended for good, or `None` while it may still run.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.inner.exit_reason()
    }

    /// Waits until the supervisor has ended for good and returns why.
    pub async fn terminated(&self) -> ExitReason {
        self.inner.terminated().await
    }

    /// The supervisor's children, in start order.
    ///
    /// # Errors
    /// [`SupervisorError`] if the supervisor does not answer within `timeout`.
    pub async fn which_children(
        &self,
        timeout: Duration,
    ) -> Result<Vec<ChildInfo>, SupervisorError> {
        self.inner
            .ask(WhichChildren, timeout)
            .await
            .map_err(|e| self.error(e))
    }

    /// Adds `child` to this running supervisor, at the right end of its children (as Erlang's
    /// `supervisor:start_child`), and waits at most `timeout` until it has started. From then on
    /// it is supervised as the others; it stops first (the rightmost). A child added this way
    /// belongs to this instance of the supervisor: if the supervisor itself is restarted by its
    /// parent, it starts again with its spec's children only.
    ///
    /// # Errors
    /// [`SupervisorError::StartFailed`] if the child failed to start (it is not kept), or the
    /// supervisor is not running, busy, or too slow.
    pub async fn start_child(
        &self,
        child: impl Into<Child>,
        timeout: Duration,
    ) -> Result<(), SupervisorError> {
        let (reply, rx) = oneshot::channel();
        let sent = self.inner.tell(AddChild {
            child: child.into(),
            reply,
        });
        match self.call(rx, sent, timeout).await? {
            Ok(()) => Ok(()),
            Err(reason) => Err(SupervisorError::StartFailed(reason)),
        }
    }

    /// Restarts the child at `path` (child ids below this supervisor, joined by `/`:
    /// `store/shard-3`) by killing its running instance: an abnormal exit
    /// ([`ExitReason::Killed`]), so its supervisor applies the child's restart type, its
    /// strategy and its intensity as for a crash. Returns the generation that was killed.
    ///
    /// # Errors
    /// [`SupervisorError::NoSuchChild`] when a step of the path names no child (or a child that
    /// is not a supervisor), [`SupervisorError::ChildNotRunning`] when the child has no running
    /// instance, or the supervisor's own errors within `timeout`.
    pub async fn restart_child(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<u64, SupervisorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sup = self.clone();
        let mut rest = path.trim_matches('/');
        loop {
            let (id, below) = match rest.split_once('/') {
                Some((id, below)) => (id, Some(below)),
                None => (rest, None),
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = KillChild {
                id: id.to_owned(),
                descend: below.is_some(),
            };
            let answer = sup.inner.ask(msg, left).await.map_err(|e| sup.error(e))?;
            match (answer, below) {
                (Killed::Instance(generation), _) => return Ok(generation),
                (Killed::Descend(child), Some(below)) => {
                    sup = child;
                    rest = below;
                }
                (Killed::Descend(_), None) | (Killed::NoSuchChild, _) => {
                    return Err(SupervisorError::NoSuchChild(sup.path(), id.to_owned()))
                }
                (Killed::NotRunning, _) => {
                    return Err(SupervisorError::ChildNotRunning(path.to_owned()))
                }
            }
        }
    }

    /// Stops the supervisor: its children stop right to left, each by its shutdown policy, then
    /// it exits with [`ExitReason::Shutdown`]. Waits at most `timeout` for all of it.
    ///
    /// A supervisor that has a parent is then handled by the parent as any exited child: a
    /// permanent one is restarted.
    ///
    /// # Errors
    /// [`SupervisorError::Timeout`] if it has not ended within `timeout` (it goes on stopping).
    pub async fn stop(&self, timeout: Duration) -> Result<ExitReason, SupervisorError> {
        let deadline = tokio::time::Instant::now() + timeout;
        match self.inner.tell(StopSupervisor) {
            Ok(()) => {}
            Err(crate::TellError::Full(_)) => return Err(SupervisorError::Busy(self.path())),
            Err(_) => {
                if let Some(reason) = self.exit_reason() {
                    return Ok(reason);
                }
                return Err(SupervisorError::NotRunning(self.path()));
            }
        }
        tokio::time::timeout_at(deadline, self.inner.terminated())
            .await
            .map_err(|_| SupervisorError::Timeout(self.path(), timeout))
    }

    fn error<M>(&self, e: AskError<M>) -> SupervisorError {
        match e {
            AskError::Full(_) => SupervisorError::Busy(self.path()),
            AskError::Timeout(d) => SupervisorError::Timeout(self.path(), d),
            _ => SupervisorError::NotRunning(self.path()),
        }
    }

    async fn call<T>(
        &self,
        rx: oneshot::Receiver<T>,
        sent: Result<(), crate::TellError<impl Sized>>,
        timeout: Duration,
    ) -> Result<T, SupervisorError> {
        sent.map_err(|e| self.error(AskError::from(e)))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(SupervisorError::NotRunning(self.path())),
            Err(_) => Err(SupervisorError::Timeout(self.path(), timeout)),
        }
    }
}

/// A dynamic pool of identical children, restarted one for one.
///
/// Children are added and removed at run time through the [`PoolRef`]; each gets a handle of
/// its own. Each is built by the template's factory and has the template's restart type,
/// shutdown policy, backoff and mailbox. A pool is a supervisor: put it in a tree with
/// [`SupervisorSpec::child`], or start it as a root.
pub struct PoolSpec<A: Actor<Context = Context<A>>> {
    sup: SupervisorSpec,
    pool: PoolRef<A>,
}

impl<A: Actor<Context = Context<A>>> PoolSpec<A> {
    /// A pool called `id` of children built from `template`, with none to begin with.
    pub fn new(id: impl Into<Arc<str>>, template: ChildSpec<A>) -> Self {
        let mut sup = SupervisorSpec::new(id);
        sup.kind = Kind::Pool;
        let handle = sup.handle();
        PoolSpec {
            sup,
            pool: PoolRef {
                sup: handle,
                template,
                counter: Arc::new(AtomicU64::new(0)),
                members: Arc::new(Mutex::new(Vec::new())),
            },
        }
    }

    /// Starts the pool with `n` children.
    pub fn size(mut self, n: usize) -> Self {
        for _ in 0..n {
            let spec = self.pool.next_child();
            self.pool
                .members
                .lock()
                .push(spec.actor_ref().slot().clone());
            self.sup.children.push(spec.into());
        }
        self
    }

    /// Sets the pool's restart intensity (default: 3 restarts within 5 s).
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.sup = self.sup.intensity(intensity);
        self
    }

    /// The pool's handle: valid now, reaches every future instance of the pool.
    pub fn pool_ref(&self) -> PoolRef<A> {
        self.pool.clone()
    }

    /// Starts the pool as a root (see [`SupervisorSpec::start`]).
    ///
    /// # Errors
    /// As [`SupervisorSpec::start`].
    pub async fn start(self, runtime: &Runtime) -> Result<PoolRef<A>, ExitReason> {
        let pool = self.pool.clone();
        self.sup.start(runtime).await?;
        Ok(pool)
    }
}

impl<A: Actor<Context = Context<A>>> From<PoolSpec<A>> for Child {
    fn from(spec: PoolSpec<A>) -> Self {
        spec.sup.into()
    }
}

/// A handle to a pool: add and remove children at run time.
pub struct PoolRef<A: Actor<Context = Context<A>>> {
    sup: SupervisorRef,
    template: ChildSpec<A>,
    counter: Arc<AtomicU64>,
    /// The children added so far (their slots: a handle is made on demand).
    members: Arc<Mutex<Vec<Arc<Slot<A>>>>>,
}

impl<A: Actor<Context = Context<A>>> Clone for PoolRef<A> {
    fn clone(&self) -> Self {
        PoolRef {
            sup: self.sup.clone(),
            template: self.template.clone(),
            counter: self.counter.clone(),
            members: self.members.clone(),
        }
    }
}

impl<A: Actor<Context = Context<A>>> fmt::Debug for PoolRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolRef").field("sup", &self.sup).finish()
    }
}

impl<A: Actor<Context = Context<A>>> PoolRef<A> {
    fn next_child(&self) -> ChildSpec<A> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let spec = self
            .template
            .fresh(format!("{}-{n}", self.template.id()).into());
        spec
    }

    /// The pool's supervisor.
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.sup
    }

    /// Adds a child and waits (at most `timeout`) until it has started.
    ///
    /// # Errors
    /// [`SupervisorError::StartFailed`] if it failed to start (it is not kept), or the pool is
    /// not running, busy, or too slow.
    pub async fn add(&self, timeout: Duration) -> Result<ActorRef<A>, SupervisorError> {
        self.add_child(self.next_child(), timeout).await
    }

    /// Adds a child built from its own spec (its own factory and policies, as with Elixir's
    /// `DynamicSupervisor.start_child`), for children that each carry something of their own
    /// (an accepted socket). Waits at most `timeout` until it has started.
    ///
    /// # Errors
    /// As [`PoolRef::add`].
    pub async fn add_child(
        &self,
        spec: ChildSpec<A>,
        timeout: Duration,
    ) -> Result<ActorRef<A>, SupervisorError> {
        let handle = spec.actor_ref();
        self.members.lock().push(handle.slot().clone());
        let (reply, rx) = oneshot::channel();
        let sent = self.sup.inner.tell(AddChild {
            child: spec.into(),
            reply,
        });
        match self.sup.call(rx, sent, timeout).await {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(reason)) => {
                self.forget_member(&handle);
                Err(SupervisorError::StartFailed(reason))
            }
            Err(e) => {
                if !handle.is_running() {
                    self.forget_member(&handle);
                }
                Err(e)
            }
        }
    }

    /// Removes a child: it is stopped by its shutdown policy (a graceful stop lets it finish the
    /// message it is handling) and not restarted. Waits at most `timeout`. Removing a child
    /// that is not in the pool succeeds.
    ///
    /// # Errors
    /// The pool is not running, busy, or too slow.
    pub async fn remove(
        &self,
        child: &ActorRef<A>,
        timeout: Duration,
    ) -> Result<(), SupervisorError> {
        let (reply, rx) = oneshot::channel();
        let sent = self.sup.inner.tell(RemoveChild {
            slot_id: Arc::as_ptr(child.slot()) as usize,
            reply,
        });
        self.sup.call(rx, sent, timeout).await?;
        self.forget_member(child);
        Ok(())
    }

    /// The children that may still run (not ended for good), in the order they were added.
    pub fn members(&self) -> Vec<ActorRef<A>> {
        let mut members = self.members.lock();
        members.retain(|m| !m.is_dead());
        members
            .iter()
            .map(|slot| ActorRef::from_slot(slot.clone()))
            .collect()
    }

    fn forget_member(&self, child: &ActorRef<A>) {
        self.members
            .lock()
            .retain(|m| !Arc::ptr_eq(m, child.slot()));
    }
}
