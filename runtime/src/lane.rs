//! The batch lane: a second queue into an actor's context, for work that comes in batches.
//!
//! actix delivers each message as its own boxed envelope through the actor's mailbox. A
//! producer that holds many messages at once (a network connection that just read a frame of a
//! thousand tells) would pay that per message. A lane takes a whole batch as one item and runs
//! it inside the actor's context, handling the messages one after another with the actor's own
//! `Handler` implementations, exactly as if they had come through the mailbox.
//!
//! A lane belongs to one instance. It is created on first use and installed in the instance's
//! context as a spawned actor future; later instances of the same child get one from their
//! start. When the instance ends, whatever its lane still holds is dropped with it (an ask's
//! reply is then told that the actor died), as with the mailbox.
//!
//! Items in the lane are run in the order they were queued; the lane and the mailbox are two
//! queues, so a sender that uses both for one actor gets no order between them.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use actix::dev::{MessageResponse, OneshotSender};
use actix::{Actor, ActorFuture, AsyncContext, Context, Handler, Message};
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use crate::error::AskError;

/// How many messages a lane handles in one poll before it lets the arbiter's other tasks run.
const BUDGET: usize = 1024;

/// How many times one poll of a lane reads its [`Feed`] at most. A read that leaves the feed set
/// to wake the task is the last of the poll; one that delivered work and asked to be read again
/// (`Poll::Ready`) is followed by another once that work is handled.
const FEEDS_PER_POLL: usize = 8;

/// A source of work that an idle actor reads itself: the network connection its requests come
/// over ([`ActorRef::ask_then_fed`](crate::ActorRef::ask_then_fed)).
///
/// While its lane has nothing to run, the actor's lane future calls [`Feed::poll_feed`] with
/// the actor's own task context: the feed delivers what is ready (into this lane and others)
/// and has the task woken when more comes. A request and its handling then take one poll of
/// the actor's task instead of a poll of the reader's task and then one of the actor's. The
/// actor may be busy, waiting or gone when the feed has more: a feed must never depend on
/// being polled again (someone else must read it then).
pub trait Feed: Send + Sync {
    /// Delivers what is ready. `Poll::Pending`: it has arranged for `cx` to be woken when more
    /// comes. `Poll::Ready`: it delivered work and stopped before arranging that, so that the
    /// work is handled first; the lane reads it again once that work is done, within the same
    /// poll (if the lane cannot, the feed must still not depend on it: see above).
    fn poll_feed(&self, cx: &mut TaskContext<'_>) -> Poll<()>;
    /// The lane no longer reads it: another feed took its place, or the instance ended. Must
    /// not block.
    fn release(&self);
}

/// Work queued in a lane: one message, or a batch of them.
pub(crate) trait LaneJob<A: Actor>: Send {
    /// How many messages it counts for against the lane's bound.
    fn weight(&self) -> usize;

