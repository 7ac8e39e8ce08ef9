//! Nodes in one process on 127.0.0.1 (port 0): tell, ask, ordering, size limits, local
//! transparency, reconnection, a full outbound queue, a crashed connection actor, and asks
//! failing fast when a connection drops.

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use cadre_actors::{Node, RemoteAskError, RemoteMessage, RemoteTellError, TransportConfig};
use cadre_cluster::wire::Secret;
use cadre_runtime::testkit::run;
use cadre_runtime::{ChildSpec, Runtime, SupervisorSpec};
use serde::{Deserialize, Serialize};

mod common;
use common::eventually_within;

const T: Duration = Duration::from_secs(5);

/// Records every number it is told; answers with the list.
#[derive(Default)]
struct Recorder {
    seen: Vec<u64>,
}
impl Actor for Recorder {
    type Context = Context<Self>;
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
struct Push(u64);
impl RemoteMessage for Push {
    const TAG: &'static str = "test.push";
}
impl Handler<Push> for Recorder {
    type Result = ();
    fn handle(&mut self, m: Push, _: &mut Context<Self>) {
        self.seen.push(m.0);
    }
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Vec<u64>")]
struct Seen;
impl RemoteMessage for Seen {
    const TAG: &'static str = "test.seen";
}
impl Handler<Seen> for Recorder {
    type Result = MessageResult<Seen>;
    fn handle(&mut self, _: Seen, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.seen.clone())
    }
}

/// Echoes a blob back (as bytes: a plain `Vec<u8>` would encode as an array of integers).
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "serde_bytes::ByteBuf")]
struct Echo(#[serde(with = "serde_bytes")] Vec<u8>);
impl RemoteMessage for Echo {
    const TAG: &'static str = "test.echo";
}
impl Handler<Echo> for Recorder {
    type Result = MessageResult<Echo>;
    fn handle(&mut self, m: Echo, _: &mut Context<Self>) -> Self::Result {
        MessageResult(serde_bytes::ByteBuf::from(m.0))
    }
}

/// Replies after a delay.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
struct Slow(u64);
impl RemoteMessage for Slow {
    const TAG: &'static str = "test.slow";
}
impl Handler<Slow> for Recorder {
    type Result = ResponseActFuture<Self, u64>;
    fn handle(&mut self, m: Slow, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            actix::fut::wrap_future::<_, Self>(tokio::time::sleep(Duration::from_millis(m.0)))
                .map(move |_, _, _| m.0),
        )
    }
}

/// Blocks the actor's mailbox for a while.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
struct Hold(u64);
impl RemoteMessage for Hold {
    const TAG: &'static str = "test.hold";
}
impl Handler<Hold> for Recorder {
    type Result = ();
    fn handle(&mut self, m: Hold, ctx: &mut Context<Self>) {
        ctx.wait(actix::fut::wrap_future(tokio::time::sleep(
            Duration::from_millis(m.0),
        )));
    }
}

/// A numbered message with a payload, recorded by its number: fills buffers quickly.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
struct Bulk(u64, #[serde(with = "serde_bytes")] Vec<u8>);
impl RemoteMessage for Bulk {
    const TAG: &'static str = "test.bulk";
}
impl Handler<Bulk> for Recorder {
    type Result = ();
    fn handle(&mut self, m: Bulk, _: &mut Context<Self>) {
        self.seen.push(m.0);
    }
}

/// A message type with a bug: decoding it panics, in whatever task reads its frame.
#[derive(Message, Serialize, Debug)]
#[rtype(result = "()")]
struct Boom;
impl RemoteMessage for Boom {
    const TAG: &'static str = "test.boom";
}
impl<'de> Deserialize<'de> for Boom {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("Boom's decoder is broken");
    }
}
impl Handler<Boom> for Recorder {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) {}
}

/// Not accepted from the network by anyone.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
struct Secretive;
impl RemoteMessage for Secretive {
    const TAG: &'static str = "test.secretive";
}
impl Handler<Secretive> for Recorder {
    type Result = ();
    fn handle(&mut self, _: Secretive, _: &mut Context<Self>) {}
}

fn secret() -> Secret {
    Secret::new(b"test-secret".to_vec()).unwrap()
}

