//! What a supervisor is told about a child: restart type, shutdown policy, backoff, intensity,
//! strategy, and [`ChildSpec`].

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context};

use crate::actor_ref::{ActorRef, Slot};
use crate::exit::ExitReason;
use crate::instance::{self, Early, Reporter, Spawned};
use crate::runtime::Runtime;

/// The default mailbox capacity of a supervised actor, in messages.
pub const DEFAULT_MAILBOX: usize = 1024;

/// The default shutdown timeout of a worker (non-supervisor) child.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// When a child is restarted.
///
/// | type | after a normal exit | after an abnormal exit | when a sibling's failure stops it |
/// |---|---|---|---|
/// | `Permanent` | restarted | restarted | restarted with the group |
/// | `Transient` | not restarted | restarted | restarted with the group |
/// | `Temporary` | not restarted | not restarted | not restarted: removed |
///
/// Normal exits are [`ExitReason::Normal`] and [`ExitReason::Shutdown`]. A child that is not
/// restarted ends for good: its handles report [`TellError::Dead`](crate::TellError::Dead) and
/// its registered name goes away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted (the default).
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit.
    Transient,
    /// Never restarted.
    Temporary,
}

/// How a child is stopped by its supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Killed at once: its task is dropped (actix still runs `stopping`/`stopped` as the
    /// context is dropped), its pending messages are discarded.
    Kill,
    /// Asked to stop (`ctx.stop()`); killed if it has not stopped within the timeout. The
    /// default for actors, with [`DEFAULT_SHUTDOWN_TIMEOUT`].
    Timeout(Duration),
    /// Asked to stop, and waited for as long as it takes. The default for supervisors, whose own
    /// children have their own policies.
    Infinity,
}

/// An exponential restart delay with jitter, per child.
///
/// The n-th consecutive restart waits `min · 2ⁿ⁻¹`, capped at `max`, then scaled by a random
/// factor in `[1 − jitter/2, 1 + jitter/2]` and kept within `[min, max]`. The count starts again
/// once an instance has stayed up for at least `max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub min: Duration,
    /// The largest delay.
    pub max: Duration,
    /// The jitter, from 0 (none) to 1 (±50 %).
    pub jitter: f64,
}

impl Backoff {
    /// Exponential backoff from `min` to `max` with a jitter of 0.5 (±25 %).
    pub fn exponential(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            jitter: 0.5,
        }
    }

    /// The same backoff with another jitter (clamped to 0..=1).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The delay before restart number `attempt` (1-based), with `unit` a uniform random number
    /// in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        let base = self
            .min
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max);
        let factor = 1.0 + self.jitter * (unit - 0.5);
        base.mul_f64(factor.max(0.0)).clamp(self.min, self.max)
    }
}

/// How many restarts a supervisor allows before it gives up.
///
/// More than `max_restarts` restarts within `within` and the supervisor stops all its children
/// (right to left) and exits with [`ExitReason::Escalated`]: its own supervisor then sees a
/// failed child. The default is 3 restarts within 5 seconds (Elixir's default; Erlang's is 1
/// within 5 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// The restarts allowed within the window.
    pub max_restarts: u32,
    /// The window.
    pub within: Duration,
}

impl Intensity {
    /// At most `max_restarts` restarts within `within`.
    pub fn new(max_restarts: u32, within: Duration) -> Self {
        Intensity {
            max_restarts,
            within,
        }
    }
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity::new(3, Duration::from_secs(5))
    }
}

/// Which children a supervisor restarts when one of them must be restarted.
///
/// ```text
///  one-for-one          one-for-all          rest-for-one
///  [a] [b✗] [c]         [a] [b✗] [c]         [a] [b✗] [c]
///        ↻               ↻   ↻    ↻                ↻    ↻
/// ```
///
/// | strategy | what is restarted when child *b* must be |
/// |---|---|
/// | `OneForOne` | *b* alone |
/// | `OneForAll` | every child: the others are stopped right to left, then all started left to right |
/// | `RestForOne` | *b* and the children started after it (to its right), in the same order |
///
/// A dynamic pool of identical children ([`PoolSpec`](crate::PoolSpec)) restarts one for one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Restart only the child that exited.
    #[default]
    OneForOne,
    /// Restart all children.
    OneForAll,
    /// Restart the child that exited and every child to its right.
    RestForOne,
}

