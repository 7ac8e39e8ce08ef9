//! [`ActorRef`]: a handle that reaches the current instance of an actor across restarts.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::dev::channel::AddressSender;
use actix::dev::{SendError, ToEnvelope};
use actix::{Actor, Context, Handler, Message};
use parking_lot::RwLock;
use tokio::sync::Notify;

use crate::error::{AskError, TellError};
use crate::exit::ExitReason;
use crate::lane::{AskJob, AskOutcome, Batch, Feed, Lane, LaneHook, Refused};

/// Where an actor stands, as its handle sees it.
pub(crate) enum SlotState<A: Actor> {
    /// Never started.
    NotStarted,
    /// An instance is running (or starting) with this mailbox.
    Running {
        tx: AddressSender<A>,
        generation: u64,
    },
    /// The instance of this generation ended; its supervisor has not finished restarting it.
    Down,
    /// Ended for good.
    Dead(Box<ExitReason>),
}

/// The shared cell behind every [`ActorRef`] of one supervised child: the supervisor swaps the
/// mailbox in it on every restart, so handles never go stale.
pub(crate) struct Slot<A: Actor> {
    state: RwLock<SlotState<A>>,
    changed: Notify,
    /// How many tasks wait on `changed`: state changes skip the notification when none does.
    watchers: AtomicUsize,
    /// The supervisor's path and the child's id.
    place: RwLock<(Arc<str>, Arc<str>)>,
    supervised: bool,
    /// The highest generation ever installed: generations keep counting up when a supervisor
    /// above restarts the whole subtree.
    last_generation: AtomicU64,
    /// The generation of the running instance, 0 when none runs: what a handle's cached sender
    /// is checked against, without taking `state`'s lock.
    running: AtomicU64,
    /// The instances' batch lanes (shared with the instances, which install them).
    pub(crate) lanes: Arc<LaneHook<A>>,
}

impl<A: Actor> Drop for Slot<A> {
    fn drop(&mut self) {
        // Every handle is gone: the lane (if any) ends once it has handled what it holds.
        self.lanes.orphaned();
    }
}

impl<A: Actor> Slot<A> {
    pub(crate) fn new(id: Arc<str>, supervised: bool) -> Arc<Self> {
        Arc::new(Slot {
            state: RwLock::new(SlotState::NotStarted),
            changed: Notify::new(),
            watchers: AtomicUsize::new(0),
            place: RwLock::new(("".into(), id)),
            supervised,
            last_generation: AtomicU64::new(0),
            running: AtomicU64::new(0),
            lanes: LaneHook::new(),
        })
    }

    /// The path in the supervision tree (`root/app/db`).
    pub(crate) fn path(&self) -> Arc<str> {
        let (parent, id) = &*self.place.read();
        if parent.is_empty() {
            id.clone()
        } else {
            format!("{parent}/{id}").into()
        }
    }

    /// Records where the child sits (its supervisor's path and its id): shared strings, no
    /// allocation per child.
    pub(crate) fn set_place(&self, parent: &Arc<str>, id: &Arc<str>) {
        {
            let place = self.place.read();
            if Arc::ptr_eq(&place.0, parent) && Arc::ptr_eq(&place.1, id) {
                return;
            }
        }
        *self.place.write() = (parent.clone(), id.clone());
    }

