//! One connection actor per peer connection: the handshake, then a reader and a writer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use bytes::{Bytes, BytesMut};
use cadre_cluster::wire::{
    Envelope, EnvelopeRef, FrameError, Handshake, HandshakeError, Hello, Peer, Step,
};
use cadre_runtime::ContextExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use super::dial::Dial;
use super::link::Link;
use super::{Replier, TransportInner};
use crate::remote::{Delivery, LostMessages, RemoteError, Undelivered};

/// A delivery waiting for room in a mailbox.
type WaitDelivery =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Undelivered>> + Send>>;

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
    let link = Arc::new(Link::new(
        wr,
        inner.config.queue_bytes,
        inner.config.max_frame,
    ));
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
        r = read_loop(inner, peer, &link, rd) => r,
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

/// The dispatcher of the last (actor, tag) a connection delivered to, so that a stream of one
/// message type skips the table's lock and hashing.
struct LastDispatch {
    to: Arc<str>,
    tag: String,
    version: u64,
    dispatch: Arc<dyn crate::remote::Dispatch>,
}

/// The dispatcher for `tag` on the actor exposed as `to`, with the actor's name.
fn dispatcher(
    inner: &TransportInner,
    cache: &mut Option<LastDispatch>,
    to: &str,
    tag: &str,
) -> Result<(Arc<dyn crate::remote::Dispatch>, Arc<str>), RemoteError> {
    let version = inner.exposed.version();
    if let Some(last) = cache {
        if last.version == version && *last.to == *to && last.tag == tag {
            return Ok((last.dispatch.clone(), last.to.clone()));
        }
    }
    let dispatch = inner.exposed.get(to, tag)?;
    let to: Arc<str> = to.into();
    *cache = Some(LastDispatch {
        to: to.clone(),
        tag: tag.into(),
        version,
        dispatch: dispatch.clone(),
    });
    Ok((dispatch, to))
}

async fn read_loop(
    inner: &Arc<TransportInner>,
    peer: &Peer,
    link: &Arc<Link>,
    mut rd: OwnedReadHalf,
) -> Result<(), ConnError> {
    let max = inner.config.max_frame;
    // Twice what is read at a time, so that the space of frames already handled is taken back
    // (a short copy of the partial frame to the front) rather than the buffer grown (a copy of
    // all of it).
    let mut buf = BytesMut::with_capacity(2 * READ_CHUNK);
    let mut cache = None;
    let node: Arc<str> = peer.node.as_str().into();
    loop {
        // Handle every whole frame in the buffer. Each is split off (no copy): a tell's
        // messages are decoded later, by the actor, from the frame's bytes.
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if len > max {
                return Err(FrameError::TooLarge {
                    len: len.into(),
                    max,
                }
                .into());
            }
            let end = 4 + len as usize;
            if buf.len() < end {
                // Make room for the whole of a large frame (its length was checked above).
                buf.reserve(end - buf.len());
                break;
            }
            let frame = buf.split_to(end).freeze();
            let env = EnvelopeRef::decode(&frame[4..])?;
            let wait = handle(inner, &node, link, &mut cache, env, &frame)?;
            if let Some(wait) = wait {
                // A full lane: stop reading until it takes the messages.
                if let Some(lost) = wait.await {
                    drop_messages(inner, &node, lost);
                }
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        if rd.read_buf(&mut buf).await? == 0 {
            if buf.is_empty() {
                return Ok(());
            }
            return Err(FrameError::Truncated {
                have: buf.len(),
                need: if buf.len() >= 4 {
                    4 + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
                } else {
                    4
                },
            }
            .into());
        }
    }
}

/// How much a connection reads at a time (at least).
const READ_CHUNK: usize = 64 * 1024;

pub(crate) fn drop_messages(inner: &TransportInner, node: &str, lost: Undelivered) {
    inner
        .stats
        .dropped
        .fetch_add(lost.count, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(node = %node, reason = %lost.reason, count = lost.count, "dropped messages from a peer");
}

/// Handles one envelope; a tell to a full mailbox comes back as a future to await.
fn handle(
    inner: &Arc<TransportInner>,
    node: &Arc<str>,
    link: &Arc<Link>,
    cache: &mut Option<LastDispatch>,
    env: EnvelopeRef<'_>,
    frame: &Bytes,
) -> Result<Option<WaitDelivery>, ConnError> {
    if inner.is_cut(node) {
        return Ok(None); // the fault injector's partition: as if never received
    }
    match env {
        EnvelopeRef::Tell(t) => {
            match dispatcher(inner, cache, t.to, t.tag) {
                Ok((d, _)) => {
                    let at = t.bodies.as_ptr() as usize - frame.as_ptr() as usize;
                    let bodies = frame.slice(at..at + t.bodies.len());
                    let lost = LostMessages::new(inner.clone(), node.clone());
                    match d.tell_bytes(t.tag, bodies, t.count, lost) {
                        Delivery::Done(None) => {}
                        Delivery::Done(Some(lost)) => drop_messages(inner, node, lost),
                        Delivery::Wait(wait) => return Ok(Some(wait)),
                    }
                }
                Err(e) => {
                    let count = u64::from(t.count);
                    drop_messages(inner, node, Undelivered { count, reason: e });
                }
            }
            Ok(None)
        }
        EnvelopeRef::Ask(a) => {
            let timeout = Duration::from_millis(a.timeout_ms.into());
            match dispatcher(inner, cache, a.to, a.tag) {
                Ok((d, actor)) => {
                    let replier = Replier::new(link.clone(), a.id, actor);
                    if let Delivery::Wait(wait) = d.ask_bytes(a.tag, a.body, timeout, replier) {
                        return Ok(Some(wait));
                    }
                }
                Err(e) => Replier::new(link.clone(), a.id, a.to.into()).fail(e),
            }
            Ok(None)
        }
        EnvelopeRef::Reply(r) => {
            let result = r.result.map(|b| frame.slice_ref(b));
            if !link.resolve(r.id, result) {
                tracing::debug!(node = %node, id = r.id, "reply to an ask that is no longer waiting");
            }
            Ok(None)
        }
        EnvelopeRef::Hello(_) | EnvelopeRef::Proof(_) | EnvelopeRef::Reject(_) => Err(
            ConnError::Protocol("handshake message after the handshake".into()),
        ),
    }
}
