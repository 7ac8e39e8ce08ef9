//! The cluster transport: a listener, one actor per peer connection, and the [`Node`] handle
//! that exposes local actors and reaches remote ones.
//!
//! # Supervision
//! ```text
//! transport (rest-for-one)
//! ├── connections    pool: dialers (transient; reconnect with backoff) and accepted
//! │                  connections (temporary: the peer redials)
//! ├── redialer       starts again the dialers of a restarted pool (it restarts empty)
//! └── listener       accepts connections; each becomes a temporary connection actor
//! ```
//!
//! # Sending
//! Senders encode each frame straight into its connection's outbound buffer, bounded in bytes
//! ([`TransportConfig::queue_bytes`]). Consecutive tells to one actor with one message type
//! share a frame: the sender appends each to the last frame while it is such a tell (up to
//! 16 KiB), so a stream of small messages pays one header per frame, not per message. A writer
//! task takes what accumulated, in chunks of 256 KiB, and writes each whole (TCP_NODELAY is on,
//! so the buffer draining is the flush): under load, many messages share a system call; on an
//! idle connection an ask or a reply is written by its sender at once. When the queue is full,
//! [`RemoteRef::tell`](crate::RemoteRef::tell) gives the message back and
//! [`RemoteRef::tell_wait`](crate::RemoteRef::tell_wait) waits for room; nothing is dropped
//! silently.
//!
//! # Receiving
//! A connection's socket work (reader, writer) runs in a task of its own, owned by the
//! connection actor: traffic wakes that task alone, and the actor fails (for its supervisor to
//! restart) when the task does. The reader splits each frame off its read buffer without
//! copying; a reply reaches its asker as a slice of its frame. An asker waiting for its reply
//! reads the connection itself while no one else does: the socket then wakes the asker alone,
//! the asker handles every frame that came (in order, whatever it is for) and finds its reply
//! in its own poll, then leaves the socket waking the task. The task watches, in periods of a
//! couple of milliseconds, that a woken reader reads, and reads what one left unread (an ask
//! future left unpolled cannot stall the connection); a frame an asker cannot deliver at once
//! (a full lane) and the end of the connection go to the task. A tell frame
//! goes whole to the exposed actor as one item of its batch lane
//! ([`ActorRef::tell_iter`](cadre_runtime::ActorRef::tell_iter)): the actor decodes and handles
//! its messages one after the other, in its own context, with no per-message mailbox operation.
//! An ask goes through the same lane, behind the tells that came before it, and its reply is
//! encoded into the connection by the actor right after its handler answers
//! ([`ActorRef::ask_then_fed`](cadre_runtime::ActorRef::ask_then_fed)): no task waits for it.
//! The ask names its connection as the actor's [`Feed`](cadre_runtime::Feed): while idle, the
//! actor reads the connection as an asker does (the socket wakes it, and the connection's task
//! reads what the actor leaves unread: a busy or waiting actor holds the others up by a few
//! milliseconds at most), so a request is read, handled and answered in one poll of the
//! actor's task, and the connection's task is not polled at all. When the
//! actor's lane is full, the reader stops reading until it has room, so the pressure goes back
//! through TCP to the sender's bounded queue. An ask's deadline is kept beside it on the
//! asking side; one task per connection expires the asks whose deadline passed, so an ask
//! answered in time costs no timer.

mod connection;
mod dial;
mod inbound;
mod link;
mod listener;
mod reply;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::Actor;
use cadre_cluster::wire::{Secret, DEFAULT_MAX_FRAME};
use cadre_runtime::{
    ActorRef, Backoff, ChildSpec, PoolRef, PoolSpec, Restart, Runtime, Shutdown, SupervisorRef,
    SupervisorSpec,
};
use parking_lot::{Mutex, RwLock};

use crate::remote::{Exposed, Exposure, RemoteRef};
use connection::Connection;
use dial::Dial;
pub(crate) use inbound::{drop_messages, AwaitAnswer, Conn};
pub(crate) use link::{with_body, Answer, Link, QueueError};
use listener::Listener;
pub(crate) use reply::Replier;

/// The default bound on a connection's unwritten bytes: 256 KiB.
///
/// The kernel's socket buffer holds megabytes more, so a larger queue absorbs little more of a
/// burst; what it does is push the queue out of the processor's caches: on `cadre bench remote`
/// a 4 MiB queue carried 5.0–5.9 M msg/s where 256 KiB carried 6.0–6.6 M.
pub const DEFAULT_QUEUE_BYTES: usize = 256 * 1024;

