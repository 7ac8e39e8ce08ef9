//! # cadre-cluster
//!
//! What a cadre cluster agrees on and how, with no actix and no sockets: wire messages and the
//! handshake, the membership core, the discovery view, the status-store state machine, and the
//! task scheduler, and the node agent's rules.
//!
//! Every core here has the shape `handle(input, now) -> effects`: time, randomness and I/O
//! come in as inputs and go out as effects, so each protocol is tested step by step without a
//! socket or a clock. The actors in `cadre-actors` own the sockets, timers and disks, feed the
//! cores and carry out what they ask.
//!
//! # Layout
//! - [`agent`]: the node agent's key layout and records (status, commands, results), the
//!   at-most-once rule for commands and the status reporter's timing.
//! - [`wire`]: frames, the versioned envelope, and the authenticated handshake.
//! - [`membership`]: SWIM gossip (foca) as a pure core, with authenticated datagrams.
//! - [`discovery`]: the service directory, replicated by anti-entropy.
//! - [`members`]: the member table and its state transitions.
//! - [`tasks`]: the task master's scheduler (credit-based dispatch, leases, retries, poison
//!   tasks, exactly-once results) and the messages between a master and worker nodes.
//! - [`store`]: the status store's state machine (ordered keys, revisions, leases,
//!   transactions, compaction) and its watch hub; Raft replication arrives with its actors.

#![deny(missing_docs)]

pub mod agent;
pub mod discovery;
pub mod members;
pub mod membership;
pub mod store;
pub mod tasks;
pub mod wire;
