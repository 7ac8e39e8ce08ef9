//! A shard replica: an actor owning one openraft group member, exposed as `store.<shard>` so
//! that its peers' Raft RPCs and clients' requests reach it over cadre's transport.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cadre_cluster::store::placement;
use cadre_cluster::store::routing;
use cadre_cluster::store::{
    Event, LeaseClock, LeaseId, Limits, RangeRequest, RangeResponse, Request, Revision, StoreError,
    WatchHub, WatchId, WatchUpdate,
};
use openraft::error::{
    CheckIsLeaderError, ClientWriteError, InitializeError, InstallSnapshotError, NetworkError,
    RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};

use super::storage::{Applied, Disk, ShardRaft, ShardState};
use crate::{Node, RemoteAskError, RemoteMessage, RemoteRef};

pub use cadre_cluster::store::placement::StoreView;

/// What a replica needs to move its shard's group as store nodes come and go
/// ([`cadre_cluster::store::placement`]).
#[derive(Clone, Debug)]
pub struct Placement {
    /// The store nodes, kept current by the node.
    pub nodes: tokio::sync::watch::Receiver<StoreView>,
    /// How long a store node must be down before its place is given to another.
    pub dead_after: Duration,
}

/// The name a shard's replica is exposed under on its node.
pub fn replica_name(shard: u16) -> String {
    format!("store.{shard}")
}

/// A store node's Raft id: a stable hash of its node name (the name travels as the node's
/// address in Raft's membership).
pub fn raft_id(node: &str) -> u64 {
    routing::stable_hash(node.as_bytes())
}

/// Raft timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTimings {
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout range: a follower that hears no leader for a random time in it starts
    /// an election.
    pub election_min: Duration,
    /// See `election_min`.
    pub election_max: Duration,
}

impl RaftTimings {
    /// For a LAN: 100 ms heartbeats, elections after 500–1000 ms of silence.
    pub fn lan() -> Self {
        RaftTimings {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(500),
            election_max: Duration::from_millis(1000),
        }
    }

    /// For tests on one machine: 50 ms heartbeats, elections after 200–400 ms.
    pub fn local_test() -> Self {
        RaftTimings {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(200),
            election_max: Duration::from_millis(400),
        }
    }

    fn config(&self, shard: u16) -> Arc<openraft::Config> {
        let config = openraft::Config {
            cluster_name: format!("cadre-store-{shard}"),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election_min.as_millis() as u64,
            election_timeout_max: self.election_max.as_millis() as u64,
            ..openraft::Config::default()
        };
        Arc::new(config.validate().expect("valid Raft timings"))
    }
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RaftError<u64, E>>;

/// Raft's append-entries (and heartbeat) RPC.
#[derive(Serialize, Deserialize)]
pub(crate) struct AppendRpc(AppendEntriesRequest<ShardRaft>);
impl Message for AppendRpc {
    type Result = RpcResult<AppendEntriesResponse<u64>>;
}
impl RemoteMessage for AppendRpc {
    const TAG: &'static str = "store.raft.append";
}

/// Raft's vote RPC.
#[derive(Serialize, Deserialize)]
pub(crate) struct VoteRpc(VoteRequest<u64>);
impl Message for VoteRpc {
    type Result = RpcResult<VoteResponse<u64>>;
}
impl RemoteMessage for VoteRpc {
    const TAG: &'static str = "store.raft.vote";
}

/// Raft's install-snapshot RPC (one chunk).
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotRpc(InstallSnapshotRequest<ShardRaft>);
impl Message for SnapshotRpc {
    type Result = RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError>;
}
impl RemoteMessage for SnapshotRpc {
    const TAG: &'static str = "store.raft.snapshot";
}

/// Why a store request was not served by this replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReplicaError {
    /// This replica is not the shard's leader; the leader, if known (a node name).
    #[error("not the leader (the leader is {0:?})")]
    NotLeader(Option<String>),
    /// Raft refused or failed.
    #[error("raft: {0}")]
    Raft(String),
    /// No such lease (never granted, revoked, or expired).
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// Refused before it reached the log (over a size limit).
    #[error("{0}")]
    Refused(String),
}

