//! The store's front door on every node, exposed as `store`: requests by key (routed to their
//! shard), for the node's own actors and for `cadre kv` / `cadre lease` from outside. Also the
//! bootstrap of the shards' Raft groups.
//!
//! # Routing of prefixes
//! A key's shard is decided by its group, its first two `/` segments
//! ([`cadre_cluster::store::routing`]). A range or watch whose prefix covers a whole
//! group or less (`nodes/n1/`) goes to that group's shard; a shorter prefix (`nodes/`) is
//! asked of every shard and the answers merged (each shard has its own revisions, so each
//! watch update says its shard). A delete by prefix or a transaction must stay within one
//! shard.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use cadre_cluster::members::MemberState;
use cadre_cluster::store::{
    routing, LeaseId, RangeRequest, RangeResponse, Request, Response, Revision, WatchUpdate,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::replica::{Initialize, StoreView};
use super::storage::Applied;
use super::{KvError, StoreClient, StoreNode};
use crate::node::ClusterNode;
use crate::RemoteMessage;

/// The name the gateway is exposed under.
pub const STORE: &str = "store";

/// A write, routed by its keys (a lease by its id).
#[derive(Serialize, Deserialize, Debug)]
pub struct KvWrite(pub Request);
impl Message for KvWrite {
    type Result = Result<Applied, KvError>;
}
impl RemoteMessage for KvWrite {
    const TAG: &'static str = "kv.write";
}

/// A read, linearizable unless `serializable`.
#[derive(Serialize, Deserialize, Debug)]
pub struct KvRead {
    /// What to read.
    pub range: RangeRequest,
    /// Read a replica's state, maybe stale, instead of confirming with a quorum.
    pub serializable: bool,
}
impl Message for KvRead {
    type Result = Result<RangeResponse, KvError>;
}
impl RemoteMessage for KvRead {
    const TAG: &'static str = "kv.read";
}

/// Keep a lease alive; answers its TTL in milliseconds.
#[derive(Serialize, Deserialize, Debug)]
pub struct KvKeepAlive(pub LeaseId);
impl Message for KvKeepAlive {
    type Result = Result<u64, KvError>;
}
impl RemoteMessage for KvKeepAlive {
    const TAG: &'static str = "kv.keepalive";
}

/// A lease's remaining time and TTL, in milliseconds.
#[derive(Serialize, Deserialize, Debug)]
pub struct KvTimeToLive(pub LeaseId);
impl Message for KvTimeToLive {
    type Result = Result<(u64, u64), KvError>;
}
impl RemoteMessage for KvTimeToLive {
    const TAG: &'static str = "kv.ttl";
}

/// Watch keys under `prefix` from `start` (0: the next change); updates go as
/// [`KvWatchUpdate`] to the actor `name` on `node`, until it cannot be reached.
#[derive(Serialize, Deserialize, Debug)]
pub struct KvWatch {
    /// The prefix.
    #[serde(with = "serde_bytes")]
    pub prefix: Vec<u8>,
    /// The first revision (per shard; 0: the next change).
    pub start: Revision,
    /// The watcher's node.
    pub node: String,
    /// The watcher's actor there.
    pub name: String,
}
impl Message for KvWatch {
    type Result = Result<(), KvError>;
}
impl RemoteMessage for KvWatch {
    const TAG: &'static str = "kv.watch";
}

/// One update of a [`KvWatch`], with the shard it comes from.
#[derive(Message, Serialize, Deserialize, Debug, Clone)]
#[rtype(result = "()")]
pub struct KvWatchUpdate {
    /// The shard.
    pub shard: u16,
    /// The update.
    pub update: WatchUpdate,
}
impl RemoteMessage for KvWatchUpdate {
    const TAG: &'static str = "kv.watch.update";
}

/// The end of a [`KvWatch`]'s updates from one shard (the watch could not go on: its
/// replicas are gone, or the history it needs was compacted away). The watcher lists and
/// watches again.
#[derive(Message, Serialize, Deserialize, Debug, Clone)]
#[rtype(result = "()")]
pub struct KvWatchEnded {
    /// The shard.
    pub shard: u16,
    /// Why.
    pub reason: String,
}
impl RemoteMessage for KvWatchEnded {
    const TAG: &'static str = "kv.watch.ended";
}

/// Compact the history before `revision` of the shard holding `key`'s group.
#[derive(Serialize, Deserialize, Debug)]
pub struct KvCompact {
    /// A key of the shard.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The first revision kept.
    pub revision: Revision,
}
impl Message for KvCompact {
    type Result = Result<Applied, KvError>;
}
impl RemoteMessage for KvCompact {
    const TAG: &'static str = "kv.compact";
}

pub use cadre_cluster::store::routing::{shard_of_request, shards_of_prefix};

impl From<routing::RouteError> for KvError {
    fn from(e: routing::RouteError) -> Self {
        KvError::Invalid(e.to_string())
    }
}

/// The store gateway of a node.
pub(crate) struct StoreGateway {
    cluster: ClusterNode,
    client: Rc<StoreClient>,
    shards: u16,
}

impl StoreGateway {
    pub(crate) fn new(cluster: ClusterNode, shards: u16) -> Self {
        let client = StoreClient::new(cluster.transport().clone(), HashMap::new());
        StoreGateway {
            cluster,
            client: Rc::new(client),
            shards,
        }
    }
}

pub use cadre_cluster::store::placement::REPLICAS;

/// The members of `shard`'s group among the store nodes `members`: the first [`REPLICAS`] in
/// the shard's rendezvous order (all of them when there are fewer).
pub fn group_of(shard: u16, members: &[String]) -> Vec<String> {
    let mut all = ranked(shard, members);
    all.truncate(REPLICAS);
    all
}

/// The store nodes `members` in `shard`'s rendezvous order.
fn ranked(shard: u16, members: &[String]) -> Vec<String> {
    let names: Vec<&str> = members.iter().map(String::as_str).collect();
    routing::place(shard, &names, names.len())
        .into_iter()
        .map(String::from)
        .collect()
}

/// The store nodes up, by name.
pub(crate) async fn store_nodes(cluster: &ClusterNode) -> Vec<String> {
    let mut stores: Vec<String> = cluster
        .members()
        .await
        .into_iter()
        .filter(|r| r.roles.iter().any(|x| x == "store") && r.state == MemberState::Up)
        .map(|r| r.id)
        .collect();
    stores.sort();
    stores
}

impl StoreGateway {
    /// Runs `f` with the client (and the number of shards), the client's view of who holds
    /// each shard refreshed first when stale.
    fn serve<T: 'static>(
        &self,
        f: impl AsyncFnOnce(&StoreClient, u16) -> Result<T, KvError> + 'static,
    ) -> ResponseFuture<Result<T, KvError>> {
        let (cluster, client, shards) = (self.cluster.clone(), self.client.clone(), self.shards);
        Box::pin(async move {
            // The groups' members change rarely (the client moves on from an unreachable
            // replica by itself): look them up again at most once a second.
            if client.replicas_older_than(Duration::from_secs(1)) {
                // Groups follow the store nodes (see `placement`): try every live store node,
                // those most likely to hold the shard first, and follow not-leader hints.
                let stores = store_nodes(&cluster).await;
                if !stores.is_empty() {
                    client.set_replicas((0..shards).map(|s| (s, ranked(s, &stores))).collect());
                }
            }
            f(&client, shards).await
        })
    }
}

