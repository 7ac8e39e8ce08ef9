//! [`RemoteRef`]: an actor by node and name, wherever it runs.

use cadre_runtime::stats::{self, Metric};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cadre_cluster::wire::{decode_body, AskRef, EncodeError, EnvelopeRef, RemoteError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::RemoteMessage;
use crate::transport::{with_body, Answer, AwaitAnswer, Conn, Link, QueueError, TransportInner};

/// Why a remote tell was not sent; every variant but `Remote` gives the message back.
#[derive(thiserror::Error)]
pub enum RemoteTellError<M> {
    /// No connection to that node.
    #[error("node unreachable")]
    NodeUnreachable(M),
    /// The connection's outbound queue is full; try again, or use `tell_wait`.
    #[error("outbound queue full")]
    QueueFull(M),
    /// The message does not encode, or exceeds the frame limit.
    #[error("cannot send: {1}")]
    Encode(M, String),
    /// Local target: the actor is not exposed, does not take this type, or refused it.
    #[error(transparent)]
    Remote(RemoteError),
}

impl<M> fmt::Debug for RemoteTellError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteTellError::NodeUnreachable(_) => f.write_str("NodeUnreachable(..)"),
            RemoteTellError::QueueFull(_) => f.write_str("QueueFull(..)"),
            RemoteTellError::Encode(_, e) => write!(f, "Encode(.., {e:?})"),
            RemoteTellError::Remote(e) => write!(f, "Remote({e:?})"),
        }
    }
}

/// Why a remote ask got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteAskError {
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// No actor is exposed under that name on that node.
    #[error("no actor `{0}` is exposed on that node")]
    NoSuchActor(String),
    /// The actor is exposed, but not for this message type.
    #[error("actor `{actor}` does not accept `{tag}`")]
    UnknownTag {
        /// The actor.
        actor: String,
        /// The message type's tag.
        tag: String,
    },
    /// No connection to that node, or it dropped while the ask was pending.
    #[error("node `{0}` unreachable")]
    NodeUnreachable(String),
    /// The outbound queue to that node is full.
    #[error("outbound queue to `{0}` full")]
    QueueFull(String),
    /// The remote actor did not handle it: full mailbox, restarting, ended, or died before
    /// replying.
    #[error("the remote handler failed: {0}")]
    HandlerFailed(String),
    /// The request or the reply did not decode (mismatched types between the nodes).
    #[error("decode error: {0}")]
    Decode(String),
    /// The request does not encode or exceeds the frame limit.
    #[error("cannot send: {0}")]
    Encode(String),
}

impl From<RemoteError> for RemoteAskError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::NoSuchActor { actor } => RemoteAskError::NoSuchActor(actor),
            RemoteError::UnknownTag { actor, tag } => RemoteAskError::UnknownTag { actor, tag },
            RemoteError::Decode { tag, detail } => {
                RemoteAskError::Decode(format!("`{tag}`: {detail}"))
            }
            e @ RemoteError::Unavailable { .. } => RemoteAskError::HandlerFailed(e.to_string()),
            e @ RemoteError::Timeout { .. } => RemoteAskError::HandlerFailed(e.to_string()),
        }
    }
}

/// A queueing failure as the tell's error, with the message back.
fn tell_error<M>(e: QueueError, msg: M) -> RemoteTellError<M> {
    match e {
        QueueError::Full => RemoteTellError::QueueFull(msg),
        QueueError::Closed => RemoteTellError::NodeUnreachable(msg),
        QueueError::Encode(e) => RemoteTellError::Encode(msg, e.to_string()),
    }
}

/// Encodes `msg` as the body of an ask, framed into `buf`.
fn frame_ask<M: Serialize>(
    buf: &mut bytes::BytesMut,
    max: u32,
    to: &str,
    tag: &str,
    msg: &M,
    (id, timeout_ms): (u64, u32),
) -> Result<(), EncodeError> {
    with_body(msg, |body| {
        EnvelopeRef::Ask(AskRef {
            id,
            to,
            tag,
            timeout_ms,
            body,
        })
        .encode_frame(max, buf)
    })
}

/// The connection a handle uses: its cached one (no reference count touched), or the node's
/// current one.
enum LinkRef<'a> {
    Cached(&'a Arc<Link>),
    Fresh(Arc<Link>),
}

impl LinkRef<'_> {
    fn arc(&self) -> &Arc<Link> {
        match self {
            LinkRef::Cached(link) => link,
            LinkRef::Fresh(link) => link,
        }
    }
}

impl std::ops::Deref for LinkRef<'_> {
    type Target = Link;

    fn deref(&self) -> &Link {
        self.arc()
    }
}

/// An actor exposed under a name on a node: this one or a peer. Cheap to clone.
///
/// On this node's own id, messages go straight to the local actor's mailbox, unencoded; on a
/// peer's, over the connection to it. Either way the same errors come back. A handle remembers
/// the connection it last used; a clone starts afresh.
pub struct RemoteRef {
    transport: Arc<TransportInner>,
    node: Arc<str>,
    name: Arc<str>,
    /// Whether `node` is this node.
    local: bool,
    link: OnceLock<Arc<Link>>,
}

impl Clone for RemoteRef {
    fn clone(&self) -> Self {
        RemoteRef::new(self.transport.clone(), self.node.clone(), self.name.clone())
    }
}

impl fmt::Debug for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteRef({}@{})", self.name, self.node)
    }
}

impl RemoteRef {
    pub(crate) fn new(transport: Arc<TransportInner>, node: Arc<str>, name: Arc<str>) -> Self {
        let local = *node == *transport.config.node;
        RemoteRef {
            transport,
            node,
            name,
            local,
            link: OnceLock::new(),
        }
    }