    /// Wakes the tasks waiting in `terminated` or `running_generation`, if any.
    fn changed(&self) {
        if self.watchers.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    pub(crate) fn install(&self, tx: AddressSender<A>, generation: u64) {
        self.last_generation
            .fetch_max(generation, Ordering::Relaxed);
        *self.state.write() = SlotState::Running { tx, generation };
        self.running.store(generation, Ordering::Release);
        self.changed();
    }

    pub(crate) fn last_generation(&self) -> u64 {
        self.last_generation.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_down(&self, generation: u64) {
        self.lanes.ended(generation);
        let mut st = self.state.write();
        if matches!(*st, SlotState::Running { generation: g, .. } if g == generation) {
            self.running.store(0, Ordering::Release);
            *st = SlotState::Down;
            drop(st);
            self.changed();
        }
    }

    pub(crate) fn mark_dead(&self, reason: ExitReason) {
        let mut st = self.state.write();
        self.running.store(0, Ordering::Release);
        *st = SlotState::Dead(Box::new(reason));
        drop(st);
        self.changed();
    }

    pub(crate) fn is_dead(&self) -> bool {
        matches!(*self.state.read(), SlotState::Dead(_))
    }
}

/// Counts a task waiting on a slot's changes for as long as it lives.
struct Watching<'a>(&'a AtomicUsize);

impl<'a> Watching<'a> {
    fn new(watchers: &'a AtomicUsize) -> Self {
        watchers.fetch_add(1, Ordering::SeqCst);
        Watching(watchers)
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What an ending instance does to its handle's slot.
pub(crate) trait MarkDown {
    /// The instance of `generation` ended; marks the slot down if it still holds it.
    fn mark_down(&self, generation: u64);
}

impl<A: Actor> MarkDown for Slot<A> {
    fn mark_down(&self, generation: u64) {
        Slot::mark_down(self, generation)
    }
}

/// A handle to an actor that survives its restarts.
///
/// Every `ActorRef` of a supervised child reaches the child's *current* instance: when the child
/// is restarted, its supervisor points the handle at the new instance's mailbox. Cheap to clone,
/// `Send` and `Sync`.
///
/// # Delivery
/// - **Bounded.** Each instance has a bounded mailbox ([`ChildSpec::mailbox`], 1024 by default;
///   as in actix, each sending handle may add one message beyond it).
///   [`tell`](ActorRef::tell) never waits and never exceeds the bound: a full mailbox gives the
///   message back in [`TellError::Full`].
/// - **Never lost without a word.** While the child is between instances (it ended and its
///   supervisor has not yet restarted it) a send fails with [`TellError::Restarting`]; once it
///   ended for good, with [`TellError::Dead`]. Each error gives the message back.
/// - **Ordering.** Messages from one sender to one instance are handled in the order sent. A
///   message accepted by an instance that then crashes is lost with that instance's mailbox (as
///   in Erlang): an [`ask`](ActorRef::ask) among them fails at once with
///   [`AskError::ActorDied`], a tell is gone.
///
///
/// # Cost
/// A handle remembers the mailbox of the instance it last reached: sending again to that same
/// instance costs two atomic loads on top of actix's own send. A send that finds another
/// instance (after a restart) goes through the child's shared slot, under a read lock; a clone
/// of the handle starts afresh and caches the current instance again.
///
/// [`ChildSpec::mailbox`]: crate::ChildSpec::mailbox
pub struct ActorRef<A: Actor> {
    slot: Arc<Slot<A>>,
    /// The sender of the first instance this handle sent to, with its generation.
    cache: OnceLock<(u64, AddressSender<A>)>,
}

impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        ActorRef::from_slot(self.slot.clone())
    }
}

impl<A: Actor> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorRef")
            .field("path", &self.slot.path())
            .field("generation", &self.generation())
            .finish()
    }
}

impl<A: Actor> PartialEq for ActorRef<A> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.slot, &other.slot)
    }
}

impl<A: Actor> Eq for ActorRef<A> {}

impl<A: Actor> ActorRef<A> {
    pub(crate) fn from_slot(slot: Arc<Slot<A>>) -> Self {
        ActorRef {
            slot,
            cache: OnceLock::new(),
        }
    }

    /// The cached sender, if it belongs to the running instance.
    #[inline]
    fn cached(&self) -> Option<&AddressSender<A>> {
        let (generation, tx) = self.cache.get()?;
        (self.slot.running.load(Ordering::Acquire) == *generation).then_some(tx)
    }

    /// Under the slot's lock: the sender to use for the running instance (caching it in this
    /// handle the first time).
    fn sender<'a>(&'a self, state: &'a SlotState<A>) -> Option<&'a AddressSender<A>> {
        let SlotState::Running { tx, generation } = state else {
            return None;
        };
        match self.cache.get() {
            Some((g, cached)) if g == generation => Some(cached),
            Some(_) => Some(tx),
            None => {
                let _ = self.cache.set((*generation, tx.clone()));
                match self.cache.get() {
                    Some((g, cached)) if g == generation => Some(cached),
                    _ => Some(tx),
                }
            }
        }
    }

    pub(crate) fn slot(&self) -> &Arc<Slot<A>> {
        &self.slot
    }

    pub(crate) fn slot_id(&self) -> usize {
        Arc::as_ptr(&self.slot) as usize
    }