/// A write through the shard's log.
#[derive(Serialize, Deserialize, Debug)]
pub struct Write(pub Request);
impl Message for Write {
    type Result = Result<Applied, ReplicaError>;
}
impl RemoteMessage for Write {
    const TAG: &'static str = "store.write";
}

/// A read: linearizable (confirmed with a quorum by the leader) or serializable (this
/// replica's state, maybe stale).
#[derive(Serialize, Deserialize, Debug)]
pub struct Read {
    /// What to read.
    pub range: RangeRequest,
    /// Linearizable (the default) or serializable.
    pub linearizable: bool,
}
impl Message for Read {
    type Result = Result<RangeResponse, ReplicaError>;
}
impl RemoteMessage for Read {
    const TAG: &'static str = "store.read";
}

/// Initialize the shard's group with these members (node names); refused quietly when the
/// group already exists.
#[derive(Serialize, Deserialize, Debug)]
pub struct Initialize(pub Vec<String>);
impl Message for Initialize {
    type Result = Result<(), ReplicaError>;
}
impl RemoteMessage for Initialize {
    const TAG: &'static str = "store.initialize";
}

/// The shard's group as this replica knows it.
#[derive(Serialize, Deserialize, Debug)]
pub struct Group;
impl Message for Group {
    type Result = GroupInfo;
}
impl RemoteMessage for Group {
    const TAG: &'static str = "store.group";
}

/// A shard's group as one replica knows it: node names.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInfo {
    /// The leader, if known.
    pub leader: Option<String>,
    /// The voters.
    pub voters: Vec<String>,
    /// The learners (catching up before they become voters).
    pub learners: Vec<String>,
}

/// The shard's leader as this replica knows it (a node name).
#[derive(Serialize, Deserialize, Debug)]
pub struct Leader;
impl Message for Leader {
    type Result = Option<String>;
}
impl RemoteMessage for Leader {
    const TAG: &'static str = "store.leader";
}

/// Start a watch of keys under `prefix` from revision `start` (0: the next), its updates sent
/// to the actor exposed as `name` on `node` ([`WatchEvents`]). Any replica serves watches: each
/// applies the same log.
#[derive(Serialize, Deserialize, Debug)]
pub struct WatchStart {
    /// The key prefix.
    #[serde(with = "serde_bytes")]
    pub prefix: Vec<u8>,
    /// The first revision wanted (0: the next).
    pub start: Revision,
    /// Where updates go: a node.
    pub node: String,
    /// Where updates go: an actor exposed there.
    pub name: String,
}
impl Message for WatchStart {
    /// The watch's id, and the revision it starts at.
    type Result = Result<(WatchId, Revision), StoreError>;
}
impl RemoteMessage for WatchStart {
    const TAG: &'static str = "store.watch";
}

/// End a watch.
#[derive(Serialize, Deserialize, Debug)]
pub struct WatchCancel(pub WatchId);
impl Message for WatchCancel {
    type Result = ();
}
impl RemoteMessage for WatchCancel {
    const TAG: &'static str = "store.watch.cancel";
}

/// Replica → watcher: the next updates of a watch, numbered from 1 per watch so that the
/// watcher notices anything lost on the way.
#[derive(Message, Serialize, Deserialize, Debug, Clone)]
#[rtype(result = "()")]
pub struct WatchEvents {
    /// The watch.
    pub watch: WatchId,
    /// This message's number in the watch (1, 2, …).
    pub seq: u64,
    /// Its updates, in revision order.
    pub updates: Vec<WatchUpdate>,
}
impl RemoteMessage for WatchEvents {
    const TAG: &'static str = "store.watch.events";
}

/// Keep a lease alive: it runs a full TTL from now. Served by the shard's leader only.
#[derive(Serialize, Deserialize, Debug)]
pub struct KeepAlive(pub LeaseId);
impl Message for KeepAlive {
    /// The lease's TTL in milliseconds.
    type Result = Result<u64, ReplicaError>;
}
impl RemoteMessage for KeepAlive {
    const TAG: &'static str = "store.lease.keepalive";
}