fn config(node: &str) -> TransportConfig {
    TransportConfig::new("test", node, "127.0.0.1:0".parse().unwrap(), secret())
}

/// Starts `make`'s actor as the one child of a supervisor named `group` on `rt`.
async fn supervised<A>(
    rt: &Runtime,
    group: &str,
    name: &str,
    make: impl Fn() -> A + Send + Sync + 'static,
) -> cadre_runtime::ActorRef<A>
where
    A: Actor<Context = Context<A>>,
{
    let spec = ChildSpec::new(name, make);
    let actor = spec.actor_ref();
    SupervisorSpec::new(group)
        .child(spec)
        .start(rt)
        .await
        .unwrap();
    actor
}

/// A node with a supervised `Recorder` exposed as "rec".
async fn node_with(config: TransportConfig) -> (Node, Runtime) {
    let rt = Runtime::new(config.node.clone());
    let node = Node::start(config, &rt).await.expect("transport starts");
    let rec = supervised(&rt, "app", "rec", Recorder::default).await;
    node.expose("rec", rec)
        .accept::<Push>()
        .accept::<Seen>()
        .accept::<Echo>()
        .accept::<Slow>()
        .accept::<Hold>()
        .accept::<Bulk>()
        .accept::<Boom>();
    (node, rt)
}

async fn node(id: &str) -> Node {
    node_with(config(id)).await.0
}

/// Nodes "a" and "b", b connected to a, and a's recorder as b reaches it.
async fn connected() -> (Node, Node, cadre_actors::RemoteRef) {
    let a = node("a").await;
    let b = node("b").await;
    b.connect(a.local_addr(), T).await.unwrap();
    let rec = b.actor("a", "rec");
    (a, b, rec)
}

#[test]
fn tell_and_ask_between_two_nodes_in_order() {
    run(async {
        let a = node("a").await;
        let b = node("b").await;
        assert_eq!(b.connect(a.local_addr(), T).await.unwrap(), "a");
        let rec = b.actor("a", "rec");
        for i in 0..2_000 {
            rec.tell_wait(Push(i)).await.unwrap();
        }
        // Asks travel on the same connection, after the tells.
        let seen = rec.ask(Seen, T).await.unwrap();
        assert_eq!(seen, (0..2_000).collect::<Vec<_>>());
        assert_eq!(b.peers(), ["a"]);
    });
}

#[test]
fn three_nodes_reach_each_other_both_ways() {
    run(async {
        let nodes = [node("a").await, node("b").await, node("c").await];
        // Each dials the ones before it; connections carry traffic both ways.
        for i in 0..3 {
            for j in 0..i {
                nodes[i].connect(nodes[j].local_addr(), T).await.unwrap();
            }
        }
        for from in &nodes {
            for to in &nodes {
                if from.id() != to.id() {
                    let r = from.actor(to.id(), "rec");
                    r.ask(Push(1), T).await.unwrap();
                }
            }
        }
        for n in &nodes {
            let seen = n.actor(n.id(), "rec").ask(Seen, T).await.unwrap();
            assert_eq!(
                seen,
                [1, 1],
                "{} was told once by each of the two others",
                n.id()
            );
        }
    });
}

#[test]
fn a_local_target_behaves_like_a_remote_one() {
    run(async {
        let a = node("a").await;
        let me = a.actor("a", "rec");
        me.tell(Push(7)).unwrap();
        assert_eq!(me.ask(Seen, T).await.unwrap(), [7]);
        assert_eq!(
            a.actor("a", "nobody").ask(Seen, T).await.unwrap_err(),
            RemoteAskError::NoSuchActor("nobody".into())
        );
        assert!(matches!(
            me.tell(Secretive),
            Err(RemoteTellError::Remote(
                cadre_actors::RemoteError::UnknownTag { .. }
            ))
        ));
    });
}

#[test]
fn unknown_actor_and_unknown_tag_get_error_replies_not_hangs() {
    run(async {
        let a = node("a").await;
        let b = node("b").await;
        b.connect(a.local_addr(), T).await.unwrap();
        assert_eq!(
            b.actor("a", "nobody").ask(Seen, T).await.unwrap_err(),
            RemoteAskError::NoSuchActor("nobody".into())
        );
        assert_eq!(
            b.actor("a", "rec").ask(Secretive, T).await.unwrap_err(),
            RemoteAskError::UnknownTag {
                actor: "rec".into(),
                tag: "test.secretive".into()
            }
        );
        // A tell to an unexposed name is dropped there and counted; the connection lives on.
        b.actor("a", "nobody").tell(Push(1)).unwrap();
        assert_eq!(
            b.actor("a", "rec").ask(Seen, T).await.unwrap(),
            Vec::<u64>::new()
        );
        assert_eq!(a.dropped_messages(), 1);
    });
}

