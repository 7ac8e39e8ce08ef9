//! [`RemoteRef`]: an actor by node and name, wherever it runs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cadre_cluster::wire::{decode_body, encode_body, Ask, Envelope, RemoteError, Tell};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::RemoteMessage;
use crate::transport::{QueueError, TransportInner};

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

/// An actor exposed under a name on a node: this one or a peer. Cheap to clone.
///
/// On this node's own id, messages go straight to the local actor's mailbox, unencoded; on a
/// peer's, over the connection to it. Either way the same errors come back.
#[derive(Clone)]
pub struct RemoteRef {
    transport: Arc<TransportInner>,
    node: Arc<str>,
    name: Arc<str>,
}

impl fmt::Debug for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteRef({}@{})", self.name, self.node)
    }
}

impl RemoteRef {
    pub(crate) fn new(transport: Arc<TransportInner>, node: Arc<str>, name: Arc<str>) -> Self {
        RemoteRef {
            transport,
            node,
            name,
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
        *self.node == *self.transport.config.node
    }

    fn tell_frame<M: RemoteMessage>(&self, msg: &M) -> Result<bytes::Bytes, String>
    where
        M::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        let body = encode_body(msg).map_err(|e| e.to_string())?;
        let env = Envelope::Tell(Tell {
            to: self.name.to_string(),
            tag: M::TAG.into(),
            body,
        });
        crate::transport::encode_frame(&env, self.transport.config.max_frame)
            .map_err(|e| format!("{e:?}"))
    }

    /// Sends without waiting: queued on the connection, or handed to the local actor.
    ///
    /// # Errors
    /// [`RemoteTellError`], with the message back where it was not sent.
    pub fn tell<M: RemoteMessage>(&self, msg: M) -> Result<(), RemoteTellError<M>>
    where
        M::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        if self.is_local() {
            return self.tell_local(msg);
        }
        let Some(link) = self.transport.link(&self.node) else {
            return Err(RemoteTellError::NodeUnreachable(msg));
        };
        let frame = match self.tell_frame(&msg) {
            Ok(f) => f,
            Err(e) => return Err(RemoteTellError::Encode(msg, e)),
        };
        link.try_send(frame).map_err(|e| match e {
            QueueError::Full => RemoteTellError::QueueFull(msg),
            QueueError::Closed => RemoteTellError::NodeUnreachable(msg),
            QueueError::Encode(e) => RemoteTellError::Encode(msg, format!("{e:?}")),
        })
    }

    /// Sends, waiting for room in the connection's queue when it is full.
    ///
    /// # Errors
    /// As [`RemoteRef::tell`], never `QueueFull`.
    pub async fn tell_wait<M: RemoteMessage>(&self, msg: M) -> Result<(), RemoteTellError<M>>
    where
        M::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        if self.is_local() {
            return self.tell_local(msg);
        }
        let Some(link) = self.transport.link(&self.node) else {
            return Err(RemoteTellError::NodeUnreachable(msg));
        };
        let frame = match self.tell_frame(&msg) {
            Ok(f) => f,
            Err(e) => return Err(RemoteTellError::Encode(msg, e)),
        };
        match link.send(frame).await {
            Ok(()) => Ok(()),
            Err(_) => Err(RemoteTellError::NodeUnreachable(msg)),
        }
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
        let link = self.transport.link(&self.node).ok_or_else(unreachable)?;
        let body = encode_body(&msg).map_err(|e| RemoteAskError::Encode(e.to_string()))?;
        let (id, rx) = link.register().ok_or_else(unreachable)?;
        let env = Envelope::Ask(Ask {
            id,
            to: self.name.to_string(),
            tag: M::TAG.into(),
            timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
            body,
        });
        let queued = link.encode(&env).and_then(|frame| link.try_send(frame));
        if let Err(e) = queued {
            link.unregister(id);
            return Err(match e {
                QueueError::Full => RemoteAskError::QueueFull(self.node.to_string()),
                QueueError::Closed => unreachable(),
                QueueError::Encode(e) => RemoteAskError::Encode(format!("{e:?}")),
            });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(bytes))) => decode_body::<M::Result>(&bytes).map_err(RemoteAskError::Decode),
            Ok(Ok(Err(remote))) => Err(remote.into()),
            Ok(Err(_)) => Err(unreachable()),
            Err(_) => {
                link.unregister(id);
                Err(RemoteAskError::Timeout(timeout))
            }
        }
    }
}