/// How long a lease has left: (remaining, TTL) in milliseconds. Served by the leader only.
#[derive(Serialize, Deserialize, Debug)]
pub struct TimeToLive(pub LeaseId);
impl Message for TimeToLive {
    type Result = Result<(u64, u64), ReplicaError>;
}
impl RemoteMessage for TimeToLive {
    const TAG: &'static str = "store.lease.ttl";
}

/// How often the leader checks its lease deadlines.
const LEASE_TICK: Duration = Duration::from_millis(50);

/// How long the leader waits for a proposed revoke before proposing it again.
const REVOKE_RETRY: Duration = Duration::from_secs(2);

/// Proposals (log entries of gathered writes) in flight at once per replica. One: every write
/// that arrives while it is in flight goes into the next, so an entry carries as many writes as
/// there are waiting, and each node's commits carry more of them (with 64 clients, six
/// alternating pairs of `cadre bench kv` runs: 4 737–5 997 puts/s with one against 3 988–4 646
/// with two; the node's commits, not openraft's rounds, are the bottleneck).
const MAX_PROPOSALS: usize = 1;

/// Most writes in one proposal.
const MAX_BATCH: usize = 512;

/// A request's size, roughly: its keys and values.
fn request_size(request: &Request) -> usize {
    match request {
        Request::Put(p) => p.key.len() + p.value.len(),
        Request::Delete(d) => d.key.len(),
        Request::Txn(t) => t
            .success
            .iter()
            .chain(&t.failure)
            .map(|op| match op {
                cadre_cluster::store::Op::Put(p) => p.key.len() + p.value.len(),
                cadre_cluster::store::Op::Delete(d) => d.key.len(),
                cadre_cluster::store::Op::Range(r) => r.key.len(),
            })
            .sum(),
        _ => 0,
    }
}

/// How often each watch gets a progress notification.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// How often the leader compares its group with where the shard should be.
const PLACEMENT_TICK: Duration = Duration::from_secs(1);

/// How often a shard's leader looks whether its history is longer than it keeps.
const COMPACTION_TICK: Duration = Duration::from_secs(1);

/// How long a new member may take to catch up before the change is abandoned (and tried again).
const CATCH_UP: Duration = Duration::from_secs(60);

struct Watcher {
    target: RemoteRef,
    seq: u64,
}

fn not_leader(f: &openraft::error::ForwardToLeader<u64, BasicNode>) -> ReplicaError {
    ReplicaError::NotLeader(f.leader_node.as_ref().map(|n| n.addr.clone()))
}

/// Raft's client side of the network: RPCs to a peer's replica of the same shard.
#[derive(Clone)]
pub(crate) struct Network {
    transport: Node,
    shard: u16,
}

pub(crate) struct Peer {
    target: u64,
    remote: RemoteRef,
}

impl RaftNetworkFactory<ShardRaft> for Network {
    type Network = Peer;
    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            target,
            remote: self.transport.actor(&node.addr, &replica_name(self.shard)),
        }
    }
}

