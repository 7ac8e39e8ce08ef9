//! The connection handshake: both sides say who they are, check that they speak the same
//! protocol version in the same cluster, and prove they know the cluster secret.
//!
//! ```text
//! dialer                                   acceptor
//!   Hello{magic, version, cluster, node, incarnation, nonce_d}  ──▶
//!                                          checks magic, version, cluster
//!   ◀──  Hello{…, nonce_a}, Proof{HMAC(secret, "A" ‖ hello_d ‖ hello_a)}
//! checks the acceptor's hello and proof
//!   Proof{HMAC(secret, "D" ‖ hello_d ‖ hello_a)}  ──▶
//!                                          checks the proof
//! established                              established
//! ```
//!
//! Each proof is an HMAC-SHA256 keyed by the cluster secret over both hellos as sent (so both
//! fresh nonces) and the prover's role, so a proof can be neither replayed on another connection
//! nor reflected back at its author. Proofs are compared in constant time. Any failure is
//! answered with a [`Reject`] naming the reason, and the connection closes; nothing else is
//! touched.
//!
//! The machine is pure: the nonce comes in with the local [`Hello`], envelopes go in and out.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::envelope::Envelope;

/// The first bytes of every hello.
pub const MAGIC: [u8; 4] = *b"CADR";

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 3;

/// What a side says of itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The cluster the sender belongs to.
    pub cluster: String,
    /// The sender's node id.
    pub node: String,
    /// Distinguishes restarts of the same node id (a start time or counter).
    pub incarnation: u64,
    /// 32 fresh random bytes.
    pub nonce: [u8; 32],
}

impl Hello {
    /// A hello of this protocol version.
    pub fn new(cluster: &str, node: &str, incarnation: u64, nonce: [u8; 32]) -> Self {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            cluster: cluster.into(),
            node: node.into(),
            incarnation,
            nonce,
        }
    }
}

/// Proof of knowing the cluster secret.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// HMAC-SHA256 over the transcript.
    #[serde(with = "serde_bytes")]
    pub mac: Vec<u8>,
}

/// A refused handshake.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Why.
    pub reason: RejectReason,
}

/// Why a handshake was refused.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The hello did not start with [`MAGIC`]: not a cadre peer.
    #[error("not a cadre peer (bad magic)")]
    BadMagic,
    /// The versions differ.
    #[error("protocol version {theirs} is not supported (this node speaks {ours})")]
    Version {
        /// The refusing side's version.
        ours: u16,
        /// The version received.
        theirs: u16,
    },
    /// The clusters differ.
    #[error("cluster `{theirs}` is not this node's cluster `{ours}`")]
    Cluster {
        /// The refusing side's cluster.
        ours: String,
        /// The cluster received.
        theirs: String,
    },
    /// The proof did not verify: the secrets differ.
    #[error("authentication failed: wrong cluster secret")]
    BadProof,
    /// A message came that the handshake did not expect at that point.
    #[error("unexpected message during the handshake: {0}")]
    Unexpected(String),
}

/// The cluster secret. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

/// A cluster secret of no bytes was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the cluster secret is empty: give every node of the cluster the same non-empty secret")]
pub struct EmptySecret;

impl Secret {
    /// A secret of these bytes.
    ///
    /// # Errors
    /// [`EmptySecret`]: an empty secret is refused.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, EmptySecret> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Err(EmptySecret)
        } else {
            Ok(Secret(bytes))
        }
    }

    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Which side of the connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection; speaks first.
    Dialer,
    /// Accepted the connection.
    Acceptor,
}

/// The peer, once the handshake is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its node id.
    pub node: String,
    /// Its incarnation.
    pub incarnation: u64,
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// This side refused the peer; `reply` is the [`Reject`] to send before closing.
    #[error("refused the peer: {reason}")]
    Refused {
        /// Why.
        reason: RejectReason,
    },
    /// The peer refused this side.
    #[error("the peer refused this node: {0}")]
    RejectedByPeer(RejectReason),
}

