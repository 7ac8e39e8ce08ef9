//! One running instance of an actor: the task that drives actix's context future, catches
//! panics, acknowledges the start and reports the exit.
//!
//! actix runs an actor as a `ContextFut` spawned on the arbiter; it gives no join handle and its
//! own `Supervisor` does not survive a panic. cadre spawns the context future itself, wrapped in
//! [`Instance`], so that:
//! - a panic in a handler, a lifecycle hook or a spawned actor future is caught on the poll that
//!   raised it and becomes [`ExitReason::Panic`]; the arbiter thread and its other actors go on;
//! - the start is acknowledged after the first poll (which runs `Actor::started`), or later when
//!   the actor deferred it with [`defer_start`];
//! - the exit is reported exactly once, with the reason the actor gave ([`ContextExt::fail`]),
//!   [`ExitReason::Shutdown`] when it was asked to stop, [`ExitReason::Killed`] when its task was
//!   dropped, or [`ExitReason::Normal`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use actix::dev::channel;
use actix::dev::ContextFut;
use actix::{Actor, ActorContext, Context};
use tokio::task::AbortHandle;

use crate::actor_ref::{MarkDown, Slot};
use crate::exit::ExitReason;
use crate::lane::{self, LaneHook};

/// What an instance tells whoever started it.
#[derive(Debug)]
pub(crate) enum InstanceEvent {
    /// The start finished: `Ok` once `started` ran (or the deferred start was confirmed), `Err`
    /// when the instance ended before that.
    Started(Result<(), ExitReason>),
    /// The instance ended after a successful start.
    Exited(ExitReason),
}

/// Receives instances' events, with the key of the child and the generation of the instance
/// that reports; runs on the instances' arbiter thread. One reporter serves all the children
/// of a supervisor.
pub(crate) type Reporter = Rc<dyn Fn(u64, u64, InstanceEvent)>;

/// The events of an instance's first poll, when its spawner takes them ([`spawn`]'s
/// `capture`): at most a start and an exit.
pub(crate) type Early = [Option<InstanceEvent>; 2];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ack {
    Pending,
    Deferred,
    Sent,
}

/// The control block shared by an instance and its supervisor (both on one arbiter thread).
pub(crate) struct InstanceCtl {
    stop_requested: Cell<bool>,
    waker: RefCell<Option<Waker>>,
    /// The reason the actor gave for stopping, if any (boxed: rarely set).
    exit: RefCell<Option<Box<ExitReason>>>,
    ack: Cell<Ack>,
    finished: Cell<bool>,
    /// The handle's slot, marked down (if it still holds this generation) before the exit is
    /// reported.
    slot: std::sync::Weak<dyn MarkDown>,
    key: u64,
    generation: u64,
    report: Reporter,
    /// While the spawner polls the instance inline, its events go to [`CAPTURED`] for the
    /// spawner instead of to `report`.
    capture: Cell<bool>,
}

impl InstanceCtl {
    fn new(
        report: Reporter,
        key: u64,
        slot: std::sync::Weak<dyn MarkDown>,
        generation: u64,
    ) -> Rc<Self> {
        Rc::new(InstanceCtl {
            stop_requested: Cell::new(false),
            waker: RefCell::new(None),
            exit: RefCell::new(None),
            ack: Cell::new(Ack::Pending),
            finished: Cell::new(false),
            slot,
            key,
            generation,
            report,
            capture: Cell::new(false),
        })
    }

    fn emit(&self, event: InstanceEvent) {
        if self.capture.get() {
            let id = self as *const Self as usize;
            CAPTURED.with(|c| c.borrow_mut().push((id, event)));
        } else {
            (self.report)(self.key, self.generation, event);
        }
    }

