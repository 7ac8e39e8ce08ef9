//! The membership actor: drives the gossip core (`cadre_cluster::membership`) over UDP.
//!
//! - One UDP socket per node. Received datagrams are fed to the core; effects are carried out
//!   in order: datagrams go to a writer task that awaits each `send_to` (a non-blocking send
//!   loses packets when the socket buffer is momentarily full, and the first packets of a join
//!   matter), timers go to a map ordered by deadline with a single actix timer armed for the
//!   earliest deadline, so they fire in order.
//! - Joining: the core announces to the seeds and asks for retries, with backoff, until it
//!   knows an active member; the actor only carries out the delays.
//! - A restarted actor comes back with a higher `bump`: peers replace its old identity.
//! - Member events are published on a broadcast channel ([`Gossip::subscribe`]) and logged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cadre_cluster::membership::{
    Effect, Input, MemberEvent, MemberId, Membership, MembershipError, Profile,
};
use cadre_cluster::wire::Secret;
use cadre_runtime::{ChildSpec, Runtime, Shutdown, SupervisorRef, SupervisorSpec};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

/// How a node gossips.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// The UDP address to gossip on (port 0: any free port).
    pub listen: SocketAddr,
    /// Gossip addresses of nodes to join through.
    pub seeds: Vec<SocketAddr>,
    /// Timing profile.
    pub profile: Profile,
    /// The expected cluster size (tunes dissemination).
    pub cluster_size: u32,
    /// The cluster secret (datagrams are tagged with an HMAC keyed by it).
    pub secret: Secret,
}

/// Events kept for subscribers that fall behind (they then get `Lagged`, never a silent gap).
const EVENT_BUFFER: usize = 1024;

/// Datagrams queued for the writer before new ones are dropped (and counted).
const SEND_QUEUE: usize = 4096;

/// A running membership.
#[derive(Clone)]
pub struct Gossip {
    actor: cadre_runtime::ActorRef<MembershipActor>,
    events: broadcast::Sender<MemberEvent>,
    local_addr: SocketAddr,
    supervisor: SupervisorRef,
    faults: Faults,
}

/// What the fault injector does to the datagrams between this node and one peer, both ways
/// (for tests: [`Gossip::inject`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkFault {
    /// Drop every datagram, both ways (a partition).
    pub cut: bool,
    /// Drop each outgoing datagram with this probability (0 to 1).
    pub drop: f64,
    /// Delay each outgoing datagram by up to this long (drawn uniformly, so they also reorder).
    pub delay: Duration,
}

/// The fault injector's state: faults by peer gossip address, and its seeded randomness.
#[derive(Clone, Default)]
struct Faults(Arc<parking_lot::Mutex<FaultState>>);

#[derive(Default)]
struct FaultState {
    links: std::collections::HashMap<SocketAddr, LinkFault>,
    rng: Option<fastrand::Rng>,
}

impl Faults {
    /// Whether a datagram from `peer` is dropped (a cut link drops both ways; random drops
    /// and delays apply on the way out).
    fn verdict_in(&self, peer: SocketAddr) -> bool {
        self.0.lock().links.get(&peer).is_some_and(|f| f.cut)
    }

    /// What happens to a datagram to `peer`: `None` drops it, else its delay.
    fn verdict(&self, peer: SocketAddr) -> Option<Duration> {
        let mut state = self.0.lock();
        let Some(fault) = state.links.get(&peer).copied() else {
            return Some(Duration::ZERO);
        };
        let rng = state.rng.get_or_insert_with(|| fastrand::Rng::with_seed(0));
        if fault.cut || (fault.drop > 0.0 && rng.f64() < fault.drop) {
            return None;
        }
        Some(fault.delay.mul_f64(rng.f64()))
    }
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("addr", &self.local_addr)
            .finish()
    }
}

/// Why the membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// The UDP address could not be bound.
    #[error("cannot gossip on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The actor did not start.
    #[error("membership did not start: {0}")]
    Start(cadre_runtime::ExitReason),
}

impl Gossip {
    /// Binds the UDP socket and starts the membership actor (supervised) on this arbiter.
    ///
    /// # Errors
    /// [`GossipError`].
    pub async fn start(config: GossipConfig, runtime: &Runtime) -> Result<Gossip, GossipError> {
        let (gossip, spec) = Gossip::prepare(config)?;
        spec.start(runtime).await.map_err(GossipError::Start)?;
        Ok(gossip)
    }

