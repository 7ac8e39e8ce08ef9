//! A live connection to a peer, as senders see it: the outbound buffer that frames are encoded
//! into, and the asks waiting for replies over it.
//!
//! Senders encode each frame straight into the connection's outbound buffer under a short lock:
//! no allocation and no channel hop per message. The buffer is a queue of chunks of about
//! [`CHUNK`] bytes: senders append to the last one, and seal it once it is that large; a writer
//! task takes the chunks one by one and writes each whole, so under load many frames share one
//! system call, and the few chunks in use, recycled, stay in the processor's caches (one
//! growing buffer of megabytes measured 15 % slower). When the writer is idle, the sender that
//! finds the queue empty writes its frame to the socket itself (a non-blocking write), sparing
//! a round through the executor: that is what keeps a lone ask fast. The queue is bounded in
//! bytes; beyond it senders are refused ([`QueueError::Full`]) or wait for room.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use cadre_cluster::wire::{encode_body_into, EncodeError, OpenTell, RemoteError};
use parking_lot::Mutex;

use super::inbound::Inbound;
use serde::Serialize;
use std::task::{Context, Poll, Waker};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The answer an ask waits for: reply bytes (a slice of the frame they came in, not a copy),
/// or the remote side's error.
pub(crate) type ReplyResult = Result<bytes::Bytes, RemoteError>;

/// What an asker hears: the answer, or that its deadline passed first. (A dropped sender means
/// the connection closed.)
#[derive(Debug)]
pub(crate) enum Answer {
    /// The peer answered.
    Reply(ReplyResult),
    /// No answer by the ask's deadline.
    TimedOut,
}

/// An ask waiting for its answer: the answer once it came (until its asker takes it), and the
/// asker's waker.
struct Waiting {
    deadline: Instant,
    answer: Option<Answer>,
    waker: Option<Waker>,
}

/// Hashes the ids of pending asks. They are chosen here, one after the other, so a multiply
/// spreads them well; a peer only ever looks ids up (with its replies), it never adds any.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64((self.0 << 8) | u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The asks waiting on a link, and when the expiry task next looks at them.
#[derive(Default)]
struct Pending {
    asks: HashMap<u64, Waiting, std::hash::BuildHasherDefault<IdHasher>>,
    /// When the expiry task wakes next, if it sleeps on a deadline.
    armed: Option<Instant>,
}

thread_local! {
    /// Where message bodies are encoded before they are framed: reused, no allocation per send.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Encodes `msg` as a message body (its own MessagePack bytes, as an ask or a reply carries it)
/// into a buffer reused across calls, and hands the bytes to `frame`.
pub(crate) fn with_body<M: Serialize + ?Sized, T>(
    msg: &M,
    frame: impl FnOnce(&[u8]) -> Result<T, EncodeError>,
) -> Result<T, EncodeError> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        encode_body_into(msg, &mut scratch)?;
        frame(&scratch)
    })
}

/// How far the start of an empty buffer may move along its allocation before [`rewind`] takes
/// it back: a few KiB, which the caches hold.
const REWIND_AFTER: usize = 4 * 1024;

/// Moves an empty buffer's start back to the start of its allocation of `full` bytes once it
/// moved [`REWIND_AFTER`] along it, when no one else holds a part of it (a frame still being
/// handled): the next bytes then go where recent ones went, in memory the caches hold, rather
/// than ever further along a buffer of hundreds of KiB.
pub(crate) fn rewind(buf: &mut BytesMut, full: usize) {
    if buf.is_empty() && buf.capacity() + REWIND_AFTER <= full {
        // Asking for more than it has takes back the space before its start, if that can be
        // done without allocating; nothing happens otherwise.
        let _ = buf.try_reclaim(buf.capacity() + 1);
    }
}

/// Why a frame was not queued.
#[derive(Debug)]
pub(crate) enum QueueError {
    /// The outbound buffer is full.
    Full,
    /// The connection is gone.
    Closed,
    /// The frame could not be encoded (too large, or its `Serialize` failed).
    Encode(EncodeError),
}

/// A tell frame that further tells to the same actor with the same type are appended to, while
/// it is the last frame of the buffer.
struct Open {
    tell: OpenTell,
    to: Arc<str>,
    tag: &'static str,
}