    /// Asks the instance to stop gracefully (as if it called `ctx.stop()`); it exits with
    /// [`ExitReason::Shutdown`] unless it already recorded another reason.
    pub(crate) fn request_stop(&self) {
        if !self.stop_requested.replace(true) {
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    fn set_exit(&self, reason: ExitReason) {
        let mut exit = self.exit.borrow_mut();
        if exit.is_none() {
            *exit = Some(Box::new(reason));
        }
    }

    fn confirm_start(&self) {
        if matches!(self.ack.get(), Ack::Pending | Ack::Deferred) && !self.finished.get() {
            self.ack.set(Ack::Sent);
            self.emit(InstanceEvent::Started(Ok(())));
        }
    }

    fn finish(&self, reason: ExitReason) {
        if self.finished.replace(true) {
            return;
        }
        crate::stats::add(crate::stats::Metric::Alive, 1u64.wrapping_neg());
        let acked = self.ack.replace(Ack::Sent) == Ack::Sent;
        if !acked && reason.is_normal() {
            self.emit(InstanceEvent::Started(Ok(())));
        }
        if let Some(slot) = self.slot.upgrade() {
            slot.mark_down(self.generation);
        }
        if !acked && reason.is_abnormal() {
            self.emit(InstanceEvent::Started(Err(reason)));
        } else {
            self.emit(InstanceEvent::Exited(reason));
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<InstanceCtl>>> = const { RefCell::new(None) };
    /// Events of instances being polled inline by their spawner, tagged with their control
    /// block's address. Reused: no allocation per start once warm.
    static CAPTURED: RefCell<Vec<(usize, InstanceEvent)>> = const { RefCell::new(Vec::new()) };
}

/// Sets [`CURRENT`] for the duration of a poll (or drop) of an instance.
struct Enter(Option<Rc<InstanceCtl>>);

impl Enter {
    fn new(ctl: &Rc<InstanceCtl>) -> Self {
        Enter(
            CURRENT
                .try_with(|c| c.replace(Some(ctl.clone())))
                .ok()
                .flatten(),
        )
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        let prev = self.0.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = prev);
    }
}

/// Whether this thread is running an actor instance now (inside its poll or its drop).
pub(crate) fn in_instance() -> bool {
    CURRENT
        .try_with(|c| c.try_borrow().is_ok_and(|c| c.is_some()))
        .unwrap_or(false)
}

/// Installs, once per process, a panic hook that reports a panic inside a supervised actor
/// (which the runtime catches and turns into the actor's exit) as one `error` line, and leaves
/// every other panic to the hook that was there before. `CADRE_PANIC_BACKTRACE=1` (or
/// `RUST_BACKTRACE` set to anything but `0`) keeps the previous hook for actors too.
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let verbose = |var: &str| std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0");
        if verbose("CADRE_PANIC_BACKTRACE") || verbose("RUST_BACKTRACE") {
            return;
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !in_instance() {
                return previous(info);
            }
            let message = crate::exit::panic_message(info.payload());
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            tracing::error!(
                panic = %message,
                %location,
                "an actor panicked; its supervisor handles the exit \
                 (CADRE_PANIC_BACKTRACE=1 prints the backtrace)"
            );
        }));
    });
}

fn with_current<R>(f: impl FnOnce(&Rc<InstanceCtl>) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| c.borrow().as_ref().map(f))
        .ok()
        .flatten()
}

/// Records an exit reason for the instance being polled on this thread. Returns false when the
/// caller is not inside a cadre-spawned actor.
pub(crate) fn record_exit(reason: ExitReason) -> bool {
    with_current(|ctl| ctl.set_exit(reason)).is_some()
}

/// Extra operations on an actor's context.
pub trait ContextExt {
    /// Stops the actor with an error: its exit reason becomes [`ExitReason::Error`], an abnormal
    /// exit, so a [`Restart::Transient`](crate::Restart::Transient) child is restarted. Called
    /// during `started`, it fails the start with that error.
    ///
    /// Outside a cadre-spawned actor (one started with plain `Actor::start`), this only stops it.
    fn fail(&mut self, error: impl std::fmt::Display);
}

impl<A: Actor<Context = Context<A>>> ContextExt for Context<A> {
    fn fail(&mut self, error: impl std::fmt::Display) {
        if !record_exit(ExitReason::error(error)) {
            tracing::warn!("ContextExt::fail called outside a cadre-spawned actor; stopping it");
        }
        self.stop();
    }
}

