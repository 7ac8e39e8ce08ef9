//! A shard replica: an actor owning one openraft group member, exposed as `store.<shard>` so
//! that its peers' Raft RPCs and clients' requests reach it over cadre's transport.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cadre_cluster::store::placement;
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

type RpcResult<T, E = openraft::error::Infallible> =
    Result<Result<T, RaftError<u64, E>>, NotMember>;

/// A Raft RPC reached a replica that is not the member it was meant for: the node under that
/// name is now the member with id `id` (it came back with a new store file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("this node's replica is Raft member {id}, not the one addressed")]
pub(crate) struct NotMember {
    id: u64,
}

/// Raft's append-entries (and heartbeat) RPC, to the member with the given id.
#[derive(Serialize, Deserialize)]
pub(crate) struct AppendRpc(u64, AppendEntriesRequest<ShardRaft>);
impl Message for AppendRpc {
    type Result = RpcResult<AppendEntriesResponse<u64>>;
}
impl RemoteMessage for AppendRpc {
    const TAG: &'static str = "store.raft.append";
}

/// Raft's vote RPC.
#[derive(Serialize, Deserialize)]
pub(crate) struct VoteRpc(u64, VoteRequest<u64>);
impl Message for VoteRpc {
    type Result = RpcResult<VoteResponse<u64>>;
}
impl RemoteMessage for VoteRpc {
    const TAG: &'static str = "store.raft.vote";
}

/// Raft's install-snapshot RPC (one chunk).
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotRpc(u64, InstallSnapshotRequest<ShardRaft>);
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
    /// This replica is not a voter of the shard's group (outside it, or a learner still
    /// catching up), so it serves no read; the leader, if known (a node name).
    #[error("not a voter of the shard's group (the leader is {0:?})")]
    NotVoter(Option<String>),
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
/// replica's state, maybe stale; only a voter of the shard's group serves it).
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

/// Initialize the shard's group with these members (node names; each member's Raft id is asked
/// of its replica); refused quietly when the group already exists, here or at another member.
#[derive(Serialize, Deserialize, Debug)]
pub struct Initialize(pub Vec<String>);
impl Message for Initialize {
    type Result = Result<(), ReplicaError>;
}
impl RemoteMessage for Initialize {
    const TAG: &'static str = "store.initialize";
}

/// Who this replica is: its Raft id, and whether it belongs to a formed group.
#[derive(Serialize, Deserialize, Debug)]
pub struct Identify;
impl Message for Identify {
    type Result = Identity;
}
impl RemoteMessage for Identify {
    const TAG: &'static str = "store.identify";
}

/// A replica's answer to [`Identify`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Its Raft id ([`placement::member_id`]).
    pub id: u64,
    /// Whether it knows of a formed group (one with voters).
    pub formed: bool,
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
    /// The voters' Raft ids ([`placement::member_id`]), in the order of `voters`.
    pub voter_ids: Vec<u64>,
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

/// How long a replica waits for a peer's replica to say who it is.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(2);

struct Watcher {
    target: RemoteRef,
    seq: u64,
}

fn not_leader(f: &openraft::error::ForwardToLeader<u64, BasicNode>) -> ReplicaError {
    ReplicaError::NotLeader(f.leader_node.as_ref().map(|n| n.addr.clone()))
}

/// The Raft ids that replicas reported being when an RPC reached them meant for another
/// member under the same node name: by name.
pub(crate) type Incarnations = Arc<parking_lot::Mutex<HashMap<String, u64>>>;

/// Raft's client side of the network: RPCs to a peer's replica of the same shard.
#[derive(Clone)]
pub(crate) struct Network {
    transport: Node,
    shard: u16,
    incarnations: Incarnations,
}

pub(crate) struct Peer {
    target: u64,
    name: String,
    remote: RemoteRef,
    incarnations: Incarnations,
}