impl HandshakeError {
    /// The envelope to send to the peer before closing, if any.
    pub fn reply(&self) -> Option<Envelope> {
        match self {
            HandshakeError::Refused { reason } => Some(Envelope::Reject(Reject {
                reason: reason.clone(),
            })),
            HandshakeError::RejectedByPeer(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the peer's hello.
    AwaitHello,
    /// (Dialer) got the acceptor's hello, waiting for its proof.
    AwaitAcceptorProof {
        theirs: Hello,
    },
    /// (Acceptor) sent hello and proof, waiting for the dialer's proof.
    AwaitDialerProof {
        theirs: Hello,
    },
    Established(Peer),
    Failed,
}

/// One side of a handshake.
pub struct Handshake {
    role: Role,
    ours: Hello,
    secret: Secret,
    state: State,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("state", &self.state)
            .finish()
    }
}

/// What to do after feeding the handshake a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these (possibly none) and wait for the next message.
    Continue(Vec<Envelope>),
    /// Send these, then the connection carries traffic with this peer.
    Established(Vec<Envelope>, Peer),
}

impl Handshake {
    /// The dialer's side, and the hello it sends first.
    pub fn dialer(ours: Hello, secret: Secret) -> (Self, Envelope) {
        let hello = Envelope::Hello(ours.clone());
        let hs = Handshake {
            role: Role::Dialer,
            ours,
            secret,
            state: State::AwaitHello,
        };
        (hs, hello)
    }

    /// The acceptor's side; it waits for the dialer's hello.
    pub fn acceptor(ours: Hello, secret: Secret) -> Self {
        Handshake {
            role: Role::Acceptor,
            ours,
            secret,
            state: State::AwaitHello,
        }
    }

    /// The peer, once established.
    pub fn peer(&self) -> Option<&Peer> {
        match &self.state {
            State::Established(p) => Some(p),
            _ => None,
        }
    }

    /// Feeds the next message from the peer.
    ///
    /// # Errors
    /// [`HandshakeError::Refused`] (send [`HandshakeError::reply`], then close) or
    /// [`HandshakeError::RejectedByPeer`] (close). The handshake is then failed for good.
    pub fn handle(&mut self, msg: Envelope) -> Result<Step, HandshakeError> {
        let result = self.step(msg);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn step(&mut self, msg: Envelope) -> Result<Step, HandshakeError> {
        if let Envelope::Reject(r) = msg {
            return Err(HandshakeError::RejectedByPeer(r.reason));
        }
        let state = std::mem::replace(&mut self.state, State::Failed);
        match (state, msg) {
            (State::AwaitHello, Envelope::Hello(theirs)) => {
                self.check(&theirs)?;
                match self.role {
                    Role::Dialer => {
                        self.state = State::AwaitAcceptorProof { theirs };
                        Ok(Step::Continue(vec![]))
                    }
                    Role::Acceptor => {
                        let proof = self.prove(Role::Acceptor, &theirs, &self.ours);
                        let out = vec![Envelope::Hello(self.ours.clone()), proof];
                        self.state = State::AwaitDialerProof { theirs };
                        Ok(Step::Continue(out))
                    }
                }
            }
            (State::AwaitAcceptorProof { theirs }, Envelope::Proof(p)) => {
                self.verify(Role::Acceptor, &self.ours, &theirs, &p)?;
                let proof = self.prove(Role::Dialer, &self.ours, &theirs);
                let peer = Peer {
                    node: theirs.node,
                    incarnation: theirs.incarnation,
                };
                self.state = State::Established(peer.clone());
                Ok(Step::Established(vec![proof], peer))
            }
            (State::AwaitDialerProof { theirs }, Envelope::Proof(p)) => {
                self.verify(Role::Dialer, &theirs, &self.ours, &p)?;
                let peer = Peer {
                    node: theirs.node,
                    incarnation: theirs.incarnation,
                };
                self.state = State::Established(peer.clone());
                Ok(Step::Established(vec![], peer))
            }
            (state, msg) => Err(HandshakeError::Refused {
                reason: RejectReason::Unexpected(format!(
                    "{} while {}",
                    kind(&msg),
                    match state {
                        State::AwaitHello => "waiting for a hello",
                        State::AwaitAcceptorProof { .. } | State::AwaitDialerProof { .. } => {
                            "waiting for a proof"
                        }
                        State::Established(_) => "already established",
                        State::Failed => "already failed",
                    }
                )),
            }),
        }
    }

    fn check(&self, theirs: &Hello) -> Result<(), HandshakeError> {
        let reason = if theirs.magic != MAGIC {
            RejectReason::BadMagic
        } else if theirs.version != PROTOCOL_VERSION {
            RejectReason::Version {
                ours: PROTOCOL_VERSION,
                theirs: theirs.version,
            }
        } else if theirs.cluster != self.ours.cluster {
            RejectReason::Cluster {
                ours: self.ours.cluster.clone(),
                theirs: theirs.cluster.clone(),
            }
        } else {
            return Ok(());
        };
        Err(HandshakeError::Refused { reason })
    }

    /// The HMAC of `role` over the dialer's and the acceptor's hellos.
    fn transcript_mac(&self, role: Role, dialer: &Hello, acceptor: &Hello) -> Hmac<Sha256> {
        let mut mac = self.secret.mac();
        mac.update(b"cadre-handshake-v1");
        mac.update(match role {
            Role::Dialer => b"D",
            Role::Acceptor => b"A",
        });
        for hello in [dialer, acceptor] {
            let bytes = rmp_serde::to_vec(hello).expect("a hello always encodes");
            mac.update(&(bytes.len() as u32).to_be_bytes());
            mac.update(&bytes);
        }
        mac
    }

    fn prove(&self, role: Role, dialer: &Hello, acceptor: &Hello) -> Envelope {
        let mac = self.transcript_mac(role, dialer, acceptor);
        Envelope::Proof(Proof {
            mac: mac.finalize().into_bytes().to_vec(),
        })
    }

    fn verify(
        &self,
        role: Role,
        dialer: &Hello,
        acceptor: &Hello,
        proof: &Proof,
    ) -> Result<(), HandshakeError> {
        self.transcript_mac(role, dialer, acceptor)
            .verify_slice(&proof.mac)
            .map_err(|_| HandshakeError::Refused {
                reason: RejectReason::BadProof,
            })
    }
}

fn kind(msg: &Envelope) -> &'static str {
    match msg {
        Envelope::Hello(_) => "a hello",
        Envelope::Proof(_) => "a proof",
        Envelope::Reject(_) => "a reject",
        Envelope::Tell(_) => "a tell",
        Envelope::Ask(_) => "an ask",
        Envelope::Reply(_) => "a reply",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec()).unwrap()
    }

