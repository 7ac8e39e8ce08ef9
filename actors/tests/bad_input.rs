//! Hostile or broken peers on 127.0.0.1: each is refused with the right reason, only its own
//! connection closes, and the node keeps serving a good peer.

mod counter;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use cadre_actors::{Node, TransportConfig};
use cadre_cluster::wire::{
    Ask, Envelope, Handshake, Hello, RejectReason, RemoteError, Secret, Step, Tell,
    PROTOCOL_VERSION,
};
use cadre_runtime::testkit::run;
use cadre_runtime::{ChildSpec, Runtime, SupervisorSpec};
use counter::{Counter, Incr};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(5);

fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes().to_vec()).unwrap()
}

fn config(cluster: &str, node: &str, s: &str) -> TransportConfig {
    TransportConfig::new(cluster, node, "127.0.0.1:0".parse().unwrap(), secret(s))
}

/// Node "a" with a counter exposed as "counter", and a good peer "good" connected to it.
async fn setup() -> (Node, Node) {
    let rt = Runtime::new("a");
    let a = Node::start(config("prod", "a", "right"), &rt)
        .await
        .unwrap();
    let spec = ChildSpec::new("counter", Counter::default);
    let counter = spec.actor_ref();
    SupervisorSpec::new("app")
        .child(spec)
        .start(&rt)
        .await
        .unwrap();
    a.expose("counter", counter).accept::<Incr>();
    let good = Node::start(config("prod", "good", "right"), &Runtime::new("good"))
        .await
        .unwrap();
    good.connect(a.local_addr(), T).await.unwrap();
    (a, good)
}

/// Waits (at most `T`, checking every 5 ms) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The good peer still gets answers from a.
async fn still_serving(good: &Node) {
    good.actor("a", "counter")
        .ask(Incr, T)
        .await
        .expect("a keeps serving its good peer");
}

async fn read_frame(s: &mut TcpStream) -> Option<Envelope> {
    let mut len = [0u8; 4];
    tokio::time::timeout(T, s.read_exact(&mut len))
        .await
        .ok()?
        .ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    tokio::time::timeout(T, s.read_exact(&mut body))
        .await
        .ok()?
        .ok()?;
    Envelope::decode(&body).ok()
}

