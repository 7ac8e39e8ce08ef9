//! [`StoreNode`]: the shard replicas a node hosts, under its `store` supervisor.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cadre_runtime::{ActorRef, ChildSpec, Runtime, SupervisorRef, SupervisorSpec};

use super::replica::{
    AppendRpc, Group, Identify, Initialize, KeepAlive, Leader, Placement, RaftTimings, Read,
    ShardReplica, SnapshotRpc, TimeToLive, VoteRpc, WatchCancel, WatchStart, Write,
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
    /// The store file, let go of once stopped.
    disk: std::sync::Arc<parking_lot::Mutex<Option<Disk>>>,
}

impl StoreNode {
    /// Starts replicas of `shards` on this node (`transport`), persisted in
    /// `data_dir/store.redb`, under a `store` supervisor; each is exposed as
    /// [`replica_name`](super::replica::replica_name)`(shard)`. Their groups are whatever they
    /// are initialized with and never move by themselves (a node of a cluster moves them as
    /// store nodes come and go: see [`Placement`]). Each shard keeps
    /// [`DEFAULT_KEEP_REVISIONS`](super::DEFAULT_KEEP_REVISIONS) revisions of history.
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
        let (store, spec) = StoreNode::prepare(
            transport,
            data_dir,
            shards,
            timings,
            None,
            super::DEFAULT_KEEP_REVISIONS,
        )?;
        spec.start(runtime).await.map_err(StoreStartError::Start)?;
        store.expose(transport);
        Ok(store)
    }

    /// As [`StoreNode::start`], but returns the `store` supervisor to start in a tree; call
    /// `expose` once it has started.
    pub(crate) fn prepare(
        transport: &Node,
        data_dir: &Path,
        shards: &[u16],
        timings: RaftTimings,
        placement: Option<Placement>,
        keep_revisions: u64,
    ) -> Result<(StoreNode, SupervisorSpec), StoreStartError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreStartError::Disk {
            path: data_dir.display().to_string(),
            source: redb::Error::Io(e),
        })?;
        let path = data_dir.join("store.redb");
        let disk = Disk::open(&path).map_err(|source| StoreStartError::Disk {
            path: path.display().to_string(),
            source,
        })?;
        let mut sup = SupervisorSpec::new("store");
        let mut replicas = BTreeMap::new();
        for &shard in shards {
            let (t, d, p) = (transport.clone(), disk.clone(), placement.clone());
            let spec = ChildSpec::new(format!("shard-{shard}"), move || {
                ShardReplica::new(
                    shard,
                    t.clone(),
                    d.clone(),
                    timings,
                    p.clone(),
                    keep_revisions,
                )
            })
            .mailbox(16 * 1024);
            replicas.insert(shard, spec.actor_ref());
            sup = sup.child(spec);
        }
        let store = StoreNode {
            replicas,
            sup: sup.handle(),
            disk: std::sync::Arc::new(parking_lot::Mutex::new(Some(disk))),
        };
        Ok((store, sup))
    }

    /// Exposes every replica on `transport`.
    pub(crate) fn expose(&self, transport: &Node) {
        for (shard, replica) in &self.replicas {
            transport
                .expose(&super::replica::replica_name(*shard), replica.clone())
                .accept::<AppendRpc>()
                .accept::<VoteRpc>()
                .accept::<SnapshotRpc>()
                .accept::<Write>()
                .accept::<Read>()
                .accept::<Initialize>()
                .accept::<Leader>()
                .accept::<Group>()
                .accept::<Identify>()
                .accept::<WatchStart>()
                .accept::<WatchCancel>()
                .accept::<KeepAlive>()
                .accept::<TimeToLive>();
        }
    }

    /// The replica of `shard` on this node.
    pub fn replica(&self, shard: u16) -> Option<&ActorRef<ShardReplica>> {
        self.replicas.get(&shard)
    }

    /// Stops every replica and waits (at most `timeout`) until their Raft members have shut
    /// down and let go of the store file, so that it can be opened again; the data stays.
    pub async fn stop(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let _ = self.sup.stop(timeout).await;
        let Some(disk) = self.disk.lock().take() else {
            return;
        };
        // The Raft members shut down once their actors are gone; then only this handle and
        // the writer thread hold the file.
        while disk.users() > 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        disk.close();
    }
}