impl Open {
    /// Appends `msg` to this frame, at the end of `buf`, if it goes to `to` with `tag`, the
    /// frame is still below [`TELL_FRAME_TARGET`] and `msg` fits within `max`; whether it did.
    #[inline]
    fn join<M: Serialize>(
        &mut self,
        buf: &mut BytesMut,
        to: &Arc<str>,
        tag: &'static str,
        msg: &M,
        max: u32,
    ) -> bool {
        (std::ptr::eq(self.tag, tag) || self.tag == tag)
            && (Arc::ptr_eq(&self.to, to) || *self.to == **to)
            && self.tell.frame_len(buf) < TELL_FRAME_TARGET
            && self.tell.push(buf, msg, max).is_ok()
    }
}

/// The size up to which a tell frame grows with further messages; a larger batch starts a new
/// frame, so that a receiver starts on the first messages before the last ones arrive. Well
/// below the receiver's read size: the part of a frame left at the end of a read is then
/// small, and moved to the front of the read buffer instead of the buffer being regrown.
const TELL_FRAME_TARGET: usize = 16 * 1024;

/// The size at which the chunk senders append to is sealed and a new one started.
const CHUNK: usize = 256 * 1024;

/// Room a chunk has beyond [`CHUNK`], so that the frame that fills it does not make it grow
/// (a reallocation and a copy of the whole chunk); only a frame larger than this does.
const CHUNK_SLACK: usize = 16 * 1024;

/// A chunk's allocation.
const CHUNK_CAPACITY: usize = CHUNK + CHUNK_SLACK;

/// Written chunks kept for reuse.
const SPARE_CHUNKS: usize = 4;

struct Outbound {
    /// The chunk senders append to.
    buf: BytesMut,
    /// Sealed chunks, oldest first, waiting for the writer.
    sealed: VecDeque<BytesMut>,
    /// The bytes in `sealed`.
    sealed_bytes: usize,
    /// Written chunks, cleared, for reuse.
    spare: Vec<BytesMut>,
    /// The tell frame at the end of `buf` that can take more messages, if any.
    open: Option<Open>,
    /// The writer task owns the socket's writing until it finds the buffer empty.
    writing: bool,
    /// The socket's write half; taken away when the link closes, so that cached handles and
    /// late reply tasks cannot keep a dead connection open.
    socket: Option<Arc<OwnedWriteHalf>>,
}

impl Outbound {
    /// Seals the chunk senders append to and starts another.
    fn seal(&mut self) {
        let full = self.swap_chunk();
        self.sealed_bytes += full.len();
        self.sealed.push_back(full);
    }

    /// The next chunk to write, if any: the oldest sealed one, else the one being appended to.
    fn take(&mut self) -> Option<BytesMut> {
        if let Some(chunk) = self.sealed.pop_front() {
            self.sealed_bytes -= chunk.len();
            return Some(chunk);
        }
        (!self.buf.is_empty()).then(|| self.swap_chunk())
    }

    /// The chunk senders append to, replaced by a spare (or new) one.
    fn swap_chunk(&mut self) -> BytesMut {
        self.close_tell();
        let fresh = self
            .spare
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(CHUNK_CAPACITY));
        std::mem::replace(&mut self.buf, fresh)
    }

    /// Finishes the open tell frame, if any: it takes no more messages, and its headers are
    /// written (before anything else is appended, or the chunk is written).
    fn close_tell(&mut self) {
        if let Some(o) = self.open.take() {
            o.tell.finish(&mut self.buf);
        }
    }

    /// Keeps a written chunk for reuse (unless enough are kept, or it grew for a large frame).
    fn recycle(&mut self, mut chunk: BytesMut) {
        chunk.clear();
        // Writing advanced the chunk's start to its end; reserving while it is empty takes the
        // whole allocation back without copying, where the first push would otherwise find
        // little room and move its bytes around.
        chunk.reserve(CHUNK_CAPACITY);
        if self.spare.len() < SPARE_CHUNKS && chunk.capacity() <= 2 * CHUNK {
            self.spare.push(chunk);
        }
    }
}

/// One established connection's sending side.
pub(crate) struct Link {
    out: Mutex<Outbound>,
    /// Wakes the writer task.
    wake: Notify,
    /// Wakes senders waiting for room.
    room: Notify,
    limit: usize,
    max_frame: u32,
    next_id: AtomicU64,
    closed: AtomicBool,
    pending: Mutex<Pending>,
    /// Wakes the expiry task when an ask has an earlier deadline than it sleeps on.
    expiry: Notify,
    /// The reading side.
    pub(crate) inbound: Inbound,
    /// The connection as the feed of the actors it brings asks to.
    feed: Arc<dyn cadre_runtime::Feed>,
}

