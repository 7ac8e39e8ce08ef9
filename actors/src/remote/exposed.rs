//! The table of actors a node exposes to the network, by name and message tag.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler};
use bytes::Bytes;
use cadre_cluster::wire::{decode_body, RemoteError, TellCursor, TellItem};
use cadre_runtime::{ActorRef, AskError, AskOutcome, TellError};
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::RemoteMessage;
use crate::transport::{Replier, TransportInner};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How long a peer's tell waits for room in a full mailbox before it is dropped (and counted).
pub(crate) const TELL_PATIENCE: Duration = Duration::from_secs(10);

/// Messages of a peer's tell that could not be delivered: how many, and why (the first reason).
pub(crate) struct Undelivered {
    pub(crate) count: u64,
    pub(crate) reason: RemoteError,
}

impl Undelivered {
    fn add(slot: &mut Option<Undelivered>, count: u64, reason: RemoteError) {
        match slot {
            Some(u) => u.count += count,
            None => *slot = Some(Undelivered { count, reason }),
        }
    }
}

/// The outcome of delivering a peer's tell.
pub(crate) enum Delivery {
    /// In the mailbox, except the messages counted (if any).
    Done(Option<Undelivered>),
    /// The mailbox is full: this future delivers the rest once there is room (giving up on a
    /// message after [`TELL_PATIENCE`]). The connection reads nothing more until then, so the
    /// pressure goes back to the sender through TCP and its bounded queue.
    Wait(BoxFuture<Option<Undelivered>>),
}

/// Delivers one message type to one exposed actor, from bytes (a peer) or from a value (this
/// node: no encoding on the local path).
pub(crate) trait Dispatch: Send + Sync {
    /// Delivers the `count` messages of one tell frame (as the frame counts them), in order:
    /// they are decoded one by one by the actor as it handles them; those that do not decode,
    /// or that the frame counts but does not hold, are reported to `lost`.
    fn tell_bytes(&self, tag: &str, bodies: Bytes, count: u32, lost: LostMessages) -> Delivery;
    /// Hands one ask to the actor; its reply (or error) goes back through `replier`, over the
    /// connection the ask came over, which the actor reads while idle (its feed). Waits, like
    /// a tell, when the actor's lane is full.
    fn ask_bytes(&self, tag: &str, body: &[u8], timeout: Duration, replier: Replier) -> Delivery;
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
    A: Actor<Context = Context<A>> + Handler<M>,
    M: RemoteMessage,
    M::Result: Serialize + DeserializeOwned + Send + 'static,
{
    // A refused batch comes back whole in the error: that is its point, not a cost per message.
    #[allow(clippy::result_large_err)]
    fn tell_bytes(&self, tag: &str, bodies: Bytes, count: u32, lost: LostMessages) -> Delivery {
        if count == 0 && bodies.is_empty() {
            return Delivery::Done(None);
        }
        debug_assert_eq!(tag, M::TAG, "the dispatcher matched the tag");
        let name = self.name.clone();
        // Its weight in the lane's bound: every message takes at least one byte, so a peer
        // cannot make a frame look heavier than it is (nor lighter than one message).
        let weight = (count as usize).min(bodies.len()).max(1);
        cadre_runtime::stats::add(cadre_runtime::stats::Metric::RemoteIn, u64::from(count));
        // The whole frame goes to the actor as one item of its batch lane.
        deliver(
            &self.actor,
            weight,
            Decoding::<M>::new(bodies, count, lost),
            move |actor, msgs| actor.tell_iter(msgs, weight),
            move |why, msgs| Some(msgs.give_up(not_delivered(&name, why))),
        )
    }

    fn ask_bytes(&self, tag: &str, body: &[u8], timeout: Duration, replier: Replier) -> Delivery {
        cadre_runtime::stats::add(cadre_runtime::stats::Metric::RemoteIn, 1);
        let msg: M = match decode_body(body) {
            Ok(msg) => msg,
            Err(detail) => {
                replier.fail(RemoteError::Decode {
                    tag: tag.into(),
                    detail,
                });
                return Delivery::Done(None);
            }
        };
        let feed = replier.feed();
        let reply = move |outcome: AskOutcome<M::Result>| match outcome {
            Ok(reply) => replier.send(&reply),
            Err(e) => {
                let name = replier.actor().clone();
                replier.fail(unavailable(&name, e));
            }
        };
        // Through the batch lane, behind the tells of the same connection.
        deliver(
            &self.actor,
            1,
            (msg, reply),
            move |actor, (msg, reply)| actor.ask_then_fed(msg, timeout, reply, Some(&feed)),
            |why, (_, reply)| {
                reply(Err(why.into()));
                None
            },
        )
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

/// Hands `item` to `actor`'s batch lane with `offer`. When the lane is full, the connection
/// waits on the returned future, which offers it again as room comes, for up to
/// [`TELL_PATIENCE`]; what is not taken goes to `refused`, with why.
fn deliver<A, T>(
    actor: &ActorRef<A>,
    weight: usize,
    item: T,
    offer: impl Fn(&ActorRef<A>, T) -> Result<(), TellError<T>> + Send + 'static,
    refused: impl FnOnce(TellError<()>, T) -> Option<Undelivered> + Send + 'static,
) -> Delivery
where
    A: Actor<Context = Context<A>>,
    T: Send + 'static,
{
    let item = match offer(actor, item) {
        Ok(()) => return Delivery::Done(None),
        Err(TellError::Full(item)) => item,
        Err(e) => {
            let (why, item) = e.into_parts();
            return Delivery::Done(refused(why, item));
        }
    };
    let actor = actor.clone();
    Delivery::Wait(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + TELL_PATIENCE;
        let mut item = item;
        loop {
            let room = actor.wait_for_batch_room(weight);
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return refused(TellError::Full(()), item);
            }
            match offer(&actor, item) {
                Ok(()) => return None,
                Err(TellError::Full(back)) => item = back,
                Err(e) => {
                    let (why, back) = e.into_parts();
                    return refused(why, back);
                }
            }
        }
    }))
}

