//! [`StoreNode`]: the shard replicas a node hosts, under its `store` supervisor.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cadre_runtime::{ActorRef, ChildSpec, Runtime, SupervisorRef, SupervisorSpec};

use super::replica::{
    AppendRpc, Initialize, KeepAlive, Leader, RaftTimings, Read, ShardReplica, SnapshotRpc,
    TimeToLive, VoteRpc, WatchCancel, WatchStart, Write,
};
use super::storage::Disk;
use crate::Node;

/// Why the store did not start on a node.
#[derive(Debug, thiserror::Error)]
pub enum StoreStartError {
    /// The store file could not be opened.
    #[error("cannot open the store file {path}: {source}")]
    Disk {
        /// The file.
        path: String,
        /// Why.
        source: redb::Error,
    },
    /// The replicas did not start.
    #[error("the store's replicas did not start: {0}")]
    Start(cadre_runtime::ExitReason),
}

/// The shard replicas on one node.
#[derive(Clone, Debug)]
pub struct StoreNode {
    replicas: BTreeMap<u16, ActorRef<ShardReplica>>,
    sup: SupervisorRef,
}

impl StoreNode {
    /// Starts replicas of `shards` on this node (`transport`), persisted in
    /// `data_dir/store.redb`, under a `store` supervisor; each is exposed as
    /// [`replica_name`](super::replica::replica_name)`(shard)`.
    ///
    /// # Errors
    /// [`StoreStartError`].
    pub async fn start(
        transport: &Node,
        data_dir: &Path,
        shards: &[u16],
        timings: RaftTimings,
        runtime: &Runtime,
    ) -> Result<StoreNode, StoreStartError> {
        let path = data_dir.join("store.redb");
        let disk = Disk::open(&path).map_err(|source| StoreStartError::Disk {
            path: path.display().to_string(),
            source,
        })?;
        let mut sup = SupervisorSpec::new("store");
        let mut replicas = BTreeMap::new();
        for &shard in shards {
            let (t, d) = (transport.clone(), disk.clone());
            let spec = ChildSpec::new(format!("shard-{shard}"), move || {
                ShardReplica::new(shard, t.clone(), d.clone(), timings)
            })
            .mailbox(16 * 1024);
            replicas.insert(shard, spec.actor_ref());
            sup = sup.child(spec);
        }
        let sup = sup.start(runtime).await.map_err(StoreStartError::Start)?;
        for (shard, replica) in &replicas {
            transport
                .expose(&super::replica::replica_name(*shard), replica.clone())
                .accept::<AppendRpc>()
                .accept::<VoteRpc>()
                .accept::<SnapshotRpc>()
                .accept::<Write>()
                .accept::<Read>()
                .accept::<Initialize>()
                .accept::<Leader>()
                .accept::<WatchStart>()
                .accept::<WatchCancel>()
                .accept::<KeepAlive>()
                .accept::<TimeToLive>();
        }
        Ok(StoreNode { replicas, sup })
    }

    /// The replica of `shard` on this node.
    pub fn replica(&self, shard: u16) -> Option<&ActorRef<ShardReplica>> {
        self.replicas.get(&shard)
    }

    /// Stops every replica (their Raft members shut down; the data stays on disk).
    pub async fn stop(&self, timeout: Duration) {
        let _ = self.sup.stop(timeout).await;
    }
}
