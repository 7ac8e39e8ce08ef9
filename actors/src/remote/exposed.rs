//! The table of actors a node exposes to the network, by name and message tag.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Actor, Handler};
use cadre_cluster::wire::{decode_body, encode_body, RemoteError};
use cadre_runtime::{ActorRef, AskError, TellError};
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::RemoteMessage;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How long a peer's tell waits for room in a full mailbox before it is dropped (and counted).
pub(crate) const TELL_PATIENCE: Duration = Duration::from_secs(10);

/// The outcome of delivering a peer's tell.
pub(crate) enum Delivery {
    /// In the mailbox.
    Done,
    /// The mailbox is full: this future delivers it once there is room (or gives up after
    /// [`TELL_PATIENCE`]). The connection reads nothing more until then, so the pressure goes
    /// back to the sender through TCP and its bounded queue.
    Wait(BoxFuture<Result<(), RemoteError>>),
}

/// Delivers one message type to one exposed actor, from bytes (a peer) or from a value (this
/// node: no encoding on the local path).
pub(crate) trait Dispatch: Send + Sync {
    fn tell_bytes(&self, tag: &str, body: &[u8]) -> Result<Delivery, RemoteError>;
    fn ask_bytes(
        &self,
        tag: &str,
        body: &[u8],
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, RemoteError>>;
    fn tell_any(&self, msg: Box<dyn Any + Send>) -> Result<(), RemoteError>;
    fn ask_any(
        &self,
        msg: Box<dyn Any + Send>,
        timeout: Duration,
    ) -> BoxFuture<Result<Box<dyn Any + Send>, RemoteError>>;
}

struct Typed<A: Actor, M> {
    name: Arc<str>,
    actor: ActorRef<A>,
    _m: PhantomData<fn(M)>,
}

fn unavailable<M>(name: &str, e: AskError<M>) -> RemoteError {
    match e {
        AskError::Timeout(_) => RemoteError::Timeout { actor: name.into() },
        other => RemoteError::Unavailable {
            actor: name.into(),
            detail: other.to_string(),
        },
    }
}

fn not_delivered<M>(name: &str, e: TellError<M>) -> RemoteError {
    RemoteError::Unavailable {
        actor: name.into(),
        detail: e.to_string(),
    }
}

impl<A, M> Dispatch for Typed<A, M>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: RemoteMessage,
    M::Result: Serialize + DeserializeOwned + Send + 'static,
{
    fn tell_bytes(&self, tag: &str, body: &[u8]) -> Result<Delivery, RemoteError> {
        let msg: M = decode_body(body).map_err(|detail| RemoteError::Decode {
            tag: tag.into(),
            detail,
        })?;
        match self.actor.tell(msg) {
            Ok(()) => Ok(Delivery::Done),
            Err(TellError::Full(msg)) => {
                let (actor, name) = (self.actor.clone(), self.name.clone());
                Ok(Delivery::Wait(Box::pin(async move {
                    let deadline = tokio::time::Instant::now() + TELL_PATIENCE;
                    let mut msg = msg;
                    loop {
                        match actor.tell(msg) {
                            Ok(()) => return Ok(()),
                            Err(TellError::Full(m)) if tokio::time::Instant::now() < deadline => {
                                msg = m;
                                tokio::time::sleep(Duration::from_micros(100)).await;
                            }
                            Err(e) => return Err(not_delivered(&name, e)),
                        }
                    }
                })))
            }
            Err(e) => Err(not_delivered(&self.name, e)),
        }
    }

    fn ask_bytes(
        &self,
        tag: &str,
        body: &[u8],
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, RemoteError>> {
        let decoded: Result<M, String> = decode_body(body);
        let (actor, name, tag) = (self.actor.clone(), self.name.clone(), tag.to_string());
        Box::pin(async move {
            let msg = decoded.map_err(|detail| RemoteError::Decode {
                tag: tag.clone(),
                detail,
            })?;
            let reply = actor
                .ask(msg, timeout)
                .await
                .map_err(|e| unavailable(&name, e))?;
            encode_body(&reply).map_err(|e| RemoteError::Decode {
                tag,
                detail: e.to_string(),
            })
        })
    }

    fn tell_any(&self, msg: Box<dyn Any + Send>) -> Result<(), RemoteError> {
        let msg = downcast::<M>(msg, &self.name)?;
        self.actor
            .tell(msg)
            .map_err(|e| not_delivered(&self.name, e))
    }

    fn ask_any(
        &self,
        msg: Box<dyn Any + Send>,
        timeout: Duration,
    ) -> BoxFuture<Result<Box<dyn Any + Send>, RemoteError>> {
        let msg = downcast::<M>(msg, &self.name);
        let (actor, name) = (self.actor.clone(), self.name.clone());
        Box::pin(async move {
            let reply = actor
                .ask(msg?, timeout)
                .await
                .map_err(|e| unavailable(&name, e))?;
            Ok(Box::new(reply) as Box<dyn Any + Send>)
        })
    }
}

fn downcast<M: RemoteMessage>(msg: Box<dyn Any + Send>, name: &str) -> Result<M, RemoteError>
where
    M::Result: Serialize + DeserializeOwned + Send + 'static,
{
    msg.downcast::<M>()
        .map(|m| *m)
        .map_err(|_| RemoteError::UnknownTag {
            actor: name.into(),
            tag: M::TAG.into(),
        })
}

/// The dispatchers of one exposed actor, by message tag.
type ByTag = HashMap<&'static str, Arc<dyn Dispatch>>;

/// What a node exposes: name → tag → dispatcher.
#[derive(Default)]
pub(crate) struct Exposed {
    actors: RwLock<HashMap<Arc<str>, ByTag>>,
    /// Bumped on every change, so that cached dispatchers know when they are stale.
    version: AtomicU64,
}

impl Exposed {
    /// The table's version: it changes whenever an entry does.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The dispatcher for `tag` on the actor exposed as `name`.
    pub(crate) fn get(&self, name: &str, tag: &str) -> Result<Arc<dyn Dispatch>, RemoteError> {
        let actors = self.actors.read();
        let tags = actors
            .get(name)
            .ok_or_else(|| RemoteError::NoSuchActor { actor: name.into() })?;
        tags.get(tag)
            .cloned()
            .ok_or_else(|| RemoteError::UnknownTag {
                actor: name.into(),
                tag: tag.into(),
            })
    }

    fn insert(&self, name: &Arc<str>, tag: &'static str, dispatch: Arc<dyn Dispatch>) {
        let mut actors = self.actors.write();
        actors
            .entry(name.clone())
            .or_default()
            .insert(tag, dispatch);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    fn touch(&self, name: &Arc<str>) {
        self.actors.write().entry(name.clone()).or_default();
    }

    pub(crate) fn remove(&self, name: &str) -> bool {
        let mut actors = self.actors.write();
        let removed = actors.remove(name).is_some();
        self.version.fetch_add(1, Ordering::AcqRel);
        removed
    }
}

/// Declares which message types an exposed actor accepts from the network
/// ([`Node::expose`](crate::Node::expose)).
pub struct Exposure<A: Actor> {
    table: Arc<Exposed>,
    name: Arc<str>,
    actor: ActorRef<A>,
}

impl<A: Actor> Exposure<A> {
    pub(crate) fn new(table: Arc<Exposed>, name: Arc<str>, actor: ActorRef<A>) -> Self {
        table.touch(&name);
        Exposure { table, name, actor }
    }

    /// Accepts messages of type `M` (by its [`RemoteMessage::TAG`]).
    pub fn accept<M>(self) -> Self
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: RemoteMessage,
        M::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        let typed: Typed<A, M> = Typed {
            name: self.name.clone(),
            actor: self.actor.clone(),
            _m: PhantomData,
        };
        self.table.insert(&self.name, M::TAG, Arc::new(typed));
        self
    }
}