    /// The actor's path in its supervision tree (`root/app/db`).
    pub fn path(&self) -> Arc<str> {
        self.slot.path()
    }

    /// The generation of the current instance (1 for the first start, +1 on every restart), or
    /// `None` while no instance runs.
    pub fn generation(&self) -> Option<u64> {
        match &*self.slot.state.read() {
            SlotState::Running { generation, .. } => Some(*generation),
            _ => None,
        }
    }

    /// The current instance's actix address (it does not follow restarts).
    #[cfg_attr(not(feature = "testkit"), allow(dead_code))]
    pub(crate) fn current_addr(&self) -> Option<actix::Addr<A>> {
        match &*self.slot.state.read() {
            SlotState::Running { tx, .. } => Some(actix::Addr::new(tx.clone())),
            _ => None,
        }
    }

    /// True while an instance is running.
    pub fn is_running(&self) -> bool {
        matches!(*self.slot.state.read(), SlotState::Running { .. })
    }

    /// Why the actor ended for good, or `None` while it may still run.
    pub fn exit_reason(&self) -> Option<ExitReason> {
        match &*self.slot.state.read() {
            SlotState::Dead(r) => Some((**r).clone()),
            _ => None,
        }
    }

    /// Waits until the actor has ended for good and returns why. Bound it with a timeout (the
    /// testkit's `expect_terminated` does).
    pub async fn terminated(&self) -> ExitReason {
        let _watching = Watching::new(&self.slot.watchers);
        loop {
            let notified = self.slot.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let SlotState::Dead(r) = &*self.slot.state.read() {
                return (**r).clone();
            }
            notified.await;
        }
    }

    /// Waits until an instance of at least generation `generation` runs, or the actor is dead.
    /// Returns the running generation, `None` if the actor ended for good.
    pub async fn running_generation(&self, generation: u64) -> Option<u64> {
        let _watching = Watching::new(&self.slot.watchers);
        loop {
            let notified = self.slot.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match &*self.slot.state.read() {
                SlotState::Running { generation: g, .. } if *g >= generation => return Some(*g),
                SlotState::Dead(_) => return None,
                _ => {}
            }
            notified.await;
        }
    }

    fn not_running<M>(&self, state: &SlotState<A>, msg: M) -> TellError<M> {
        match state {
            SlotState::Dead(_) => TellError::Dead(msg),
            SlotState::NotStarted => TellError::NotStarted(msg),
            SlotState::Down if self.slot.supervised => TellError::Restarting(msg),
            SlotState::Down => TellError::Dead(msg),
            SlotState::Running { .. } if self.slot.supervised => TellError::Restarting(msg),
            SlotState::Running { .. } => TellError::Dead(msg),
        }
    }

    /// Sends a message without waiting. Never blocks and never exceeds the mailbox bound.
    ///
    /// # Errors
    /// Gives the message back in [`TellError::Full`], [`TellError::Restarting`],
    /// [`TellError::Dead`] or [`TellError::NotStarted`].
    #[inline]
    pub fn tell<M>(&self, msg: M) -> Result<(), TellError<M>>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let msg = match self.cached() {
            Some(tx) => match tx.try_send(msg, true) {
                Ok(()) => {
                    crate::stats::add(crate::stats::Metric::LocalSent, 1);
                    return Ok(());
                }
                Err(SendError::Full(m)) => return Err(TellError::Full(m)),
                // That instance just ended: ask the slot what runs now.
                Err(SendError::Closed(m)) => m,
            },
            None => msg,
        };
        self.tell_slow(msg)
    }

    fn tell_slow<M>(&self, msg: M) -> Result<(), TellError<M>>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let state = self.slot.state.read();
        match self.sender(&state) {
            Some(tx) => match tx.try_send(msg, true) {
                Ok(()) => {
                    crate::stats::add(crate::stats::Metric::LocalSent, 1);
                    Ok(())
                }
                Err(SendError::Full(m)) => Err(TellError::Full(m)),
                Err(SendError::Closed(m)) => Err(self.not_running(&state, m)),
            },
            None => Err(self.not_running(&state, msg)),
        }
    }

    /// Sends a request and waits at most `timeout` for the reply.
    ///
    /// # Errors
    /// - [`AskError::Full`], [`AskError::Restarting`], [`AskError::Dead`],
    ///   [`AskError::NotStarted`]: not delivered; the message comes back.
    /// - [`AskError::ActorDied`]: the instance ended before replying; reported at once, not when
    ///   the timeout runs out. The message may or may not have been handled.
    /// - [`AskError::Timeout`]: no reply within `timeout`.
    pub async fn ask<M>(&self, msg: M, timeout: Duration) -> Result<M::Result, AskError<M>>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let sent = match self.cached() {
            Some(tx) => match tx.send(msg) {
                Ok(rx) => Ok(rx),
                Err(SendError::Full(m)) => return Err(AskError::Full(m)),
                Err(SendError::Closed(m)) => Err(m),
            },
            None => Err(msg),
        };
        let rx = match sent {
            Ok(rx) => rx,
            Err(msg) => {
                let state = self.slot.state.read();
                match self.sender(&state) {
                    Some(tx) => match tx.send(msg) {
                        Ok(rx) => rx,
                        Err(SendError::Full(m)) => return Err(AskError::Full(m)),
                        Err(SendError::Closed(m)) => {
                            return Err(self.not_running(&state, m).into());
                        }
                    },
                    None => return Err(self.not_running(&state, msg).into()),
                }
            }
        };
        crate::stats::add(crate::stats::Metric::LocalSent, 1);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(AskError::ActorDied),
            Err(_) => Err(AskError::Timeout(timeout)),
        }
    }
}

