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
//!   answers once it has applied everything committed before), serializable on request.
//! - **Revisions** are per shard; operations in different shards are not ordered with each
//!   other, and a transaction (or a prefix delete) stays within one shard.
//! - **Watches** see each shard's changes in revision order, every change of a revision at
//!   once, none lost or repeated across replica failures and leader changes; from a revision
//!   before the shard's compaction point they fail with `Compacted`.
//! - **Leases**: a TTL is a minimum; keys go all at once, through the log, when the leader
//!   finds the lease expired (every replica emits the same deletes).
//! - **Limits**: keys up to 4 KiB, values up to 1 MiB, requests up to 1.5 MiB
//!   ([`Limits`](cadre_cluster::store::Limits)), refused with an error naming what is over.
//!
//! # Placement, and the limits of this version
//! The store nodes are the first `bootstrap_expect` store nodes (by name) that came up: start
//! exactly that many. Each shard's group is three of them (all, when fewer) chosen by
//! rendezvous hashing, and the first of those forms it. A store node keeps an idle replica of
//! the shards it is not in (no data). Groups do not change afterwards: store nodes joining
//! later serve no shard, and a dead member is not replaced (no membership changes yet). Nodes
//! are told apart by name. `compact` is per shard (revisions are); nothing compacts by itself.

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
