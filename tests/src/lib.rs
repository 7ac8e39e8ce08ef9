//! # cadre-tests
//!
//! Integration tests across cadre's crates, under `tests/`, and the harness they share:
//! [`Cluster`], N nodes in one process on 127.0.0.1 (port 0), with a fault injector per link,
//! and nodes that can be killed and restarted under the same name.
//!
//! # Faults
//! - **Partition** ([`Cluster::partition`], [`Cluster::heal`]): the transport link (every
//!   message fails as unreachable, both ways) and the gossip link (every datagram dropped, both
//!   ways) between two nodes.
//! - **Lossy gossip** ([`Cluster::degrade`]): datagrams from one node to another dropped with a
//!   probability and delayed by a random time (so they also reorder), from the harness's seed.
//!   The transport runs over TCP, which neither loses nor reorders within a connection: its
//!   faults are partitions and killed nodes.
//! - **Kill and restart** ([`Cluster::kill`], [`Cluster::restart`]): a node stops without a word
//!   (as a crash looks to its peers), and comes back under its name with its data directory.
//!
//! Every test prints the harness's seed; a failure reproduces with `CADRE_TEST_SEED=<seed>`.
//! Everything is bounded: waits take a limit and fail the test when it passes.

#![deny(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cadre_actors::membership::LinkFault;
use cadre_actors::node::{ClusterNode, NodeConfig};
use cadre_actors::Secret;
use cadre_runtime::Runtime;

/// How one node of a [`Cluster`] is made.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Its name.
    pub name: String,
    /// Its roles (`store`, …).
    pub roles: Vec<String>,
}

impl NodeSpec {
    /// A node called `name` with `roles`.
    pub fn new(name: &str, roles: &[&str]) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }
}

/// N nodes in this process, joined through the first.
pub struct Cluster {
    specs: Vec<NodeSpec>,
    nodes: Vec<Option<ClusterNode>>,
    dir: PathBuf,
    seed: u64,
    bootstrap_expect: usize,
}

impl Cluster {
    /// Starts the nodes of `specs` in order, the first as the seed of the others; the store
    /// forms once its `store` nodes are up (`bootstrap_expect` is their count). The seed of the
    /// fault injector is `CADRE_TEST_SEED` or a fresh one, printed.
    ///
    /// # Panics
    /// A node that does not start (a test's failure).
    pub async fn start(specs: &[NodeSpec]) -> Cluster {
        let seed = std::env::var("CADRE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        println!("cluster harness seed: {seed} (CADRE_TEST_SEED={seed} reproduces it)");
        let dir = std::env::temp_dir().join(format!(
            "cadre-harness-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let stores = specs
            .iter()
            .filter(|s| s.roles.iter().any(|r| r == "store"))
            .count();
        let mut cluster = Cluster {
            specs: specs.to_vec(),
            nodes: Vec::new(),
            dir,
            seed,
            bootstrap_expect: stores.max(1),
        };
        for i in 0..specs.len() {
            let node = cluster.boot(i).await;
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn config(&self, i: usize) -> NodeConfig {
        let spec = &self.specs[i];
        let seeds = match self.nodes.first().and_then(Option::as_ref) {
            Some(first) if i > 0 => vec![first.addr()],
            _ => self
                .nodes
                .iter()
                .flatten()
                .filter(|n| n.name() != spec.name)
                .map(ClusterNode::addr)
                .take(1)
                .collect(),
        };
        NodeConfig {
            cluster: "harness".into(),
            roles: spec.roles.clone(),
            data_dir: Some(self.dir.join(&spec.name)),
            seeds,
            bootstrap_expect: self.bootstrap_expect,
            status_period_ms: 200,
            status_ttl_ms: 1_000,
            ..NodeConfig::local(&spec.name)
        }
    }

    async fn boot(&self, i: usize) -> ClusterNode {
        let secret = Secret::new(b"harness-secret".to_vec()).expect("a secret");
        let name = &self.specs[i].name;
        let node = ClusterNode::start(&self.config(i), secret, &Runtime::new(name.as_str()))
            .await
            .unwrap_or_else(|e| panic!("node {name} did not start: {e}"));
        node.gossip().seed_faults(self.seed.wrapping_add(i as u64));
        node
    }

    /// The harness's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Node `i` (in the order of the specs).
    ///
    /// # Panics
    /// Node `i` is killed.
    pub fn node(&self, i: usize) -> &ClusterNode {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} is killed"))
    }

    /// The nodes running now.
    pub fn running(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.iter().flatten()
    }

    /// Stops node `i` without telling anyone, as a crash looks to its peers.
    pub async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.crash().await;
        }
    }

    /// Starts node `i` again under its name, with its data directory (a new incarnation),
    /// joining through a running node.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} runs: kill it first");
        let node = self.boot(i).await;
        self.nodes[i] = Some(node);
    }

    fn gossip_addr(&self, i: usize) -> SocketAddr {
        self.node(i).gossip().local_addr()
    }

    /// Cuts nodes `a` and `b` off from each other: transport and gossip, both ways.
    pub fn partition(&self, a: usize, b: usize) {
        let (na, nb) = (self.node(a), self.node(b));
        na.transport().cut_off(nb.name());
        nb.transport().cut_off(na.name());
        let cut = LinkFault {
            cut: true,
            ..LinkFault::default()
        };
        na.gossip().inject(self.gossip_addr(b), cut);
        nb.gossip().inject(self.gossip_addr(a), cut);
    }

    /// Ends every fault between nodes `a` and `b`.
    pub fn heal(&self, a: usize, b: usize) {
        let (na, nb) = (self.node(a), self.node(b));
        na.transport().restore(nb.name());
        nb.transport().restore(na.name());
        na.gossip()
            .inject(self.gossip_addr(b), LinkFault::default());
        nb.gossip()
            .inject(self.gossip_addr(a), LinkFault::default());
    }

    /// Drops gossip datagrams from `from` to `to` with probability `drop` and delays the rest
    /// by up to `delay` (so they reorder).
    pub fn degrade(&self, from: usize, to: usize, drop: f64, delay: Duration) {
        let fault = LinkFault {
            cut: false,
            drop,
            delay,
        };
        self.node(from).gossip().inject(self.gossip_addr(to), fault);
    }

    /// Stops every running node gracefully and removes the data directories.
    pub async fn stop(mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.leave(Duration::from_secs(5)).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (at most `limit`) until `check` holds, checking every 20 ms; fails the test with
/// `what` otherwise.
///
/// # Panics
/// `check` did not hold within `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