    /// Binds the UDP socket and builds the membership subtree without starting it, for a
    /// parent supervisor to start as one of its children.
    ///
    /// # Errors
    /// [`GossipError::Bind`].
    pub fn prepare(config: GossipConfig) -> Result<(Gossip, SupervisorSpec), GossipError> {
        let bind = |source| GossipError::Bind {
            addr: config.listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(config.listen).map_err(bind)?;
        socket.set_nonblocking(true).map_err(bind)?;
        let local_addr = socket.local_addr().map_err(bind)?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        // Restarts of this actor count up from the process's start time (see `initial_bump`).
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let bump = Arc::new(AtomicU32::new(cadre_cluster::membership::initial_bump(
            since_epoch,
        )));
        let shared = Arc::new(socket);
        let ev = events.clone();
        let faults = Faults::default();
        let f = faults.clone();
        let spec = ChildSpec::new("membership", move || MembershipActor {
            faults: f.clone(),
            socket: shared
                .try_clone()
                .expect("a bound socket can be duplicated"),
            local_addr,
            bump: bump.fetch_add(1, Ordering::Relaxed),
            config: config.clone(),
            events: ev.clone(),
            core: None,
            timers: BTreeMap::new(),
            next_timer: 0,
            armed: None,
            out: None,
        })
        .shutdown(Shutdown::Timeout(Duration::from_secs(1)));
        let actor = spec.actor_ref();
        let tree = SupervisorSpec::new("gossip").child(spec);
        let supervisor = tree.handle();
        Ok((
            Gossip {
                actor,
                events,
                local_addr,
                supervisor,
                faults,
            },
            tree,
        ))
    }

    /// The UDP address peers gossip with.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Fault injection, for tests: applies `fault` to the datagrams between this node and the
    /// member gossiping at `peer` (both ways; `LinkFault::default()` heals the link). Drops and
    /// delays are drawn from a generator seeded by [`Gossip::seed_faults`] (0 by default).
    pub fn inject(&self, peer: SocketAddr, fault: LinkFault) {
        let mut state = self.faults.0.lock();
        if fault == LinkFault::default() {
            state.links.remove(&peer);
        } else {
            state.links.insert(peer, fault);
        }
    }

    /// Seeds the fault injector's random drops and delays.
    pub fn seed_faults(&self, seed: u64) {
        self.faults.0.lock().rng = Some(fastrand::Rng::with_seed(seed));
    }

    /// Member events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MemberEvent> {
        self.events.subscribe()
    }

    /// The other active members (empty if the actor does not answer within a second).
    pub async fn members(&self) -> Vec<MemberId> {
        self.actor
            .ask(Members, Duration::from_secs(1))
            .await
            .unwrap_or_default()
    }

    /// This node's identity, once started.
    pub async fn identity(&self) -> Option<MemberId> {
        self.actor.ask(Identity, Duration::from_secs(1)).await.ok()
    }

    /// Leaves the cluster gracefully (peers see it at once), then stops.
    pub async fn leave(&self, timeout: Duration) {
        self.announce_leave(timeout).await;
        let _ = self.supervisor.stop(timeout).await;
    }

    /// Announces the leave (peers see it at once) and waits until it is on the wire, without
    /// stopping: for a parent that stops the whole node next.
    pub async fn announce_leave(&self, timeout: Duration) {
        let _ = self.actor.ask(Leave, timeout).await;
    }

    /// Stops without telling anyone (as a crash looks to peers).
    pub async fn stop(&self, timeout: Duration) {
        let _ = self.supervisor.stop(timeout).await;
    }
}

/// What the writer task sends.
enum Outgoing {
    Datagram(SocketAddr, Vec<u8>),
    /// Answered once every datagram queued before it was sent.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Drives one node's gossip.
pub struct MembershipActor {
    socket: std::net::UdpSocket,
    local_addr: SocketAddr,
    bump: u32,
    config: GossipConfig,
    events: broadcast::Sender<MemberEvent>,
    core: Option<Membership>,
    /// Pending timers by deadline; the sequence number keeps equal deadlines apart, in order.
    timers: BTreeMap<(Instant, u64), foca::Timer<MemberId>>,
    next_timer: u64,
    armed: Option<(Instant, SpawnHandle)>,
    out: Option<mpsc::Sender<Outgoing>>,
    faults: Faults,
}

impl MembershipActor {
    fn feed(&mut self, input: Input, ctx: &mut Context<Self>) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let effects = match core.handle(input) {
            Ok(effects) => effects,
            Err(MembershipError::Unauthenticated { from }) => {
                tracing::debug!(%from, "dropped an unauthenticated gossip datagram");
                return;
            }
            Err(e) => {
                tracing::debug!(reason = %e, "gossip input refused");
                return;
            }
        };
        for effect in effects {
            match effect {
                Effect::Send { to, bytes } => {
                    if let Some(out) = &self.out {
                        if out.try_send(Outgoing::Datagram(to, bytes)).is_err() {
                            tracing::warn!(%to, "gossip send queue full; datagram dropped");
                        }
                    }
                }
                Effect::Schedule { after, timer } => {
                    self.timers
                        .insert((Instant::now() + after, self.next_timer), timer);
                    self.next_timer += 1;
                }
                Effect::RetryJoin { after } => {
                    ctx.run_later(after, |act, ctx| act.feed(Input::RetryJoin, ctx));
                }
                Effect::Event(event) => {
                    match &event {
                        MemberEvent::Up(id) => {
                            tracing::info!(member = %id.addr, bump = id.bump, "member up")
                        }
                        MemberEvent::Down(id) => {
                            tracing::info!(member = %id.addr, bump = id.bump, "member down")
                        }
                        MemberEvent::Active => tracing::info!("joined the cluster"),
                        MemberEvent::Idle => tracing::info!("no active member known"),
                        other => tracing::info!(event = ?other, "membership"),
                    }
                    let _ = self.events.send(event);
                }
            }
        }
        self.arm(ctx);
    }