/// How a node's transport behaves.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// The cluster's name; peers of another cluster are refused.
    pub cluster: String,
    /// This node's id, unique in the cluster.
    pub node: String,
    /// The TCP address to listen on (port 0: any free port; see [`Node::local_addr`]).
    pub listen: SocketAddr,
    /// The cluster secret every member proves it knows.
    pub secret: Secret,
    /// The largest frame body sent or accepted, in bytes (default 4 MiB; 1 KiB to 1 GiB).
    pub max_frame: u32,
    /// Unwritten bytes buffered per connection before senders are refused or wait (default
    /// [`DEFAULT_QUEUE_BYTES`]; at least one frame always fits, however large).
    pub queue_bytes: usize,
    /// How long a handshake may take (default 5 s).
    pub handshake_timeout: Duration,
    /// Redial delays after a lost connection (default 50 ms to 5 s, jittered).
    pub reconnect: Backoff,
}

/// A configuration value out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transport configuration: `{field}` {problem}")]
pub struct ConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl TransportConfig {
    /// A configuration with the defaults.
    pub fn new(cluster: &str, node: &str, listen: SocketAddr, secret: Secret) -> Self {
        TransportConfig {
            cluster: cluster.into(),
            node: node.into(),
            listen,
            secret,
            max_frame: DEFAULT_MAX_FRAME,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            handshake_timeout: Duration::from_secs(5),
            reconnect: Backoff::exponential(Duration::from_millis(50), Duration::from_secs(5)),
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// The first field out of range, named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem: &str| {
            Err(ConfigError {
                field,
                problem: problem.into(),
            })
        };
        if self.cluster.is_empty() {
            return bad("cluster", "is empty");
        }
        if self.node.is_empty() {
            return bad("node", "is empty");
        }
        if !(1024..=1 << 30).contains(&self.max_frame) {
            return bad("max_frame", "must be between 1024 and 1073741824 bytes");
        }
        if self.queue_bytes == 0 {
            return bad("queue_bytes", "must be at least 1");
        }
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout", "must be more than zero");
        }
        Ok(())
    }
}

/// Why the transport could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The transport's supervision tree did not start.
    #[error("the transport did not start: {0}")]
    Start(cadre_runtime::ExitReason),
    /// The connection could not be made or was refused.
    #[error("could not connect to {addr}: {reason}")]
    Connect {
        /// The peer's address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Counters of what the transport refused or dropped.
#[derive(Default, Debug)]
pub(crate) struct Stats {
    /// Incoming connections refused during the handshake.
    pub(crate) refused: AtomicU64,
    /// Messages from peers that could not be delivered (no such actor or tag, full mailbox).
    pub(crate) dropped: AtomicU64,
}

/// The child spec of the dialer of `addr`.
fn dialer_spec(
    inner: &Arc<TransportInner>,
    addr: SocketAddr,
    dial: &Arc<Dial>,
) -> ChildSpec<Connection> {
    let (inner, d) = (inner.clone(), dial.clone());
    ChildSpec::new(format!("dial-{addr}"), move || {
        Connection::dialer(inner.clone(), addr, d.clone())
    })
    .restart(Restart::Transient)
    .shutdown(Shutdown::Timeout(Duration::from_secs(1)))
}

/// Starts again, in a restarted connection pool, the dialer of every address the node still
/// dials (a pool restarts empty). Runs on each of its own starts, which follow the pool's.
struct Redialer {
    inner: Arc<TransportInner>,
}

impl Actor for Redialer {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        use actix::{ActorFutureExt, AsyncContext, WrapFuture};
        let lost: Vec<(SocketAddr, Arc<Dial>)> = self
            .inner
            .dials
            .lock()
            .iter()
            .filter(|(_, d)| {
                d.handle
                    .lock()
                    .as_ref()
                    .is_none_or(|h| h.exit_reason().is_some())
            })
            .map(|(a, d)| (*a, d.clone()))
            .collect();
        if lost.is_empty() {
            return;
        }
        let inner = self.inner.clone();
        let redial = async move {
            for (addr, dial) in lost {
                let spec = dialer_spec(&inner, addr, &dial);
                match inner
                    .connections
                    .add_child(spec, Duration::from_secs(5))
                    .await
                {
                    Ok(handle) => *dial.handle.lock() = Some(handle),
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "could not start a dialer again");
                        inner.forget_dial(addr, &dial);
                    }
                }
            }
        };
        ctx.spawn(redial.into_actor(self).map(|(), _, _| ()));
    }
}

/// What the transport's actors share.
pub(crate) struct TransportInner {
    pub(crate) config: TransportConfig,
    pub(crate) incarnation: u64,
    pub(crate) exposed: Arc<Exposed>,
    pub(crate) stats: Stats,
    /// The live connections to each peer, oldest first; traffic takes the newest. (Two nodes
    /// that dial each other have two.)
    links: RwLock<HashMap<Arc<str>, Vec<Arc<Link>>>>,
    /// The one dialer kept per peer address.
    dials: Mutex<HashMap<SocketAddr, Arc<Dial>>>,
    connections: PoolRef<Connection>,
    /// Peers cut off by the fault injector ([`Node::cut_off`]).
    cut: RwLock<std::collections::HashSet<Arc<str>>>,
    /// Whether `cut` holds anyone: every message checks it, and it is almost always false.
    any_cut: std::sync::atomic::AtomicBool,
}