impl Peer {
    async fn call<M, T, E>(
        &self,
        msg: M,
        option: &RPCOption,
    ) -> Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        M: RemoteMessage<Result = Result<T, RaftError<u64, E>>>,
        T: Serialize + serde::de::DeserializeOwned + Send + 'static,
        E: std::error::Error + Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        match self.remote.ask(msg, option.hard_ttl()).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e @ (RemoteAskError::NodeUnreachable(_) | RemoteAskError::NoSuchActor(_))) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<ShardRaft> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(AppendRpc(rpc), &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(SnapshotRpc(rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(VoteRpc(rpc), &option).await
    }
}

/// Shuts the Raft member down when the replica's actor goes (also after a panic).
struct RaftGuard(Raft<ShardRaft>);

impl Drop for RaftGuard {
    fn drop(&mut self) {
        let raft = self.0.clone();
        actix::spawn(async move {
            let _ = raft.shutdown().await;
        });
    }
}

/// One shard's replica on this node.
pub struct ShardReplica {
    shard: u16,
    me: String,
    transport: Node,
    disk: Disk,
    timings: RaftTimings,
    raft: Option<RaftGuard>,
    state: Option<ShardState>,
    hub: WatchHub,
    watchers: HashMap<WatchId, Watcher>,
    leases: LeaseClock,
    leading: bool,
    limits: Limits,
    /// Writes waiting for the next proposal.
    proposals: std::collections::VecDeque<(
        Request,
        tokio::sync::oneshot::Sender<Result<Applied, ReplicaError>>,
    )>,
    in_flight: usize,
    /// Where the shard should be; `None`: the group never changes by itself.
    placement: Option<Placement>,
    /// A membership change is under way.
    changing: bool,
    /// Revisions of history kept (0: all, until compacted by hand); see
    /// [`ShardReplica::compaction_tick`].
    keep_revisions: u64,
    /// A compaction is in the log and not yet applied.
    compacting: bool,
}

impl ShardReplica {
    pub(crate) fn new(
        shard: u16,
        transport: Node,
        disk: Disk,
        timings: RaftTimings,
        placement: Option<Placement>,
        keep_revisions: u64,
    ) -> Self {
        ShardReplica {
            shard,
            me: transport.id().to_string(),
            transport,
            disk,
            timings,
            raft: None,
            state: None,
            hub: WatchHub::new(),
            watchers: HashMap::new(),
            leases: LeaseClock::new(),
            leading: false,
            limits: Limits::default(),
            proposals: std::collections::VecDeque::new(),
            in_flight: 0,
            placement,
            changing: false,
            keep_revisions,
            compacting: false,
        }
    }

    /// The leader's compaction duty: once the shard's history holds more than
    /// `keep_revisions` revisions, the older ones are compacted away through the log (so every
    /// replica drops the same history). One compaction in the log at a time.
    fn compaction_tick(&mut self, ctx: &mut Context<Self>) {
        if self.compacting || !self.leading {
            return;
        }
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let Some(compact) = state.read(|sm| sm.compaction_due(self.keep_revisions)) else {
            return;
        };
        self.compacting = true;
        let raft = self.raft();
        ctx.spawn(
            async move { raft.client_write(vec![compact]).await }
                .into_actor(self)
                .map(move |outcome, act, _| {
                    act.compacting = false;
                    if let Err(e) = outcome {
                        tracing::debug!(shard = act.shard, error = %e, "compaction not committed");
                    }
                }),
        );
    }

    /// Proposes the queued writes as one log entry (one Raft round, one fsync per replica for
    /// all of them), unless [`MAX_PROPOSALS`] are in flight already: writes arriving meanwhile
    /// gather for the next one. Each write still gets its own revision and answer.
    fn propose(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight >= MAX_PROPOSALS || self.proposals.is_empty() {
            return;
        }
        let mut batch = Vec::new();
        let mut replies = Vec::new();
        let mut bytes = 0;
        while let Some((request, reply)) = self.proposals.pop_front() {
            bytes += request_size(&request);
            batch.push(request);
            replies.push(reply);
            if batch.len() >= MAX_BATCH || bytes >= self.limits.max_request {
                break;
            }
        }
        self.in_flight += 1;
        let raft = self.raft();
        ctx.spawn(
            async move { raft.client_write(batch).await }
                .into_actor(self)
                .map(move |outcome, act, ctx| {
                    act.in_flight -= 1;
                    match outcome {
                        Ok(r) => {
                            for (reply, applied) in replies.into_iter().zip(r.data) {
                                let _ = reply.send(Ok(applied));
                            }
                        }
                        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                            for reply in replies {
                                let _ = reply.send(Err(not_leader(&f)));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(ReplicaError::Raft(e.to_string())));
                            }
                        }
                    }
                    act.propose(ctx);
                }),
        );
    }

    /// Sends `updates` to watch `id`; a watcher that cannot be reached loses its watch (it
    /// notices the silence, or the gap in numbers, and watches again from where it was).
    fn send(&mut self, id: WatchId, updates: Vec<WatchUpdate>) {
        let Some(w) = self.watchers.get_mut(&id) else {
            return;
        };
        w.seq += 1;
        let msg = WatchEvents {
            watch: id,
            seq: w.seq,
            updates,
        };
        if w.target.tell(msg).is_err() {
            self.watchers.remove(&id);
            self.hub.cancel(id);
        }
    }

    /// The leader's lease duties: on taking over, every lease gets a full TTL; grants and
    /// revokes applied since the last tick are taken in; expired leases are revoked through
    /// the log.
    fn lease_tick(&mut self) {
        let (Some(raft), Some(state)) = (self.raft.as_ref(), self.state.as_ref()) else {
            return;
        };
        let raft = raft.0.clone();
        let me = raft_id(&self.me);
        let leading = raft.metrics().borrow().current_leader == Some(me);
        let now = std::time::Instant::now();
        if !leading {
            self.leading = false;
            return;
        }
        if !self.leading {
            self.leading = true;
            state.read(|sm| self.leases.took_over(sm, now));
        } else {
            state.read(|sm| self.leases.sync(sm, now));
        }
        for id in self.leases.expired(now, REVOKE_RETRY) {
            let raft = raft.clone();
            actix::spawn(async move {
                if let Err(e) = raft.client_write(vec![Request::LeaseRevoke { id }]).await {
                    tracing::debug!(lease = id, error = %e, "lease revoke not committed yet");
                }
            });
        }
    }

    /// The group as this replica knows it.
    fn group(&self) -> GroupInfo {
        let raft = self.raft();
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let name = |id: u64| membership.get_node(&id).map(|n| n.addr.clone());
        GroupInfo {
            leader: metrics.current_leader.and_then(name),
            voters: membership.voter_ids().filter_map(name).collect(),
            learners: membership.learner_ids().filter_map(name).collect(),
        }
    }

    /// The leader's placement duty: one membership change at a time towards the shard's
    /// rendezvous target among the live store nodes (see
    /// [`placement`](cadre_cluster::store::placement)). A newcomer joins as a learner, catches
    /// up, then becomes a voter in the same change that retires the member it displaces;
    /// learners that no longer belong are removed.
    fn placement_tick(&mut self, ctx: &mut Context<Self>) {
        if self.changing || !self.leading {
            return;
        }
        let (Some(p), Some(raft)) = (self.placement.as_ref(), self.raft.as_ref()) else {
            return;
        };
        let raft = raft.0.clone();
        let (voters, learners, joint) = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            let m = metrics.membership_config.membership();
            let names = |ids: Vec<u64>| -> BTreeSet<String> {
                ids.iter()
                    .filter_map(|id| m.get_node(id).map(|n| n.addr.clone()))
                    .collect()
            };
            (
                names(m.voter_ids().collect()),
                names(m.learner_ids().collect()),
                m.get_joint_config().len() > 1,
            )
        };
        if voters.is_empty() {
            return; // not formed yet
        }
        let nodes = p.nodes.borrow().at(std::time::Instant::now());
        let change = placement::next_change(self.shard, &voters, &learners, &nodes, p.dead_after);
        if change.is_none() && !joint {
            return;
        }
        self.changing = true;
        let shard = self.shard;
        // A node's Raft id is derived from its name (the name is its address in the group).
        let ids = |names: &BTreeSet<String>| -> BTreeSet<u64> {
            names.iter().map(|n| raft_id(n)).collect()
        };
        let voter_ids = ids(&voters);
        ctx.spawn(
            async move {
                let Some(change) = change else {
                    // A change left half done (its leader died): finish it.
                    raft.change_membership(voter_ids, false)
                        .await
                        .map_err(|e| format!("finishing a change: {e}"))?;
                    return Ok(None);
                };
                if !change.drop_learners.is_empty() {
                    let stale = ids(&change.drop_learners);
                    raft.change_membership(openraft::ChangeMembers::RemoveNodes(stale), false)
                        .await
                        .map_err(|e| format!("removing learners: {e}"))?;
                }
                let mut next = voter_ids;
                if let Some(add) = &change.add {
                    let learner = raft.add_learner(raft_id(add), BasicNode::new(add), true);
                    match tokio::time::timeout(CATCH_UP, learner).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(format!("adding {add}: {e}")),
                        Err(_) => return Err(format!("{add} did not catch up within {CATCH_UP:?}")),
                    }
                    next.insert(raft_id(add));
                }
                if let Some(remove) = &change.remove {
                    next.remove(&raft_id(remove));
                }
                if change.add.is_some() || change.remove.is_some() {
                    raft.change_membership(next, false)
                        .await
                        .map_err(|e| format!("changing voters: {e}"))?;
                }
                Ok(Some(change))
            }
            .into_actor(self)
            .map(move |outcome: Result<Option<placement::Change>, String>, act, _| {
                act.changing = false;
                match outcome {
                    Ok(Some(c)) => tracing::info!(shard, add = ?c.add, remove = ?c.remove, dropped = ?c.drop_learners, "shard group changed"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(shard, error = %e, "shard group change failed; retrying"),
                }
            }),
        );
    }

    /// Whether this node is in its shard's group (a voter or a learner). A replica that was
    /// never part of it, or was removed, stops serving watches: what it has applied no longer
    /// moves, and its watchers must resume elsewhere.
    fn in_group(&self) -> bool {
        let Some(raft) = self.raft.as_ref() else {
            return false;
        };
        let metrics = raft.0.metrics();
        let metrics = metrics.borrow();
        let m = metrics.membership_config.membership();
        m.get_node(&raft_id(&self.me)).is_some()
    }

    fn leader_only(&self) -> Result<(), ReplicaError> {
        if self.leading {
            return Ok(());
        }
        Err(ReplicaError::NotLeader(self.leader_node()))
    }

    /// The shard's leader as this replica knows it: its node name.
    fn leader_node(&self) -> Option<String> {
        let raft = self.raft();
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    fn raft(&self) -> Raft<ShardRaft> {
        self.raft
            .as_ref()
            .expect("the mailbox waits until Raft is up")
            .0
            .clone()
    }
}

