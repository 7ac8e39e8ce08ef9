//! The way back for one ask a peer sent: encodes the reply straight into the connection.

use std::sync::Arc;

use bytes::BytesMut;
use cadre_cluster::wire::{encode_body_into, EncodeError, EnvelopeRef, RemoteError, ReplyRef};
use serde::Serialize;

use super::link::{Link, QueueError};

thread_local! {
    /// Where reply bodies are encoded before they are framed: reused, no allocation per reply.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

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

    /// Sends the reply; one that cannot be encoded (or exceeds the frame limit) becomes an error
    /// reply saying so.
    pub(crate) fn send<R: Serialize + ?Sized>(mut self, reply: &R) {
        self.done = true;
        let (id, max) = (self.id, self.link.max_frame());
        let encode = |buf: &mut BytesMut| {
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                encode_body_into(reply, &mut scratch)?;
                EnvelopeRef::Reply(ReplyRef {
                    id,
                    result: Ok(serde_bytes::Bytes::new(&scratch)),
                })
                .encode_frame(max, buf)
            })
        };
        match self.link.push(true, encode) {
            Ok(()) | Err(QueueError::Closed) => {}
            Err(QueueError::Encode(e)) => self.error(RemoteError::Unavailable {
                actor: self.actor.to_string(),
                detail: format!("its reply could not be sent: {e}"),
            }),
            Err(QueueError::Full) => {
                // Rare: the connection is backed up. Keep the bytes and wait for room.
                let mut bytes = Vec::new();
                match encode_body_into(reply, &mut bytes) {
                    Ok(()) => self.later(Ok(bytes)),
                    Err(e) => self.error(RemoteError::Unavailable {
                        actor: self.actor.to_string(),
                        detail: format!("its reply could not be sent: {e}"),
                    }),
                }
            }
        }
    }

    /// Answers with an error.
    pub(crate) fn fail(mut self, error: RemoteError) {
        self.done = true;
        self.error(error);
    }

    fn error(&self, error: RemoteError) {
        let id = self.id;
        let max = self.link.max_frame();
        let pushed = self
            .link
            .push(true, |buf| error_frame(id, &error, max, buf));
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
                .push_wait(true, |buf| match &result {
                    Ok(bytes) => EnvelopeRef::Reply(ReplyRef {
                        id,
                        result: Ok(serde_bytes::Bytes::new(bytes)),
                    })
                    .encode_frame(max, buf),
                    Err(e) => error_frame(id, e, max, buf),
                })
                .await;
        });
    }
}

fn error_frame(
    id: u64,
    error: &RemoteError,
    max: u32,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    EnvelopeRef::Reply(ReplyRef {
        id,
        result: Err(error.clone()),
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