impl<A: Actor<Context = Context<A>>> ActorRef<A> {
    /// The running instance's batch lane (created on first use), or why there is none.
    fn lane<M>(&self, msg: M) -> Result<(Arc<Lane<A>>, M), TellError<M>> {
        loop {
            let generation = self.slot.running.load(Ordering::Acquire);
            if generation == 0 {
                let state = self.slot.state.read();
                if let SlotState::Running { .. } = &*state {
                    continue; // installed just now
                }
                return Err(self.not_running(&state, msg));
            }
            if let Some(lane) = self.slot.lanes.lane(generation) {
                return Ok((lane, msg));
            }
            // A newer instance started meanwhile: look again.
        }
    }

    fn refused<M>(&self, refused: Refused<M>) -> TellError<M> {
        match refused {
            Refused::Full(m) => TellError::Full(m),
            Refused::Closed(m) => {
                let state = self.slot.state.read();
                match &*state {
                    // The instance we reached ended and the next one is already running.
                    SlotState::Running { .. } if self.slot.supervised => TellError::Restarting(m),
                    _ => self.not_running(&state, m),
                }
            }
        }
    }

    /// Delivers `msgs` to the running instance as one item of its *batch lane*: they are
    /// handled one after another, in order, by the actor's own `Handler<M>`, as if each had
    /// come through the mailbox, but at the cost of one queue operation for the whole batch.
    ///
    /// The batch lane is a second queue into the actor, beside the mailbox, made for producers
    /// that hold many messages at once (a network connection does). Its items are handled in
    /// the order they were queued, between mailbox messages; **there is no order between the
    /// lane and the mailbox**, so a sender that needs its messages in order uses one of them
    /// for everything it sends to an actor. The lane is bounded like the mailbox (its bound in
    /// messages is the mailbox's), except that a batch always gets into an empty lane; what it
    /// holds when the instance ends is dropped with it.
    ///
    /// # Errors
    /// Gives the batch back, whole, in [`TellError::Full`], [`TellError::Restarting`],
    /// [`TellError::Dead`] or [`TellError::NotStarted`].
    pub fn tell_batch<M>(&self, msgs: Vec<M>) -> Result<(), TellError<Vec<M>>>
    where
        A: Handler<M>,
        M: Message + Send + 'static,
    {
        let count = msgs.len();
        self.tell_iter(msgs.into_iter(), count)
            .map_err(|e| e.map(|rest| rest.collect()))
    }

    /// As [`tell_batch`](ActorRef::tell_batch), for messages produced one by one as the actor
    /// handles them (decoded from a buffer, say): `count` is how many the iterator yields, for
    /// the lane's bound. The iterator is driven inside the actor's context, between handlers.
    ///
    /// # Errors
    /// Gives the iterator back, untouched, as [`tell_batch`](ActorRef::tell_batch) does.
    pub fn tell_iter<I>(&self, msgs: I, count: usize) -> Result<(), TellError<I>>
    where
        A: Handler<I::Item>,
        I: Iterator + Send + 'static,
        I::Item: Message + Send + 'static,
    {
        let (lane, msgs) = self.lane(msgs)?;
        lane.push(Batch::new(msgs, count))
            .map_err(|r| self.refused(r).map(Batch::into_inner))?;
        crate::stats::add(crate::stats::Metric::LocalSent, count as u64);
        Ok(())
    }

