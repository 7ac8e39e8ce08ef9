//! A node: [`ClusterNode`] assembles the transport, the gossip and the cluster view with its
//! service directory; its configuration ([`NodeConfig`]) and cluster secret ([`secret`]).

mod builder;
mod cluster_node;
pub mod config;
mod duty;
pub mod secret;
pub mod view;

pub use builder::NodeBuilder;
pub use cluster_node::{
    ClusterNode, ClusterNodeError, ServiceWatch, Subscription, SubscriptionError,
};

pub use config::{NodeConfig, NodeConfigError, Overrides, DEFAULT_PORT};
pub use secret::{SecretError, SecretSource};
