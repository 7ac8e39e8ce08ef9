//! A connection's reading side: frames read from the socket and handled in order, by the
//! connection's task, by an asker waiting for its reply, or by an actor idle between the
//! requests this connection brings it.
//!
//! One party reads at a time (the state is behind a lock) and handles every frame it reads,
//! whoever it is for, in the order they came: FIFO holds whoever reads. Normally the
//! connection's task reads. An asker waiting for its reply reads too while no one else does,
//! and so does an actor whose lane is empty, for which this connection is the [`Feed`] of its
//! last request: the socket (which wakes one registered reader) then wakes that reader
//! ([`Relay`]), so that an asker reads and handles its reply in its own poll, and an actor
//! reads, handles and answers a request in its own, instead of waiting for the task to read
//! and wake them; the task is not polled at all.
//!
//! No reader can stall the connection: a reader may not run when woken (a future kept but
//! left unpolled, an actor that waits on something, a reader on another thread not yet run).
//! So when the socket wakes a reader, the task watches, in periods of [`WATCH`]: what came and
//! is still unread after a whole period in which the socket woke no one again, the task reads
//! (within two periods). The socket's first wake-up of a reader sets the watch; it goes on from
//! period to period while the socket keeps waking readers and lapses after a quiet one, so
//! that steady traffic costs the task one poll per period, not one per wake-up.
//!
//! A reader stops as soon as it has what it came for — an asker its reply, an actor a request
//! it was handed — and leaves the socket waking the task; it registers that before the answer
//! goes out, at the cost of one registration. An actor that read tells leaves the socket to
//! the task too once it has read all there was: it is busy with them, and the task reads what
//! comes meanwhile (as it would for an actor that is not idle). An asker that gives up hands
//! the socket back too (waking the task if data already waits); so does an actor's feed when
//! it is released.
//! A frame a reader cannot deliver at once (a full lane) and the end of the connection are
//! handed to the task, which alone waits on them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cadre_cluster::wire::{EnvelopeRef, FrameCodec};
use cadre_runtime::Feed;
use parking_lot::Mutex;
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::{Instant, Sleep};
use tokio_util::codec::Decoder;

use super::connection::ConnError;
use super::link::{Answer, Link};
use super::{Replier, TransportInner};
use crate::remote::{Delivery, LostMessages, RemoteError, Undelivered};

/// A delivery waiting for room in a mailbox.
type WaitDelivery = Pin<Box<dyn Future<Output = Option<Undelivered>> + Send>>;

/// How much a connection reads at a time (at least).
const READ_CHUNK: usize = 64 * 1024;

/// How long data may wait for a reader the socket woke before the connection's task reads it
/// itself: what a reader that is not run holds the connection up by, at most twice this.
const WATCH: Duration = Duration::from_millis(2);

/// The reading side of one connection; its state goes when the connection closes.
pub(crate) struct Inbound {
    state: Mutex<Option<ReadState>>,
    relay: Arc<Relay>,
    /// `relay` as a waker, made once.
    relay_waker: Waker,
}

