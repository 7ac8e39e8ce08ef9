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