    fn hello(cluster: &str, node: &str, nonce: u8) -> Hello {
        Hello::new(cluster, node, 7, [nonce; 32])
    }

    /// Runs a whole handshake; returns each side's result.
    fn run(
        d: Hello,
        ds: Secret,
        a: Hello,
        as_: Secret,
    ) -> (Result<Peer, HandshakeError>, Result<Peer, HandshakeError>) {
        let (mut dialer, first) = Handshake::dialer(d, ds);
        let mut acceptor = Handshake::acceptor(a, as_);
        let mut to_acceptor = vec![first];
        let mut to_dialer: Vec<Envelope> = vec![];
        let (mut dr, mut ar) = (None, None);
        for _ in 0..4 {
            for m in std::mem::take(&mut to_acceptor) {
                if ar.is_some() {
                    break;
                }
                match acceptor.handle(m) {
                    Ok(Step::Continue(out)) => to_dialer.extend(out),
                    Ok(Step::Established(out, p)) => {
                        to_dialer.extend(out);
                        ar = Some(Ok(p));
                    }
                    Err(e) => {
                        to_dialer.extend(e.reply());
                        ar = Some(Err(e));
                    }
                }
            }
            for m in std::mem::take(&mut to_dialer) {
                if dr.is_some() {
                    break;
                }
                match dialer.handle(m) {
                    Ok(Step::Continue(out)) => to_acceptor.extend(out),
                    Ok(Step::Established(out, p)) => {
                        to_acceptor.extend(out);
                        dr = Some(Ok(p));
                    }
                    Err(e) => {
                        to_acceptor.extend(e.reply());
                        dr = Some(Err(e));
                    }
                }
            }
        }
        (dr.expect("dialer finished"), ar.expect("acceptor finished"))
    }