#[test]
fn messages_near_the_frame_limit_pass_and_larger_ones_are_refused_at_the_sender() {
    run(async {
        let mut small = config("a");
        small.max_frame = 64 * 1024;
        let (a, _) = node_with(small.clone()).await;
        small.node = "b".into();
        let (b, _) = node_with(small).await;
        b.connect(a.local_addr(), T).await.unwrap();
        let rec = b.actor("a", "rec");
        let near = vec![0xAB; 64 * 1024 - 100];
        assert_eq!(
            rec.ask(Echo(near.clone()), T).await.unwrap().into_vec(),
            near
        );
        let over = vec![0u8; 64 * 1024];
        assert!(matches!(
            rec.ask(Echo(over.clone()), T).await,
            Err(RemoteAskError::Encode(_))
        ));
        assert!(matches!(
            rec.tell(Echo(over)),
            Err(RemoteTellError::Encode(..))
        ));
        // Nothing was sent, nothing broke.
        assert_eq!(rec.ask(Echo(vec![1]), T).await.unwrap().into_vec(), [1]);
    });
}

#[test]
fn an_ask_times_out_at_its_deadline_and_later_asks_are_answered() {
    run(async {
        let (_a, _b, rec) = connected().await;
        // An asynchronous reply within the timeout arrives.
        assert_eq!(rec.ask(Slow(20), T).await.unwrap(), 20);
        // One that takes longer fails at the asker's deadline, not at the reply.
        let t0 = std::time::Instant::now();
        let late = rec.ask(Slow(3_000), Duration::from_millis(200)).await;
        let waited = t0.elapsed();
        assert_eq!(
            late.unwrap_err(),
            RemoteAskError::Timeout(Duration::from_millis(200))
        );
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
            "timed out after {waited:?}"
        );
        // Several at once with different deadlines expire in deadline order, each on time.
        let (short, long) = (rec.clone(), rec.clone());
        let long =
            actix::spawn(async move { long.ask(Slow(3_000), Duration::from_millis(600)).await });
        let short =
            actix::spawn(async move { short.ask(Slow(3_000), Duration::from_millis(100)).await });
        let t0 = std::time::Instant::now();
        assert!(matches!(
            short.await.unwrap(),
            Err(RemoteAskError::Timeout(_))
        ));
        let short_at = t0.elapsed();
        assert!(matches!(
            long.await.unwrap(),
            Err(RemoteAskError::Timeout(_))
        ));
        let long_at = t0.elapsed();
        assert!(short_at < Duration::from_millis(500), "{short_at:?}");
        assert!(long_at >= Duration::from_millis(550), "{long_at:?}");
        // The connection still carries prompt asks.
        let echoed = rec.ask(Echo(b"still here".to_vec()), T).await.unwrap();
        assert_eq!(&echoed[..], b"still here");
    });
}

#[test]
fn pending_asks_fail_at_once_when_the_connection_drops() {
    run(async {
        let (a, _b, rec) = connected().await;
        let pending = actix::spawn(async move {
            let t0 = std::time::Instant::now();
            (
                rec.ask(Slow(60_000), Duration::from_secs(120)).await,
                t0.elapsed(),
            )
        });
        // Let the ask reach a, then take a's transport down.
        tokio::time::sleep(Duration::from_millis(50)).await;
        a.shutdown(T).await.unwrap();
        let (result, waited) = pending.await.unwrap();
        assert_eq!(
            result.unwrap_err(),
            RemoteAskError::NodeUnreachable("a".into())
        );
        assert!(waited < Duration::from_secs(10), "failed after {waited:?}");
    });
}

