//! The status store on a node: shard replicas (one openraft group per shard) over the state
//! machine of `cadre_cluster::store`.
//!
//! - [`storage`]: a replica's log, vote and snapshots in the node's redb file, and the
//!   in-memory state machine openraft applies entries to.

pub mod storage;
