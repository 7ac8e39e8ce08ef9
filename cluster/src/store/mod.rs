//! The status store's state machine: what every replica of a shard applies, in log order, as a
//! pure core (no Raft, no disk, no clock).
//!
//! # Data model (etcd's)
//! - Keys are byte strings, kept in order. Every shard has a *revision*: a counter that grows
//!   by one for each applied command that changes keys (a put, a delete that removed something,
//!   a transaction with writes, a lease revoke that deleted keys); every change made by one
//!   command carries that one revision.
//! - Per key: its `create_revision` (when it was last created), `mod_revision` (last change),
//!   `version` (puts since it was created: 1 on creation; a delete ends the key) and the lease
//!   it is bound to, if any.
//! - Leases: granted with a TTL; keys put with a lease are deleted when it is revoked. Expiry
//!   is decided outside the state machine (the shard's leader, from its clock and the
//!   keep-alives it receives) and enters the log as a revoke, so every replica deletes the same
//!   keys at the same revision and emits the same events. A lease's TTL is therefore a minimum.
//! - Transactions compare values, versions, create or mod revisions of keys, then apply the
//!   success or the failure branch (puts, deletes, ranges), all at one revision.
//! - Compaction at revision R forgets the change history before R; a watch from before R fails
//!   with [`StoreError::Compacted`].
//!
//! # Checking
//! [`check`]: a linearizability checker for key-value histories recorded by tests.
//!
//! # Routing and placement
//! Which shard holds a key or a lease and which store nodes hold a shard: [`routing`]; how a
//! shard's group follows the store nodes as they join and die: [`placement`].
//!
//! # Watches
//! [`WatchHub`] turns applied changes into per-watch streams: ordered by revision, every
//! change of a revision delivered together, none dropped or repeated; a watch starts at any
//! revision not compacted away (history first, then live changes), so a client that saw up to
//! revision r resumes exactly from r + 1 after a reconnect or a leader change.

pub mod check;
mod lease_clock;
pub mod placement;
pub mod routing;
mod state;
mod watch;

pub use lease_clock::LeaseClock;
pub use state::{
    CmpOp, Compare, CompareTarget, DeleteRequest, Event, EventKind, KeyValue, LeaseInfo, Limits,
    Op, OpResponse, PutRequest, RangeRequest, RangeResponse, Request, Response, StateMachine,
    StoreError, TxnRequest,
};
pub use watch::{WatchHub, WatchId, WatchUpdate};

/// A shard's revision.
pub type Revision = u64;

/// A lease's id.
pub type LeaseId = u64;