    /// Handles what is left, up to `budget` messages. Returns how many it handled and whether
    /// it is done: it stops early when the context starts waiting on a future or stopping
    /// (`ctx.waiting()`), or when the budget runs out, and is called again later for the rest.
    fn run(&mut self, act: &mut A, ctx: &mut A::Context, budget: usize) -> (usize, bool);
}

/// The queue behind one instance's lane.
pub(crate) struct Lane<A: Actor> {
    state: Mutex<LaneState<A>>,
    /// Senders waiting for room.
    room: Notify,
    /// Messages the lane holds before [`Lane::push`] refuses more (a batch is always taken
    /// when the lane is empty).
    capacity: usize,
}

struct LaneState<A: Actor> {
    jobs: VecDeque<Box<dyn LaneJob<A>>>,
    /// The messages queued (the jobs' weights).
    queued: usize,
    /// The lane future's waker, taken by the push that wakes it.
    waker: Option<Waker>,
    /// No more pushes: the instance ended, or every handle is gone.
    closed: bool,
    /// Whether a sender waits in [`Lane::room`].
    wanted_room: bool,
    /// What the lane future reads while the lane is empty.
    feed: Option<Arc<dyn Feed>>,
}

/// Why a push was refused; the job comes back.
pub(crate) enum Refused<J> {
    /// The lane holds its capacity.
    Full(J),
    /// The lane's instance has ended.
    Closed(J),
}

impl<A: Actor> Lane<A> {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Lane {
            state: Mutex::new(LaneState {
                jobs: VecDeque::new(),
                queued: 0,
                waker: None,
                closed: false,
                wanted_room: false,
                feed: None,
            }),
            room: Notify::new(),
            capacity: capacity.max(1),
        })
    }

    /// Queues `job` behind what the lane holds, and wakes the instance.
    pub(crate) fn push<J: LaneJob<A> + 'static>(&self, job: J) -> Result<(), Refused<J>> {
        self.push_fed(job, None)
    }

    /// As [`Lane::push`]; with `feed`, the lane reads that feed from now on while it is empty
    /// (the one it read before, if another, is released).
    pub(crate) fn push_fed<J: LaneJob<A> + 'static>(
        &self,
        job: J,
        feed: Option<&Arc<dyn Feed>>,
    ) -> Result<(), Refused<J>> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(Refused::Closed(job));
        }
        let weight = job.weight();
        if st.queued > 0 && st.queued + weight > self.capacity {
            return Err(Refused::Full(job));
        }
        st.queued += weight;
        st.jobs.push_back(Box::new(job));
        let replaced = match (feed, &st.feed) {
            (Some(new), Some(old)) if Arc::ptr_eq(new, old) => None,
            (Some(new), _) => st.feed.replace(new.clone()),
            (None, _) => None,
        };
        let waker = st.waker.take();
        drop(st);
        if let Some(old) = replaced {
            old.release();
        }
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Waits until the lane has room for `weight` more messages (or is empty), or is closed.
    pub(crate) async fn room(&self, weight: usize) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.state.lock();
                if st.closed || st.queued == 0 || st.queued + weight <= self.capacity {
                    return;
                }
                st.wanted_room = true;
            }
            notified.await;
        }
    }

    /// Refuses further pushes; with `drop_jobs`, drops what is queued (the instance ended) and
    /// otherwise lets the lane future run it first (every handle is gone). Wakes the lane
    /// future and the senders waiting for room.
    pub(crate) fn close(&self, drop_jobs: bool) {
        let (jobs, waker, feed) = {
            let mut st = self.state.lock();
            st.closed = true;
            let jobs = if drop_jobs {
                st.queued = 0;
                std::mem::take(&mut st.jobs)
            } else {
                VecDeque::new()
            };
            (jobs, st.waker.take(), st.feed.take())
        };
        if let Some(feed) = feed {
            feed.release();
        }
        // Dropped outside the lock: an ask's reply runs from its job's drop.
        drop(jobs);
        if let Some(w) = waker {
            w.wake();
        }
        self.room.notify_waiters();
    }
}

/// The actor future that runs a lane's jobs inside the instance's context.
pub(crate) struct LaneFuture<A: Actor> {
    lane: Arc<Lane<A>>,
    /// Jobs taken from the lane in one go, the first perhaps half done.
    taken: VecDeque<Box<dyn LaneJob<A>>>,
}

impl<A: Actor<Context = Context<A>>> LaneFuture<A> {
    pub(crate) fn new(lane: Arc<Lane<A>>) -> Self {
        LaneFuture {
            lane,
            taken: VecDeque::new(),
        }
    }
}