/// How a child is restarted and stopped; shared by all the children of a pool.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Policy {
    pub(crate) restart: Restart,
    pub(crate) shutdown: Shutdown,
    pub(crate) backoff: Option<Backoff>,
}

/// What the supervisor's core needs to know of a child: small, as a supervisor keeps one per
/// child.
#[derive(Clone, Debug)]
pub(crate) struct ChildMeta {
    pub(crate) id: Arc<str>,
    pub(crate) policy: Arc<Policy>,
}

impl ChildMeta {
    pub(crate) fn new(id: Arc<str>, restart: Restart, shutdown: Shutdown) -> Self {
        ChildMeta {
            id,
            policy: Arc::new(Policy {
                restart,
                shutdown,
                backoff: None,
            }),
        }
    }

    pub(crate) fn policy_mut(&mut self) -> &mut Policy {
        Arc::make_mut(&mut self.policy)
    }
}

/// Where a child is being started.
pub(crate) struct StartCx<'a> {
    pub(crate) runtime: &'a Runtime,
    pub(crate) parent_path: &'a Arc<str>,
    /// The child's key among its siblings, passed back to `report`.
    pub(crate) key: u64,
    pub(crate) report: &'a Reporter,
    /// Whether the spawner takes the instance's first-poll events from
    /// [`Spawned::early`] (a supervisor) or lets them go to the reporter (a root).
    pub(crate) capture: bool,
}

/// A child spec with its actor type erased, as a supervisor holds it.
pub(crate) trait ErasedChild: Send + Sync {
    fn meta(&self) -> &ChildMeta;
    /// Builds a fresh instance and spawns it on the current arbiter. `Err` when the factory
    /// panicked or the child's name is taken.
    fn start(&self, cx: &StartCx<'_>, generation: u64) -> Result<(Spawned, Early), ExitReason>;
    /// The child ended for good: its handles go dead and its names away.
    fn forget(&self, reason: ExitReason);
    /// The identity of the child's slot (to find it from a handle).
    fn slot_id(&self) -> usize;
    /// The last generation this child's handle has seen (0: never started).
    fn last_generation(&self) -> u64;
    /// The child's handle as a supervisor, when it is one (to walk a path down the tree).
    fn as_supervisor(&self) -> Option<crate::SupervisorRef> {
        None
    }
}

/// Anything a supervisor can supervise: a [`ChildSpec`], a nested
/// [`SupervisorSpec`](crate::SupervisorSpec) or a [`PoolSpec`](crate::PoolSpec).
#[derive(Clone)]
pub struct Child(pub(crate) Arc<dyn ErasedChild>);

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Child").field(&self.0.meta().id).finish()
    }
}

/// What a child's factory may look at when it builds an instance.
pub struct ChildContext<'a, A: Actor> {
    /// The generation about to start (1 for the first start).
    pub generation: u64,
    /// The runtime of the tree.
    pub runtime: &'a Runtime,
    myself: &'a Arc<Slot<A>>,
}

impl<A: Actor> ChildContext<'_, A> {
    /// The child's path (`root/app/db`).
    pub fn path(&self) -> Arc<str> {
        self.myself.path()
    }

    /// The child's own handle, which survives its restarts.
    pub fn myself(&self) -> ActorRef<A> {
        ActorRef::from_slot(self.myself.clone())
    }
}

type Factory<A> = dyn Fn(&ChildContext<'_, A>) -> A + Send + Sync;

/// How to start, restart and stop one actor child.
///
/// The factory builds a fresh actor on every start and restart: no state is carried over. The
/// spec owns the child's [`ActorRef`] ([`ChildSpec::actor_ref`]), valid before the child starts
/// and across all its restarts, including restarts of the supervisors above it (a spec's clones
/// share the handle).
pub struct ChildSpec<A: Actor<Context = Context<A>>> {
    meta: ChildMeta,
    factory: Arc<Factory<A>>,
    mailbox: usize,
    name: Option<Arc<str>>,
    slot: Arc<Slot<A>>,
}

impl<A: Actor<Context = Context<A>>> Clone for ChildSpec<A> {
    fn clone(&self) -> Self {
        ChildSpec {
            meta: self.meta.clone(),
            factory: self.factory.clone(),
            mailbox: self.mailbox,
            name: self.name.clone(),
            slot: self.slot.clone(),
        }
    }
}

impl<A: Actor<Context = Context<A>>> fmt::Debug for ChildSpec<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("meta", &self.meta)
            .field("mailbox", &self.mailbox)
            .field("name", &self.name)
            .finish()
    }
}

