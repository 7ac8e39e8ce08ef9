//! [`WatchHub`]: the watches of one replica, fed with every applied revision.

use std::collections::BTreeMap;

use super::{Event, Revision, StateMachine, StoreError};

/// A watch's id on one replica.
pub type WatchId = u64;

/// What a watch receives.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WatchUpdate {
    /// Every change of one revision under the watch's prefix, together.
    Changes {
        /// The revision.
        revision: Revision,
        /// The changes, in the order they were made.
        events: Vec<Event>,
    },
    /// Nothing under the prefix changed up to this revision (sent on request, so that an idle
    /// watcher knows how far it is).
    Progress {
        /// The shard's revision.
        revision: Revision,
    },
}

#[derive(Debug)]
struct Watch {
    prefix: Vec<u8>,
    /// The next revision it has not been sent.
    next: Revision,
}

/// The watches of one replica. Each receives, in revision order, every change under its
/// prefix from its start revision on: history first (from the state machine), then each
/// revision as it is applied. Nothing is dropped or repeated as long as the caller hands it
/// every applied revision in order.
#[derive(Debug, Default)]
pub struct WatchHub {
    watches: BTreeMap<WatchId, Watch>,
    next_id: WatchId,
}

impl WatchHub {
    /// No watches.
    pub fn new() -> Self {
        WatchHub::default()
    }

    /// Watches `prefix` from revision `start` (0: from the next revision). Returns its id and
    /// the changes it must first be sent, from history.
    ///
    /// # Errors
    /// [`StoreError::Compacted`] if `start` is before the history kept.
    pub fn watch(
        &mut self,
        sm: &StateMachine,
        prefix: &[u8],
        start: Revision,
    ) -> Result<(WatchId, Vec<WatchUpdate>), StoreError> {
        let start = if start == 0 { sm.revision() + 1 } else { start };
        let backlog = sm.changes_since(prefix, start)?;
        self.next_id += 1;
        let id = self.next_id;
        self.watches.insert(
            id,
            Watch {
                prefix: prefix.to_vec(),
                next: start.max(sm.revision() + 1),
            },
        );
        let updates = backlog
            .into_iter()
            .map(|(revision, events)| WatchUpdate::Changes { revision, events })
            .collect();
        Ok((id, updates))
    }

    /// Ends a watch.
    pub fn cancel(&mut self, id: WatchId) -> bool {
        self.watches.remove(&id).is_some()
    }

    /// The number of watches.
    pub fn len(&self) -> usize {
        self.watches.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    /// A revision was applied: what each watch must be sent.
    pub fn applied(&mut self, revision: Revision, events: &[Event]) -> Vec<(WatchId, WatchUpdate)> {
        let mut out = Vec::new();
        for (id, w) in &mut self.watches {
            if revision < w.next {
                continue; // already sent from history
            }
            w.next = revision + 1;
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| e.kv.key.starts_with(&w.prefix))
                .cloned()
                .collect();
            if !mine.is_empty() {
                out.push((
                    *id,
                    WatchUpdate::Changes {
                        revision,
                        events: mine,
                    },
                ));
            }
        }
        out
    }

    /// A progress notification for every watch: the revision each has seen everything up to.
    pub fn progress(&self, sm: &StateMachine) -> Vec<(WatchId, WatchUpdate)> {
        self.watches
            .keys()
            .map(|id| {
                (
                    *id,
                    WatchUpdate::Progress {
                        revision: sm.revision(),
                    },
                )
            })
            .collect()
    }
}
