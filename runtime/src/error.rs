//! Errors of sending to actors.

use std::fmt;
use std::time::Duration;

/// Why [`ActorRef::tell`](crate::ActorRef::tell) did not deliver; every variant gives the
/// message back.
#[derive(thiserror::Error)]
pub enum TellError<M> {
    /// The mailbox is full. Try again later, or slow down: the actor is behind.
    #[error("mailbox full")]
    Full(M),
    /// The actor's instance ended and its supervisor has not yet started the next one. Try again
    /// shortly; the handle will reach the new instance.
    #[error("actor is restarting")]
    Restarting(M),
    /// The actor ended for good (see [`ActorRef::exit_reason`](crate::ActorRef::exit_reason)).
    #[error("actor is dead")]
    Dead(M),
    /// The actor's supervisor has not started it yet.
    #[error("actor has not been started")]
    NotStarted(M),
}

impl<M> TellError<M> {
    /// The same error around another value (what became of the message).
    pub fn map<N>(self, f: impl FnOnce(M) -> N) -> TellError<N> {
        match self {
            TellError::Full(m) => TellError::Full(f(m)),
            TellError::Restarting(m) => TellError::Restarting(f(m)),
            TellError::Dead(m) => TellError::Dead(f(m)),
            TellError::NotStarted(m) => TellError::NotStarted(f(m)),
        }
    }

    /// Why it was not delivered, and the undelivered message.
    pub fn into_parts(self) -> (TellError<()>, M) {
        match self {
            TellError::Full(m) => (TellError::Full(()), m),
            TellError::Restarting(m) => (TellError::Restarting(()), m),
            TellError::Dead(m) => (TellError::Dead(()), m),
            TellError::NotStarted(m) => (TellError::NotStarted(()), m),
        }
    }

    /// The undelivered message.
    pub fn into_inner(self) -> M {
        match self {
            TellError::Full(m)
            | TellError::Restarting(m)
            | TellError::Dead(m)
            | TellError::NotStarted(m) => m,
        }
    }
}

impl<M> fmt::Debug for TellError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            TellError::Full(_) => "Full",
            TellError::Restarting(_) => "Restarting",
            TellError::Dead(_) => "Dead",
            TellError::NotStarted(_) => "NotStarted",
        };
        write!(f, "TellError::{name}(..)")
    }
}

/// Why [`ActorRef::ask`](crate::ActorRef::ask) got no reply.
#[derive(thiserror::Error)]
pub enum AskError<M> {
    /// The mailbox is full; the message comes back.
    #[error("mailbox full")]
    Full(M),
    /// The actor is between instances; the message comes back.
    #[error("actor is restarting")]
    Restarting(M),
    /// The actor ended for good; the message comes back.
    #[error("actor is dead")]
    Dead(M),
    /// The actor has not been started yet; the message comes back.
    #[error("actor has not been started")]
    NotStarted(M),
    /// The instance ended (crashed or stopped) before it replied. The message may or may not
    /// have been handled.
    #[error("actor died before replying")]
    ActorDied,
    /// No reply within the timeout. The message may still be handled later.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

impl<M> AskError<M> {
    /// The undelivered message, for the variants that did not deliver it.
    pub fn into_message(self) -> Option<M> {
        match self {
            AskError::Full(m)
            | AskError::Restarting(m)
            | AskError::Dead(m)
            | AskError::NotStarted(m) => Some(m),
            AskError::ActorDied | AskError::Timeout(_) => None,
        }
    }
}

impl<M> From<TellError<M>> for AskError<M> {
    fn from(e: TellError<M>) -> Self {
        match e {
            TellError::Full(m) => AskError::Full(m),
            TellError::Restarting(m) => AskError::Restarting(m),
            TellError::Dead(m) => AskError::Dead(m),
            TellError::NotStarted(m) => AskError::NotStarted(m),
        }
    }
}

impl<M> fmt::Debug for AskError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AskError::Full(_) => f.write_str("AskError::Full(..)"),
            AskError::Restarting(_) => f.write_str("AskError::Restarting(..)"),
            AskError::Dead(_) => f.write_str("AskError::Dead(..)"),
            AskError::NotStarted(_) => f.write_str("AskError::NotStarted(..)"),
            AskError::ActorDied => f.write_str("AskError::ActorDied"),
            AskError::Timeout(d) => write!(f, "AskError::Timeout({d:?})"),
        }
    }
}