impl RaftNetworkFactory<ShardRaft> for Network {
    type Network = Peer;
    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            target,
            name: node.addr.clone(),
            remote: self.transport.actor(&node.addr, &replica_name(self.shard)),
            incarnations: self.incarnations.clone(),
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
        M: RemoteMessage<Result = RpcResult<T, E>>,
        T: Serialize + serde::de::DeserializeOwned + Send + 'static,
        E: std::error::Error + Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        match self.remote.ask(msg, option.hard_ttl()).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(Err(not_member)) => {
                // The node came back as another member: the one addressed is gone for good
                // (the leader's placement replaces it). It is unreachable, never answered for.
                self.incarnations
                    .lock()
                    .insert(self.name.clone(), not_member.id);
                Err(RPCError::Unreachable(Unreachable::new(&not_member)))
            }
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
        self.call(AppendRpc(self.target, rpc), &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(SnapshotRpc(self.target, rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(VoteRpc(self.target, rpc), &option).await
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
    /// This replica's Raft id ([`placement::member_id`] of its node's name and store file,
    /// [`Disk::store_id`]; the name travels as the member's address in Raft's membership).
    id: u64,
    /// What replicas said they are when reached as someone else ([`NotMember`]).
    incarnations: Incarnations,
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
        let me = transport.id().to_string();
        ShardReplica {
            shard,
            id: placement::member_id(&me, disk.store_id()),
            me,
            incarnations: Incarnations::default(),
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
        let leading = raft.metrics().borrow().current_leader == Some(self.id);
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
        let voters: Vec<(u64, String)> = membership
            .voter_ids()
            .filter_map(|id| name(id).map(|n| (id, n)))
            .collect();
        GroupInfo {
            leader: metrics.current_leader.and_then(name),
            voter_ids: voters.iter().map(|(id, _)| *id).collect(),
            voters: voters.into_iter().map(|(_, n)| n).collect(),
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
        // The members by node name (a name is a member's address in the group).
        let members = self.membership(|m| {
            let by_name = |ids: Vec<u64>| -> BTreeMap<String, u64> {
                ids.iter()
                    .filter_map(|id| m.get_node(id).map(|n| (n.addr.clone(), *id)))
                    .collect()
            };
            (
                by_name(m.voter_ids().collect()),
                by_name(m.learner_ids().collect()),
                m.get_joint_config().len() > 1,
            )
        });
        let (Some(p), Some((voters, learners, joint))) = (self.placement.as_ref(), members) else {
            return;
        };
        let raft = self.raft();
        if voters.is_empty() {
            return; // not formed yet
        }
        let voter_ids: BTreeSet<u64> = voters.values().copied().collect();
        let shard = self.shard;
        if !joint {
            let renewal = placement::renewal(&voters, &learners, &self.incarnations.lock());
            if let Some(renewed) = renewal {
                self.changing = true;
                ctx.spawn(
                    replace_member(raft, voter_ids, renewed.clone())
                        .into_actor(self)
                        .map(move |outcome, act, _| {
                            act.changing = false;
                            match outcome {
                                Ok(()) => tracing::info!(shard, node = %renewed.name, old = renewed.old, new = renewed.new, "a store node came back with a new store file: its old member was replaced by the new one"),
                                Err(e) => tracing::warn!(shard, node = %renewed.name, error = %e, "replacing a renewed member failed; retrying"),
                            }
                        }),
                );
                return;
            }
        }
        let names = |m: &BTreeMap<String, u64>| -> BTreeSet<String> { m.keys().cloned().collect() };
        let nodes = p.nodes.borrow().at(std::time::Instant::now());
        let change = placement::next_change(
            self.shard,
            &names(&voters),
            &names(&learners),
            &nodes,
            p.dead_after,
        );
        if change.is_none() && !joint {
            return;
        }
        self.changing = true;
        let transport = self.transport.clone();
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
                    let stale: BTreeSet<u64> = change
                        .drop_learners
                        .iter()
                        .filter_map(|n| learners.get(n).copied())
                        .collect();
                    raft.change_membership(openraft::ChangeMembers::RemoveNodes(stale), false)
                        .await
                        .map_err(|e| format!("removing learners: {e}"))?;
                }
                let mut next = voter_ids;
                if let Some(add) = &change.add {
                    let id = identify(&transport, add, shard).await?.id;
                    add_caught_up(&raft, id, add).await?;
                    next.insert(id);
                }
                if let Some(remove) = change.remove.as_ref().and_then(|n| voters.get(n)) {
                    next.remove(remove);
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

    /// `f` of the group's membership as this replica knows it (`None` before Raft is up).
    fn membership<T>(
        &self,
        f: impl FnOnce(&openraft::Membership<u64, BasicNode>) -> T,
    ) -> Option<T> {
        let raft = self.raft.as_ref()?;
        let metrics = raft.0.metrics();
        let metrics = metrics.borrow();
        Some(f(metrics.membership_config.membership()))
    }

    /// Whether this node is in its shard's group (a voter or a learner). A replica that was
    /// never part of it, or was removed, stops serving watches: what it has applied no longer
    /// moves, and its watchers must resume elsewhere.
    fn in_group(&self) -> bool {
        self.membership(|m| m.get_node(&self.id).is_some())
            .unwrap_or(false)
    }

    /// Whether a Raft RPC meant for member `target` is for this replica: one meant for the
    /// member this node was before it lost its store file is refused, so that no one counts
    /// on this replica for what that member had acknowledged.
    fn addressed(&self, target: u64) -> Result<(), NotMember> {
        if target == self.id {
            return Ok(());
        }
        tracing::debug!(
            shard = self.shard,
            target,
            me = self.id,
            "refused a Raft RPC meant for another member"
        );
        Err(NotMember { id: self.id })
    }

    /// Serves a Raft RPC meant for member `target` with `call`, if this replica is that member.
    fn serve_rpc<T, E, F>(
        &self,
        target: u64,
        call: impl FnOnce(Raft<ShardRaft>) -> F,
    ) -> ResponseFuture<RpcResult<T, E>>
    where
        F: Future<Output = Result<T, RaftError<u64, E>>> + 'static,
        T: 'static,
        E: 'static,
    {
        if let Err(e) = self.addressed(target) {
            return Box::pin(async move { Err(e) });
        }
        let reply = call(self.raft());
        Box::pin(async move { Ok(reply.await) })
    }

    /// Whether this replica is a voter of its shard's group.
    fn is_voter(&self) -> bool {
        self.membership(|m| m.voter_ids().any(|id| id == self.id))
            .unwrap_or(false)
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

/// Carries out a [`placement::Renewal`] (the old member's acknowledgements are not needed for
/// it: the rest of the group is a majority of both configurations, or the change waits).
async fn replace_member(
    raft: Raft<ShardRaft>,
    voters: BTreeSet<u64>,
    renewed: placement::Renewal,
) -> Result<(), String> {
    if !renewed.voter {
        let old = BTreeSet::from([renewed.old]);
        return raft
            .change_membership(openraft::ChangeMembers::RemoveNodes(old), false)
            .await
            .map(|_| ())
            .map_err(|e| format!("removing the old learner: {e}"));
    }
    add_caught_up(&raft, renewed.new, &renewed.name).await?;
    let mut next = voters;
    next.remove(&renewed.old);
    next.insert(renewed.new);
    raft.change_membership(next, false)
        .await
        .map(|_| ())
        .map_err(|e| format!("changing voters: {e}"))
}

/// Adds member `id` (on node `name`) as a learner and waits until it has caught up (at most
/// [`CATCH_UP`]).
async fn add_caught_up(raft: &Raft<ShardRaft>, id: u64, name: &str) -> Result<(), String> {
    let learner = raft.add_learner(id, BasicNode::new(name), true);
    match tokio::time::timeout(CATCH_UP, learner).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("adding {name}: {e}")),
        Err(_) => Err(format!("{name} did not catch up within {CATCH_UP:?}")),
    }
}

/// Asks the replica of `shard` on node `name` who it is.
async fn identify(transport: &Node, name: &str, shard: u16) -> Result<Identity, String> {
    transport
        .actor(name, &replica_name(shard))
        .ask(Identify, IDENTIFY_TIMEOUT)
        .await
        .map_err(|e| format!("asking {name}'s replica who it is: {e}"))
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
            incarnations: self.incarnations.clone(),
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
        let id = self.id;
        let config = self.timings.config(self.shard);
        // Nothing else is handled until the Raft member is up.
        ctx.wait(
            async move { Raft::new(id, config, network, log, state).await }
                .into_actor(self)
                .map(|raft, act, ctx| match raft {
                    Ok(raft) => {
                        // A fatal error stops Raft for good (a storage failure, a panic in its
                        // core): the replica fails with it, so that its supervisor restarts it
                        // (or escalates), instead of answering as a member that can do nothing.
                        let mut metrics = raft.metrics();
                        let fatal = async move {
                            loop {
                                if let Err(fatal) = &metrics.borrow().running_state {
                                    return Some(fatal.to_string());
                                }
                                if metrics.changed().await.is_err() {
                                    return None; // Raft's metrics are gone: it was shut down
                                }
                            }
                        };
                        ctx.spawn(fatal.into_actor(act).map(|fatal, act, _| {
                            if let Some(fatal) = fatal {
                                panic!("shard {} raft stopped: {fatal}", act.shard);
                            }
                        }));
                        act.raft = Some(RaftGuard(raft));
                    }
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
        self.serve_rpc(
            m.0,
            move |raft| async move { raft.append_entries(m.1).await },
        )
    }
}

impl Handler<VoteRpc> for ShardReplica {
    type Result = ResponseFuture<RpcResult<VoteResponse<u64>>>;
    fn handle(&mut self, m: VoteRpc, _: &mut Context<Self>) -> Self::Result {
        self.serve_rpc(m.0, move |raft| async move { raft.vote(m.1).await })
    }
}

impl Handler<SnapshotRpc> for ShardReplica {
    type Result = ResponseFuture<RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError>>;
    fn handle(&mut self, m: SnapshotRpc, _: &mut Context<Self>) -> Self::Result {
        self.serve_rpc(
            m.0,
            move |raft| async move { raft.install_snapshot(m.1).await },
        )
    }
}

impl Handler<Identify> for ShardReplica {
    type Result = MessageResult<Identify>;
    fn handle(&mut self, _: Identify, _: &mut Context<Self>) -> Self::Result {
        let formed = self
            .membership(|m| m.voter_ids().next().is_some())
            .expect("the mailbox waits until Raft is up");
        MessageResult(Identity {
            id: self.id,
            formed,
        })
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
        if !m.linearizable && !self.is_voter() {
            // Its state may never have held the shard's data (a node that joined, or came
            // back with a new store file) or has stopped following it (removed).
            let leader = self.leader_node();
            return Box::pin(async move { Err(ReplicaError::NotVoter(leader)) });
        }
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
        let (me, id, shard, transport) =
            (self.me.clone(), self.id, self.shard, self.transport.clone());
        Box::pin(async move {
            // Each member's Raft id comes from its own replica (its store file's id).
            let mut members = BTreeMap::new();
            for name in &m.0 {
                let member = if *name == me {
                    id
                } else {
                    let who = identify(&transport, name, shard)
                        .await
                        .map_err(ReplicaError::Raft)?;
                    if who.formed {
                        return Ok(()); // the group exists
                    }
                    who.id
                };
                members.insert(member, BasicNode::new(name));
            }
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
