//! Location-transparent messaging: exposing actors to other nodes and reaching them.
//!
//! # Messages
//! A remote message is an actix [`Message`] that also implements [`RemoteMessage`]: it is
//! `Serialize + DeserializeOwned`, so is its result, and it names a stable [`TAG`] that
//! identifies the type on the wire (choose a name that survives refactors, e.g.
//! `"counter.add"`; two types must never share a tag on one actor).
//!
//! # Exposing
//! A node serves only what it exposes explicitly: an actor handle under a name, with the
//! message types it accepts from the network ([`Node::expose`](crate::Node::expose)). A message
//! for a name or tag that is not exposed is refused with [`RemoteError`]; an ask always gets a
//! reply, never a hang.
//!
//! # Guarantees
//! - At-most-once delivery: a message is sent once over one connection; it is lost if the
//!   connection drops before the peer reads it. Nothing is retried.
//! - FIFO per sender–receiver pair: messages from one node to one actor on another arrive in
//!   the order they were sent, as long as they travel over one connection. Tells and asks from
//!   the network both reach the actor through its batch lane
//!   ([`ActorRef::tell_batch`](cadre_runtime::ActorRef::tell_batch)), in the order they were
//!   read; messages from local senders use its mailbox, a separate queue, so there is no order
//!   between a remote sender's messages and a local sender's.
//! - An ask pending over a connection that drops fails at once with
//!   [`RemoteAskError::NodeUnreachable`]; one with no answer by its timeout fails with
//!   [`RemoteAskError::Timeout`].
//! - A message of a tell that does not decode as its tag's type is dropped, counted in
//!   [`Node::dropped_messages`](crate::Node::dropped_messages) and logged with the peer's name;
//!   the others of the same frame are delivered.
//!
//! [`TAG`]: RemoteMessage::TAG

mod exposed;
mod handle;

use actix::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use cadre_cluster::wire::RemoteError;
pub use exposed::Exposure;
pub(crate) use exposed::{Delivery, Dispatch, Exposed, LostMessages, Undelivered};
pub use handle::{RemoteAskError, RemoteRef, RemoteTellError};

/// A message that can cross the network.
///
/// ```
/// use actix::Message;
/// use serde::{Deserialize, Serialize};
/// use cadre_actors::RemoteMessage;
///
/// #[derive(Message, Serialize, Deserialize)]
/// #[rtype(result = "u64")]
/// struct Add(u64);
///
/// impl RemoteMessage for Add {
///     const TAG: &'static str = "counter.add";
/// }
/// ```
pub trait RemoteMessage: Message + Serialize + DeserializeOwned + Send + 'static
where
    Self::Result: Serialize + DeserializeOwned + Send + 'static,
{
    /// The type's name on the wire; stable across versions of the program.
    const TAG: &'static str;
}
