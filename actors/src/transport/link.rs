//! A live connection to a peer, as senders see it: the outbound buffer that frames are encoded
//! into, and the asks waiting for replies over it.
//!
//! Senders encode each frame straight into the connection's outbound buffer under a short lock:
//! no allocation and no channel hop per message. A writer task swaps the buffer out and writes
//! it whole, so under load many frames share one system call. When the writer is idle, the
//! sender that finds the buffer empty writes its frame to the socket itself (a non-blocking
//! write), sparing a round through the executor: that is what keeps a lone ask fast. The
//! buffer is bounded in bytes; beyond it senders are refused ([`QueueError::Full`]) or wait for
//! room.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use cadre_cluster::wire::{EncodeError, OpenTell, RemoteError};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{oneshot, Notify};

/// The answer an ask waits for: reply bytes, or the remote side's error.
pub(crate) type ReplyResult = Result<Vec<u8>, RemoteError>;

/// Where a reply goes.
pub(crate) type ReplySlot = oneshot::Sender<ReplyResult>;

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

/// The size up to which a tell frame grows with further messages; a larger batch starts a new
/// frame, so that a receiver starts on the first messages before the last ones arrive.
const TELL_FRAME_TARGET: usize = 64 * 1024;

struct Outbound {
    buf: BytesMut,
    /// The tell frame at the end of `buf` that can take more messages, if any.
    open: Option<Open>,
    /// The writer task owns the socket's writing until it finds the buffer empty.
    writing: bool,
    /// The socket's write half; taken away when the link closes, so that cached handles and
    /// late reply tasks cannot keep a dead connection open.
    socket: Option<Arc<OwnedWriteHalf>>,
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
    pending: Mutex<HashMap<u64, ReplySlot>>,
}

impl Link {
    /// A link writing to `socket`, holding at most `limit` unwritten bytes.
    pub(crate) fn new(socket: OwnedWriteHalf, limit: usize, max_frame: u32) -> Self {
        Link {
            out: Mutex::new(Outbound {
                buf: BytesMut::with_capacity(64 * 1024),
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
            pending: Mutex::new(HashMap::new()),
        }
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
            out.open = None;
            encode(&mut out.buf)
        })
    }

    /// Queues a tell of `msg` to the actor exposed as `to`: appended to the last frame when that
    /// is a tell to the same actor with the same tag (and still small), else in a frame of its
    /// own. Never written from here: tells come in streams, and the writer task takes them
    /// together.
    pub(crate) fn tell<M: Serialize>(
        &self,
        to: &Arc<str>,
        tag: &'static str,
        msg: &M,
    ) -> Result<(), QueueError> {
        let max = self.max_frame;
        self.queue(false, |out| {
            let Outbound { buf, open, .. } = out;
            if let Some(o) = open {
                if o.tag == tag
                    && *o.to == **to
                    && o.tell.frame_len(buf) < TELL_FRAME_TARGET
                    && o.tell.push(buf, msg, max).is_ok()
                {
                    return Ok(());
                }
                // Another actor or type, a full frame, or a message too large to join it
                // (which a frame of its own tells apart).
            }
            let tell = OpenTell::begin(buf, to, tag);
            match tell.push(buf, msg, max) {
                Ok(()) => {
                    *open = Some(Open {
                        tell,
                        to: to.clone(),
                        tag,
                    });
                    Ok(())
                }
                Err(e) => {
                    tell.abandon(buf);
                    *open = None;
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
        match self.tell(to, tag, msg) {
            Err(QueueError::Full) => {}
            other => return other,
        }
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.tell(to, tag, msg) {
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
        let Some(socket) = out.socket.clone() else {
            return Err(QueueError::Closed);
        };
        if out.buf.len() >= self.limit {
            return Err(QueueError::Full);
        }
        let was_empty = out.buf.is_empty();
        encode(&mut out).map_err(QueueError::Encode)?;
        if out.writing {
            return Ok(()); // the writer will take it
        }
        if urgent && was_empty {
            out.open = None; // the buffer's start moves
            loop {
                match socket.try_write(&out.buf) {
                    Ok(n) => {
                        out.buf.advance(n);
                        if out.buf.is_empty() {
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
        match self.push(urgent, &mut encode) {
            Err(QueueError::Full) => {}
            other => return other,
        }
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.push(urgent, &mut encode) {
                Err(QueueError::Full) => room.await,
                other => return other,
            }
        }
    }

    /// The writer task: writes whatever accumulates until the link closes or the socket fails.
    pub(crate) async fn write_loop(&self) -> std::io::Result<()> {
        let mut spare = BytesMut::with_capacity(64 * 1024);
        loop {
            let chunk = {
                let mut out = self.out.lock();
                let Some(socket) = out.socket.clone() else {
                    return Ok(()); // closed
                };
                if out.buf.is_empty() {
                    out.writing = false;
                    None
                } else {
                    out.writing = true;
                    out.open = None;
                    Some((
                        std::mem::replace(&mut out.buf, std::mem::take(&mut spare)),
                        socket,
                    ))
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
            chunk.clear();
            spare = chunk;
        }
    }

    /// Registers an ask; `None` if the connection already closed.
    pub(crate) fn register(&self) -> Option<(u64, oneshot::Receiver<ReplyResult>)> {
        let mut pending = self.pending.lock();
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        pending.insert(id, tx);
        Some((id, rx))
    }

    /// Forgets an ask (timed out, or never sent).
    pub(crate) fn unregister(&self, id: u64) {
        self.pending.lock().remove(&id);
    }

    /// Delivers a reply to its ask; false if no ask waits for that id.
    pub(crate) fn resolve(&self, id: u64, result: ReplyResult) -> bool {
        let slot = self.pending.lock().remove(&id);
        match slot {
            Some(tx) => {
                let _ = tx.send(result);
                true
            }
            None => false,
        }
    }

    /// The connection closed: every pending ask fails now (its receiver sees the sender
    /// dropped), no new one registers, and the writer ends.
    pub(crate) fn close(&self) {
        let pending = {
            let mut p = self.pending.lock();
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut *p)
        };
        drop(pending);
        let socket = self.out.lock().socket.take();
        drop(socket);
        self.wake.notify_one();
        self.room.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
