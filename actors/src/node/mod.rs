//! A node process: its configuration and its cluster secret. The `cadre node` command runs
//! one (membership and the node's other services arrive with their features).

pub mod config;
pub mod secret;
pub mod view;

pub use config::{NodeConfig, NodeConfigError, Overrides, DEFAULT_PORT};
pub use secret::{SecretError, SecretSource};
