//! [`ClusterNode`]: a whole node in one value: the transport, the gossip, and the cluster view
//! with its service directory, exposed as `admin`. `cadre node` runs one; tests start several
//! in one process.
//!
//! # Timers
//! The gossip's own timers are in [`Profile`]'s table. The node adds:
//!
//! | timer | `lan` | `local_test` |
//! |---|---|---|
//! | join retry until active (exponential, jittered) | 100 ms → 5 s | 100 ms → 5 s |
//! | anti-entropy exchange with a random member (plus one with each new member) | 30 s | 500 ms |
//! | connection handshake limit | 5 s | 5 s |
//! | redial of a lost connection (exponential, jittered) | 50 ms → 5 s | 50 ms → 5 s |
//! | forgetting a topic without local subscribers | 1 s after a subscription | same |

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::Actor;
use cadre_cluster::agent::RunState;
use cadre_cluster::discovery::{DirectoryEvent, Service};
use cadre_cluster::membership::Profile;
use cadre_cluster::store::LeaseId;
use cadre_cluster::wire::Secret;
use cadre_runtime::{ActorRef, ChildSpec, Restart, Runtime, SupervisorRef, SupervisorSpec};
use tokio::sync::broadcast;

use super::config::NodeConfig;
use super::duty::Duty;
use super::view::{
    ClusterEvent, ClusterView, Deliver, Describe, Exchange, Leaving, ListMembers, LocalServices,
    Lookup, LookupActor, MemberRow, NodeInfo, PushRecords, RegisterActor, RegisterService,
    SharedViewKeep, SubscribeTopic, TopicIndex, ADMIN,
};
use crate::agent::{Agent, AgentConfig, AgentDeps, Farewell, GetState, FAREWELL};
use crate::membership::{Gossip, GossipConfig, GossipError};
use crate::remote::{Exposure, RemoteRef};
use crate::store::gateway::{
    bootstrap, track_store_nodes, KvCompact, KvKeepAlive, KvRead, KvTimeToLive, KvWatch, KvWrite,
    StoreGateway, STORE,
};
use crate::store::replica::{Placement, RaftTimings, StoreView};
use crate::store::{Kv, StoreNode, StoreStartError};
use crate::tasks::messages::{CancelTasks, RunBatch, TASKS_ACTOR};
use crate::tasks::{TaskRegistry, TaskWorkers, WorkerConfig, TASKS_SERVICE};
use crate::transport::{Node, TransportError};

