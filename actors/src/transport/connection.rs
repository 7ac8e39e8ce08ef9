//! One connection actor per peer connection: the handshake, then a reader and a writer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use bytes::BytesMut;
use cadre_cluster::wire::{Envelope, FrameError, Handshake, HandshakeError, Hello, Peer, Step};
use cadre_runtime::ContextExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::dial::Dial;
use super::inbound::{Conn, ConnFeed};
use super::link::Link;
use super::TransportInner;

/// The largest frame accepted before the peer is authenticated.
const HANDSHAKE_MAX_FRAME: u32 = 64 * 1024;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Decode(#[from] cadre_cluster::wire::DecodeError),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("handshake not finished within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

enum Kind {
    Dial {
        addr: SocketAddr,
        dial: Arc<Dial>,
    },
    Accepted {
        stream: Option<TcpStream>,
        addr: SocketAddr,
    },
}

/// A connection to one peer. A dialer reconnects by itself with backoff and gives up only when
/// the peer refuses the handshake; an accepted connection ends with its socket.
///
/// The socket work runs in a task of its own, which the actor owns: it ends (and the actor
/// fails, for its supervisor to restart) when the task fails or panics, and the task is
/// aborted when the actor ends. Traffic wakes only that task, not the actor's context.
pub(crate) struct Connection {
    inner: Arc<TransportInner>,
    kind: Kind,
    io: Option<AbortOnDrop>,
}

/// Aborts a task when dropped: the connection's task when the actor that owns it is, the
/// expiry task when the connection ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Connection {
    pub(crate) fn dialer(inner: Arc<TransportInner>, addr: SocketAddr, dial: Arc<Dial>) -> Self {
        Connection {
            inner,
            kind: Kind::Dial { addr, dial },
            io: None,
        }
    }

    pub(crate) fn accepted(
        inner: Arc<TransportInner>,
        stream: TcpStream,
        addr: SocketAddr,
    ) -> Self {
        Connection {
            inner,
            kind: Kind::Accepted {
                stream: Some(stream),
                addr,
            },
            io: None,
        }
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let inner = self.inner.clone();
        type Run = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ConnError>>>>;
        let run: Run = match &mut self.kind {
            Kind::Dial { addr, dial } => Box::pin(dial_loop(inner, *addr, dial.clone())),
            Kind::Accepted { stream, addr } => match stream.take() {
                Some(stream) => Box::pin(accepted(inner, stream, *addr)),
                None => Box::pin(async { Ok(()) }),
            },
        };
        let task = actix::spawn(run);
        self.io = Some(AbortOnDrop(task.abort_handle()));
        ctx.spawn(task.into_actor(self).map(|result, _, ctx| match result {
            Ok(Ok(())) => ctx.stop(),
            Ok(Err(e)) => ctx.fail(e),
            Err(e) if e.is_panic() => ctx.fail(format!("the connection task panicked: {e}")),
            Err(_) => ctx.stop(), // aborted: the actor is ending anyway
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.io = None;
    }
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    if getrandom::fill(&mut n).is_err() {
        // No OS randomness: fall back to a non-cryptographic source rather than a constant.
        n.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    n
}

fn hello(inner: &TransportInner) -> Hello {
    Hello::new(
        &inner.config.cluster,
        &inner.config.node,
        inner.incarnation,
        nonce(),
    )
}

/// Reads one whole frame, never past it (the bytes after a handshake belong to the reader).
async fn read_envelope(stream: &mut TcpStream, max: u32) -> Result<Envelope, ConnError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(FrameError::TooLarge {
            len: len.into(),
            max,
        }
        .into());
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).await?;
    Ok(Envelope::decode(&body)?)
}

async fn write_envelopes(stream: &mut TcpStream, envs: &[Envelope]) -> Result<(), ConnError> {
    let mut buf = BytesMut::new();
    for env in envs {
        env.encode_frame(HANDSHAKE_MAX_FRAME, &mut buf)
            .map_err(|e| ConnError::Protocol(e.to_string()))?;
    }
    stream.write_all(&buf).await?;
    Ok(())
}

/// Runs the handshake to its end on `stream`.
async fn handshake(
    inner: &TransportInner,
    stream: &mut TcpStream,
    dialer: bool,
) -> Result<Peer, ConnError> {
    let secret = inner.config.secret.clone();
    let mut hs = if dialer {
        let (hs, first) = Handshake::dialer(hello(inner), secret);
        write_envelopes(stream, &[first]).await?;
        hs
    } else {
        Handshake::acceptor(hello(inner), secret)
    };
    loop {
        let msg = read_envelope(stream, HANDSHAKE_MAX_FRAME).await?;
        match hs.handle(msg) {
            Ok(Step::Continue(out)) => write_envelopes(stream, &out).await?,
            Ok(Step::Established(out, peer)) => {
                write_envelopes(stream, &out).await?;
                return Ok(peer);
            }
            Err(e) => {
                if let Some(reply) = e.reply() {
                    // Best effort: the peer may already be gone.
                    let _ = write_envelopes(stream, &[reply]).await;
                }
                return Err(e.into());
            }
        }
    }
}

async fn timed_handshake(
    inner: &TransportInner,
    stream: &mut TcpStream,
    dialer: bool,
) -> Result<Peer, ConnError> {
    let limit = inner.config.handshake_timeout;
    tokio::time::timeout(limit, handshake(inner, stream, dialer))
        .await
        .map_err(|_| ConnError::HandshakeTimeout(limit))?
}

async fn accepted(
    inner: Arc<TransportInner>,
    mut stream: TcpStream,
    addr: SocketAddr,
) -> Result<(), ConnError> {
    let peer = match timed_handshake(&inner, &mut stream, false).await {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(peer = %addr, reason = %e, "refused an incoming connection");
            inner
                .stats
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(()); // this connection is done; nothing to restart
        }
    };
    tracing::info!(peer = %addr, node = %peer.node, "peer connected");
    let result = serve(&inner, &peer, stream).await;
    log_end(&peer, addr, &result);
    Ok(())
}

fn log_end(peer: &Peer, addr: SocketAddr, result: &Result<(), ConnError>) {
    match result {
        Ok(()) => tracing::info!(peer = %addr, node = %peer.node, "peer disconnected"),
        Err(e) => tracing::warn!(peer = %addr, node = %peer.node, reason = %e, "connection closed"),
    }
}

async fn dial_loop(
    inner: Arc<TransportInner>,
    addr: SocketAddr,
    dial: Arc<Dial>,
) -> Result<(), ConnError> {
    let report = |outcome: Result<Peer, String>| dial.report(outcome.map(|p| p.node));
    let mut attempt: u32 = 0;
    loop {
        let connected = TcpStream::connect(addr).await;
        match connected {
            Ok(mut stream) => {
                stream.set_nodelay(true)?;
                match timed_handshake(&inner, &mut stream, true).await {
                    Ok(peer) => {
                        attempt = 0;
                        tracing::info!(peer = %addr, node = %peer.node, "connected to peer");
                        report(Ok(peer.clone()));
                        let result = serve(&inner, &peer, stream).await;
                        log_end(&peer, addr, &result);
                    }
                    Err(ConnError::Handshake(e)) => {
                        // A refusal will not fix itself: stop dialing.
                        tracing::warn!(peer = %addr, reason = %e, "handshake refused; giving up on this peer");
                        report(Err(e.to_string()));
                        inner.forget_dial(addr, &dial);
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::warn!(peer = %addr, reason = %e, "handshake failed");
                        report(Err(e.to_string()));
                    }
                }
            }
            Err(e) => {
                tracing::debug!(peer = %addr, reason = %e, "could not connect");
                report(Err(format!("could not connect to {addr}: {e}")));
            }
        }
        attempt = attempt.saturating_add(1);
        let delay = inner.config.reconnect.delay(attempt, fastrand::f64());
        tokio::time::sleep(delay).await;
    }
}

/// Carries traffic with an authenticated peer until the connection ends.
async fn serve(
    inner: &Arc<TransportInner>,
    peer: &Peer,
    stream: TcpStream,
) -> Result<(), ConnError> {
    stream.set_nodelay(true)?;
    let (rd, wr) = stream.into_split();
    let node: Arc<str> = peer.node.as_str().into();
    let link = Arc::new_cyclic(|link| {
        let feed = Arc::new(ConnFeed::new(inner, node.clone(), link.clone()));
        Link::new(
            rd,
            wr,
            inner.config.queue_bytes,
            inner.config.max_frame,
            feed,
        )
    });
    inner.add_link(&peer.node, link.clone());
    // Closes the link however this ends, also when the connection actor is killed and this
    // future dropped: pending asks fail and the socket closes.
    let _closing = CloseOnDrop {
        inner: inner.clone(),
        node: peer.node.clone(),
        link: link.clone(),
    };
    // Ask deadlines are kept by a task of their own, so that traffic does not poll its timer.
    let expiry = {
        let link = link.clone();
        actix::spawn(async move { link.expire_loop().await })
    };
    let _expiry = AbortOnDrop(expiry.abort_handle());
    tokio::select! {
        biased; // traffic first; no random draw per wake-up
        r = read_loop(inner, &node, &link) => r,
        w = link.write_loop() => w.map_err(ConnError::from),
    }
}

struct CloseOnDrop {
    inner: Arc<TransportInner>,
    node: String,
    link: Arc<Link>,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.link.close();
        self.inner.remove_link(&self.node, &self.link);
    }
}

/// Reads and handles frames until the connection ends (askers may read some of them: see
/// [`super::inbound`]).
async fn read_loop(
    inner: &Arc<TransportInner>,
    node: &Arc<str>,
    link: &Arc<Link>,
) -> Result<(), ConnError> {
    let conn = Conn { inner, node, link };
    std::future::poll_fn(|cx| link.inbound.poll_task(&conn, cx)).await
}