    /// The node it lives on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The name it is exposed under.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn is_local(&self) -> bool {
        self.local
    }

    /// The live connection to the node: the cached one while it lives, else the node's current.
    #[inline(always)]
    fn link(&self) -> Option<LinkRef<'_>> {
        match self.link.get() {
            Some(link) if !link.is_closed() && !self.transport.is_cut(&self.node) => {
                Some(LinkRef::Cached(link))
            }
            _ => self.fresh_link(),
        }
    }

    /// [`RemoteRef::link`] without a live cached connection (or with the node cut off): the
    /// node's current one, cached if none was.
    #[cold]
    #[inline(never)]
    fn fresh_link(&self) -> Option<LinkRef<'_>> {
        let link = self.transport.link(&self.node)?;
        if self.link.get().is_none() {
            let _ = self.link.set(link.clone());
        }
        Some(LinkRef::Fresh(link))
    }

    /// Sends without waiting: queued on the connection, or handed to the local actor.
    ///
    /// # Errors
    /// [`RemoteTellError`], with the message back where it was not sent.
    #[inline]
    pub fn tell<M: RemoteMessage>(&self, msg: M) -> Result<(), RemoteTellError<M>>
    where
        M::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        if self.is_local() {
            return self.tell_local(msg);
        }
        let Some(link) = self.link() else {
            return Err(RemoteTellError::NodeUnreachable(msg));
        };
        match link.tell(&self.name, M::TAG, &msg) {
            Ok(()) => {
                stats::add(Metric::RemoteOut, 1);
                Ok(())
            }
            Err(e) => Err(tell_error(e, msg)),
        }
    }

    /// Sends, waiting for room in the connection's buffer when it is full.
    ///
    /// # Errors
    /// As [`RemoteRef::tell`], never `QueueFull`.
    pub async fn tell_wait<M: RemoteMessage>(&self, msg: M) -> Result<(), RemoteTellError<M>>
    where
        M::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        // Waiting is the rare case: its state (a wait for room) lives in a box of its own, and
        // nothing else is held across the wait (not even the first attempt's result), so that
        // the future of every tell stays as small as the message.
        let msg = match self.tell(msg) {
            Err(RemoteTellError::QueueFull(msg)) => msg,
            done => return done,
        };
        Box::pin(self.tell_when_room(msg)).await
    }

    async fn tell_when_room<M: RemoteMessage>(&self, msg: M) -> Result<(), RemoteTellError<M>>
    where
        M::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        if self.is_local() {
            return self.tell_local(msg);
        }
        let Some(link) = self.link() else {
            return Err(RemoteTellError::NodeUnreachable(msg));
        };
        let sent = link.tell_wait(&self.name, M::TAG, &msg).await;
        if sent.is_ok() {
            stats::add(Metric::RemoteOut, 1);
        }
        sent.map_err(|e| tell_error(e, msg))
    }

    fn tell_local<M: RemoteMessage>(&self, msg: M) -> Result<(), RemoteTellError<M>>
    where
        M::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        let dispatch = self
            .transport
            .exposed
            .get(&self.name, M::TAG)
            .map_err(RemoteTellError::Remote)?;
        dispatch
            .tell_any(Box::new(msg))
            .map_err(RemoteTellError::Remote)
    }

    /// Sends a request and waits at most `timeout` for the reply.
    ///
    /// # Errors
    /// [`RemoteAskError`]: timeout, no such actor, unknown tag, node unreachable (also when the
    /// connection drops while waiting: at once, not at the timeout), the remote handler failed,
    /// decode or encode errors.
    pub async fn ask<M: RemoteMessage>(
        &self,
        msg: M,
        timeout: Duration,
    ) -> Result<M::Result, RemoteAskError>
    where
        M::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        if self.is_local() {
            let dispatch = self.transport.exposed.get(&self.name, M::TAG)?;
            let reply = dispatch.ask_any(Box::new(msg), timeout).await?;
            return reply
                .downcast::<M::Result>()
                .map(|r| *r)
                .map_err(|_| RemoteAskError::Decode("reply of an unexpected type".into()));
        }
        let unreachable = || RemoteAskError::NodeUnreachable(self.node.to_string());
        let link = self.link().ok_or_else(unreachable)?;
        let deadline = tokio::time::Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
        let id = link.register(deadline).ok_or_else(unreachable)?;
        // From here the ask is forgotten if this future is dropped.
        let conn = Conn {
            inner: &self.transport,
            node: &self.node,
            link: link.arc(),
        };
        let answer = AwaitAnswer::new(conn, id);
        let timeout_ms = timeout.as_millis().min(u32::MAX as u128) as u32;
        let max = link.max_frame();
        let queued = link.push(true, |buf| {
            frame_ask(buf, max, &self.name, M::TAG, &msg, (id, timeout_ms))
        });
        if let Err(e) = queued {
            drop(answer);
            return Err(match e {
                QueueError::Full => RemoteAskError::QueueFull(self.node.to_string()),
                QueueError::Closed => unreachable(),
                QueueError::Encode(e) => RemoteAskError::Encode(e.to_string()),
            });
        }
        stats::add(Metric::RemoteOut, 1);
        let sent_at = std::time::Instant::now();
        // The link's expiry task answers `TimedOut` at the deadline: no timer per ask.
        match answer.await {
            Some(Answer::Reply(Ok(bytes))) => {
                stats::record_ask(sent_at.elapsed());
                decode_body::<M::Result>(&bytes).map_err(RemoteAskError::Decode)
            }
            Some(Answer::Reply(Err(remote))) => Err(remote.into()),
            Some(Answer::TimedOut) => Err(RemoteAskError::Timeout(timeout)),
            None => Err(unreachable()),
        }
    }
}