/// How long local calls into the node's own actors may take.
const LOCAL: Duration = Duration::from_secs(5);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterNodeError {
    /// The transport did not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The gossip did not start.
    #[error(transparent)]
    Gossip(#[from] GossipError),
    /// The store did not start.
    #[error(transparent)]
    Store(#[from] StoreStartError),
    /// The node's own tree did not start.
    #[error("the node did not start: {0}")]
    Start(cadre_runtime::ExitReason),
}

fn start_failed(e: cadre_runtime::SupervisorError) -> ClusterNodeError {
    ClusterNodeError::Start(cadre_runtime::ExitReason::error(e.to_string()))
}

/// A subscription to a topic ([`ClusterNode::subscribe`]).
pub struct Subscription<E> {
    rx: broadcast::Receiver<std::sync::Arc<Vec<u8>>>,
    _e: std::marker::PhantomData<fn() -> E>,
}

/// Why a subscription yielded no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The subscriber fell behind and missed this many events.
    #[error("missed {0} events")]
    Lagged(u64),
    /// The event did not decode as the subscribed type.
    #[error("undecodable event: {0}")]
    Decode(String),
    /// The node stopped.
    #[error("the node stopped")]
    Closed,
}

impl<E: serde::de::DeserializeOwned> Subscription<E> {
    /// The next event.
    ///
    /// # Errors
    /// [`SubscriptionError`]: missed events are reported, never skipped silently.
    pub async fn recv(&mut self) -> Result<E, SubscriptionError> {
        match self.rx.recv().await {
            Ok(bytes) => {
                cadre_cluster::wire::decode_body(&bytes).map_err(SubscriptionError::Decode)
            }
            Err(broadcast::error::RecvError::Lagged(n)) => Err(SubscriptionError::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => Err(SubscriptionError::Closed),
        }
    }
}

/// Changes of one service ([`ClusterNode::watch_service`]).
pub struct ServiceWatch {
    name: String,
    rx: broadcast::Receiver<DirectoryEvent>,
}

impl ServiceWatch {
    /// The next change of the watched service.
    ///
    /// # Errors
    /// [`SubscriptionError::Lagged`] when changes were missed (look the service up again),
    /// [`SubscriptionError::Closed`] when the node stopped.
    pub async fn recv(&mut self) -> Result<DirectoryEvent, SubscriptionError> {
        loop {
            let event = match self.rx.recv().await {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Err(SubscriptionError::Lagged(n))
                }
                Err(broadcast::error::RecvError::Closed) => return Err(SubscriptionError::Closed),
            };
            let name = match &event {
                DirectoryEvent::ServiceAdded { service, .. }
                | DirectoryEvent::ServiceRemoved { service, .. } => &service.name,
            };
            if *name == self.name {
                return Ok(event);
            }
        }
    }
}

/// A running node.
#[derive(Clone)]
pub struct ClusterNode {
    name: String,
    store: Option<StoreNode>,
    node: Node,
    gossip: Gossip,
    view: ActorRef<ClusterView>,
    app: SupervisorRef,
    changes: broadcast::Sender<DirectoryEvent>,
    cluster_events: broadcast::Sender<ClusterEvent>,
    topic_index: TopicIndex,
    started_ms: u64,
    workers: Option<TaskWorkers>,
    agent: Arc<OnceLock<ActorRef<Agent>>>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("name", &self.name)
            .field("addr", &self.node.local_addr())
            .finish()
    }
}

impl ClusterNode {
    /// Starts a node: the transport on `config.listen`, the gossip on the same address over UDP
    /// (joining `config.seeds`), the cluster view, the store's replicas on a `store` node, and
    /// the node's agent. [`NodeBuilder`](super::NodeBuilder) adds task workers, chain handlers,
    /// the user's own actors and a log control.
    ///
    /// # Errors
    /// [`ClusterNodeError`].
    pub async fn start(
        config: &NodeConfig,
        secret: Secret,
        runtime: &Runtime,
    ) -> Result<ClusterNode, ClusterNodeError> {
        super::NodeBuilder::new(config.clone(), secret)
            .start(runtime)
            .await
    }

    /// Starts a node that also runs tasks (it gets the role `worker`): as
    /// [`ClusterNode::start`], with a `workers` supervisor under the node's root (a pool of task workers and the node's task actor),
    /// running the kinds of `registry`, offered to masters as the service
    /// [`TASKS_SERVICE`](crate::tasks::TASKS_SERVICE).
    ///
    /// # Errors
    /// [`ClusterNodeError`].
    pub async fn start_with_workers(
        config: &NodeConfig,
        secret: Secret,
        runtime: &Runtime,
        registry: TaskRegistry,
        workers: WorkerConfig,
    ) -> Result<(ClusterNode, TaskWorkers), ClusterNodeError> {
        let node = super::NodeBuilder::new(config.clone(), secret)
            .workers(registry, workers)
            .start(runtime)
            .await?;
        let workers = node.workers.clone().expect("started with workers");
        Ok((node, workers))
    }