impl TransportInner {
    /// Forgets the dialer of `addr` if it is still `dial` (it gave up, or was disconnected).
    pub(crate) fn forget_dial(&self, addr: SocketAddr, dial: &Arc<Dial>) {
        let mut dials = self.dials.lock();
        if dials.get(&addr).is_some_and(|d| Arc::ptr_eq(d, dial)) {
            dials.remove(&addr);
        }
    }

    /// Whether the fault injector cut this node off from `node`.
    #[inline]
    pub(crate) fn is_cut(&self, node: &str) -> bool {
        self.any_cut.load(std::sync::atomic::Ordering::Acquire) && self.cut.read().contains(node)
    }

    pub(crate) fn add_link(&self, node: &str, link: Arc<Link>) {
        self.links
            .write()
            .entry(node.into())
            .or_default()
            .push(link);
    }

    pub(crate) fn remove_link(&self, node: &str, link: &Arc<Link>) {
        let mut links = self.links.write();
        if let Some(list) = links.get_mut(node) {
            list.retain(|l| !Arc::ptr_eq(l, link));
            if list.is_empty() {
                links.remove(node);
            }
        }
    }

    pub(crate) fn link(&self, node: &str) -> Option<Arc<Link>> {
        if self.is_cut(node) {
            return None;
        }
        self.links
            .read()
            .get(node)?
            .iter()
            .rev()
            .find(|l| !l.is_closed())
            .cloned()
    }
}

/// A node's transport: expose local actors, connect to peers, reach remote actors.
#[derive(Clone)]
pub struct Node {
    inner: Arc<TransportInner>,
    local_addr: SocketAddr,
    supervisor: SupervisorRef,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node", &self.inner.config.node)
            .field("addr", &self.local_addr)
            .finish()
    }
}

impl Node {
    /// Binds the listen address and starts the transport's supervision tree on the current
    /// arbiter.
    ///
    /// # Errors
    /// An invalid configuration, an address that cannot be bound, or a tree that did not start.
    pub async fn start(config: TransportConfig, runtime: &Runtime) -> Result<Node, TransportError> {
        let (node, spec) = Node::prepare(config)?;
        spec.start(runtime).await.map_err(TransportError::Start)?;
        Ok(node)
    }

    /// Binds the listen address and builds the transport's supervision subtree without starting
    /// it, for a parent supervisor to start as one of its children (a node's root). The handle
    /// works once the subtree runs.
    ///
    /// # Errors
    /// An invalid configuration or an address that cannot be bound.
    pub fn prepare(config: TransportConfig) -> Result<(Node, SupervisorSpec), TransportError> {
        config.validate()?;
        let std_listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = std_listener
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let pool = PoolSpec::new(
            "connections",
            ChildSpec::new("connection", || -> Connection {
                unreachable!("connections are added with their own spec")
            }),
        );
        let inner = Arc::new(TransportInner {
            config,
            incarnation,
            exposed: Arc::default(),
            stats: Stats::default(),
            links: RwLock::default(),
            dials: Mutex::default(),
            connections: pool.pool_ref(),
            cut: RwLock::default(),
            any_cut: Default::default(),
        });
        let listener_socket = Arc::new(std_listener);
        let li = inner.clone();
        let listener = ChildSpec::new("listener", move || {
            let socket = listener_socket
                .try_clone()
                .expect("a listening socket can be duplicated");
            Listener::new(li.clone(), socket)
        })
        .shutdown(Shutdown::Timeout(Duration::from_secs(1)));
        let ri = inner.clone();
        let redialer = ChildSpec::new("redialer", move || Redialer { inner: ri.clone() });
        // The pool first (the listener hands it connections); the redialer after it restarts
        // with it and starts its dialers again; the listener last, alone when it fails.
        let spec = SupervisorSpec::new("transport")
            .strategy(cadre_runtime::Strategy::RestForOne)
            .child(pool)
            .child(redialer)
            .child(listener);
        let supervisor = spec.handle();
        Ok((
            Node {
                inner,
                local_addr,
                supervisor,
            },
            spec,
        ))
    }