impl Link {
    /// A link reading from `rd` and writing to `socket`, holding at most `limit` unwritten
    /// bytes, with frames of at most `max_frame` bytes either way; `feed` is the connection as
    /// the feed of the actors it brings asks to.
    pub(crate) fn new(
        rd: OwnedReadHalf,
        socket: OwnedWriteHalf,
        limit: usize,
        max_frame: u32,
        feed: Arc<dyn cadre_runtime::Feed>,
    ) -> Self {
        Link {
            out: Mutex::new(Outbound {
                buf: BytesMut::with_capacity(CHUNK_CAPACITY),
                sealed: VecDeque::new(),
                sealed_bytes: 0,
                spare: Vec::new(),
                open: None,
                writing: false,
                socket: Some(Arc::new(socket)),
            }),
            wake: Notify::new(),
            room: Notify::new(),
            limit: limit.max(1),
            max_frame,
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            pending: Mutex::new(Pending::default()),
            expiry: Notify::new(),
            inbound: Inbound::new(rd, max_frame),
            feed,
        }
    }

    /// The connection as the feed of the actors it brings asks to.
    pub(crate) fn feed(&self) -> &Arc<dyn cadre_runtime::Feed> {
        &self.feed
    }

    /// The largest frame body this link sends.
    pub(crate) fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Encodes one frame into the outbound buffer with `encode` (which appends a whole frame,
    /// or nothing and an error), without waiting.
    ///
    /// With `urgent` (an ask or a reply: someone waits on it), a frame that finds the connection
    /// idle is written at once from here, sparing a round through the executor. Other frames
    /// wait for the writer task, which takes everything queued by then in one write: writing
    /// each of a stream of tells itself would cost a system call per message.
    pub(crate) fn push(
        &self,
        urgent: bool,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<(), QueueError> {
        self.queue(urgent, |out| {
            out.close_tell();
            encode(&mut out.buf)
        })
    }

    /// Queues a tell of `msg` to the actor exposed as `to`: appended to the last frame when that
    /// is a tell to the same actor with the same tag (and still small), else in a frame of its
    /// own. Never written from here: tells come in streams, and the writer task takes them
    /// together.
    #[inline]
    pub(crate) fn tell<M: Serialize>(
        &self,
        to: &Arc<str>,
        tag: &'static str,
        msg: &M,
    ) -> Result<(), QueueError> {
        {
            // The usual case in a stream of tells: the last frame is an open tell to the same
            // actor and type with room left, and the writer task is already due to write it.
            let mut guard = self.out.lock();
            let out = &mut *guard;
            if let (Some(o), true, true) = (&mut out.open, out.writing, out.socket.is_some()) {
                if out.sealed_bytes + out.buf.len() < self.limit
                    && o.join(&mut out.buf, to, tag, msg, self.max_frame)
                {
                    if out.buf.len() >= CHUNK {
                        out.seal();
                    }
                    return Ok(());
                }
            }
        }
        self.tell_otherwise(to, tag, msg)
    }

    /// [`Link::tell`] where the message does not simply join the open tell frame: it starts a
    /// frame, or the writer task has to be woken, or it is refused. (A message too large to
    /// join the open frame is encoded once more here, into a frame of its own.)
    #[inline(never)]
    fn tell_otherwise<M: Serialize>(
        &self,
        to: &Arc<str>,
        tag: &'static str,
        msg: &M,
    ) -> Result<(), QueueError> {
        let max = self.max_frame;
        self.queue(false, |out| {
            if let Some(o) = &mut out.open {
                if o.join(&mut out.buf, to, tag, msg, max) {
                    return Ok(());
                }
                // Another actor or type, a full frame, or a message too large to join it
                // (which a frame of its own tells apart).
            }
            out.close_tell();
            let buf = &mut out.buf;
            let mut tell = OpenTell::begin(buf, to, tag);
            match tell.push(buf, msg, max) {
                Ok(()) => {
                    out.open = Some(Open {
                        tell,
                        to: to.clone(),
                        tag,
                    });
                    Ok(())
                }
                Err(e) => {
                    tell.abandon(buf);
                    Err(e)
                }
            }
        })
    }

    /// As [`Link::tell`], waiting for room when the buffer is full.
    pub(crate) async fn tell_wait<M: Serialize>(
        &self,
        to: &Arc<str>,
        tag: &'static str,
        msg: &M,
    ) -> Result<(), QueueError> {
        self.with_room(|| self.tell(to, tag, msg)).await
    }

    /// Runs `attempt` until it is not refused for a full buffer, waiting for room between tries.
    async fn with_room(
        &self,
        mut attempt: impl FnMut() -> Result<(), QueueError>,
    ) -> Result<(), QueueError> {
        match attempt() {
            Err(QueueError::Full) => {}
            other => return other,
        }
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match attempt() {
                Err(QueueError::Full) => room.await,
                other => return other,
            }
        }
    }

    /// Adds to the outbound buffer with `encode` under the lock, then has it written: by the
    /// writer task, or (for an `urgent` frame on an idle connection) from here.
    fn queue(
        &self,
        urgent: bool,
        encode: impl FnOnce(&mut Outbound) -> Result<(), EncodeError>,
    ) -> Result<(), QueueError> {
        let mut out = self.out.lock();
        if out.socket.is_none() {
            return Err(QueueError::Closed);
        }
        if out.sealed_bytes + out.buf.len() >= self.limit {
            return Err(QueueError::Full);
        }
        let was_empty = out.buf.is_empty() && out.sealed.is_empty();
        encode(&mut out).map_err(QueueError::Encode)?;
        if out.buf.len() >= CHUNK {
            out.seal();
        }
        if out.writing {
            return Ok(()); // the writer will take it
        }
        if urgent && was_empty && !out.buf.is_empty() {
            out.close_tell(); // whole frames only; and the buffer's start moves
            let Outbound { buf, socket, .. } = &mut *out;
            let Some(socket) = socket.as_ref() else {
                return Err(QueueError::Closed);
            };
            loop {
                match socket.try_write(buf) {
                    Ok(n) => {
                        buf.advance(n);
                        if buf.is_empty() {
                            rewind(buf, CHUNK_CAPACITY);
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    // WouldBlock, or an error the writer task will meet and report.
                    Err(_) => break,
                }
            }
        }
        out.writing = true;
        drop(out);
        self.wake.notify_one();
        Ok(())
    }

    /// As [`Link::push`], waiting for room when the buffer is full.
    pub(crate) async fn push_wait(
        &self,
        urgent: bool,
        mut encode: impl FnMut(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<(), QueueError> {
        self.with_room(|| self.push(urgent, &mut encode)).await
    }

    /// The writer task: writes whatever accumulates until the link closes or the socket fails.
    pub(crate) async fn write_loop(&self) -> std::io::Result<()> {
        let mut written: Option<BytesMut> = None;
        loop {
            let chunk = {
                let mut out = self.out.lock();
                if let Some(done) = written.take() {
                    out.recycle(done);
                }
                let Some(socket) = out.socket.clone() else {
                    return Ok(()); // closed
                };
                match out.take() {
                    Some(chunk) => {
                        out.writing = true;
                        Some((chunk, socket))
                    }
                    None => {
                        out.writing = false;
                        None
                    }
                }
            };
            let Some((mut chunk, socket)) = chunk else {
                self.wake.notified().await;
                continue;
            };
            self.room.notify_waiters();
            while !chunk.is_empty() {
                socket.writable().await?;
                match socket.try_write(&chunk) {
                    Ok(n) => chunk.advance(n),
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                    Err(e) => return Err(e),
                }
            }
            written = Some(chunk);
        }
    }

    /// Registers an ask that gives up at `deadline` and returns its id; `None` if the
    /// connection already closed. Its answer is then polled with [`Link::poll_answer`].
    ///
    /// Deadlines are kept here, not in a timer per ask: the link's expiry task
    /// ([`Link::expire_loop`]) sleeps until the earliest, so an ask answered in time costs no
    /// timer at all.
    pub(crate) fn register(&self, deadline: Instant) -> Option<u64> {
        let mut pending = self.pending.lock();
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        pending.asks.insert(
            id,
            Waiting {
                deadline,
                answer: None,
                waker: None,
            },
        );
        let earlier = pending.armed.is_none_or(|armed| deadline < armed);
        if earlier {
            pending.armed = Some(deadline);
        }
        drop(pending);
        if earlier {
            self.expiry.notify_one();
        }
        Some(id)
    }

    /// Forgets an ask (never sent, or its asker gave up waiting).
    pub(crate) fn unregister(&self, id: u64) {
        self.pending.lock().asks.remove(&id);
    }

    /// The answer to ask `id` once it is there (and the ask forgotten), `None` if the connection
    /// closed first; otherwise `cx` is woken when it comes.
    pub(crate) fn poll_answer(&self, id: u64, cx: &mut Context<'_>) -> Poll<Option<Answer>> {
        let mut pending = self.pending.lock();
        let Some(waiting) = pending.asks.get_mut(&id) else {
            return Poll::Ready(None);
        };
        if waiting.answer.is_some() {
            let answer = pending.asks.remove(&id).and_then(|w| w.answer);
            return Poll::Ready(answer);
        }
        match &waiting.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => waiting.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Delivers a reply to its ask, waking its asker unless that is `current` (an asker reading
    /// its own reply); false if no ask waits for that id.
    pub(crate) fn resolve(&self, id: u64, result: ReplyResult, current: Option<&Waker>) -> bool {
        let waker = {
            let mut pending = self.pending.lock();
            let Some(waiting) = pending.asks.get_mut(&id) else {
                return false;
            };
            if waiting.answer.is_some() {
                return false; // it timed out first
            }
            waiting.answer = Some(Answer::Reply(result));
            waiting.waker.take()
        };
        if let Some(w) = waker {
            if !current.is_some_and(|c| c.will_wake(&w)) {
                w.wake();
            }
        }
        true
    }

    /// The expiry task: tells each ask whose deadline passed that it timed out. Sleeps until
    /// the earliest deadline, or until an ask is registered when none waits. Runs beside the
    /// reader and the writer for as long as the connection lives.
    pub(crate) async fn expire_loop(&self) {
        loop {
            let notified = self.expiry.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (expired, next) = {
                let mut pending = self.pending.lock();
                let now = Instant::now();
                let mut next: Option<Instant> = None;
                let mut expired = Vec::new();
                for w in pending.asks.values_mut() {
                    if w.answer.is_some() {
                        continue; // answered; its asker takes it
                    }
                    if w.deadline <= now {
                        w.answer = Some(Answer::TimedOut);
                        expired.extend(w.waker.take());
                    } else {
                        next = Some(next.map_or(w.deadline, |n| n.min(w.deadline)));
                    }
                }
                pending.armed = next;
                (expired, next)
            };
            for w in expired {
                w.wake();
            }
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The connection closed: every pending ask fails now (its asker finds it gone), no new one
    /// registers, the socket's read half is dropped, and the writer ends.
    pub(crate) fn close(&self) {
        let pending = {
            let mut p = self.pending.lock();
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut p.asks)
        };
        for w in pending.into_values().filter_map(|w| w.waker) {
            w.wake();
        }
        self.inbound.close();
        let socket = self.out.lock().socket.take();
        drop(socket);
        self.wake.notify_one();
        self.room.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_buffer_rewinds_to_its_start_once_no_frame_holds_it() {
        const FULL: usize = 64 * 1024;
        let mut buf = BytesMut::with_capacity(FULL);
        let start = buf.as_ptr();
        // Written out (the direct write's path): a little way along, it stays where it is;
        // further along, it goes back to the start.
        buf.extend_from_slice(&[7; 100]);
        buf.advance(100);
        rewind(&mut buf, FULL);
        assert_eq!(buf.as_ptr(), start.wrapping_add(100));
        buf.extend_from_slice(&[7; REWIND_AFTER]);
        buf.advance(REWIND_AFTER);
        rewind(&mut buf, FULL);
        assert_eq!((buf.as_ptr(), buf.capacity()), (start, FULL));

        // Read in, and a frame split off (the reader's path): while the frame lives, the buffer
        // stays where it is; once it is gone, it rewinds.
        buf.extend_from_slice(&[8; REWIND_AFTER]);
        let frame = buf.split_to(REWIND_AFTER).freeze();
        let at = buf.as_ptr();
        rewind(&mut buf, FULL);
        assert_eq!(buf.as_ptr(), at);
        drop(frame);
        rewind(&mut buf, FULL);
        assert_eq!(buf.as_ptr(), start);
        assert!(buf.capacity() >= FULL);

        // A buffer holding bytes is left alone.
        buf.extend_from_slice(&[9; REWIND_AFTER + 10]);
        buf.advance(REWIND_AFTER + 5);
        let at = buf.as_ptr();
        rewind(&mut buf, FULL);
        assert_eq!((buf.as_ptr(), &buf[..]), (at, &[9u8; 5][..]));
    }
}
