//! # cadre-actors
//!
//! Every actor of a cadre node, each a thin driver around a core from `cadre-cluster`: the node
//! root, the transport, membership, pub/sub, the status-store shard replicas, the node agent,
//! the task master and workers. The `cadre` binary is the `cadre-cli` package (`actors/cli/`).
//!
//! # Layout
//! - [`transport`]: the listener and connection actors, and [`Node`], the handle that
//!   exposes local actors and connects to peers.
//! - [`remote`]: [`RemoteMessage`], [`RemoteRef`] (tell and ask by node and actor name, the
//!   same for a local actor) and their errors.
//! - [`membership`]: the gossip actor over UDP, and [`Gossip`](membership::Gossip), its handle.
//! - [`tasks`]: distributed tasks: [`Task`](tasks::Task) kinds, the worker node's pool
//!   ([`TaskWorkers`](tasks::TaskWorkers)) and the [`Master`](tasks::Master) that distributes
//!   them, with at-least-once execution and exactly-once results.
//! - [`store`]: the status store's shard replicas (openraft over redb).
//! - [`agent`]: the node agent: status under a lease, commands through the store, the event
//!   handler chain; and the client side ([`agent::issue`], [`agent::statuses`]).
//! - [`node`]: the node itself: [`ClusterNode`](node::ClusterNode) and
//!   [`NodeBuilder`](node::NodeBuilder) (the node as a library), its root supervisor and the
//!   view (directory, topics); a node process's [`NodeConfig`](node::NodeConfig) (file,
//!   environment, flags) and where its cluster secret comes from.
//!
//! # The node's supervision tree
//! ```text
//! node (root, one-for-one)
//! ├── transport        pool of connections, redialer, listener
//! ├── gossip           the membership actor (SWIM over UDP)
//! ├── view             members, service directory, topics
//! ├── store            (role `store`) one replica actor per shard
//! ├── workers          (with task workers) the pool and the node's task actor
//! ├── app              the program's own actors (NodeBuilder::actor)
//! ├── gateway          the store's front door on this node
//! ├── store-bootstrap  (role `store`) forms the groups once, restarted only after a failure
//! ├── store-tracker    (role `store`) follows the store nodes for placement
//! └── agent            status, commands, the event handler chain
//! ```
//! Children start top to bottom and stop bottom to top; an escalation from any of them
//! reaches the root, which restarts that part (one for one) or, past its intensity (3 restarts
//! within 5 s), ends the node.
//!
//! # Wire format and guarantees
//! Frames are a `u32` big-endian length and a MessagePack body; every connection starts with
//! an authenticated handshake (HMAC-SHA256 over both sides' hellos, keyed by the cluster
//! secret); see `cadre_cluster::wire`. Delivery is at most once, in order per sender–receiver
//! pair over a connection; an ask pending over a connection that drops fails at once.

#![deny(missing_docs)]

pub mod agent;
pub mod membership;
pub mod node;
pub mod remote;
pub mod store;
pub mod tasks;
pub mod transport;

pub use cadre_cluster::wire::{EmptySecret, Secret};

/// What a program built on cadre usually needs, in one `use cadre_actors::prelude::*;`.
pub mod prelude {
    pub use crate::agent::{AgentEvent, ChainCx, ChainHandler, Flow};
    pub use crate::node::{ClusterNode, NodeBuilder, NodeConfig};
    pub use crate::store::{Kv, KvError};
    pub use crate::tasks::{Master, MasterConfig, Task, TaskRegistry, WorkerConfig};
    pub use crate::{RemoteMessage, RemoteRef, Secret};
    pub use cadre_runtime::{
        ActorRef, ChildSpec, PoolSpec, Restart, Runtime, Strategy, SupervisorSpec,
    };
}

pub use remote::{
    Exposure, RemoteAskError, RemoteError, RemoteMessage, RemoteRef, RemoteTellError,
};
pub use transport::{ConfigError, Node, TransportConfig, TransportError, DEFAULT_QUEUE_BYTES};

/// The version of cadre, as the binary reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