#[test]
fn a_dialer_reconnects_after_the_peer_restarts() {
    run(async {
        let a = node("a").await;
        let addr: SocketAddr = a.local_addr();
        let b = node("b").await;
        b.connect(addr, T).await.unwrap();
        b.actor("a", "rec").ask(Push(1), T).await.unwrap();
        a.shutdown(T).await.unwrap();
        // a comes back on the same address, with fresh state.
        let mut again = config("a");
        again.listen = addr;
        let (a2, _) = node_with(again).await;
        let rec = b.actor("a", "rec");
        let deadline = tokio::time::Instant::now() + T;
        loop {
            match rec.ask(Seen, Duration::from_millis(500)).await {
                Ok(seen) => {
                    assert!(seen.is_empty(), "a fresh node: {seen:?}");
                    break;
                }
                Err(RemoteAskError::NodeUnreachable(_))
                    if tokio::time::Instant::now() < deadline =>
                {
                    // Redial in progress (backoff); wait for the link to come back.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("no reconnection: {e}"),
            }
        }
        drop(a2);
    });
}

#[test]
fn tells_to_a_full_mailbox_wait_for_room_and_none_is_lost() {
    run(async {
        let (a, _b, rec) = connected().await;
        // The recorder's mailbox (1024) fills while it is held; the connection then stops
        // reading, and the pressure goes back to b's queue.
        rec.tell(Hold(300)).unwrap();
        for i in 0..5_000 {
            rec.tell_wait(Push(i)).await.unwrap();
        }
        let seen = rec.ask(Seen, Duration::from_secs(20)).await.unwrap();
        assert_eq!(seen, (0..5_000).collect::<Vec<_>>());
        assert_eq!(a.dropped_messages(), 0);
    });
}

#[test]
fn a_full_outbound_queue_refuses_a_tell_with_the_message_back_and_tell_wait_waits_for_room() {
    run(async {
        let a = node("a").await;
        let mut small = config("b");
        small.queue_bytes = 16 * 1024;
        let (b, _rt) = node_with(small).await;
        b.connect(a.local_addr(), T).await.unwrap();
        let rec = b.actor("a", "rec");
        // The recorder is held: its lane fills, a stops reading, the sockets' buffers fill,
        // and then b's queue of 16 KiB.
        rec.tell(Hold(3_000)).unwrap();
        let payload = vec![7u8; 8 * 1024];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(2_500);
        let mut sent = 0u64;
        let refused = loop {
            match rec.tell(Bulk(sent, payload.clone())) {
                Ok(()) => sent += 1,
                Err(RemoteTellError::QueueFull(msg)) => break msg,
                Err(e) => panic!("tell {sent} failed otherwise: {e}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no tell refused after {sent} of 8 KiB"
            );
            // Lets the writer task run, wherever it runs.
            tokio::task::yield_now().await;
        };
        // The refused message comes back whole, and waiting sends it and what follows.
        assert_eq!(refused.0, sent, "the message refused is the one just told");
        assert_eq!(refused.1, payload);
        rec.tell_wait(refused).await.unwrap();
        for i in sent + 1..sent + 10 {
            rec.tell_wait(Bulk(i, payload.clone())).await.unwrap();
        }
        // An ask is refused, not queued, while the queue is full: it is asked again until
        // the queue has room (the recorder is released at 3 s).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let seen = loop {
            match rec.ask(Seen, Duration::from_secs(20)).await {
                Err(RemoteAskError::QueueFull(_)) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the queue never drained"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(
            seen,
            (0..sent + 10).collect::<Vec<_>>(),
            "in order, none lost"
        );
        assert_eq!(a.dropped_messages(), 0);
    });
}

#[test]
fn a_crashed_connection_actor_is_restarted_and_dials_again() {
    run(async {
        let (a, b, _) = connected().await;
        // b dialed a; a takes the connection as its own once its side of the handshake ends.
        eventually_within("a sees b", T, || async { a.peers() == ["b"] }).await;
        // A frame whose message panics when decoded crashes b's connection (its task reads
        // it: b's recorder has not been asked anything over it yet, so it does not read the
        // connection). a's ask, which b's recorder would have answered, fails at once: its
        // reply handle, dropped as the panic unwinds, may still get a failure out before the
        // connection closes; otherwise the connection's drop fails it.
        let started = tokio::time::Instant::now();
        let boom = a.actor("b", "rec").ask(Boom, Duration::from_secs(20)).await;
        assert!(
            matches!(
                boom,
                Err(RemoteAskError::NodeUnreachable(_) | RemoteAskError::HandlerFailed(_))
            ),
            "{boom:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not at the timeout"
        );
        // Nothing of the dial loop survives the panic: only a restarted connection actor
        // dials a again (a never dials b).
        eventually_within("b reconnects", Duration::from_secs(10), || async {
            b.actor("a", "rec").ask(Push(1), T).await.is_ok()
        })
        .await;
        assert_eq!(b.dialing(), [a.local_addr()]);
        assert_eq!(
            a.actor("b", "rec").ask(Seen, T).await.unwrap(),
            Vec::<u64>::new()
        );
        assert_eq!(b.actor("a", "rec").ask(Seen, T).await.unwrap(), [1]);
    });
}

#[test]
fn two_nodes_that_dial_each_other_have_one_peer_each_and_talk_both_ways() {
    run(async {
        let (a, _) = node_with(config("a")).await;
        let b = node("b").await;
        b.connect(a.local_addr(), T).await.unwrap();
        a.connect(b.local_addr(), T).await.unwrap();
        // Two connections between the same pair: each node lists the other once, and traffic
        // flows both ways (over the newest connection).
        b.actor("a", "rec").ask(Push(1), T).await.unwrap();
        a.actor("b", "rec").ask(Push(2), T).await.unwrap();
        assert_eq!(a.peers(), ["b"]);
        assert_eq!(b.peers(), ["a"]);
    });
}

#[test]
fn connect_reuses_the_dialer_of_an_address_and_disconnect_stops_it() {
    run(async {
        let a = node("a").await;
        let b = node("b").await;
        for _ in 0..3 {
            assert_eq!(b.connect(a.local_addr(), T).await.unwrap(), "a");
        }
        assert_eq!(
            b.dialing(),
            [a.local_addr()],
            "one dialer, however many connects"
        );
        b.actor("a", "rec").ask(Push(1), T).await.unwrap();
        b.disconnect(a.local_addr(), T).await;
        assert!(b.dialing().is_empty());
        let deadline = tokio::time::Instant::now() + T;
        while !b.peers().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the connection stayed up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(
            b.actor("a", "rec").ask(Seen, T).await,
            Err(RemoteAskError::NodeUnreachable(_))
        ));
        // And connecting again dials afresh.
        assert_eq!(b.connect(a.local_addr(), T).await.unwrap(), "a");
        assert_eq!(b.actor("a", "rec").ask(Seen, T).await.unwrap(), [1]);
    });
}

// An asker waiting for its reply reads the connection itself while no one else does (the
// reply is then handled in the asker's own poll); whatever it reads besides its reply must be
// delivered as the connection's task would deliver it: in order, nothing lost, full lanes
// waited on, and the socket handed back when the asker is done or gives up.

/// Tells a peer's recorder `n` numbers, then answers `n`.
struct Relay {
    to: cadre_actors::RemoteRef,
}
impl Actor for Relay {
    type Context = Context<Self>;
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
struct Fan(u64);
impl RemoteMessage for Fan {
    const TAG: &'static str = "test.fan";
}
impl Handler<Fan> for Relay {
    type Result = u64;
    fn handle(&mut self, m: Fan, _: &mut Context<Self>) -> u64 {
        for i in 0..m.0 {
            self.to
                .tell(Push(i))
                .expect("the tells fit the outbound queue");
        }
        m.0
    }
}

/// Nodes "a" and "b", b connected to a; a exposes a relay that tells b's recorder.
async fn with_relay() -> (Node, Node) {
    let (a, rt) = node_with(config("a")).await;
    let b = node("b").await;
    b.connect(a.local_addr(), T).await.unwrap();
    let to = a.actor("b", "rec");
    let relay = supervised(&rt, "relays", "relay", move || Relay { to: to.clone() }).await;
    a.expose("relay", relay).accept::<Fan>();
    a_knows_b(&b).await;
    (a, b)
}

/// Waits until a has its side of b's connection: it answered an ask that came over it.
async fn a_knows_b(b: &Node) {
    b.actor("a", "rec").ask(Echo(Vec::new()), T).await.unwrap();
}

/// What b's recorder has seen, asked from a: the ask travels behind everything a sent b.
async fn seen_at_b(a: &Node) -> Vec<u64> {
    a.actor("b", "rec")
        .ask(Seen, Duration::from_secs(20))
        .await
        .unwrap()
}

#[test]
fn frames_that_come_before_a_reply_are_delivered_in_order_whoever_reads_them() {
    run(async {
        let (a, b) = with_relay().await;
        let relay = b.actor("a", "relay");
        let mut expected = Vec::new();
        for n in [1, 10, 2_000, 3] {
            // The tells and the reply come back on the connection b's asker waits on.
            assert_eq!(relay.ask(Fan(n), T).await.unwrap(), n);
            expected.extend(0..n);
        }
        assert_eq!(seen_at_b(&a).await, expected);
        assert_eq!(b.dropped_messages(), 0);
    });
}

#[test]
fn a_reply_behind_tells_to_a_full_mailbox_comes_once_they_are_delivered() {
    run(async {
        let (a, b) = with_relay().await;
        // b's recorder is held, its lane (1024 messages) fills with the relay's tells, and
        // the reader of b's connection must wait for room before it reaches the reply.
        a.actor("b", "rec").tell(Hold(300)).unwrap();
        let t0 = std::time::Instant::now();
        let n = b.actor("a", "relay").ask(Fan(5_000), T).await.unwrap();
        assert_eq!(n, 5_000);
        assert!(
            t0.elapsed() >= Duration::from_millis(250),
            "the reply overtook tells that were waiting for room ({:?})",
            t0.elapsed()
        );
        assert_eq!(seen_at_b(&a).await, (0..5_000).collect::<Vec<_>>());
        assert_eq!(b.dropped_messages(), 0);
    });
}

#[test]
fn an_asker_that_gives_up_hands_the_connection_back() {
    run(async {
        let (a, b, rec) = connected().await;
        a_knows_b(&b).await;
        for round in 0..3u64 {
            // The asker waits on the socket, then is dropped before its answer comes.
            let gave_up =
                tokio::time::timeout(Duration::from_millis(50), rec.ask(Slow(1_000), T)).await;
            assert!(gave_up.is_err(), "the slow ask was answered early");
            // The connection's task must be reading again: a's asks to b are answered.
            a.actor("b", "rec").tell(Push(round)).unwrap();
            assert_eq!(seen_at_b(&a).await, (0..=round).collect::<Vec<_>>());
            assert_eq!(&rec.ask(Echo(vec![7]), T).await.unwrap()[..], [7]);
        }
        // The late replies find no one waiting and are dropped quietly; the link is fine.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(&rec.ask(Echo(vec![8]), T).await.unwrap()[..], [8]);
        assert_eq!(b.peers(), ["a"]);
    });
}

#[test]
fn an_ask_left_unpolled_does_not_stall_its_connection() {
    run(async {
        let (a, b, rec) = connected().await;
        a_knows_b(&b).await;
        // Polled once (it takes the socket to read its reply), then never again while alive.
        let mut idle = Box::pin(rec.ask(Slow(100), T));
        std::future::poll_fn(|cx| {
            assert!(std::future::Future::poll(idle.as_mut(), cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        // Everything else on b's connection goes on: tells and asks from a to b, asks from b.
        a.actor("b", "rec").tell(Push(1)).unwrap();
        assert_eq!(seen_at_b(&a).await, [1]);
        assert_eq!(&rec.ask(Echo(vec![3]), T).await.unwrap()[..], [3]);
        // Its own reply came meanwhile and waits for it.
        assert_eq!(idle.await.unwrap(), 100);
    });
}

#[test]
fn an_actor_that_reads_its_connection_while_idle_holds_no_one_up_when_busy() {
    run(async {
        let (a, b, rec) = connected().await;
        let other = b.actor("a", expose_other(&a));
        // Served over this connection, the recorder reads it itself while idle.
        for i in 0..20u8 {
            assert_eq!(&rec.ask(Echo(vec![i]), T).await.unwrap()[..], [i]);
        }
        // Twice (the connection's watch over its readers lapses in between, and must be set
        // again): it waits for a while, its lane untouched (its answer comes before it waits),
        // holding the connection; what comes for others is read anyway.
        for round in 0..2u64 {
            rec.ask(Hold(800), T).await.unwrap();
            let t0 = std::time::Instant::now();
            for i in 0..5u8 {
                assert_eq!(&other.ask(Echo(vec![i]), T).await.unwrap()[..], [i]);
            }
            other.tell(Push(round)).unwrap();
            assert_eq!(other.ask(Seen, T).await.unwrap().last(), Some(&round));
            let waited = t0.elapsed();
            assert!(
                waited < Duration::from_millis(500),
                "messages to another actor waited for the busy one ({waited:?})"
            );
            // And the busy one is served again once it is done.
            assert_eq!(&rec.ask(Echo(vec![1]), T).await.unwrap()[..], [1]);
            for i in 0..20u8 {
                assert_eq!(&rec.ask(Echo(vec![i]), T).await.unwrap()[..], [i]);
            }
        }
    });
}

/// A second recorder on `node`, exposed as "other".
fn expose_other(node: &Node) -> &'static str {
    let actor = cadre_runtime::spawn("other", 1024, Recorder::default());
    node.expose("other", actor)
        .accept::<Push>()
        .accept::<Seen>()
        .accept::<Echo>();
    "other"
}

#[test]
fn an_actor_on_another_thread_reads_its_connection_and_loses_nothing() {
    run(async {
        let (a, b, _) = connected().await;
        a_knows_b(&b).await;
        // A recorder running on an arbiter of its own, exposed on a.
        let arbiter = actix::Arbiter::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(arbiter.spawn(async move {
            let _ = tx.send(cadre_runtime::spawn("far", 1024, Recorder::default()));
        }));
        let far = rx.await.unwrap();
        a.expose("far", far)
            .accept::<Push>()
            .accept::<Seen>()
            .accept::<Echo>();
        let far = b.actor("a", "far");
        // Asks make the connection its feed; tells between them, and asks to the recorder on
        // a's own thread, are read by whichever side holds the socket, in order.
        let near = b.actor("a", "rec");
        let mut expected = Vec::new();
        for i in 0..300u64 {
            far.tell(Push(i)).unwrap();
            expected.push(i);
            if i % 3 == 0 {
                let mine = i.to_be_bytes().to_vec();
                assert_eq!(
                    far.ask(Echo(mine.clone()), T).await.unwrap().into_vec(),
                    mine
                );
                near.tell(Push(i)).unwrap();
            }
        }
        assert_eq!(far.ask(Seen, T).await.unwrap(), expected);
        let near_seen: Vec<u64> = (0..300).filter(|i| i % 3 == 0).collect();
        assert_eq!(near.ask(Seen, T).await.unwrap(), near_seen);
        assert_eq!(a.dropped_messages(), 0);
        arbiter.stop();
    });
}

#[test]
fn many_askers_on_several_threads_share_one_connection_and_each_gets_its_own_answer() {
    run(async {
        let (a, b, rec) = connected().await;
        a_knows_b(&b).await;
        const ASKERS: u64 = 8;
        const ASKS: u64 = 200;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut arbiters = Vec::new();
        for asker in 0..ASKERS {
            let (rec, tx) = (rec.clone(), tx.clone());
            let job = async move {
                let mut ok = 0;
                for i in 0..ASKS {
                    let mine = format!("{asker}/{i}").into_bytes();
                    let back = rec.ask(Echo(mine.clone()), T).await.unwrap();
                    assert_eq!(back.into_vec(), mine, "an answer to another ask");
                    ok += 1;
                }
                tx.send(ok).unwrap();
            };
            // Half on this thread, half on threads of their own.
            if asker % 2 == 0 {
                actix::spawn(job);
            } else {
                let arbiter = actix::Arbiter::new();
                assert!(arbiter.spawn(job));
                arbiters.push(arbiter);
            }
        }
        drop(tx);
        // Meanwhile a tells b, on the same connection, in the other direction.
        let to_b = a.actor("b", "rec");
        for i in 0..3_000 {
            to_b.tell_wait(Push(i)).await.unwrap();
        }
        let mut answered = 0;
        while let Some(ok) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the askers finish")
        {
            answered += ok;
        }
        assert_eq!(answered, ASKERS * ASKS);
        assert_eq!(seen_at_b(&a).await, (0..3_000).collect::<Vec<_>>());
        assert_eq!(b.dropped_messages(), 0);
        for arbiter in arbiters {
            arbiter.stop();
        }
    });
}