impl<A: Actor<Context = Context<A>>> ActorFuture<A> for LaneFuture<A> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        let mut budget = BUDGET;
        let mut feeds = FEEDS_PER_POLL;
        loop {
            if this.taken.is_empty() {
                let mut st = this.lane.state.lock();
                if st.jobs.is_empty() {
                    if st.closed {
                        return Poll::Ready(());
                    }
                    if let (Some(feed), true) = (&st.feed, feeds > 0) {
                        // Idle: read the feed from here, then look at the lane again. What it
                        // delivers here needs no wake-up (the waker is dropped meanwhile).
                        let feed = feed.clone();
                        st.waker = None;
                        drop(st);
                        feeds = match feed.poll_feed(task) {
                            Poll::Ready(()) => feeds - 1,
                            Poll::Pending => 0,
                        };
                        continue;
                    }
                    match &st.waker {
                        Some(w) if w.will_wake(task.waker()) => {}
                        _ => st.waker = Some(task.waker().clone()),
                    }
                    return Poll::Pending;
                }
                std::mem::swap(&mut this.taken, &mut st.jobs);
                let taken: usize = this.taken.iter().map(|j| j.weight()).sum();
                st.queued -= taken.min(st.queued);
                let notify = std::mem::take(&mut st.wanted_room);
                drop(st);
                if notify {
                    this.lane.room.notify_waiters();
                }
            }
            while let Some(job) = this.taken.front_mut() {
                if ctx.waiting() {
                    // A handler made the context wait (or stop): the rest waits too. The
                    // context polls its items again once it is done waiting.
                    return Poll::Pending;
                }
                let (handled, done) = job.run(act, ctx, budget);
                budget = budget.saturating_sub(handled.max(1));
                if done {
                    this.taken.pop_front();
                }
                if budget == 0 {
                    // Let the arbiter's other tasks run; come back for the rest.
                    task.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if !done {
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<A: Actor> Drop for LaneFuture<A> {
    fn drop(&mut self) {
        // The instance ended: nothing more gets in, and what is queued goes with it.
        self.lane.close(true);
    }
}

/// What a child's slot keeps of its lanes: whether one is wanted, and the running instance's.
pub(crate) struct LaneHook<A: Actor> {
    /// Set once any sender used the lane: every later instance gets one from its start.
    wanted: AtomicBool,
    /// The instances' mailbox bound, which lanes take as theirs.
    capacity: AtomicUsize,
    inner: Mutex<HookInner<A>>,
}

struct HookInner<A: Actor> {
    /// The running instance's task waker, to have it install a lane that was just created.
    waker: Option<Waker>,
    /// The lane of the instance of that generation.
    lane: Option<(u64, Arc<Lane<A>>)>,
}

impl<A: Actor> LaneHook<A> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(LaneHook {
            wanted: AtomicBool::new(false),
            capacity: AtomicUsize::new(1),
            inner: Mutex::new(HookInner {
                waker: None,
                lane: None,
            }),
        })
    }

    /// Whether instances should install a lane.
    #[inline]
    pub(crate) fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Acquire)
    }

    /// The lane of instance `generation`, created if it has none yet (and the instance woken
    /// to install it). `None` if a newer instance already has one: `generation` is stale.
    pub(crate) fn lane(&self, generation: u64) -> Option<Arc<Lane<A>>> {
        let mut inner = self.inner.lock();
        match &inner.lane {
            Some((g, lane)) if *g == generation => return Some(lane.clone()),
            Some((g, _)) if *g > generation => return None,
            _ => {}
        }
        let lane = Lane::new(self.capacity.load(Ordering::Relaxed));
        if let Some((_, old)) = inner.lane.replace((generation, lane.clone())) {
            old.close(true);
        }
        self.wanted.store(true, Ordering::Release);
        if let Some(w) = &inner.waker {
            w.wake_by_ref();
        }
        Some(lane)
    }

    /// A new instance starts with a mailbox of `capacity` (its predecessor's waker went with
    /// it: [`LaneHook::ended`]).
    pub(crate) fn starting(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
    }

    /// Records the running instance's task waker.
    pub(crate) fn set_waker(&self, waker: &Waker) {
        self.inner.lock().waker = Some(waker.clone());
    }

    /// The instance of `generation` ended: its lane takes nothing more and drops what it holds.
    pub(crate) fn ended(&self, generation: u64) {
        let lane = {
            let mut inner = self.inner.lock();
            inner.waker = None;
            match &inner.lane {
                Some((g, _)) if *g == generation => inner.lane.take(),
                _ => None,
            }
        };
        if let Some((_, lane)) = lane {
            lane.close(true);
        }
    }

    /// Every handle is gone: the running instance's lane takes nothing more; what it holds is
    /// still handled, then the lane future ends (so that the instance can stop).
    pub(crate) fn orphaned(&self) {
        let lane = self.inner.lock().lane.take();
        if let Some((_, lane)) = lane {
            lane.close(false);
        }
    }
}

/// A batch of messages, handled in order: the items of an iterator, `count` of them (what it
/// weighs while queued; once taken from the lane it no longer counts).
pub(crate) struct Batch<I> {
    msgs: I,
    count: usize,
}