impl<A: Actor<Context = Context<A>>> ChildSpec<A> {
    /// A permanent child called `id`, built by `factory` on every start.
    pub fn new(id: impl Into<Arc<str>>, factory: impl Fn() -> A + Send + Sync + 'static) -> Self {
        Self::with_context(id, move |_| factory())
    }

    /// Like [`ChildSpec::new`], with a factory that sees the [`ChildContext`].
    pub fn with_context(
        id: impl Into<Arc<str>>,
        factory: impl Fn(&ChildContext<'_, A>) -> A + Send + Sync + 'static,
    ) -> Self {
        let id = id.into();
        ChildSpec {
            slot: Slot::new(id.clone(), true),
            meta: ChildMeta::new(
                id,
                Restart::Permanent,
                Shutdown::Timeout(DEFAULT_SHUTDOWN_TIMEOUT),
            ),
            factory: Arc::new(factory),
            mailbox: DEFAULT_MAILBOX,
            name: None,
        }
    }

    /// The child's id among its siblings.
    pub fn id(&self) -> &str {
        &self.meta.id
    }

    /// Sets the restart type (default [`Restart::Permanent`]).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.meta.policy_mut().restart = restart;
        self
    }

    /// Sets the shutdown policy (default: [`Shutdown::Timeout`] of
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`]).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.meta.policy_mut().shutdown = shutdown;
        self
    }

    /// Delays restarts with an exponential backoff (default: restart at once).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.meta.policy_mut().backoff = Some(backoff);
        self
    }

    /// Sets the mailbox capacity in messages (default [`DEFAULT_MAILBOX`]; at least 1).
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity.max(1);
        self
    }

    /// Registers the child under `name` in the runtime's [`Registry`](crate::Registry) when it
    /// first starts; the name follows it across restarts and goes away when it ends for good.
    /// A start fails if another live actor holds the name.
    pub fn register(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The child's handle: valid now, reaches every future instance.
    pub fn actor_ref(&self) -> ActorRef<A> {
        ActorRef::from_slot(self.slot.clone())
    }

    /// A copy of this spec with its own id and a handle of its own (for pools).
    pub(crate) fn fresh(&self, id: Arc<str>) -> Self {
        ChildSpec {
            slot: Slot::new(id.clone(), true),
            meta: ChildMeta {
                id,
                policy: self.meta.policy.clone(),
            },
            factory: self.factory.clone(),
            mailbox: self.mailbox,
            name: None,
        }
    }
}

impl<A: Actor<Context = Context<A>>> ErasedChild for ChildSpec<A> {
    fn meta(&self) -> &ChildMeta {
        &self.meta
    }

    fn start(&self, cx: &StartCx<'_>, generation: u64) -> Result<(Spawned, Early), ExitReason> {
        self.slot.set_place(cx.parent_path, &self.meta.id);
        let ctx = ChildContext {
            generation,
            runtime: cx.runtime,
            myself: &self.slot,
        };
        if let Some(name) = &self.name {
            cx.runtime
                .registry()
                .register_slot(name, &self.actor_ref())
                .map_err(ExitReason::error)?;
        }
        let actor = catch_unwind(AssertUnwindSafe(|| (self.factory)(&ctx)))
            .map_err(|p| ExitReason::from_panic(&*p))?;
        Ok(instance::spawn(
            &self.slot,
            generation,
            self.mailbox,
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
}

impl<A: Actor<Context = Context<A>>> From<ChildSpec<A>> for Child {
    fn from(spec: ChildSpec<A>) -> Self {
        Child(Arc::new(spec))
    }
}