    pub(super) async fn start_inner(
        config: &NodeConfig,
        secret: Secret,
        runtime: &Runtime,
        parts: super::builder::Parts,
    ) -> Result<ClusterNode, ClusterNodeError> {
        let super::builder::Parts {
            workers: tasks,
            handlers,
            log,
            app: app_children,
        } = parts;
        let name = config.node_name(config.listen);
        let (node, transport) = Node::prepare(config.transport(&name, secret.clone()))?;
        let addr = node.local_addr();
        let (gossip, membership) = Gossip::prepare(GossipConfig {
            listen: addr,
            seeds: config.seeds.clone(),
            profile: config.profile,
            cluster_size: 16,
            secret,
        })?;
        let cluster_roles = {
            // A node running task workers has the role `worker`, whatever it was given.
            let mut roles = config.roles.clone();
            if tasks.is_some() && !roles.iter().any(|r| r == "worker") {
                roles.push("worker".into());
            }
            roles
        };
        let me = NodeInfo {
            name: name.clone(),
            addr,
            roles: cluster_roles.clone(),
            version: crate::VERSION.into(),
            started_ms: crate::agent::now_ms(),
        };
        let started_ms = me.started_ms;
        let exchange_every = match config.profile {
            Profile::Lan => Duration::from_secs(30),
            Profile::LocalTest => Duration::from_millis(500),
        };
        let (changes, _) = broadcast::channel(1024);
        let (cluster_events, _) = broadcast::channel(1024);
        let topic_index = TopicIndex::default();
        let (n, g, c, e, t) = (
            node.clone(),
            gossip.clone(),
            changes.clone(),
            cluster_events.clone(),
            topic_index.clone(),
        );
        let keep = SharedViewKeep::default();
        let spec = ChildSpec::new("view", move || {
            ClusterView::new(
                me.clone(),
                n.clone(),
                g.clone(),
                c.clone(),
                e.clone(),
                t.clone(),
                exchange_every,
                keep.clone(),
            )
        });
        let view = spec.actor_ref();
        // One root for the whole node, as in the design's supervision tree: children start
        // left to right (transport, membership, view) and an escalation in any of them ends
        // the node instead of leaving it half alive.
        let mut root = SupervisorSpec::new("node")
            .child(transport)
            .child(membership)
            .child(spec);
        let mut store = None;
        let mut store_view = None;
        if config.roles.iter().any(|r| r == "store") {
            let timings = match config.profile {
                Profile::Lan => RaftTimings::lan(),
                Profile::LocalTest => RaftTimings::local_test(),
            };
            let shards: Vec<u16> = (0..config.store_shards).collect();
            let (view_tx, view_rx) = tokio::sync::watch::channel(StoreView::default());
            let placement = Placement {
                nodes: view_rx,
                dead_after: Duration::from_millis(config.store_dead_after_ms),
            };
            let (s, spec) = StoreNode::prepare(
                &node,
                &config.data_dir(&name),
                &shards,
                timings,
                Some(placement),
                config.store_keep_revisions,
            )
            .map_err(ClusterNodeError::Store)?;
            store_view = Some(view_tx);
            root = root.child(spec);
            store = Some(s);
        }
        let mut workers = None;
        if let Some((registry, config)) = tasks {
            let kinds = registry.kinds();
            let capacity = config.workers.max(1) * config.inflight.max(1);
            let (handle, spec) = TaskWorkers::prepare(node.clone(), registry, config);
            root = root.child(spec);
            workers = Some((handle, kinds, capacity));
        }
        // The user's own actors, under the node's `app` supervisor, started last.
        let mut app_sup = SupervisorSpec::new("app");
        for child in app_children {
            app_sup = app_sup.child(child);
        }
        root = root.child(app_sup);
        let app = root.start(runtime).await.map_err(ClusterNodeError::Start)?;
        node.expose(ADMIN, view.clone())
            .accept::<Describe>()
            .accept::<ListMembers>()
            .accept::<Leaving>()
            .accept::<Exchange>()
            .accept::<PushRecords>()
            .accept::<Deliver>();
        if let Some(s) = &store {
            s.expose(&node);
        }
        let cluster = ClusterNode {
            name,
            store: store.clone(),
            node,
            gossip,
            view,
            app,
            changes,
            cluster_events,
            topic_index,
            started_ms,
            workers: workers.as_ref().map(|(handle, _, _)| handle.clone()),
            agent: Arc::new(OnceLock::new()),
            stop: Arc::new(tokio::sync::watch::channel(false).0),
        };
        // The store's front door, on every node; and on store nodes, the groups' bootstrap.
        let (c, shards, expect) = (
            cluster.clone(),
            config.store_shards,
            config.bootstrap_expect,
        );
        let gateway = ChildSpec::new("gateway", move || StoreGateway::new(c.clone(), shards))
            .mailbox(16 * 1024);
        let gateway_ref = gateway.actor_ref();
        cluster
            .app
            .start_child(gateway, LOCAL)
            .await
            .map_err(start_failed)?;
        cluster
            .node
            .expose(STORE, gateway_ref.clone())
            .accept::<KvWrite>()
            .accept::<KvCompact>()
            .accept::<KvRead>()
            .accept::<KvKeepAlive>()
            .accept::<KvTimeToLive>()
            .accept::<KvWatch>();
        // The store's duties, supervised: the groups' bootstrap (work that ends: restarted
        // only after a failure) and the tracking of store nodes for placement (always on).
        if let Some(s) = store {
            let c = cluster.clone();
            let duty = ChildSpec::new("store-bootstrap", move || {
                let (c, s) = (c.clone(), s.clone());
                Duty::new(move || bootstrap(c.clone(), s.clone(), shards, expect))
            })
            .restart(Restart::Transient);
            cluster
                .app
                .start_child(duty, LOCAL)
                .await
                .map_err(start_failed)?;
        }
        if let Some(tx) = store_view {
            let (c, tx) = (cluster.clone(), Arc::new(tx));
            let duty = ChildSpec::new("store-tracker", move || {
                let (c, tx) = (c.clone(), tx.clone());
                Duty::new(move || track_store_nodes(c.clone(), tx.clone()))
            });
            cluster
                .app
                .start_child(duty, LOCAL)
                .await
                .map_err(start_failed)?;
        }
        if let Some((handle, kinds, capacity)) = workers {
            cluster
                .node
                .expose(TASKS_ACTOR, handle.actor())
                .accept::<RunBatch>()
                .accept::<CancelTasks>();
            cluster
                .register_service(Service {
                    name: TASKS_SERVICE.into(),
                    addr,
                    tags: kinds,
                    meta: [("capacity".to_string(), capacity.to_string())].into(),
                })
                .await;
        }
        // The agent, last: a child of the node's root like every other part of the node.
        if !config.agent {
            return Ok(cluster);
        }
        let deps = AgentDeps {
            node: cluster.clone(),
            runtime: runtime.clone(),
            workers: cluster.workers.clone(),
            log,
            handlers,
            config: AgentConfig {
                period: Duration::from_millis(config.status_period_ms),
                ttl: Duration::from_millis(config.status_ttl_ms),
                cluster: config.cluster.clone(),
                roles: cluster_roles,
                shards: config.store_shards,
            },
        };
        let agent = ChildSpec::new("agent", move || Agent::new(deps.clone()));
        let agent_ref = agent.actor_ref();
        cluster
            .app
            .start_child(agent, LOCAL)
            .await
            .map_err(start_failed)?;
        let _ = cluster.agent.set(agent_ref);
        Ok(cluster)
    }