/// A deferred start, confirmed later with [`StartGate::ready`].
///
/// Obtained with [`defer_start`] inside `Actor::started`. Until the gate is confirmed, the
/// supervisor that started the actor waits (its start is sequential, left to right) and the
/// actor's handle already accepts messages, which queue in its bounded mailbox. To fail the
/// start, stop the actor with [`ContextExt::fail`]; dropping the gate without confirming
/// leaves the start pending until the actor stops.
pub struct StartGate {
    ctl: Weak<InstanceCtl>,
}

impl StartGate {
    /// Confirms the start: the supervisor goes on to the next child.
    pub fn ready(self) {
        if let Some(ctl) = self.ctl.upgrade() {
            ctl.confirm_start();
        }
    }
}

impl std::fmt::Debug for StartGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StartGate")
    }
}

/// Defers the start acknowledgement of the actor being started, for actors whose
/// initialisation is asynchronous (connect first, then accept work). Call it in
/// `Actor::started`; returns `None` outside a cadre-spawned actor or after the start was
/// already acknowledged.
pub fn defer_start() -> Option<StartGate> {
    with_current(|ctl| {
        if ctl.ack.get() == Ack::Pending {
            ctl.ack.set(Ack::Deferred);
            Some(StartGate {
                ctl: Rc::downgrade(ctl),
            })
        } else {
            None
        }
    })
    .flatten()
}

/// The future of one instance: actix's context future plus panic isolation and reporting.
struct Instance<A: Actor<Context = Context<A>>> {
    fut: Option<ContextFut<A, Context<A>>>,
    ctl: Rc<InstanceCtl>,
    stop_delivered: bool,
    span: tracing::Span,
    /// The child's batch lanes; `lane_installed` once this instance runs one.
    lanes: Arc<LaneHook<A>>,
    lane_installed: bool,
}

/// Drops a context future (which may run `stopping`/`stopped`), catching a panic there.
fn drop_fut<A: Actor<Context = Context<A>>>(
    fut: &mut Option<ContextFut<A, Context<A>>>,
    ctl: &Rc<InstanceCtl>,
) -> Option<ExitReason> {
    let fut = fut.take()?;
    let _enter = Enter::new(ctl);
    catch_unwind(AssertUnwindSafe(move || drop(fut)))
        .err()
        .map(|p| ExitReason::from_panic(&*p))
}

impl<A: Actor<Context = Context<A>>> Future for Instance<A> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let Instance {
            fut: slot,
            ctl,
            stop_delivered,
            span,
            lanes,
            lane_installed,
        } = self.get_mut();
        let Some(fut) = slot.as_mut() else {
            return Poll::Ready(());
        };
        let _span = span.enter();
        if ctl.stop_requested.get() && !*stop_delivered {
            *stop_delivered = true;
            fut.ctx().stop();
        }
        if !*stop_delivered {
            let mut waker = ctl.waker.borrow_mut();
            match waker.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => {
                    *waker = Some(cx.waker().clone());
                    lanes.set_waker(cx.waker());
                }
            }
        }
        if !*lane_installed && lanes.wanted() {
            // A sender just created this instance's lane: run it from now on.
            if let Some(lane) = lanes.lane(ctl.generation) {
                lane::install(fut.ctx(), lane);
            }
            *lane_installed = true;
        }
        let polled = {
            let _enter = Enter::new(ctl);
            catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *fut).poll(cx)))
        };
        match polled {
            Ok(Poll::Pending) => {
                if ctl.ack.get() == Ack::Pending {
                    ctl.confirm_start();
                }
                Poll::Pending
            }
            Ok(Poll::Ready(())) => {
                let late_panic = drop_fut(slot, ctl);
                let recorded = ctl.exit.borrow_mut().take().map(|r| *r);
                let reason = late_panic.or(recorded).unwrap_or(if *stop_delivered {
                    ExitReason::Shutdown
                } else {
                    ExitReason::Normal
                });
                ctl.finish(reason);
                Poll::Ready(())
            }
            Err(payload) => {
                let reason = ExitReason::from_panic(&*payload);
                let _ = drop_fut(slot, ctl);
                ctl.finish(reason);
                Poll::Ready(())
            }
        }
    }
}