/// Where the messages of a peer's tell that could not be delivered are reported: counted in
/// [`Node::dropped_messages`](crate::Node::dropped_messages) and logged with the peer's name.
pub(crate) struct LostMessages {
    transport: Arc<TransportInner>,
    node: Arc<str>,
}

impl LostMessages {
    pub(crate) fn new(transport: Arc<TransportInner>, node: Arc<str>) -> Self {
        LostMessages { transport, node }
    }

    fn report(&self, lost: Undelivered) {
        crate::transport::drop_messages(&self.transport, &self.node, lost);
    }
}

/// The messages of one tell frame, decoded as they are taken (by the actor, in its context).
/// One that does not decode is skipped, and so are those the frame's count leaves out
/// ([`TellCursor`]); all are reported when the batch is done.
struct Decoding<M> {
    bodies: Bytes,
    cursor: TellCursor,
    failed: Option<Undelivered>,
    lost: LostMessages,
    _m: PhantomData<fn() -> M>,
}

impl<M> Decoding<M> {
    fn new(bodies: Bytes, count: u32, lost: LostMessages) -> Self {
        Decoding {
            bodies,
            cursor: TellCursor::new(count),
            failed: None,
            lost,
            _m: PhantomData,
        }
    }

    /// The batch was not delivered: all its messages are lost, for `reason`.
    fn give_up(mut self, reason: RemoteError) -> Undelivered {
        self.failed = None;
        Undelivered {
            count: self.cursor.give_up(&self.bodies),
            reason,
        }
    }
}

fn decode_error(tag: &str, detail: String) -> RemoteError {
    RemoteError::Decode {
        tag: tag.into(),
        detail,
    }
}

impl<M: RemoteMessage> Iterator for Decoding<M>
where
    M::Result: Serialize + DeserializeOwned + Send + 'static,
{
    type Item = M;

    // Inlined into the lane's loop, which then keeps its state in registers from one message
    // to the next.
    #[inline]
    fn next(&mut self) -> Option<M> {
        while let Some(item) = self.cursor.next(&self.bodies) {
            let (count, detail) = match item {
                TellItem::Message(at) => match decode_body::<M>(&self.bodies[at]) {
                    Ok(msg) => return Some(msg),
                    Err(detail) => (1, detail),
                },
                TellItem::Lost { count, why } => (count, why),
            };
            Undelivered::add(&mut self.failed, count, decode_error(M::TAG, detail));
        }
        None
    }
}

impl<M> Drop for Decoding<M> {
    fn drop(&mut self) {
        if let Some(failed) = self.failed.take() {
            self.lost.report(failed);
        }
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
        A: Actor<Context = Context<A>> + Handler<M>,
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
