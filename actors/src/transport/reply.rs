//! The way back for one ask a peer sent: encodes the reply straight into the connection.

use std::sync::Arc;

use bytes::BytesMut;
use cadre_cluster::wire::{EncodeError, EnvelopeRef, RemoteError, ReplyRef};
use serde::Serialize;

use super::link::{with_body, Link, QueueError};

/// Answers one ask from a peer, exactly once: with [`Replier::send`], [`Replier::fail`], or,
/// if dropped unused, with an error saying the actor gave no reply.
///
/// A reply is encoded into the connection's buffer by whoever has it (usually the serving actor,
/// from inside its context, right after its handler ran) and, on an idle connection, written to
/// the socket from there: no task in between.
pub(crate) struct Replier {
    link: Arc<Link>,
    id: u64,
    actor: Arc<str>,
    done: bool,
}

impl Replier {
    pub(crate) fn new(link: Arc<Link>, id: u64, actor: Arc<str>) -> Self {
        Replier {
            link,
            id,
            actor,
            done: false,
        }
    }

    /// The actor the ask went to.
    pub(crate) fn actor(&self) -> &Arc<str> {
        &self.actor
    }

    /// The connection the ask came over, as a feed for the actor that serves it.
    pub(crate) fn feed(&self) -> Arc<dyn cadre_runtime::Feed> {
        self.link.feed().clone()
    }

    /// Sends the reply; one that cannot be encoded (or exceeds the frame limit) becomes an error
    /// reply saying so.
    pub(crate) fn send<R: Serialize + ?Sized>(mut self, reply: &R) {
        self.done = true;
        let (id, max) = (self.id, self.link.max_frame());
        let queued = with_body(reply, |body| {
            match self
                .link
                .push(true, |buf| reply_frame(id, Ok(body), max, buf))
            {
                Ok(()) | Err(QueueError::Closed) => Ok(None),
                // Rare: the connection is backed up. Keep the bytes and wait for room.
                Err(QueueError::Full) => Ok(Some(body.to_vec())),
                Err(QueueError::Encode(e)) => Err(e),
            }
        });
        match queued {
            Ok(None) => {}
            Ok(Some(body)) => self.later(Ok(body)),
            Err(e) => self.error(RemoteError::Unavailable {
                actor: self.actor.to_string(),
                detail: format!("its reply could not be sent: {e}"),
            }),
        }
    }

    /// Answers with an error.
    pub(crate) fn fail(mut self, error: RemoteError) {
        self.done = true;
        self.error(error);
    }

    fn error(&self, error: RemoteError) {
        let (id, max) = (self.id, self.link.max_frame());
        let pushed = self
            .link
            .push(true, |buf| reply_frame(id, Err(&error), max, buf));
        if let Err(QueueError::Full) = pushed {
            self.later(Err(error));
        }
    }

    /// Sends `result` once the connection has room.
    fn later(&self, result: Result<Vec<u8>, RemoteError>) {
        let (link, id) = (self.link.clone(), self.id);
        actix::spawn(async move {
            let max = link.max_frame();
            let _ = link
                .push_wait(true, |buf| reply_frame(id, result.as_deref(), max, buf))
                .await;
        });
    }
}

/// Frames the reply to ask `id`: its body, or the error.
fn reply_frame(
    id: u64,
    result: Result<&[u8], &RemoteError>,
    max: u32,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    EnvelopeRef::Reply(ReplyRef {
        id,
        result: result.map(serde_bytes::Bytes::new).map_err(Clone::clone),
    })
    .encode_frame(max, buf)
}

impl Drop for Replier {
    fn drop(&mut self) {
        if !self.done {
            self.error(RemoteError::Unavailable {
                actor: self.actor.to_string(),
                detail: "the actor gave no reply".into(),
            });
        }
    }
}
