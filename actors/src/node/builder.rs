//! [`NodeBuilder`]: a node as a library: the same node as `cadre node`, with a program's own
//! actors, task kinds, chain handlers and log control.

use cadre_cluster::wire::Secret;
use cadre_runtime::{Child, Runtime};

use super::{ClusterNode, ClusterNodeError, NodeConfig};
use crate::agent::{ChainHandler, HandlerFactory, LogControl};
use crate::tasks::{TaskRegistry, WorkerConfig};

/// What a builder adds to a node.
#[derive(Default)]
pub(super) struct Parts {
    pub(super) workers: Option<(TaskRegistry, WorkerConfig)>,
    pub(super) handlers: Vec<HandlerFactory>,
    pub(super) log: Option<LogControl>,
    pub(super) app: Vec<Child>,
}

/// Builds a node: a [`NodeConfig`] and the cluster secret, then what the program adds.
///
/// ```no_run
/// # async fn demo(config: cadre_actors::node::NodeConfig, secret: cadre_cluster::wire::Secret)
/// # -> Result<(), cadre_actors::node::ClusterNodeError> {
/// use cadre_actors::node::NodeBuilder;
/// let runtime = cadre_runtime::Runtime::new("n1");
/// let node = NodeBuilder::new(config, secret).start(&runtime).await?;
/// node.stop_requested().await; // the `stop` command
/// node.leave(std::time::Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
///
/// The node's tree, left to right (children start in this order and stop in reverse):
///
/// ```text
/// node
/// ├── transport, membership, view
/// ├── store        (role `store`)
/// ├── workers      (with NodeBuilder::workers)
/// ├── app          the program's actors (NodeBuilder::actor)
/// └── agent        status, commands, the event handler chain
/// ```
pub struct NodeBuilder {
    config: NodeConfig,
    secret: Secret,
    parts: Parts,
}

impl NodeBuilder {
    /// A node of `config`, in the cluster keyed by `secret`.
    pub fn new(config: NodeConfig, secret: Secret) -> NodeBuilder {
        NodeBuilder {
            config,
            secret,
            parts: Parts::default(),
        }
    }

    /// Runs task workers for the kinds of `registry` (the node gets the role `worker`).
    pub fn workers(mut self, registry: TaskRegistry, config: WorkerConfig) -> NodeBuilder {
        self.parts.workers = Some((registry, config));
        self
    }

    /// Adds a handler to the agent's event chain, after the built-in observers and before the
    /// command executor, after the handlers added before it. `make` builds it at the agent's
    /// start and again after the handler panicked.
    pub fn handler<H, F>(mut self, make: F) -> NodeBuilder
    where
        H: ChainHandler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        self.parts.handlers.push(std::sync::Arc::new(move || {
            Box::new(make()) as Box<dyn ChainHandler>
        }));
        self
    }

    /// How the `log-level` command changes this program's log filter.
    pub fn log_control(mut self, control: LogControl) -> NodeBuilder {
        self.parts.log = Some(control);
        self
    }

    /// Adds one of the program's actors (a `ChildSpec`, a `SupervisorSpec` or a `PoolSpec`)
    /// under the node's `app` supervisor.
    pub fn actor(mut self, child: impl Into<Child>) -> NodeBuilder {
        self.parts.app.push(child.into());
        self
    }

    /// Starts the node.
    ///
    /// # Errors
    /// [`ClusterNodeError`].
    pub async fn start(self, runtime: &Runtime) -> Result<ClusterNode, ClusterNodeError> {
        ClusterNode::start_inner(&self.config, self.secret, runtime, self.parts).await
    }
}