impl Actor for ShardReplica {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (log, state) = match self.disk.shard(self.shard) {
            Ok(s) => s,
            Err(e) => panic!("shard {} storage: {e}", self.shard),
        };
        let network = Network {
            transport: self.transport.clone(),
            shard: self.shard,
        };
        self.state = Some(state.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        state.on_changes(tx);
        ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        ctx.run_interval(LEASE_TICK, |act, _| act.lease_tick());
        ctx.run_interval(PLACEMENT_TICK, |act, ctx| act.placement_tick(ctx));
        ctx.run_interval(COMPACTION_TICK, |act, ctx| act.compaction_tick(ctx));
        ctx.run_interval(PROGRESS_EVERY, |act, _| {
            let Some(state) = act.state.clone() else {
                return;
            };
            if !act.watchers.is_empty() && !act.in_group() {
                // Removed from the group: its watchers go and watch elsewhere.
                for id in std::mem::take(&mut act.watchers).into_keys() {
                    act.hub.cancel(id);
                }
                return;
            }
            let updates = state.read(|sm| act.hub.progress(sm));
            for (id, update) in updates {
                act.send(id, vec![update]);
            }
        });
        let id = raft_id(&self.me);
        let config = self.timings.config(self.shard);
        // Nothing else is handled until the Raft member is up.
        ctx.wait(
            async move { Raft::new(id, config, network, log, state).await }
                .into_actor(self)
                .map(|raft, act, _| match raft {
                    Ok(raft) => act.raft = Some(RaftGuard(raft)),
                    Err(e) => panic!("shard {} raft: {e}", act.shard),
                }),
        );
    }
}