async fn write_env(s: &mut TcpStream, env: &Envelope) {
    let mut buf = BytesMut::new();
    env.encode_frame(1 << 20, &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
}

/// Waits until the node closes the connection (EOF or reset), at most `T`.
/// Asks the counter for one more over `s` (FIFO behind what was sent before) and returns its
/// count.
async fn incr_and_count(s: &mut TcpStream) -> u64 {
    let ask = Envelope::Ask(Ask {
        id: 1,
        to: "counter".into(),
        tag: "counter.incr".into(),
        timeout_ms: 1000,
        body: rmp_serde::to_vec(&Incr).unwrap(),
    });
    write_env(s, &ask).await;
    match read_frame(s).await {
        Some(Envelope::Reply(r)) => rmp_serde::from_slice(r.result.as_ref().unwrap()).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut sink = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A raw connection that completed the handshake with `a`.
async fn authenticated(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (mut hs, first) = Handshake::dialer(Hello::new("prod", "raw", 1, [9; 32]), secret("right"));
    write_env(&mut s, &first).await;
    loop {
        let msg = read_frame(&mut s).await.expect("handshake reply");
        match hs.handle(msg).unwrap() {
            Step::Continue(out) => {
                for e in out {
                    write_env(&mut s, &e).await;
                }
            }
            Step::Established(out, _) => {
                for e in out {
                    write_env(&mut s, &e).await;
                }
                return s;
            }
        }
    }
}

#[test]
fn wrong_secret_is_refused_with_a_clear_error() {
    run(async {
        let (a, good) = setup().await;
        let intruder = Node::start(config("prod", "x", "wrong"), &Runtime::new("x"))
            .await
            .unwrap();
        let err = intruder
            .connect(a.local_addr(), T)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrong cluster secret"), "{err}");
        // The intruder knows first (it checks a's proof); a hears its reject just after.
        eventually("a counts the refusal", || a.refused_connections() == 1).await;
        assert!(!a.peers().contains(&"x".to_string()));
        still_serving(&good).await;
    });
}

#[test]
fn wrong_cluster_is_refused_naming_both_clusters() {
    run(async {
        let (a, good) = setup().await;
        let other = Node::start(config("staging", "y", "right"), &Runtime::new("y"))
            .await
            .unwrap();
        let err = other
            .connect(a.local_addr(), T)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("staging") && err.contains("prod"), "{err}");
        still_serving(&good).await;
    });
}

#[test]
fn wrong_version_gets_a_reject_frame_then_the_connection_closes() {
    run(async {
        let (a, good) = setup().await;
        let mut s = TcpStream::connect(a.local_addr()).await.unwrap();
        let mut old = Hello::new("prod", "old", 1, [1; 32]);
        old.version = 0;
        write_env(&mut s, &Envelope::Hello(old)).await;
        match read_frame(&mut s).await {
            Some(Envelope::Reject(r)) => {
                assert_eq!(
                    r.reason,
                    RejectReason::Version {
                        ours: PROTOCOL_VERSION,
                        theirs: 0
                    }
                )
            }
            other => panic!("expected a reject, got {other:?}"),
        }
        assert!(closed_by_peer(&mut s).await);
        still_serving(&good).await;
    });
}

#[test]
fn random_bytes_close_only_that_connection() {
    run(async {
        let (a, good) = setup().await;
        let mut s = TcpStream::connect(a.local_addr()).await.unwrap();
        let noise: Vec<u8> = (0..512u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        // A small length prefix, then garbage that is not an envelope.
        s.write_all(&[0, 0, 0, 16]).await.unwrap();
        s.write_all(&noise).await.unwrap();
        assert!(closed_by_peer(&mut s).await);
        still_serving(&good).await;
        eventually("a counts the refusal", || a.refused_connections() >= 1).await;
    });
}

#[test]
fn a_4_gib_length_prefix_closes_the_connection_without_allocating() {
    run(async {
        let (a, good) = setup().await;
        let mut s = TcpStream::connect(a.local_addr()).await.unwrap();
        s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(closed_by_peer(&mut s).await);
        // And after authentication, a prefix over the configured maximum does the same.
        let mut s = authenticated(a.local_addr()).await;
        s.write_all(&(8u32 * 1024 * 1024).to_be_bytes())
            .await
            .unwrap();
        assert!(closed_by_peer(&mut s).await);
        still_serving(&good).await;
    });
}

#[test]
fn a_truncated_frame_closes_the_connection() {
    run(async {
        let (a, good) = setup().await;
        let mut s = authenticated(a.local_addr()).await;
        s.write_all(&[0, 0, 0, 100]).await.unwrap();
        s.write_all(&[1u8; 10]).await.unwrap();
        s.shutdown().await.unwrap();
        assert!(closed_by_peer(&mut s).await);
        still_serving(&good).await;
    });
}

#[test]
fn unknown_tag_and_unexposed_actor_get_error_replies_and_the_connection_lives_on() {
    run(async {
        let (a, good) = setup().await;
        let mut s = authenticated(a.local_addr()).await;
        let ask = |id, to: &str, tag: &str, body: Vec<u8>| {
            Envelope::Ask(Ask {
                id,
                to: to.into(),
                tag: tag.into(),
                timeout_ms: 1000,
                body,
            })
        };
        let unit = rmp_serde::to_vec(&()).unwrap();
        let text = rmp_serde::to_vec("not an Incr").unwrap();
        write_env(&mut s, &ask(1, "counter", "counter.reset", unit.clone())).await;
        write_env(&mut s, &ask(2, "vault", "counter.incr", unit.clone())).await;
        write_env(&mut s, &ask(3, "counter", "counter.incr", text)).await;
        write_env(&mut s, &ask(4, "counter", "counter.incr", unit)).await;
        let mut replies = Vec::new();
        for _ in 0..4 {
            match read_frame(&mut s).await {
                Some(Envelope::Reply(r)) => replies.push(r),
                other => panic!("expected a reply, got {other:?}"),
            }
        }
        replies.sort_by_key(|r| r.id);
        assert_eq!(
            replies[0].result,
            Err(RemoteError::UnknownTag {
                actor: "counter".into(),
                tag: "counter.reset".into()
            })
        );
        assert_eq!(
            replies[1].result,
            Err(RemoteError::NoSuchActor {
                actor: "vault".into()
            })
        );
        // A body that is not an `Incr`: a decode error, reported, not a crash.
        assert!(
            matches!(&replies[2].result, Err(RemoteError::Decode { tag, .. }) if tag == "counter.incr"),
            "{:?}",
            replies[2].result
        );
        // And the same connection still serves a good ask.
        let n: u64 = rmp_serde::from_slice(replies[3].result.as_ref().unwrap()).unwrap();
        assert!(n >= 1);
        still_serving(&good).await;
    });
}

#[test]
fn an_undecodable_message_in_a_tell_frame_is_dropped_and_counted_and_the_rest_delivered() {
    run(async {
        let (a, good) = setup().await;
        let mut s = authenticated(a.local_addr()).await;
        // One tell frame: Incr, a string where an Incr should be, Incr, then a length that
        // runs past the frame's end (malformed: where anything after it starts is unknown).
        let incr = rmp_serde::to_vec(&Incr).unwrap();
        let not_incr = rmp_serde::to_vec("not an Incr").unwrap();
        let mut tell = Tell::of(
            "counter",
            "counter.incr",
            [&incr, &not_incr, &incr].map(|m| &m[..]),
        );
        tell.bodies.extend([0, 0, 0, 9, 0xc0]); // a length past the end of the frame
        tell.count += 1;
        let tell = Envelope::Tell(tell);
        write_env(&mut s, &tell).await;
        // The two good ones were handled: the next Incr on the same connection answers 3.
        assert_eq!(incr_and_count(&mut s).await, 3);
        assert_eq!(
            a.dropped_messages(),
            2,
            "the string and the message past the end"
        );
        still_serving(&good).await;
    });
}

#[test]
fn an_unknown_envelope_variant_closes_only_that_connection() {
    run(async {
        let (a, good) = setup().await;
        let mut s = authenticated(a.local_addr()).await;
        #[derive(Serialize)]
        enum Future {
            Gossip(u32),
        }
        let body = rmp_serde::to_vec(&Future::Gossip(7)).unwrap();
        s.write_all(&(body.len() as u32).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&body).await.unwrap();
        assert!(closed_by_peer(&mut s).await);
        still_serving(&good).await;
    });
}

#[test]
fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    run(async {
        let rt = Runtime::new("a");
        let mut cfg = config("prod", "a", "right");
        cfg.handshake_timeout = Duration::from_millis(200);
        let a = Node::start(cfg, &rt).await.unwrap();
        let mut s = TcpStream::connect(a.local_addr()).await.unwrap();
        assert!(closed_by_peer(&mut s).await);
        assert_eq!(a.refused_connections(), 1);
    });
}

#[test]
fn invalid_configuration_names_the_field() {
    run(async {
        let mut cfg = config("prod", "a", "right");
        cfg.max_frame = 10;
        let err = Node::start(cfg, &Runtime::new("a"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("`max_frame`"), "{err}");
        let mut cfg = config("prod", "", "right");
        cfg.queue_bytes = 0;
        let err = Node::start(cfg, &Runtime::new("a"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("`node` is empty"), "{err}");
    });
}

#[test]
fn a_tell_frame_whose_count_disagrees_with_its_messages_delivers_what_it_can_and_counts_the_rest() {
    run(async {
        let (a, good) = setup().await;
        let mut s = authenticated(a.local_addr()).await;
        let one = rmp_serde::to_vec(&Incr).unwrap();
        let incrs = |held: usize, counted: u32| {
            let mut t = Tell::of("counter", "counter.incr", vec![&one[..]; held]);
            t.count = counted;
            Envelope::Tell(t)
        };
        // Counts three, holds two: both delivered, the missing one counted as lost.
        write_env(&mut s, &incrs(2, 3)).await;
        // Counts one, holds three: one delivered, the two beyond the count lost.
        write_env(&mut s, &incrs(3, 1)).await;
        // Counts none, holds one: nothing delivered, one lost.
        write_env(&mut s, &incrs(1, 0)).await;
        assert_eq!(
            incr_and_count(&mut s).await,
            4,
            "two, one, none, and the ask's own"
        );
        assert_eq!(
            a.dropped_messages(),
            4,
            "one missing, two beyond the count, one uncounted"
        );
        still_serving(&good).await;
    });
}
