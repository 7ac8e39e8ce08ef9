//! The cluster view: every member the gossip reported, with what it says of itself (name,
//! addresses, roles, version, start time), learnt over the transport when it comes up. Exposed
//! to the network as `admin`, which is what `cadre members` asks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use cadre_cluster::discovery::{Digest, Directory, DirectoryEvent, NodeRecord, Service};
use cadre_cluster::members::{Change, Description, MemberTable};
use cadre_cluster::membership::MemberEvent;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::membership::Gossip;
use crate::{Node, RemoteMessage};

/// The name the view is exposed under.
pub const ADMIN: &str = "admin";

/// What a node says of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id.
    pub name: String,
    /// Its transport (TCP) address; gossip uses the same address over UDP.
    pub addr: SocketAddr,
    /// Its roles.
    pub roles: Vec<String>,
    /// The cadre version it runs.
    pub version: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
}

pub use cadre_cluster::members::{MemberRow, MemberState};

/// Asks a node to describe itself.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "NodeInfo")]
pub struct Describe;
impl RemoteMessage for Describe {
    const TAG: &'static str = "admin.describe";
}

/// Asks a node for its view of the members (itself included).
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Vec<MemberRow>")]
pub struct ListMembers;
impl RemoteMessage for ListMembers {
    const TAG: &'static str = "admin.members";
}

/// A node announces it is leaving.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Leaving {
    /// The address of the node that leaves.
    pub addr: SocketAddr,
}
impl RemoteMessage for Leaving {
    const TAG: &'static str = "admin.leaving";
}

