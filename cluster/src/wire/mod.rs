//! The wire protocol between cadre nodes.
//!
//! # Format
//! A connection is a stream of frames: a `u32` big-endian length, then a body of that many
//! bytes (at most [`DEFAULT_MAX_FRAME`] by default, configurable per node; a larger prefix closes
//! the connection before anything is allocated). Each body is one [`Envelope`] in MessagePack
//! (`rmp-serde`: structs as arrays, enum variants by name). User messages travel inside a
//! `Tell`/`Ask`/`Reply` as their own MessagePack bytes, with the actor name and the message
//! type's tag beside them, so a node routes a message without knowing its type. A `Tell`
//! carries one or more messages of one type to one actor: their count, then the messages one
//! after the other, each a `u32` big-endian length and its MessagePack bytes (so a receiver
//! takes each without walking it, and a message that does not decode costs only itself). A
//! sender appends to the last tell frame of its buffer while it goes to the same actor with
//! the same type ([`OpenTell`]), so a stream of small tells costs one header per frame, not
//! per message. The receiver never delivers more messages than a tell counts, and counts as
//! lost those it counts but does not hold.
//!
//! Tells, asks and successful replies, the traffic of a busy connection, are read and written
//! by hand in exactly the bytes `rmp-serde` gives them (so either side may use either path);
//! any other shape of the same envelope is read by `rmp-serde`, which accepts what it accepts
//! and names what is wrong.
//!
//! # Handshake
//! Every connection starts with the exchange in [`handshake`]: magic, protocol version, cluster
//! name, node id, incarnation and a fresh nonce from each side, then an HMAC-SHA256 proof of the
//! cluster secret from each side over both hellos. Until it completes, nothing else is accepted.
//!
//! # Errors
//! A bad frame ([`FrameError`]), an envelope that does not decode ([`DecodeError`]) or a failed
//! handshake ([`HandshakeError`]) closes that one connection with the reason; none of them
//! panics.

mod envelope;
mod frame;
pub mod handshake;
mod msgpack;
mod open_tell;
mod traffic;

pub use envelope::{
    decode_body, encode_body, encode_body_into, Ask, AskRef, DecodeError, EncodeError, Envelope,
    EnvelopeRef, Messages, RemoteError, Reply, ReplyRef, Tell, TellCursor, TellItem, TellRef,
};
pub use frame::{FrameCodec, FrameError, DEFAULT_MAX_FRAME};
pub use handshake::{
    EmptySecret, Handshake, HandshakeError, Hello, Peer, RejectReason, Secret, Step,
    PROTOCOL_VERSION,
};
pub use open_tell::OpenTell;