impl<A: Actor<Context = Context<A>>> Drop for Instance<A> {
    fn drop(&mut self) {
        if !self.ctl.finished.get() {
            // Dropped before it ended by itself: aborted (killed) or its arbiter shut down.
            let _ = drop_fut(&mut self.fut, &self.ctl);
            self.ctl.finish(ExitReason::Killed);
        }
    }
}

/// A spawned instance, as its supervisor holds it.
pub(crate) struct Spawned {
    pub(crate) ctl: Rc<InstanceCtl>,
    /// Kills the instance's task; `None` when the instance already ended in its first poll.
    pub(crate) abort: Option<AbortHandle>,
}

impl Spawned {
    pub(crate) fn kill(&self) {
        if let Some(abort) = &self.abort {
            abort.abort();
        }
    }
}

/// Spawns `actor` on the current arbiter as generation `generation` of `slot`, with a bounded
/// mailbox of `mailbox` messages, on the node called `node` (for its tracing span). The slot
/// points at the new mailbox before this returns, so messages sent from now on reach the new
/// instance. When the instance ends, the slot is marked down (if it still holds this
/// generation) before `report` hears of it.
///
/// The instance's first poll, which runs `Actor::started`, happens here, inline: a spawner on
/// the same thread learns at once whether the start succeeded, with no round trip through the
/// executor. With `capture`, what the instance reports during that poll is returned as
/// [`Early`] events instead of going to `report`. The task is then handed to the executor,
/// whose first poll registers the real waker.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn<A>(
    slot: &Arc<Slot<A>>,
    generation: u64,
    mailbox: usize,
    actor: A,
    node: &str,
    key: u64,
    report: Reporter,
    capture: bool,
) -> (Spawned, Early)
where
    A: Actor<Context = Context<A>>,
{
    let (tx, rx) = channel::channel(mailbox);
    let mut ctx = Context::with_receiver(rx);
    let lanes = slot.lanes.clone();
    lanes.starting(mailbox);
    let lane_installed = lanes.wanted();
    slot.install(tx, generation);
    if lane_installed {
        // Its predecessor had a lane: senders keep using it, so this one starts with its own.
        if let Some(lane) = lanes.lane(generation) {
            lane::install(&mut ctx, lane);
        }
    }
    let weak: std::sync::Weak<dyn MarkDown> = Arc::downgrade(slot) as _;
    let ctl = InstanceCtl::new(report, key, weak, generation);
    crate::stats::add(crate::stats::Metric::Alive, 1);
    let span = tracing::info_span!("actor", name = %slot.path(), node = %node, generation);
    let mut instance = Instance {
        fut: Some(ctx.into_future(actor)),
        ctl: ctl.clone(),
        stop_delivered: false,
        span,
        lanes,
        lane_installed,
    };
    let mark = CAPTURED.with(|c| c.borrow().len());
    ctl.capture.set(capture);
    let first = Pin::new(&mut instance).poll(&mut TaskContext::from_waker(Waker::noop()));
    ctl.capture.set(false);
    let mut early: Early = [None, None];
    if capture {
        let id = Rc::as_ptr(&ctl) as usize;
        CAPTURED.with(|c| {
            let mut c = c.borrow_mut();
            // Nested spawns took their own events out already: what follows `mark` is ours.
            let mut n = 0;
            for (owner, event) in c.drain(mark..) {
                debug_assert_eq!(owner, id, "an inline poll left foreign events behind");
                if n < early.len() {
                    early[n] = Some(event);
                    n += 1;
                }
            }
        });
    }
    let abort = match first {
        Poll::Ready(()) => None,
        Poll::Pending => Some(tokio::task::spawn_local(instance).abort_handle()),
    };
    (Spawned { ctl, abort }, early)
}