impl Actor for StoreGateway {
    type Context = Context<Self>;
}

impl Handler<KvWrite> for StoreGateway {
    type Result = ResponseFuture<Result<Applied, KvError>>;
    fn handle(&mut self, m: KvWrite, _: &mut Context<Self>) -> Self::Result {
        self.serve(async move |c, shards| {
            let shard = shard_of_request(&m.0, shards)?;
            applied(shard, c.write(shard, m.0).await?)
        })
    }
}

impl Handler<KvCompact> for StoreGateway {
    type Result = ResponseFuture<Result<Applied, KvError>>;
    fn handle(&mut self, m: KvCompact, _: &mut Context<Self>) -> Self::Result {
        self.serve(async move |c, shards| {
            let shard = routing::shard_of(&m.key, shards);
            let compact = Request::Compact {
                revision: m.revision,
            };
            applied(shard, c.write(shard, compact).await?)
        })
    }
}

impl Handler<KvRead> for StoreGateway {
    type Result = ResponseFuture<Result<RangeResponse, KvError>>;
    fn handle(&mut self, m: KvRead, _: &mut Context<Self>) -> Self::Result {
        self.serve(async move |c, shards| {
            let targets = if m.range.prefix {
                shards_of_prefix(&m.range.key, shards)
            } else {
                vec![routing::shard_of(&m.range.key, shards)]
            };
            let mut answers = Vec::with_capacity(targets.len());
            for shard in &targets {
                answers.push(c.read(*shard, m.range.clone(), !m.serializable).await?);
            }
            Ok(routing::merge_ranges(answers, m.range.limit))
        })
    }
}

fn lease_shard(id: LeaseId, shards: u16) -> Result<u16, KvError> {
    Ok(routing::shard_of_lease_checked(id, shards)?)
}

/// A write's outcome: the state machine's refusal is an error.
fn applied(shard: u16, applied: Applied) -> Result<Applied, KvError> {
    match &applied.response {
        Some(Response::Error(e)) => Err(KvError::Refused {
            shard,
            detail: e.to_string(),
        }),
        _ => Ok(applied),
    }
}

impl Handler<KvKeepAlive> for StoreGateway {
    type Result = ResponseFuture<Result<u64, KvError>>;
    fn handle(&mut self, m: KvKeepAlive, _: &mut Context<Self>) -> Self::Result {
        self.serve(async move |c, shards| {
            let shard = lease_shard(m.0, shards)?;
            c.keep_alive(shard, m.0)
                .await
                .map(|d| d.as_millis() as u64)
                .map_err(KvError::from)
        })
    }
}