/// What happens in the cluster, as a typed message for any local actor
/// ([`ClusterNode::subscribe_actor`](super::ClusterNode::subscribe_actor)).
#[derive(Clone, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum ClusterEvent {
    /// A member is up (joined and described itself, or refuted a suspicion).
    MemberUp {
        /// Its id.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// Its roles.
        roles: Vec<String>,
    },
    /// A member is suspected.
    MemberSuspect {
        /// Its id.
        name: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// A member was declared down by the failure detector.
    MemberDown {
        /// Its id.
        name: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// A member left gracefully.
    MemberLeft {
        /// Its id.
        name: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// A service appeared on a node.
    ServiceAdded {
        /// The node.
        node: String,
        /// The service.
        service: Service,
    },
    /// A service went away from a node.
    ServiceRemoved {
        /// The node.
        node: String,
        /// The service.
        service: Service,
    },
}

/// Opens an anti-entropy exchange: the asker's digest; the answer is what the asker lacks and
/// the answerer's digest.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "ExchangeReply")]
pub struct Exchange(pub Digest);
impl RemoteMessage for Exchange {
    const TAG: &'static str = "admin.exchange";
}

/// The answer to an [`Exchange`].
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct ExchangeReply {
    /// Records newer than the asker's.
    pub records: Vec<NodeRecord>,
    /// The answerer's digest.
    pub digest: Digest,
}

/// Records pushed by a peer (the end of an exchange, or a node's own change).
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct PushRecords(pub Vec<NodeRecord>);
impl RemoteMessage for PushRecords {
    const TAG: &'static str = "admin.push";
}

/// A published event delivered to a node with subscribers for its topic.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Deliver {
    /// The topic.
    pub topic: String,
    /// The event, MessagePack-encoded.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}
impl RemoteMessage for Deliver {
    const TAG: &'static str = "admin.deliver";
}

/// Local subscription to a topic: a receiver of encoded events.
#[derive(Message)]
#[rtype(result = "broadcast::Receiver<std::sync::Arc<Vec<u8>>>")]
pub(crate) struct SubscribeTopic(pub(crate) String);

/// Learnt a member's description.
#[derive(Message)]
#[rtype(result = "()")]
struct Described(SocketAddr, NodeInfo);

/// An exchange with a peer came back.
#[derive(Message)]
#[rtype(result = "()")]
struct Exchanged(String, ExchangeReply);

/// Offer a service from this node.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RegisterService(pub(crate) Service);

/// Serve an actor name cluster-wide from this node.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RegisterActor(pub(crate) String);

/// The endpoints of a service.
#[derive(Message)]
#[rtype(result = "Vec<(String, Service)>")]
pub(crate) struct Lookup(pub(crate) String);

/// The nodes serving an actor name.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub(crate) struct LookupActor(pub(crate) String);

/// Topic → the nodes with subscribers for it; written by the view, read by publishers.
pub type TopicIndex = std::sync::Arc<parking_lot::RwLock<BTreeMap<String, Vec<String>>>>;

/// What a node's view keeps across its own restarts: its own directory record and its local
/// topic subscribers. A restarted view resumes them, so the node's services stay discoverable
/// and its subscriptions keep receiving.
#[derive(Default)]
pub struct ViewKeep {
    mine: Option<NodeRecord>,
    topics: BTreeMap<String, broadcast::Sender<std::sync::Arc<Vec<u8>>>>,
}

/// A node's [`ViewKeep`], shared between the instances of its view.
pub type SharedViewKeep = std::sync::Arc<parking_lot::Mutex<ViewKeep>>;

/// The cluster view actor.
pub struct ClusterView {
    me: NodeInfo,
    node: Node,
    gossip: Gossip,
    members: MemberTable,
    directory: Directory,
    changes: broadcast::Sender<DirectoryEvent>,
    cluster_events: broadcast::Sender<ClusterEvent>,
    exchange_every: Duration,
    topic_index: TopicIndex,
    /// Local subscribers, by topic.
    topics: BTreeMap<String, broadcast::Sender<std::sync::Arc<Vec<u8>>>>,
    keep: SharedViewKeep,
}

/// Events buffered per topic for a subscriber that falls behind (it then sees `Lagged`).
const TOPIC_BUFFER: usize = 4096;

impl ClusterView {
    /// A view for the node described by `me`, publishing directory changes on `changes` and
    /// running an anti-entropy exchange with a random member every `exchange_every`; it resumes
    /// what `keep` holds from an earlier instance.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: NodeInfo,
        node: Node,
        gossip: Gossip,
        changes: broadcast::Sender<DirectoryEvent>,
        cluster_events: broadcast::Sender<ClusterEvent>,
        topic_index: TopicIndex,
        exchange_every: Duration,
        keep: SharedViewKeep,
    ) -> Self {
        let (mine, topics) = {
            let k = keep.lock();
            (k.mine.clone(), k.topics.clone())
        };
        ClusterView {
            directory: Directory::resume(&me.name, me.started_ms, mine),
            keep,
            me,
            node,
            gossip,
            members: MemberTable::default(),
            changes,
            cluster_events,
            exchange_every,
            topic_index,
            topics,
        }
    }

    /// Saves what a restarted instance resumes.
    fn save(&self) {
        let mut k = self.keep.lock();
        k.mine = Some(self.directory.own_record());
        k.topics = self.topics.clone();
    }

    fn publish(&self, events: Vec<DirectoryEvent>) {
        for e in events {
            let typed = match &e {
                DirectoryEvent::ServiceAdded { node, service } => ClusterEvent::ServiceAdded {
                    node: node.clone(),
                    service: service.clone(),
                },
                DirectoryEvent::ServiceRemoved { node, service } => ClusterEvent::ServiceRemoved {
                    node: node.clone(),
                    service: service.clone(),
                },
            };
            let _ = self.cluster_events.send(typed);
            let _ = self.changes.send(e);
        }
    }

    /// Starts an exchange with the member called `peer` (over the transport).
    fn exchange_with(&self, peer: String, ctx: &mut Context<Self>) {
        let (node, me, digest) = (self.node.clone(), ctx.address(), self.directory.digest());
        actix::spawn(async move {
            match node
                .actor(&peer, ADMIN)
                .ask(Exchange(digest), Duration::from_secs(5))
                .await
            {
                Ok(reply) => me.do_send(Exchanged(peer, reply)),
                Err(e) => tracing::debug!(%peer, reason = %e, "anti-entropy exchange failed"),
            }
        });
    }

    /// Pushes this node's own record to every member (after a local change), and saves it for
    /// a restarted instance.
    fn push_mine(&self) {
        self.save();
        let mine = vec![self.directory.own_record()];
        for name in self.members.up() {
            let _ = self
                .node
                .actor(&name, ADMIN)
                .tell(PushRecords(mine.clone()));
        }
    }

    fn on_event(&mut self, event: MemberEvent, ctx: &mut Context<Self>) {
        for change in self.members.gossip(&event) {
            self.apply(change, ctx);
        }
    }

    /// Refreshes the shared topic index after the directory changed, so that publishing reads
    /// it without a call into this actor.
    fn index_topics(&self) {
        *self.topic_index.write() = self.directory.topic_index();
    }

    /// Stops dialing a member that is gone (a restart comes back through the gossip).
    fn disconnect(&self, addr: SocketAddr) {
        let node = self.node.clone();
        actix::spawn(async move { node.disconnect(addr, Duration::from_secs(2)).await });
    }

    /// When the member at `addr` started (its directory incarnation), if it described itself.
    fn started_ms(&self, addr: SocketAddr) -> Option<u64> {
        self.members
            .rows()
            .find(|r| r.addr == addr)
            .and_then(|r| r.started_ms)
    }

    /// Carries out what the member table decided.
    fn apply(&mut self, change: Change, ctx: &mut Context<Self>) {
        let event = match change {
            Change::Describe(addr) => {
                // Learn what it says of itself, over the transport.
                let (node, me) = (self.node.clone(), ctx.address());
                actix::spawn(async move {
                    let peer = match node.connect(addr, Duration::from_secs(5)).await {
                        Ok(peer) => peer,
                        Err(e) => {
                            tracing::warn!(member = %addr, reason = %e, "cannot reach a new member");
                            return;
                        }
                    };
                    match node
                        .actor(&peer, ADMIN)
                        .ask(Describe, Duration::from_secs(5))
                        .await
                    {
                        Ok(info) => me.do_send(Described(addr, info)),
                        Err(e) => {
                            tracing::warn!(member = %addr, reason = %e, "a new member did not describe itself")
                        }
                    }
                });
                return;
            }
            Change::Up { name, addr, roles } => {
                self.directory.node_up(&name);
                ClusterEvent::MemberUp { name, addr, roles }
            }
            Change::Suspect { name, addr } => ClusterEvent::MemberSuspect { name, addr },
            Change::Down { name, addr } => {
                self.disconnect(addr);
                let events = self.directory.node_down(&name, self.started_ms(addr));
                self.index_topics();
                let _ = self
                    .cluster_events
                    .send(ClusterEvent::MemberDown { name, addr });
                self.publish(events);
                return;
            }
            Change::Left { name, addr } => {
                self.disconnect(addr);
                let events = self.directory.node_down(&name, self.started_ms(addr));
                self.index_topics();
                let _ = self
                    .cluster_events
                    .send(ClusterEvent::MemberLeft { name, addr });
                self.publish(events);
                return;
            }
        };
        let _ = self.cluster_events.send(event);
    }
}

impl Actor for ClusterView {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Anti-entropy with a random member that is up, periodically.
        ctx.run_interval(self.exchange_every, |act, ctx| {
            let up = act.members.up();
            if !up.is_empty() {
                let peer = up[fastrand::usize(..up.len())].clone();
                act.exchange_with(peer, ctx);
            }
        });
        let mut events = self.gossip.subscribe();
        let me = ctx.address();
        let gossip = self.gossip.clone();
        // A restarted view: publish the topics it kept, and learn the members already up (they
        // send no new event) before following the gossip's events.
        self.index_topics();
        ctx.spawn(
            async move {
                for member in gossip.members().await {
                    me.do_send(Event(MemberEvent::Up(member)));
                }
                loop {
                    match events.recv().await {
                        Ok(e) => me.do_send(Event(e)),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "cluster view fell behind the gossip");
                        }
                        Err(_) => break,
                    }
                }
            }
            .into_actor(self),
        );
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Event(MemberEvent);

