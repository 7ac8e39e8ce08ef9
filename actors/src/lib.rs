//! # cadre-actors
//!
//! Every actor of a cadre node, each a thin driver around a core from `cadre-cluster`: the node
//! root, the transport, membership, pub/sub, the status-store shard replicas, the node agent,
//! the task master and workers; and the `cadre` binary.
//!
//! # Layout
//! The node's actors arrive with the cluster features; for now the crate holds the `cadre`
//! binary's entry point. The supervision machinery they run under is `cadre-runtime`.

#![deny(missing_docs)]

/// The version of cadre, as the binary reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
