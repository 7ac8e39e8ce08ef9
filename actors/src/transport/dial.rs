//! The state of the one dialer a node keeps per peer address: what its attempts came to, so
//! that `Node::connect` reuses a dialer instead of starting another.

use std::sync::Arc;

use cadre_runtime::ActorRef;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::connection::Connection;

/// One attempt's outcome: the peer's node id, or why it failed.
pub(crate) type Outcome = Result<String, String>;

/// A dialer's outcomes, shared with those waiting on it.
#[derive(Default)]
pub(crate) struct Dial {
    /// How many attempts have finished, and the last one's outcome.
    outcomes: Mutex<(u64, Option<Outcome>)>,
    changed: Notify,
    /// The dialer actor, for `Node::disconnect`.
    pub(crate) handle: Mutex<Option<ActorRef<Connection>>>,
}

impl Dial {
    pub(crate) fn report(&self, outcome: Outcome) {
        {
            let mut o = self.outcomes.lock();
            o.0 += 1;
            o.1 = Some(outcome);
        }
        self.changed.notify_waiters();
    }

    /// Attempts finished so far.
    pub(crate) fn attempts(&self) -> u64 {
        self.outcomes.lock().0
    }

    /// The peer of the last attempt, if it succeeded.
    pub(crate) fn peer(&self) -> Option<String> {
        match &self.outcomes.lock().1 {
            Some(Ok(peer)) => Some(peer.clone()),
            _ => None,
        }
    }

    /// Waits for an attempt after the first `seen`; its outcome.
    pub(crate) async fn next_after(self: &Arc<Self>, seen: u64) -> Outcome {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let o = self.outcomes.lock();
                if o.0 > seen {
                    if let Some(outcome) = &o.1 {
                        return outcome.clone();
                    }
                }
            }
            changed.await;
        }
    }
}