impl Handler<Event> for ClusterView {
    type Result = ();
    fn handle(&mut self, m: Event, ctx: &mut Context<Self>) {
        self.on_event(m.0, ctx);
    }
}

impl Handler<Described> for ClusterView {
    type Result = ();
    fn handle(&mut self, m: Described, ctx: &mut Context<Self>) {
        let Described(addr, info) = m;
        let name = info.name.clone();
        let description = Description {
            name: info.name,
            roles: info.roles,
            version: info.version,
            started_ms: info.started_ms,
        };
        for change in self.members.described(addr, description) {
            self.apply(change, ctx);
        }
        // A full exchange with each new member.
        self.exchange_with(name, ctx);
    }
}

impl Handler<Exchange> for ClusterView {
    type Result = MessageResult<Exchange>;
    fn handle(&mut self, m: Exchange, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ExchangeReply {
            records: self.directory.newer_than(&m.0),
            digest: self.directory.digest(),
        })
    }
}

impl Handler<Exchanged> for ClusterView {
    type Result = ();
    fn handle(&mut self, m: Exchanged, _: &mut Context<Self>) {
        let Exchanged(peer, reply) = m;
        let events = self.directory.merge(reply.records);
        self.index_topics();
        self.publish(events);
        let theirs = self.directory.newer_than(&reply.digest);
        if !theirs.is_empty() {
            let _ = self.node.actor(&peer, ADMIN).tell(PushRecords(theirs));
        }
    }
}