    /// The address peers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.inner.config.node
    }

    /// Exposes `actor` to the network under `name`; say which message types it accepts with
    /// [`Exposure::accept`]. Exposing a name again replaces it.
    pub fn expose<A: Actor>(&self, name: &str, actor: ActorRef<A>) -> Exposure<A> {
        self.inner.exposed.remove(name);
        Exposure::new(self.inner.exposed.clone(), name.into(), actor)
    }

    /// Stops exposing `name`; returns whether it was exposed.
    pub fn unexpose(&self, name: &str) -> bool {
        self.inner.exposed.remove(name)
    }

    /// Dials `addr` and keeps a connection to it (redialled with backoff when lost). Returns the
    /// peer's node id once a handshake succeeded. A node keeps one dialer per address: calling
    /// this again reuses it, answering at once while its connection is up.
    ///
    /// # Errors
    /// [`TransportError::Connect`] if the next attempt failed (the peer refused the handshake,
    /// nothing listens there) or `timeout` passed. A refused handshake stops the dialing; an
    /// unreachable peer is still redialled in the background until [`Node::disconnect`].
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<String, TransportError> {
        let err = |reason: String| TransportError::Connect { addr, reason };
        let (dial, fresh) = {
            let mut dials = self.inner.dials.lock();
            match dials.get(&addr) {
                Some(d) => (d.clone(), false),
                None => {
                    let d = Arc::new(Dial::default());
                    dials.insert(addr, d.clone());
                    (d, true)
                }
            }
        };
        let seen = dial.attempts();
        if let Some(peer) = dial.peer() {
            if self.inner.link(&peer).is_some() {
                return Ok(peer);
            }
        }
        if fresh {
            let spec = dialer_spec(&self.inner, addr, &dial);
            match self.inner.connections.add_child(spec, timeout).await {
                Ok(handle) => *dial.handle.lock() = Some(handle),
                Err(e) => {
                    self.inner.forget_dial(addr, &dial);
                    return Err(err(e.to_string()));
                }
            }
        }
        match tokio::time::timeout(timeout, dial.next_after(seen)).await {
            Ok(Ok(peer)) => Ok(peer),
            Ok(Err(reason)) => Err(err(reason)),
            Err(_) => Err(err(format!("no answer within {timeout:?}"))),
        }
    }

    /// Stops dialing `addr` and closes the connection the dialer holds (a member that is gone
    /// need not be redialled forever). Connections the peer opened are left to the peer.
    pub async fn disconnect(&self, addr: SocketAddr, timeout: Duration) {
        let dial = self.inner.dials.lock().remove(&addr);
        let handle = dial.and_then(|d| d.handle.lock().take());
        if let Some(handle) = handle {
            let _ = self.inner.connections.remove(&handle, timeout).await;
        }
    }

    /// A handle to the actor exposed as `name` on the node `node` (this node's own id reaches
    /// local actors, with no encoding).
    pub fn actor(&self, node: &str, name: &str) -> RemoteRef {
        RemoteRef::new(self.inner.clone(), node.into(), name.into())
    }

    /// The addresses this node keeps dialing.
    pub fn dialing(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.inner.dials.lock().keys().copied().collect();
        v.sort();
        v
    }

    /// The ids of the peers with an established connection.
    /// Fault injection, for tests: simulates a network partition between this node and `peer`.
    /// Messages to it fail at once as unreachable, and messages from it are dropped unread (an
    /// ask from it gets no reply). Cut both sides for a symmetric partition; the gossip (UDP)
    /// is not affected.
    pub fn cut_off(&self, peer: &str) {
        let mut cut = self.inner.cut.write();
        cut.insert(peer.into());
        self.inner
            .any_cut
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Ends a [`Node::cut_off`].
    pub fn restore(&self, peer: &str) {
        let mut cut = self.inner.cut.write();
        cut.remove(peer);
        self.inner
            .any_cut
            .store(!cut.is_empty(), std::sync::atomic::Ordering::Release);
    }

    /// Whether a message to `node` can be sent now: it is this node, or a connection to it
    /// is open.
    pub fn is_reachable(&self, node: &str) -> bool {
        (node == self.id() && !self.inner.is_cut(node)) || self.inner.link(node).is_some()
    }

    /// The peers with an open connection, by id.
    pub fn peers(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .links
            .read()
            .iter()
            .filter(|(_, list)| list.iter().any(|l| !l.is_closed()))
            .map(|(k, _)| k.to_string())
            .collect();
        v.sort();
        v
    }

    /// Incoming connections refused during the handshake so far.
    pub fn refused_connections(&self) -> u64 {
        self.inner
            .stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Messages from peers that could not be delivered so far.
    pub fn dropped_messages(&self) -> u64 {
        self.inner
            .stats
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the transport: every connection closes (asks pending over them fail at once).
    /// Under a parent supervisor (a [`ClusterNode`](crate::node::ClusterNode)), stop the parent
    /// instead: the parent would restart a stopped transport.
    ///
    /// # Errors
    /// The tree did not stop within `timeout`.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), cadre_runtime::SupervisorError> {
        self.supervisor.stop(timeout).await.map(|_| ())
    }
}
