//! The status store on a node: shard replicas (one openraft group per shard) over the state
//! machine of `cadre_cluster::store`.
//!
//! - [`storage`]: a replica's log, vote and snapshots in the node's redb file, and the
//!   in-memory state machine openraft applies entries to.
//! - [`replica`]: a shard replica actor (one openraft member, its RPCs over cadre's transport,
//!   writes and reads for clients).
//! - [`StoreNode`]: the replicas a node hosts, under its `store` supervisor.
//! - [`gateway`]: the node's front door to the store (`store`), routing requests by key, for
//!   local actors and for `cadre kv`; the groups' bootstrap.
//! - [`Kv`]: the store as a node's actors use it (through a gateway): its guarantees.
//! - [`StoreClient`]: requests to a shard, following not-leader hints, retried only where
//!   that is safe.
//!
//! # Guarantees
//! - **Consistency.** Each shard is one Raft group; a write is acknowledged once a majority of
//!   its replicas have it on disk (fsync), and is never lost while a majority survives. A
//!   minority (after a partition or crashes) commits nothing and serves no linearizable read.
//!   Reads are linearizable by default (the leader confirms its leadership with a quorum, then
//!   answers once it has applied everything committed before), serializable on request
//!   (a voter's state, possibly behind; a replica outside the group or still catching up as a
//!   learner serves none).
//! - **Revisions** are per shard; operations in different shards are not ordered with each
//!   other, and a transaction (or a prefix delete) stays within one shard.
//! - **Watches** see each shard's changes in revision order, every change of a revision at
//!   once, none lost or repeated across replica failures and leader changes; from a revision
//!   before the shard's compaction point they fail with `Compacted`.
//! - **History.** Each shard keeps the changes of its last `store_keep_revisions` revisions
//!   ([`DEFAULT_KEEP_REVISIONS`] by default; 0 keeps all): its leader compacts older ones away
//!   through the log about once a second, so every replica drops the same history and memory
//!   and snapshots stay bounded. A watcher that falls further behind than that, or resumes
//!   from a revision that old, gets `Compacted` (read the current state, then watch from its
//!   revision). Compaction by hand (`compact`) works beside it.
//! - **Leases**: a TTL is a minimum; keys go all at once, through the log, when the leader
//!   finds the lease expired (every replica emits the same deletes).
//! - **Limits**: keys up to 4 KiB, values up to 1 MiB, requests up to 1.5 MiB
//!   ([`Limits`](cadre_cluster::store::Limits)), refused with an error naming what is over.
//!
//! # Placement
//! The groups form once `bootstrap_expect` store nodes are up: each shard's group is three of
//! the first `bootstrap_expect` store nodes (by name; all of them when fewer), chosen by
//! rendezvous hashing, and the first of those forms it. From then on each shard's leader keeps
//! its group on the shard's rendezvous target among the live store nodes
//! ([`placement`](cadre_cluster::store::placement)), one membership change at a time: a store
//! node joining later is added to the shards it ranks highest for (as a learner until it has
//! caught up, then as a voter in the same joint-consensus change that retires the member it
//! displaces), and a store node down for longer than `store_dead_after_ms` (60 s by default) is
//! replaced by a live one. A group never shrinks: with three store nodes or fewer nothing
//! moves, and a dead member stays until a live node can take its place. A replica that is not in
//! its shard's group serves no watch (its watchers resume on a member). Clients try the live
//! store nodes in the shard's rendezvous order and follow not-leader hints.
//!
//! # Identity, and a node that lost its data
//! A replica's Raft identity is its node's name together with its store file's id, drawn when
//! the file is created ([`storage`]). A store node whose data directory was lost or emptied
//! comes back as a **new member** under the same name: Raft RPCs meant for its old member are
//! refused (so no one counts on it for entries it no longer has, and it votes for no one as
//! that member), and each shard's leader replaces the old member with the new one (a learner
//! until it has caught up, then a voter in the old one's place, in one membership change).
//! Until then the group needs a majority of its other members, as after any crash. A store
//! file copied back from a backup is still the member it was, holding less than it
//! acknowledged, and cannot be told apart: restore a node by starting it with an empty data
//! directory instead (it then comes back as a new member and catches up).
//!
//! # Limits of this version
//! Nodes are told apart by name in placement and routing.
//! `compact` is per shard (revisions are); the history kept is
//! counted in revisions, not bytes. Store nodes keep an idle replica (no data) of the shards
//! they are not in.

mod client;
pub mod gateway;
mod kv;
mod node;
pub mod replica;
pub mod storage;
mod watch;

pub use client::{StoreClient, StoreClientError};
pub use kv::{Kv, KvError, KvWatchStream};
pub use node::{StoreNode, StoreStartError};
pub use watch::StoreWatch;

/// How many revisions of change history a shard keeps by default (see the module's
/// guarantees).
pub const DEFAULT_KEEP_REVISIONS: u64 = 10_000;