    /// This node's id.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address (TCP for the transport, UDP for the gossip).
    pub fn addr(&self) -> SocketAddr {
        self.node.local_addr()
    }

    /// The shard replicas this node hosts (a `store` node).
    pub fn store(&self) -> Option<&StoreNode> {
        self.store.as_ref()
    }

    /// Waits (at most `timeout`) until the status store answers through this node: a
    /// linearizable read of the node's own keys succeeds. A store forms once
    /// `bootstrap_expect` nodes with the role `store` are up.
    ///
    /// # Errors
    /// The store's last answer, when it did not answer in time.
    pub async fn store_ready(&self, timeout: Duration) -> Result<(), crate::store::KvError> {
        let kv = self.kv();
        let probe = cadre_cluster::store::RangeRequest {
            key: format!("nodes/{}/", self.name).into_bytes(),
            prefix: true,
            limit: 1,
            keys_only: true,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let last = match tokio::time::timeout(left, kv.range(probe.clone(), false)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => crate::store::KvError::Unavailable(format!(
                    "the store did not answer within {timeout:?}"
                )),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100).min(left)).await;
        }
    }

    /// The node's task workers, when it runs them.
    pub fn workers(&self) -> Option<&TaskWorkers> {
        self.workers.as_ref()
    }

    /// When this node started (ms since the epoch): its incarnation.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// The node's root supervisor (`node`): every part of the node is below it.
    pub fn root(&self) -> &SupervisorRef {
        &self.app
    }

    /// This node's own services, as its directory record holds them.
    pub async fn local_services(&self) -> Vec<Service> {
        self.view
            .ask(LocalServices, LOCAL)
            .await
            .unwrap_or_default()
    }

    /// The agent's run state and the lease its status is bound to (none before its first
    /// grant).
    pub async fn agent_state(&self) -> Option<(RunState, Option<LeaseId>)> {
        self.agent.get()?.ask(GetState, LOCAL).await.ok()
    }

    /// Asks the program running this node to stop it gracefully (the `stop` command does):
    /// [`ClusterNode::stop_requested`] completes.
    pub(crate) fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Completes once a graceful stop of this node was asked for through its agent (the
    /// `stop` command). `cadre node` then leaves and exits 0; a program of its own should call
    /// [`ClusterNode::leave`].
    pub async fn stop_requested(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// The status store, as this node's actors use it.
    pub fn kv(&self) -> Kv {
        Kv::through(self.node.clone(), &self.name)
    }

    /// The transport: expose actors, reach remote ones.
    pub fn transport(&self) -> &Node {
        &self.node
    }

    /// The gossip.
    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// The members as this node sees them, itself first.
    pub async fn members(&self) -> Vec<MemberRow> {
        self.view.ask(ListMembers, LOCAL).await.unwrap_or_default()
    }

    /// Offers `service` from this node; every node learns it (and forgets it when this node
    /// goes down).
    pub async fn register_service(&self, service: Service) {
        let _ = self.view.ask(RegisterService(service), LOCAL).await;
    }

    /// The live endpoints of `service` known here, by node.
    pub async fn lookup(&self, service: &str) -> Vec<(String, Service)> {
        self.view
            .ask(Lookup(service.into()), LOCAL)
            .await
            .unwrap_or_default()
    }

    /// Directory changes (services added and removed) from now on.
    pub fn watch(&self) -> broadcast::Receiver<DirectoryEvent> {
        self.changes.subscribe()
    }

    /// Changes of the service called `name` from now on.
    pub fn watch_service(&self, name: &str) -> ServiceWatch {
        ServiceWatch {
            name: name.into(),
            rx: self.changes.subscribe(),
        }
    }

    /// Cluster events (members up, suspect, down, left; services added, removed) from now on.
    pub fn events(&self) -> broadcast::Receiver<ClusterEvent> {
        self.cluster_events.subscribe()
    }

    /// Sends every cluster event from now on to `actor`, as a typed message, for as long as it
    /// lives. A full mailbox delays the next events (the forwarder waits); a subscriber too slow
    /// for the event buffer is told how many it missed in a warning log.
    pub fn subscribe_actor<A>(&self, actor: ActorRef<A>)
    where
        A: Actor + actix::Handler<ClusterEvent>,
        A::Context: actix::dev::ToEnvelope<A, ClusterEvent>,
    {
        Self::forward_events(self.cluster_events.subscribe(), actor);
    }

    /// As [`ClusterNode::subscribe_actor`], from a subscription taken earlier with
    /// [`ClusterNode::events`]: every event since it was taken reaches `actor`. For an actor
    /// that looks the cluster up when it starts: subscribed before it starts, it misses nothing
    /// that changed after its lookup was answered.
    pub fn forward_events<A>(mut rx: broadcast::Receiver<ClusterEvent>, actor: ActorRef<A>)
    where
        A: Actor + actix::Handler<ClusterEvent>,
        A::Context: actix::dev::ToEnvelope<A, ClusterEvent>,
    {
        actix::spawn(async move {
            loop {
                let mut event = match rx.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, actor = %actor.path(), "cluster events missed");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                loop {
                    match actor.tell(event) {
                        Ok(()) => break,
                        Err(
                            cadre_runtime::TellError::Full(e)
                            | cadre_runtime::TellError::Restarting(e),
                        ) => {
                            event = e;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err(_) => return, // ended for good
                    }
                }
            }
        });
    }

    /// Exposes `actor` under `name` and makes the name known cluster-wide; say which message
    /// types it accepts on the returned [`Exposure`].
    pub async fn register_actor<A: Actor>(&self, name: &str, actor: ActorRef<A>) -> Exposure<A> {
        let exposure = self.node.expose(name, actor);
        let _ = self.view.ask(RegisterActor(name.into()), LOCAL).await;
        exposure
    }

    /// A handle to the actor registered cluster-wide as `name` (on whichever node registered
    /// it; the first by node id if several did).
    pub async fn lookup_actor(&self, name: &str) -> Option<RemoteRef> {
        let nodes = self
            .view
            .ask(LookupActor(name.into()), LOCAL)
            .await
            .unwrap_or_default();
        nodes.first().map(|n| self.node.actor(n, name))
    }

    /// Subscribes to `topic`: every event published to it afterwards, from any node, arrives
    /// once (until the subscription is dropped). Other nodes learn of the subscription through
    /// the directory, so events published in the first moments may not reach it yet.
    pub async fn subscribe<E: serde::de::DeserializeOwned>(
        &self,
        topic: &str,
    ) -> Option<Subscription<E>> {
        let rx = self
            .view
            .ask(SubscribeTopic(topic.into()), LOCAL)
            .await
            .ok()?;
        Some(Subscription {
            rx,
            _e: std::marker::PhantomData,
        })
    }

    /// The nodes known here to have subscribers for `topic`.
    pub async fn topic_subscribers(&self, topic: &str) -> Vec<String> {
        self.topic_index
            .read()
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }

    /// Publishes `event` to `topic`: sent once, directly over the transport, to each node with
    /// subscribers for it (this one included), which hands it to each of its subscribers.
    /// Delivery is at most once, in order from one publisher to one subscriber. Returns the
    /// number of nodes it was sent to.
    ///
    /// # Errors
    /// The event does not encode.
    pub async fn publish<E: serde::Serialize>(
        &self,
        topic: &str,
        event: &E,
    ) -> Result<usize, cadre_cluster::wire::EncodeError> {
        let payload = cadre_cluster::wire::encode_body(event)?;
        let nodes = self.topic_subscribers(topic).await;
        let mut sent = 0;
        for node in nodes {
            let deliver = Deliver {
                topic: topic.into(),
                payload: payload.clone(),
            };
            let ok = if node == self.name {
                self.view.tell(deliver).is_ok()
            } else {
                self.node
                    .actor(&node, ADMIN)
                    .tell_wait(deliver)
                    .await
                    .is_ok()
            };
            sent += usize::from(ok);
        }
        Ok(sent)
    }

    /// Leaves gracefully: tells every member (they show it as leaving, then left), gossips the
    /// leave, then stops everything.
    pub async fn leave(&self, timeout: Duration) {
        // The agent writes `stopping` and revokes the node's lease first.
        if let Some(agent) = self.agent.get() {
            let _ = agent.ask(Farewell, FAREWELL.min(timeout)).await;
        }
        let addr = self.addr();
        for row in self.members().await.iter().skip(1) {
            if let Ok(peer) = self
                .node
                .connect(row.addr, Duration::from_millis(500))
                .await
            {
                let _ = self.node.actor(&peer, ADMIN).tell(Leaving { addr });
            }
        }
        self.gossip.announce_leave(timeout).await;
        let _ = self.app.stop(timeout).await;
    }

    /// Stops everything without telling anyone (as a crash looks to peers).
    pub async fn crash(&self) {
        let _ = self.app.stop(Duration::from_secs(1)).await;
    }

    /// Waits until the node's root has ended, and returns why (an abnormal reason means an
    /// escalation reached the root).
    pub async fn terminated(&self) -> cadre_runtime::ExitReason {
        self.app.terminated().await
    }
}