    /// Arms one actix timer for the earliest pending deadline.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(&(due, _)) = self.timers.keys().next() else {
            return;
        };
        if let Some((armed_for, handle)) = self.armed {
            if armed_for <= due {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = due.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| {
            act.armed = None;
            act.fire(ctx);
        });
        self.armed = Some((due, handle));
    }

    /// Feeds every due timer, in deadline order.
    fn fire(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            self.feed(Input::Timer(timer), ctx);
        }
        self.arm(ctx);
    }
}

impl Actor for MembershipActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let id = MemberId {
            addr: self.local_addr,
            bump: self.bump,
        };
        let config = self.config.profile.config(self.config.cluster_size.max(1));
        self.core = Some(Membership::new(
            id,
            self.config.secret.clone(),
            config,
            fastrand::u64(..),
        ));
        let socket = match self.socket.try_clone().and_then(UdpSocket::from_std) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                use cadre_runtime::ContextExt;
                ctx.fail(format!("gossip socket: {e}"));
                return;
            }
        };
        // The writer: awaits each send, in order.
        let (tx, mut rx) = mpsc::channel::<Outgoing>(SEND_QUEUE);
        self.out = Some(tx);
        let writer = socket.clone();
        let faults = self.faults.clone();
        ctx.spawn(
            async move {
                while let Some(item) = rx.recv().await {
                    match item {
                        Outgoing::Datagram(to, bytes) => match faults.verdict(to) {
                            None => {} // dropped by the fault injector
                            Some(delay) if !delay.is_zero() => {
                                let writer = writer.clone();
                                actix::spawn(async move {
                                    tokio::time::sleep(delay).await;
                                    let _ = writer.send_to(&bytes, to).await;
                                });
                            }
                            Some(_) => {
                                if let Err(e) = writer.send_to(&bytes, to).await {
                                    tracing::debug!(%to, reason = %e, "gossip send failed");
                                }
                            }
                        },
                        Outgoing::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            }
            .into_actor(self),
        );
        // The reader: hands each datagram to this actor.
        let me = ctx.address();
        let faults = self.faults.clone();
        ctx.spawn(
            async move {
                let mut buf = vec![0u8; 65_536];
                loop {
                    match socket.recv_from(&mut buf).await {
                        Ok((_, from)) if faults.verdict_in(from) => {} // dropped by the injector
                        Ok((n, from)) => {
                            if me
                                .try_send(Datagram {
                                    from,
                                    bytes: buf[..n].to_vec(),
                                })
                                .is_err()
                            {
                                tracing::debug!(%from, "membership busy; datagram dropped");
                            }
                        }
                        Err(e) => {
                            tracing::debug!(reason = %e, "gossip receive failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            .into_actor(self),
        );
        if !self.config.seeds.is_empty() {
            self.feed(Input::Join(self.config.seeds.clone()), ctx);
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Datagram {
    from: SocketAddr,
    bytes: Vec<u8>,
}

impl Handler<Datagram> for MembershipActor {
    type Result = ();
    fn handle(&mut self, m: Datagram, ctx: &mut Context<Self>) {
        self.feed(
            Input::Datagram {
                from: m.from,
                bytes: m.bytes,
            },
            ctx,
        );
    }
}

#[derive(Message)]
#[rtype(result = "Vec<MemberId>")]
struct Members;

impl Handler<Members> for MembershipActor {
    type Result = MessageResult<Members>;
    fn handle(&mut self, _: Members, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.core
                .as_ref()
                .map(Membership::members)
                .unwrap_or_default(),
        )
    }
}

#[derive(Message)]
#[rtype(result = "MemberId")]
struct Identity;

impl Handler<Identity> for MembershipActor {
    type Result = MessageResult<Identity>;
    fn handle(&mut self, _: Identity, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.core
                .as_ref()
                .map(Membership::identity)
                .unwrap_or(MemberId {
                    addr: self.local_addr,
                    bump: self.bump,
                }),
        )
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Leave;

impl Handler<Leave> for MembershipActor {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Leave, ctx: &mut Context<Self>) -> Self::Result {
        self.feed(Input::Leave, ctx);
        // Answer once the leave announcements are on the wire.
        let (done, flushed) = tokio::sync::oneshot::channel();
        if let Some(out) = &self.out {
            let _ = out.try_send(Outgoing::Flush(done));
        }
        Box::pin(actix::fut::wrap_future(async move {
            let _ = flushed.await;
        }))
    }
}
