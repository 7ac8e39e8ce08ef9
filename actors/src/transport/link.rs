//! A live connection to a peer, as senders see it: a bounded queue of encoded frames and the
//! asks waiting for replies over it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use cadre_cluster::wire::{EncodeError, Envelope, RemoteError};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

/// The answer an ask waits for: reply bytes, or the remote side's error.
pub(crate) type ReplyResult = Result<Vec<u8>, RemoteError>;

/// Where a reply goes.
pub(crate) type ReplySlot = oneshot::Sender<ReplyResult>;

/// Why a frame was not queued.
#[derive(Debug)]
pub(crate) enum QueueError {
    /// The queue is full.
    Full,
    /// The connection is gone.
    Closed,
    /// The envelope does not fit in a frame.
    Encode(EncodeError),
}

/// Encodes `env` as one frame of at most `max_frame` body bytes.
pub(crate) fn encode_frame(env: &Envelope, max_frame: u32) -> Result<Bytes, QueueError> {
    let mut buf = BytesMut::new();
    env.encode_frame(max_frame, &mut buf)
        .map_err(QueueError::Encode)?;
    Ok(buf.freeze())
}

/// One established connection's sending side.
pub(crate) struct Link {
    tx: mpsc::Sender<Bytes>,
    max_frame: u32,
    next_id: AtomicU64,
    /// `None` once the connection closed: its asks have failed and no new one registers.
    pending: Mutex<Option<HashMap<u64, ReplySlot>>>,
}

impl Link {
    pub(crate) fn new(capacity: usize, max_frame: u32) -> (Self, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let link = Link {
            tx,
            max_frame,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Some(HashMap::new())),
        };
        (link, rx)
    }

    pub(crate) fn encode(&self, env: &Envelope) -> Result<Bytes, QueueError> {
        encode_frame(env, self.max_frame)
    }

    /// Queues a frame without waiting.
    pub(crate) fn try_send(&self, frame: Bytes) -> Result<(), QueueError> {
        self.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => QueueError::Full,
            mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
        })
    }

    /// Queues a frame, waiting for room.
    pub(crate) async fn send(&self, frame: Bytes) -> Result<(), QueueError> {
        self.tx.send(frame).await.map_err(|_| QueueError::Closed)
    }

    /// Registers an ask; `None` if the connection already closed.
    pub(crate) fn register(&self) -> Option<(u64, oneshot::Receiver<ReplyResult>)> {
        let mut pending = self.pending.lock();
        let map = pending.as_mut()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        map.insert(id, tx);
        Some((id, rx))
    }

    /// Forgets an ask (timed out, or never sent).
    pub(crate) fn unregister(&self, id: u64) {
        if let Some(map) = self.pending.lock().as_mut() {
            map.remove(&id);
        }
    }

    /// Delivers a reply to its ask; false if no ask waits for that id.
    pub(crate) fn resolve(&self, id: u64, result: ReplyResult) -> bool {
        let slot = self.pending.lock().as_mut().and_then(|m| m.remove(&id));
        match slot {
            Some(tx) => {
                let _ = tx.send(result);
                true
            }
            None => false,
        }
    }

    /// The connection closed: every pending ask fails now (its receiver sees the sender
    /// dropped), and no new one registers.
    pub(crate) fn close(&self) {
        let pending = self.pending.lock().take();
        drop(pending);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.pending.lock().is_none()
    }
}