impl StreamHandler<(Revision, Vec<Event>)> for ShardReplica {
    fn handle(&mut self, (revision, events): (Revision, Vec<Event>), _: &mut Context<Self>) {
        for (id, update) in self.hub.applied(revision, &events) {
            self.send(id, vec![update]);
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<WatchStart> for ShardReplica {
    type Result = Result<(WatchId, Revision), StoreError>;
    fn handle(&mut self, m: WatchStart, _: &mut Context<Self>) -> Self::Result {
        let state = self.state.clone().expect("set with Raft");
        let start = match m.start {
            0 => state.read(|sm| sm.revision()) + 1,
            s => s,
        };
        let (id, backlog) = state.read(|sm| self.hub.watch(sm, &m.prefix, start))?;
        let target = self.transport.actor(&m.node, &m.name);
        self.watchers.insert(id, Watcher { target, seq: 0 });
        // The history first, in one message (possibly empty: it tells the watcher it is on).
        self.send(id, backlog);
        Ok((id, start))
    }
}

impl Handler<KeepAlive> for ShardReplica {
    type Result = Result<u64, ReplicaError>;
    fn handle(&mut self, m: KeepAlive, _: &mut Context<Self>) -> Self::Result {
        self.leader_only()?;
        let now = std::time::Instant::now();
        if let Some(state) = &self.state {
            state.read(|sm| self.leases.sync_one(m.0, sm, now));
        }
        self.leases
            .keep_alive(m.0, now)
            .map(|ttl| ttl.as_millis() as u64)
            .ok_or(ReplicaError::LeaseNotFound(m.0))
    }
}

impl Handler<TimeToLive> for ShardReplica {
    type Result = Result<(u64, u64), ReplicaError>;
    fn handle(&mut self, m: TimeToLive, _: &mut Context<Self>) -> Self::Result {
        self.leader_only()?;
        let now = std::time::Instant::now();
        if let Some(state) = &self.state {
            state.read(|sm| self.leases.sync_one(m.0, sm, now));
        }
        self.leases
            .time_to_live(m.0, now)
            .map(|(left, ttl)| (left.as_millis() as u64, ttl.as_millis() as u64))
            .ok_or(ReplicaError::LeaseNotFound(m.0))
    }
}

impl Handler<WatchCancel> for ShardReplica {
    type Result = ();
    fn handle(&mut self, m: WatchCancel, _: &mut Context<Self>) {
        self.watchers.remove(&m.0);
        self.hub.cancel(m.0);
    }
}

impl Handler<AppendRpc> for ShardReplica {
    type Result = ResponseFuture<RpcResult<AppendEntriesResponse<u64>>>;
    fn handle(&mut self, m: AppendRpc, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft();
        Box::pin(async move { raft.append_entries(m.0).await })
    }
}

impl Handler<VoteRpc> for ShardReplica {
    type Result = ResponseFuture<RpcResult<VoteResponse<u64>>>;
    fn handle(&mut self, m: VoteRpc, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft();
        Box::pin(async move { raft.vote(m.0).await })
    }
}

impl Handler<SnapshotRpc> for ShardReplica {
    type Result = ResponseFuture<RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError>>;
    fn handle(&mut self, m: SnapshotRpc, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft();
        Box::pin(async move { raft.install_snapshot(m.0).await })
    }
}

impl Handler<Write> for ShardReplica {
    type Result = ResponseFuture<Result<Applied, ReplicaError>>;
    fn handle(&mut self, m: Write, ctx: &mut Context<Self>) -> Self::Result {
        // Over a limit: refused before it reaches the log.
        if let Err(e) = self.limits.check(&m.0) {
            let e = ReplicaError::Refused(e.to_string());
            return Box::pin(std::future::ready(Err(e)));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.proposals.push_back((m.0, tx));
        self.propose(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(ReplicaError::Raft("the replica stopped".into())))
        })
    }
}

impl Handler<Read> for ShardReplica {
    type Result = ResponseFuture<Result<RangeResponse, ReplicaError>>;
    fn handle(&mut self, m: Read, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft();
        let state = self.state.clone().expect("set with Raft");
        Box::pin(async move {
            if m.linearizable {
                match raft.ensure_linearizable().await {
                    Ok(_) => {}
                    Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                        return Err(not_leader(&f))
                    }
                    Err(e) => return Err(ReplicaError::Raft(e.to_string())),
                }
            }
            Ok(state.read(|sm| sm.range(&m.range)))
        })
    }
}

impl Handler<Initialize> for ShardReplica {
    type Result = ResponseFuture<Result<(), ReplicaError>>;
    fn handle(&mut self, m: Initialize, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft();
        let members: BTreeMap<u64, BasicNode> =
            m.0.iter()
                .map(|n| (raft_id(n), BasicNode::new(n)))
                .collect();
        Box::pin(async move {
            match raft.initialize(members).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
                Err(e) => Err(ReplicaError::Raft(e.to_string())),
            }
        })
    }
}

impl Handler<Group> for ShardReplica {
    type Result = MessageResult<Group>;
    fn handle(&mut self, _: Group, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.group())
    }
}

impl Handler<Leader> for ShardReplica {
    type Result = Option<String>;
    fn handle(&mut self, _: Leader, _: &mut Context<Self>) -> Option<String> {
        self.leader_node()
    }
}