/// What the socket wakes: the reader that holds it (an asker or an idle actor), with the
/// connection's task set to watch that it reads; the task itself when no reader holds it.
struct Relay {
    /// The last reader to hold the socket (kept, so that the next turn of the same reader
    /// clones no waker), and whether it holds it now (a reader, not the task, is the one the
    /// socket wakes when data arrives: it is *lent*). Set and cleared under the read state's
    /// lock.
    reader: Mutex<Option<Waker>>,
    reading: AtomicBool,
    task: Mutex<Option<Waker>>,
    /// How many times the socket woke the relay.
    fires: AtomicU64,
    /// The task watches (or was woken to watch) whether a woken reader reads.
    watching: AtomicBool,
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fires.fetch_add(1, SeqCst);
        let reader = self.reading.load(SeqCst)
            && match self.reader.lock().as_ref() {
                Some(w) => {
                    w.wake_by_ref();
                    true
                }
                None => false,
            };
        // A reader's wake-up arms the task's watch, unless armed already; with no reader, the
        // task reads.
        if reader && self.watching.swap(true, SeqCst) {
            return;
        }
        if let Some(w) = self.task.lock().as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Keeps `waker` in `slot` (cloning only when it changed).
fn keep(slot: &Mutex<Option<Waker>>, waker: &Waker) {
    let mut slot = slot.lock();
    match slot.as_ref() {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

struct ReadState {
    rd: OwnedReadHalf,
    /// Bytes read and not yet handled: at most the start of one frame after a pump.
    buf: BytesMut,
    /// Splits the buffer into frames (and says how a connection that ended inside one ended).
    codec: FrameCodec,
    cache: Option<LastDispatch>,
    /// A delivery waiting for room in a full lane: nothing more is read until it is done. Only
    /// the connection's task waits on it.
    stalled: Option<WaitDelivery>,
    /// How the connection ended, as an asker found it: for the task to end with.
    ended: Option<Result<(), ConnError>>,
    /// The task's watch over a woken reader (made on first use), and the relay's count of
    /// wake-ups when its current period was set (`None`: not set).
    watch: Option<Pin<Box<Sleep>>>,
    watch_from: Option<u64>,
    /// The relay's count of wake-ups when a reader last started reading: a higher count means
    /// data came that no reader has read since.
    read_fires: u64,
}

/// Who handles frames, with what: the node's transport, the peer's name and the link.
pub(crate) struct Conn<'a> {
    pub(crate) inner: &'a Arc<TransportInner>,
    pub(crate) node: &'a Arc<str>,
    pub(crate) link: &'a Arc<Link>,
}

/// Who pumps the socket.
#[derive(Clone, Copy)]
enum Reader<'w> {
    /// The connection's task.
    Task,
    /// An idle actor, for which this connection is a [`Feed`].
    Feed,
    /// An asker waiting for the reply to ask `id`, with its waker.
    Asker(u64, &'w Waker),
}

/// What became of a reader's turn at the socket.
enum Turn {
    /// The reader did not read: someone else does, or only the task may now.
    Skipped,
    /// The reader read all there was and holds the socket (which wakes it through the
    /// [`Relay`]): it must [hand it back](Inbound::hand_back) when done.
    Holding,
    /// The reader read, and the socket is the task's again: the reader has what it came for,
    /// or the task must take over (a full lane, the connection's end).
    Handed,
}

/// Where a pump stopped.
enum Pumped {
    /// The socket has nothing more; the reader's waker is registered with it.
    Drained,
    /// As `Drained`, for a feed that delivered work (tells) on the way: its actor is busy with
    /// them now, and the task had better read what comes meanwhile.
    Delivered,
    /// The reader has what it came for — the asker its answer, the feed an ask it delivered —
    /// and the buffer holds no whole frame: it reads no further, and no waker is registered
    /// with the socket yet.
    Answered,
    /// A delivery waits for room ([`ReadState::stalled`]).
    Stalled,
    /// The connection ended.
    Ended(Result<(), ConnError>),
}

impl Inbound {
    pub(crate) fn new(rd: OwnedReadHalf, max: u32) -> Self {
        let relay = Arc::new(Relay {
            reader: Mutex::new(None),
            reading: AtomicBool::new(false),
            task: Mutex::new(None),
            fires: AtomicU64::new(0),
            watching: AtomicBool::new(false),
        });
        Inbound {
            relay_waker: Waker::from(relay.clone()),
            relay,
            state: Mutex::new(Some(ReadState {
                rd,
                // Twice what is read at a time, so that the space of frames already handled is
                // taken back (a short copy of the partial frame to the front) rather than the
                // buffer grown (a copy of all of it).
                buf: BytesMut::with_capacity(2 * READ_CHUNK),
                codec: FrameCodec::new(max),
                cache: None,
                stalled: None,
                ended: None,
                watch: None,
                watch_from: None,
                read_fires: 0,
            })),
        }
    }

    /// Drops the read half (the connection closed).
    pub(crate) fn close(&self) {
        let state = self.state.lock().take();
        drop(state);
    }

    /// The connection task's reading: handles frames until the socket has nothing more (or a
    /// reader holds it, which the task watches), waits out a full lane, and ends with the
    /// connection.
    pub(crate) fn poll_task(
        &self,
        conn: &Conn<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ConnError>> {
        let mut guard = self.state.lock();
        let Some(st) = guard.as_mut() else {
            return Poll::Ready(Ok(())); // closed
        };
        if let Some(end) = st.ended.take() {
            return Poll::Ready(end);
        }
        keep(&self.relay.task, cx.waker());
        loop {
            if let Some(wait) = st.stalled.as_mut() {
                let Poll::Ready(lost) = wait.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                st.stalled = None;
                if let Some(lost) = lost {
                    drop_messages(conn.inner, conn.node, lost);
                }
            }
            if self.lent() && !self.watch(st, cx) {
                // A reader holds the socket and reads what comes.
                return Poll::Pending;
            }
            // No reader holds the socket, or one does but has not read what came: read it.
            self.unlend();
            self.relay.watching.store(false, SeqCst);
            st.watch_from = None;
            match st.pump(conn, cx, Reader::Task) {
                Pumped::Drained | Pumped::Delivered | Pumped::Answered => return Poll::Pending,
                Pumped::Stalled => continue,
                Pumped::Ended(end) => return Poll::Ready(end),
            }
        }
    }

    /// While a reader holds the socket: whether the task must read, because the socket woke
    /// that reader and what came is still unread after a whole period of the watch in which
    /// the socket woke no one again. Otherwise the watch goes on (the task is woken at the end
    /// of the period), or lapses after a quiet period.
    fn watch(&self, st: &mut ReadState, cx: &mut Context<'_>) -> bool {
        let relay = &self.relay;
        loop {
            if !relay.watching.load(SeqCst) {
                return false;
            }
            let watch = st
                .watch
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(WATCH)));
            let from = match st.watch_from {
                Some(from) => from,
                None => {
                    // Set right after the previous period ended, the timer needs no wake-up of
                    // the runtime (it is not earlier than the runtime's next wake-up).
                    watch.as_mut().reset(Instant::now() + WATCH);
                    *st.watch_from.insert(relay.fires.load(SeqCst))
                }
            };
            if watch.as_mut().poll(cx).is_pending() {
                return false;
            }
            st.watch_from = None;
            let fires = relay.fires.load(SeqCst);
            if fires != from {
                continue; // the socket woke a reader again: watch another period
            }
            if fires != st.read_fires {
                // Woken before this period, a reader has not read since: unread for a whole one.
                return true;
            }
            // Quiet: the watch lapses, and the next wake-up of a reader sets it again. One that
            // came meanwhile may have found it still set: then it is set again here.
            relay.watching.store(false, SeqCst);
            if relay.fires.load(SeqCst) == fires || relay.watching.swap(true, SeqCst) {
                return false;
            }
        }
    }

    /// Whether a reader holds the socket (the relay wakes it rather than the task).
    fn lent(&self) -> bool {
        self.relay.reading.load(SeqCst)
    }

    /// No reader holds the socket any more: the relay wakes the task.
    fn unlend(&self) {
        self.relay.reading.store(false, SeqCst);
    }

    /// A turn at reading for `cx`'s task (an asker waiting for ask `id`, or an idle actor), if
    /// no one else reads and nothing waits on the task: handles what the socket has and leaves
    /// the [`Relay`] with it, for this reader's waker ([`Turn::Holding`]), or stops once the
    /// reader has what it came for and hands the socket to the task at once
    /// ([`Turn::Handed`]).
    fn read_for(&self, conn: &Conn<'_>, cx: &mut Context<'_>, id: Option<u64>) -> Turn {
        let Some(mut guard) = self.state.try_lock() else {
            return Turn::Skipped; // someone reads; they will hand over the reply
        };
        let Some(st) = guard.as_mut() else {
            return Turn::Skipped;
        };
        if st.stalled.is_some() || st.ended.is_some() {
            return Turn::Skipped; // the task's to handle
        }
        keep(&self.relay.reader, cx.waker());
        self.relay.reading.store(true, SeqCst);
        st.read_fires = self.relay.fires.load(SeqCst);
        let mut relayed = Context::from_waker(&self.relay_waker);
        let reader = match id {
            Some(id) => Reader::Asker(id, cx.waker()),
            None => Reader::Feed,
        };
        match st.pump(conn, &mut relayed, reader) {
            Pumped::Drained => return Turn::Holding,
            Pumped::Delivered => {
                // The socket wakes the task while the actor handles what came (the relay is
                // registered, and no reader holds it now).
                self.unlend();
                return Turn::Handed;
            }
            Pumped::Answered => {
                // The socket wakes the task from now on (through the relay, which no reader
                // holds now; a reader that reads again takes it back without registering
                // anew), or the task reads at once if more is there.
                self.unlend();
                if st.rd.as_ref().poll_read_ready(&mut relayed).is_ready() {
                    self.wake_task();
                }
                return Turn::Handed;
            }
            // Nothing is registered with the socket: the task registers itself when it next
            // runs.
            Pumped::Stalled => {}
            Pumped::Ended(end) => st.ended = Some(end),
        }
        self.give_to_task();
        Turn::Handed
    }

    /// An asker is done reading: the socket wakes the task again (at once, if data waits).
    fn hand_back(&self) {
        let mut guard = self.state.lock();
        self.hand_back_in(guard.as_mut());
    }

    fn hand_back_in(&self, st: Option<&mut ReadState>) {
        let Some(st) = st else {
            return;
        };
        if !self.lent() {
            return;
        }
        self.unlend();
        if let Some(task) = self.relay.task.lock().as_ref() {
            let mut tcx = Context::from_waker(task);
            if st.rd.as_ref().poll_read_ready(&mut tcx).is_ready() {
                task.wake_by_ref();
            }
        }
    }

    /// The task takes over: it reads again (after what it must wait on).
    fn give_to_task(&self) {
        self.unlend();
        self.wake_task();
    }

    fn wake_task(&self) {
        if let Some(task) = self.relay.task.lock().as_ref() {
            task.wake_by_ref();
        }
    }
}

impl ReadState {
    /// Handles every whole frame in the buffer and reads more, until the socket has nothing
    /// more (its readiness then wakes `cx`), a delivery must wait for room, or the connection
    /// ends. An asker's own reply wakes no one; once an asker has its reply, or a feed has
    /// delivered an ask, the whole frames already read are handled and no more is read
    /// ([`Pumped::Answered`]). A feed that delivered anything says so when the socket has
    /// nothing more ([`Pumped::Delivered`]).
    fn pump(&mut self, conn: &Conn<'_>, cx: &mut Context<'_>, reader: Reader<'_>) -> Pumped {
        let asker = match reader {
            Reader::Asker(id, waker) => Some((id, waker)),
            Reader::Task | Reader::Feed => None,
        };
        let (mut answered, mut delivered) = (false, false);
        loop {
            // Each whole frame is split off (no copy): a tell's messages are decoded later, by
            // the actor, from the frame's bytes.
            loop {
                let frame = match self.codec.decode(&mut self.buf) {
                    Ok(Some(frame)) => frame.freeze(),
                    Ok(None) => break,
                    Err(e) => return Pumped::Ended(Err(e.into())),
                };
                let handled = EnvelopeRef::decode(&frame)
                    .map_err(ConnError::from)
                    .and_then(|env| handle(conn, &mut self.cache, env, &frame, asker));
                delivered |= matches!(reader, Reader::Feed);
                match handled {
                    Ok(Handled::Done) => {}
                    Ok(Handled::Asked) => answered |= matches!(reader, Reader::Feed),
                    Ok(Handled::Mine) => answered = true,
                    Ok(Handled::Wait(wait)) => {
                        // A full lane: stop reading until it takes the messages.
                        self.stalled = Some(wait);
                        return Pumped::Stalled;
                    }
                    Err(e) => return Pumped::Ended(Err(e)),
                }
            }
            if answered {
                return Pumped::Answered;
            }
            super::link::rewind(&mut self.buf, 2 * READ_CHUNK);
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.rd), cx, &mut self.buf) {
                Poll::Pending if delivered => return Pumped::Delivered,
                Poll::Pending => return Pumped::Drained,
                Poll::Ready(Err(e)) => return Pumped::Ended(Err(e.into())),
                Poll::Ready(Ok(0)) => {
                    // The peer closed: cleanly between frames, or inside one.
                    let end = self.codec.decode_eof(&mut self.buf).map(|_| ());
                    return Pumped::Ended(end.map_err(ConnError::from));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

/// Waits for the answer to ask `id`, reading the socket itself while no one else does (see
/// the module's docs). `None`: the connection closed first.
pub(crate) struct AwaitAnswer<'a> {
    conn: Conn<'a>,
    id: u64,
    /// Whether this asker took the socket at some point (and must hand it back).
    lent: bool,
    done: bool,
}

impl<'a> AwaitAnswer<'a> {
    /// Waits for ask `id`, registered on `conn.link`.
    pub(crate) fn new(conn: Conn<'a>, id: u64) -> Self {
        AwaitAnswer {
            conn,
            id,
            lent: false,
            done: false,
        }
    }

    fn finish(&mut self, answer: Option<Answer>) -> Poll<Option<Answer>> {
        self.done = true;
        if std::mem::take(&mut self.lent) {
            self.conn.link.inbound.hand_back();
        }
        Poll::Ready(answer)
    }
}

impl Future for AwaitAnswer<'_> {
    type Output = Option<Answer>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Answer>> {
        let this = self.get_mut();
        let link = this.conn.link;
        if let Poll::Ready(answer) = link.poll_answer(this.id, cx) {
            return this.finish(answer);
        }
        match link.inbound.read_for(&this.conn, cx, Some(this.id)) {
            Turn::Skipped => {}
            turn => {
                this.lent = matches!(turn, Turn::Holding);
                if let Poll::Ready(answer) = link.poll_answer(this.id, cx) {
                    return this.finish(answer);
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for AwaitAnswer<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.link.unregister(self.id);
            if self.lent {
                self.conn.link.inbound.hand_back();
            }
        }
    }
}

/// A connection as the feed of the actors it brings asks to: an idle actor reads it from its
/// own task (see [`cadre_runtime::Feed`]), as an asker does.
///
/// It holds the connection and the transport weakly: an actor that keeps it does not keep them.
pub(crate) struct ConnFeed {
    inner: Weak<TransportInner>,
    node: Arc<str>,
    link: Weak<Link>,
}

impl ConnFeed {
    pub(crate) fn new(inner: &Arc<TransportInner>, node: Arc<str>, link: Weak<Link>) -> Self {
        ConnFeed {
            inner: Arc::downgrade(inner),
            node,
            link,
        }
    }
}

impl Feed for ConnFeed {
    fn poll_feed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let (Some(link), Some(inner)) = (self.link.upgrade(), self.inner.upgrade()) else {
            return Poll::Pending; // the connection is gone: nothing more comes
        };
        let conn = Conn {
            inner: &inner,
            node: &self.node,
            link: &link,
        };
        // Its release hands the socket back.
        match link.inbound.read_for(&conn, cx, None) {
            // Handed over (an ask came, or the task must take over): read again once the
            // actor has handled what came; a read then either holds the socket or is skipped.
            Turn::Handed => Poll::Ready(()),
            Turn::Holding | Turn::Skipped => Poll::Pending,
        }
    }

    fn release(&self) {
        // Never blocks (it may be called while another connection is being read): when the
        // state is busy, its reader takes the socket over anyway (and leaves it holding it, or
        // waking the task).
        if let Some(link) = self.link.upgrade() {
            if let Some(mut guard) = link.inbound.state.try_lock() {
                link.inbound.hand_back_in(guard.as_mut());
            }
        }
    }
}

/// The dispatcher of the last (actor, tag) a connection delivered to, so that a stream of one
/// message type skips the table's lock and hashing.
struct LastDispatch {
    to: Arc<str>,
    tag: String,
    version: u64,
    dispatch: Arc<dyn crate::remote::Dispatch>,
}

/// The dispatcher for `tag` on the actor exposed as `to`, with the actor's name.
fn dispatcher(
    inner: &TransportInner,
    cache: &mut Option<LastDispatch>,
    to: &str,
    tag: &str,
) -> Result<(Arc<dyn crate::remote::Dispatch>, Arc<str>), RemoteError> {
    let version = inner.exposed.version();
    if let Some(last) = cache {
        if last.version == version && *last.to == *to && last.tag == tag {
            return Ok((last.dispatch.clone(), last.to.clone()));
        }
    }
    let dispatch = inner.exposed.get(to, tag)?;
    let to: Arc<str> = to.into();
    *cache = Some(LastDispatch {
        to: to.clone(),
        tag: tag.into(),
        version,
        dispatch: dispatch.clone(),
    });
    Ok((dispatch, to))
}

/// Counts and logs messages from a peer that could not be delivered.
pub(crate) fn drop_messages(inner: &TransportInner, node: &str, lost: Undelivered) {
    inner
        .stats
        .dropped
        .fetch_add(lost.count, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(node = %node, reason = %lost.reason, count = lost.count, "dropped messages from a peer");
}

/// What became of one envelope.
enum Handled {
    Done,
    /// A tell or an ask to a full mailbox: this future delivers it.
    Wait(WaitDelivery),
    /// The reply of the asker reading.
    Mine,
    /// An ask, handed to its actor.
    Asked,
}

/// Handles one envelope. `asker` is the ask id and waker of the asker reading, if one is.
fn handle(
    conn: &Conn<'_>,
    cache: &mut Option<LastDispatch>,
    env: EnvelopeRef<'_>,
    frame: &Bytes,
    asker: Option<(u64, &Waker)>,
) -> Result<Handled, ConnError> {
    let Conn { inner, node, link } = *conn;
    if inner.is_cut(node) {
        return Ok(Handled::Done); // the fault injector's partition: as if never received
    }
    match env {
        EnvelopeRef::Tell(t) => {
            match dispatcher(inner, cache, t.to, t.tag) {
                Ok((d, _)) => {
                    let at = t.bodies.as_ptr() as usize - frame.as_ptr() as usize;
                    let bodies = frame.slice(at..at + t.bodies.len());
                    let lost = LostMessages::new(inner.clone(), node.clone());
                    match d.tell_bytes(t.tag, bodies, t.count, lost) {
                        Delivery::Done(None) => {}
                        Delivery::Done(Some(lost)) => drop_messages(inner, node, lost),
                        Delivery::Wait(wait) => return Ok(Handled::Wait(wait)),
                    }
                }
                Err(e) => {
                    let count = u64::from(t.count);
                    drop_messages(inner, node, Undelivered { count, reason: e });
                }
            }
            Ok(Handled::Done)
        }
        EnvelopeRef::Ask(a) => {
            let timeout = Duration::from_millis(a.timeout_ms.into());
            match dispatcher(inner, cache, a.to, a.tag) {
                Ok((d, actor)) => {
                    let replier = Replier::new(link.clone(), a.id, actor);
                    if let Delivery::Wait(wait) = d.ask_bytes(a.tag, a.body, timeout, replier) {
                        return Ok(Handled::Wait(wait));
                    }
                    Ok(Handled::Asked)
                }
                Err(e) => {
                    Replier::new(link.clone(), a.id, a.to.into()).fail(e);
                    Ok(Handled::Done)
                }
            }
        }
        EnvelopeRef::Reply(r) => {
            let result = r.result.map(|b| frame.slice_ref(b));
            let current = asker.map(|(_, waker)| waker);
            if !link.resolve(r.id, result, current) {
                tracing::debug!(node = %node, id = r.id, "reply to an ask that is no longer waiting");
                return Ok(Handled::Done);
            }
            match asker {
                Some((id, _)) if id == r.id => Ok(Handled::Mine),
                _ => Ok(Handled::Done),
            }
        }
        EnvelopeRef::Hello(_) | EnvelopeRef::Proof(_) | EnvelopeRef::Reject(_) => Err(
            ConnError::Protocol("handshake message after the handshake".into()),
        ),
    }
}