impl Handler<KvTimeToLive> for StoreGateway {
    type Result = ResponseFuture<Result<(u64, u64), KvError>>;
    fn handle(&mut self, m: KvTimeToLive, _: &mut Context<Self>) -> Self::Result {
        self.serve(async move |c, shards| {
            let shard = lease_shard(m.0, shards)?;
            c.time_to_live(shard, m.0)
                .await
                .map(|(l, t)| (l.as_millis() as u64, t.as_millis() as u64))
                .map_err(KvError::from)
        })
    }
}

impl Handler<KvWatch> for StoreGateway {
    type Result = ResponseFuture<Result<(), KvError>>;
    fn handle(&mut self, m: KvWatch, _: &mut Context<Self>) -> Self::Result {
        let target = self.cluster.transport().actor(&m.node, &m.name);
        self.serve(async move |c, shards| {
            for shard in shards_of_prefix(&m.prefix, shards) {
                let mut watch = c.watch(shard, &m.prefix, m.start).await?;
                let target = target.clone();
                actix::spawn(async move {
                    loop {
                        match watch.next().await {
                            Ok(update) => {
                                let msg = KvWatchUpdate { shard, update };
                                if target.tell_wait(msg).await.is_err() {
                                    return; // the watcher is gone
                                }
                            }
                            Err(e) => {
                                // Say so: a watcher must not wait for updates that never come.
                                let reason = e.to_string();
                                let _ = target.tell_wait(KvWatchEnded { shard, reason }).await;
                                return;
                            }
                        }
                    }
                });
            }
            Ok(())
        })
    }
}

/// How many times the bootstrap tries to form a group before it gives up (half a second apart).
const INITIALIZE_ATTEMPTS: u32 = 120;

/// How often a store node looks at which store nodes are up, for the shards' placement.
const TRACK_EVERY: Duration = Duration::from_millis(500);

/// Keeps `tx` current with the store nodes this node sees up and down (with when each was
/// first seen down), for its replicas' placement duty. Ends when no replica listens any more.
pub(crate) async fn track_store_nodes(
    cluster: ClusterNode,
    tx: std::sync::Arc<watch::Sender<StoreView>>,
) {
    let mut events = cluster.events();
    while !tx.is_closed() {
        let rows = cluster.members().await;
        // An empty list means the node's own view is gone (it is stopping): change nothing.
        if !rows.is_empty() {
            let stores = rows
                .iter()
                .filter(|r| r.roles.iter().any(|x| x == "store"))
                .map(|r| (r.id.as_str(), r.state));
            let now = std::time::Instant::now();
            tx.send_if_modified(|view| view.observe(stores, now));
        }
        if let Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) =
            tokio::time::timeout(TRACK_EVERY, events.recv()).await
        {
            tokio::time::sleep(TRACK_EVERY).await;
        }
    }
}

/// Forms the shards' Raft groups once `expect` store nodes are up: each shard's group is its
/// first [`REPLICAS`] of them in the shard's rendezvous order, initialized by the first of those,
/// so that the first leaders (and their work) spread over the nodes. Initializing a group that
/// exists is refused by Raft and ignored, so this is safe to repeat (after a restart, or when
/// several nodes start at once).
pub(crate) async fn bootstrap(cluster: ClusterNode, store: StoreNode, shards: u16, expect: usize) {
    let mut events = cluster.events();
    loop {
        // The store nodes that form the groups: the first `expect` of them by name.
        let mut members = store_nodes(&cluster).await;
        members.truncate(expect);
        if members.len() >= expect {
            let names: Vec<&str> = members.iter().map(String::as_str).collect();
            let mine: Vec<u16> = (0..shards)
                .filter(|s| routing::place(*s, &names, 1).first() == Some(&cluster.name()))
                .collect();
            // A member's replica that cannot say who it is yet (just starting, or briefly
            // unreachable) holds its shard back: that shard is tried again.
            let mut left = mine.clone();
            for attempt in 0..INITIALIZE_ATTEMPTS {
                let mut failed = Vec::new();
                for &shard in &left {
                    let Some(replica) = store.replica(shard) else {
                        continue;
                    };
                    let outcome = replica
                        .ask(
                            Initialize(group_of(shard, &members)),
                            Duration::from_secs(10),
                        )
                        .await;
                    let error = match outcome {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(shard, attempt, %error, "shard not initialized yet");
                    failed.push(shard);
                }
                left = failed;
                if left.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if !left.is_empty() {
                tracing::error!(shards = ?left, "store groups not formed: their members' replicas did not answer");
                return;
            }
            tracing::info!(?members, shards = ?mine, "store groups formed");
            return;
        }
        // Wait for a membership change (or look again in a second).
        let _ = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
    }
}