impl Handler<PushRecords> for ClusterView {
    type Result = ();
    fn handle(&mut self, m: PushRecords, _: &mut Context<Self>) {
        let events = self.directory.merge(m.0);
        self.index_topics();
        self.publish(events);
    }
}

impl Handler<RegisterService> for ClusterView {
    type Result = ();
    fn handle(&mut self, m: RegisterService, _: &mut Context<Self>) {
        let events = self.directory.register(m.0);
        self.publish(events);
        self.push_mine();
    }
}

impl Handler<RegisterActor> for ClusterView {
    type Result = ();
    fn handle(&mut self, m: RegisterActor, _: &mut Context<Self>) {
        self.directory.register_actor(&m.0);
        self.push_mine();
    }
}

impl Handler<Lookup> for ClusterView {
    type Result = MessageResult<Lookup>;
    fn handle(&mut self, m: Lookup, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.directory.lookup(&m.0))
    }
}

impl Handler<SubscribeTopic> for ClusterView {
    type Result = MessageResult<SubscribeTopic>;
    fn handle(&mut self, m: SubscribeTopic, ctx: &mut Context<Self>) -> Self::Result {
        let sender = self
            .topics
            .entry(m.0.clone())
            .or_insert_with(|| broadcast::channel(TOPIC_BUFFER).0);
        let rx = sender.subscribe();
        self.directory.set_topic(&m.0, true);
        self.index_topics();
        self.push_mine();
        // Forget topics whose subscribers all went away, now and then.
        ctx.run_later(Duration::from_secs(1), |act, _| act.prune_topics());
        MessageResult(rx)
    }
}

impl ClusterView {
    fn prune_topics(&mut self) {
        let dead: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, s)| s.receiver_count() == 0)
            .map(|(t, _)| t.clone())
            .collect();
        for topic in dead {
            self.topics.remove(&topic);
            self.directory.set_topic(&topic, false);
            self.index_topics();
            self.push_mine();
        }
    }
}

impl Handler<Deliver> for ClusterView {
    type Result = ();
    fn handle(&mut self, m: Deliver, _: &mut Context<Self>) {
        if let Some(sender) = self.topics.get(&m.topic) {
            let _ = sender.send(std::sync::Arc::new(m.payload));
        }
    }
}

impl Handler<LookupActor> for ClusterView {
    type Result = MessageResult<LookupActor>;
    fn handle(&mut self, m: LookupActor, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.directory.lookup_actor(&m.0))
    }
}

/// This node's own services, as in its directory record.
#[derive(Message)]
#[rtype(result = "Vec<Service>")]
pub struct LocalServices;

impl Handler<LocalServices> for ClusterView {
    type Result = MessageResult<LocalServices>;
    fn handle(&mut self, _: LocalServices, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.directory.own_record().services)
    }
}

impl Handler<Describe> for ClusterView {
    type Result = MessageResult<Describe>;
    fn handle(&mut self, _: Describe, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.me.clone())
    }
}

impl Handler<ListMembers> for ClusterView {
    type Result = MessageResult<ListMembers>;
    fn handle(&mut self, _: ListMembers, _: &mut Context<Self>) -> Self::Result {
        let mut rows = vec![MemberRow {
            id: self.me.name.clone(),
            addr: self.me.addr,
            roles: self.me.roles.clone(),
            version: Some(self.me.version.clone()),
            started_ms: Some(self.me.started_ms),
            state: MemberState::Up,
        }];
        rows.extend(self.members.rows().cloned());
        MessageResult(rows)
    }
}

impl Handler<Leaving> for ClusterView {
    type Result = ();
    fn handle(&mut self, m: Leaving, _: &mut Context<Self>) {
        self.members.leaving(m.addr);
    }
}