    /// Waits until the running instance's batch lane has room for a batch of `size` messages
    /// (or is empty, or no instance runs): what a producer whose
    /// [`tell_batch`](ActorRef::tell_batch) came back [`TellError::Full`] awaits before it
    /// tries again. Bound it with a timeout.
    pub async fn wait_for_batch_room(&self, size: usize) {
        if let Ok((lane, ())) = self.lane(()) {
            lane.room(size).await;
        }
    }

    /// Sends a request through the batch lane and hands the outcome to `reply` instead of
    /// returning a future: no task waits for the answer. `reply` is called exactly once, from
    /// inside the actor's context right after the handler ran when the handler answers at once
    /// (the common case), else from a task that waits at most `timeout` for its asynchronous
    /// response; with [`AskError::ActorDied`] if the instance ends before replying, with
    /// [`AskError::Timeout`] if an asynchronous response takes longer than `timeout`.
    ///
    /// Ordering and bounds are those of [`tell_batch`](ActorRef::tell_batch).
    ///
    /// # Errors
    /// As [`ActorRef::tell`], giving the message and `reply` back uncalled (a caller that gives
    /// up can call `reply` itself with the error, as an [`AskError`]).
    #[allow(clippy::type_complexity)]
    pub fn ask_then<M, F>(
        &self,
        msg: M,
        timeout: Duration,
        reply: F,
    ) -> Result<(), TellError<(M, F)>>
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
        F: FnOnce(AskOutcome<M::Result>) + Send + 'static,
    {
        self.ask_then_fed(msg, timeout, reply, None)
    }

    /// As [`ask_then`](ActorRef::ask_then), naming where the request came from: while its lane
    /// is empty, the actor reads `feed` itself ([`Feed`]), so that the next request that comes
    /// over it is read and handled in one poll of the actor's task.
    ///
    /// # Errors
    /// As [`ask_then`](ActorRef::ask_then).
    #[allow(clippy::type_complexity)]
    pub fn ask_then_fed<M, F>(
        &self,
        msg: M,
        timeout: Duration,
        reply: F,
        feed: Option<&Arc<dyn Feed>>,
    ) -> Result<(), TellError<(M, F)>>
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
        F: FnOnce(AskOutcome<M::Result>) + Send + 'static,
    {
        let (lane, job) = self
            .lane(AskJob::new(msg, timeout, reply))
            .map_err(|e| e.map(AskJob::into_parts))?;
        lane.push_fed(job, feed)
            .map_err(|r| self.refused(r).map(AskJob::into_parts))?;
        crate::stats::add(crate::stats::Metric::LocalSent, 1);
        Ok(())
    }
}

/// Spawns `actor` on the current arbiter with no supervisor, behind a bounded mailbox of
/// `mailbox` messages, and returns its handle.
///
/// A panic ends it with [`ExitReason::Panic`] (see [`ActorRef::exit_reason`]) without touching
/// the other actors of the arbiter; nothing restarts it. It stops by itself once every handle
/// is dropped and its mailbox is empty. Must be called inside an actix system.
pub fn spawn<A>(name: &str, mailbox: usize, actor: A) -> ActorRef<A>
where
    A: Actor<Context = Context<A>>,
{
    let name: Arc<str> = name.into();
    let slot = Slot::new(name.clone(), false);
    let weak = Arc::downgrade(&slot);
    crate::instance::spawn(
        &slot,
        1,
        mailbox.max(1),
        actor,
        "local",
        0,
        std::rc::Rc::new(move |_, _, ev| {
            let reason = match ev {
                crate::instance::InstanceEvent::Started(Ok(())) => return,
                crate::instance::InstanceEvent::Started(Err(r))
                | crate::instance::InstanceEvent::Exited(r) => r,
            };
            if reason.is_abnormal() {
                tracing::warn!(actor = %name, %reason, "unsupervised actor exited");
            }
            if let Some(slot) = weak.upgrade() {
                slot.mark_dead(reason);
            }
        }),
        false,
    );
    ActorRef::from_slot(slot)
}