    #[test]
    fn matching_peers_establish_and_learn_each_other() {
        let (d, a) = run(
            hello("prod", "n1", 1),
            secret("s3cret"),
            hello("prod", "n2", 2),
            secret("s3cret"),
        );
        assert_eq!(d.unwrap().node, "n2");
        assert_eq!(a.unwrap().node, "n1");
    }

    #[test]
    fn wrong_secret_is_refused_by_the_dialer_and_reported_to_the_acceptor() {
        let (d, a) = run(
            hello("prod", "n1", 1),
            secret("right"),
            hello("prod", "n2", 2),
            secret("wrong"),
        );
        assert_eq!(
            d.unwrap_err(),
            HandshakeError::Refused {
                reason: RejectReason::BadProof
            }
        );
        assert_eq!(
            a.unwrap_err(),
            HandshakeError::RejectedByPeer(RejectReason::BadProof)
        );
    }

    #[test]
    fn wrong_cluster_is_refused_by_the_acceptor() {
        let (d, a) = run(
            hello("staging", "n1", 1),
            secret("s"),
            hello("prod", "n2", 2),
            secret("s"),
        );
        let reason = RejectReason::Cluster {
            ours: "prod".into(),
            theirs: "staging".into(),
        };
        assert_eq!(
            a.unwrap_err(),
            HandshakeError::Refused {
                reason: reason.clone()
            }
        );
        assert_eq!(d.unwrap_err(), HandshakeError::RejectedByPeer(reason));
    }

    #[test]
    fn wrong_version_and_bad_magic_are_refused() {
        let mut old = hello("prod", "n1", 1);
        old.version = 0;
        let (_, a) = run(old, secret("s"), hello("prod", "n2", 2), secret("s"));
        assert_eq!(
            a.unwrap_err(),
            HandshakeError::Refused {
                reason: RejectReason::Version {
                    ours: PROTOCOL_VERSION,
                    theirs: 0
                }
            }
        );
        let mut alien = hello("prod", "n1", 1);
        alien.magic = *b"HTTP";
        let (_, a) = run(alien, secret("s"), hello("prod", "n2", 2), secret("s"));
        assert_eq!(
            a.unwrap_err(),
            HandshakeError::Refused {
                reason: RejectReason::BadMagic
            }
        );
    }

    #[test]
    fn a_proof_cannot_be_reflected_or_replayed() {
        // The acceptor's own proof sent back to it (reflection) does not verify as the dialer's.
        let mut acceptor = Handshake::acceptor(hello("prod", "n2", 2), secret("s"));
        let Step::Continue(out) = acceptor
            .handle(Envelope::Hello(hello("prod", "n1", 1)))
            .unwrap()
        else {
            panic!("expected hello and proof");
        };
        let reflected = out[1].clone();
        assert_eq!(
            acceptor.handle(reflected.clone()).unwrap_err(),
            HandshakeError::Refused {
                reason: RejectReason::BadProof
            }
        );
        // The same proof on a new connection (fresh acceptor nonce) does not verify either.
        let mut other = Handshake::acceptor(hello("prod", "n2", 3), secret("s"));
        other
            .handle(Envelope::Hello(hello("prod", "n1", 1)))
            .unwrap();
        assert!(other.handle(reflected).is_err());
    }

    #[test]
    fn traffic_before_the_handshake_is_refused() {
        let mut acceptor = Handshake::acceptor(hello("prod", "n2", 2), secret("s"));
        let err = acceptor
            .handle(Envelope::Tell(super::super::envelope::Tell {
                to: "x".into(),
                tag: "t".into(),
                count: 0,
                bodies: vec![],
            }))
            .unwrap_err();
        assert!(
            matches!(&err, HandshakeError::Refused { reason: RejectReason::Unexpected(m) } if m.contains("a tell while waiting for a hello")),
            "{err}"
        );
        assert!(matches!(err.reply(), Some(Envelope::Reject(_))));
        // Once failed, it stays failed.
        assert!(acceptor
            .handle(Envelope::Hello(hello("prod", "n1", 1)))
            .is_err());
    }

    #[test]
    fn empty_secret_is_refused() {
        assert!(Secret::new(Vec::new()).is_err());
        assert_eq!(format!("{:?}", secret("hidden")), "Secret(..)");
    }
}