impl<I: Iterator> Batch<I> {
    pub(crate) fn new(msgs: I, count: usize) -> Self {
        Batch { msgs, count }
    }

    /// The messages not handled yet.
    pub(crate) fn into_inner(self) -> I {
        self.msgs
    }
}

impl<A, I> LaneJob<A> for Batch<I>
where
    A: Actor<Context = Context<A>> + Handler<I::Item>,
    I: Iterator + Send,
    I::Item: Message + Send + 'static,
{
    fn weight(&self) -> usize {
        self.count
    }

    fn run(&mut self, act: &mut A, ctx: &mut Context<A>, budget: usize) -> (usize, bool) {
        let mut handled = 0;
        while handled < budget {
            let Some(msg) = self.msgs.next() else {
                return (handled, true);
            };
            <A as Handler<I::Item>>::handle(act, msg, ctx).handle(ctx, None);
            handled += 1;
            if ctx.waiting() {
                return (handled, false);
            }
        }
        (handled, false)
    }
}

/// What an ask through the lane gets: the reply, or why there is none.
pub type AskOutcome<R> = Result<R, AskError<()>>;

/// One request whose reply goes to a callback instead of a waiting task.
pub(crate) struct AskJob<M: Message, F: FnOnce(AskOutcome<M::Result>) + Send> {
    msg: Option<M>,
    reply: Option<F>,
    timeout: Duration,
}

impl<M: Message, F: FnOnce(AskOutcome<M::Result>) + Send> AskJob<M, F> {
    pub(crate) fn new(msg: M, timeout: Duration, reply: F) -> Self {
        AskJob {
            msg: Some(msg),
            reply: Some(reply),
            timeout,
        }
    }

    /// The message and callback back, when the job was refused.
    pub(crate) fn into_parts(mut self) -> (M, F) {
        match (self.msg.take(), self.reply.take()) {
            (Some(m), Some(f)) => (m, f),
            _ => unreachable!("a refused ask job was never run"),
        }
    }
}

impl<A, M, F> LaneJob<A> for AskJob<M, F>
where
    A: Actor<Context = Context<A>> + Handler<M>,
    M: Message + Send + 'static,
    M::Result: Send,
    F: FnOnce(AskOutcome<M::Result>) + Send + 'static,
{
    fn weight(&self) -> usize {
        1
    }

    fn run(&mut self, act: &mut A, ctx: &mut Context<A>, _budget: usize) -> (usize, bool) {
        let (Some(msg), Some(reply)) = (self.msg.take(), self.reply.take()) else {
            return (0, true);
        };
        let (tx, mut rx): (OneshotSender<M::Result>, _) = oneshot::channel();
        <A as Handler<M>>::handle(act, msg, ctx).handle(ctx, Some(tx));
        match rx.try_recv() {
            // The common case: the handler answered at once; the reply goes out from here.
            Ok(result) => reply(Ok(result)),
            Err(oneshot::error::TryRecvError::Closed) => reply(Err(AskError::ActorDied)),
            Err(oneshot::error::TryRecvError::Empty) => {
                // An asynchronous response: wait for it beside the actor, within the timeout.
                let timeout = self.timeout;
                actix::spawn(async move {
                    match tokio::time::timeout(timeout, rx).await {
                        Ok(Ok(result)) => reply(Ok(result)),
                        Ok(Err(_)) => reply(Err(AskError::ActorDied)),
                        Err(_) => reply(Err(AskError::Timeout(timeout))),
                    }
                });
            }
        }
        (1, true)
    }
}

impl<M: Message, F: FnOnce(AskOutcome<M::Result>) + Send> Drop for AskJob<M, F> {
    fn drop(&mut self) {
        // Dropped unrun with a message in it: its instance ended first.
        if let (Some(_), Some(reply)) = (self.msg.take(), self.reply.take()) {
            reply(Err(AskError::ActorDied));
        }
    }
}

/// Installs `lane` in the context of the instance about to run (or running).
pub(crate) fn install<A: Actor<Context = Context<A>>>(ctx: &mut Context<A>, lane: Arc<Lane<A>>) {
    ctx.spawn(LaneFuture::new(lane));
}
