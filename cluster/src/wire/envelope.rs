//! The versioned envelope every frame carries, encoded as MessagePack.

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use super::handshake::{Hello, Proof, Reject};
use super::msgpack::Append;

/// One frame's content.
///
/// Encoded with `rmp-serde` (structs as arrays, enum variants by name). A variant this version
/// does not know fails to decode with [`DecodeError`] naming it; the connection is then closed.
/// New traffic (membership, store, tasks) comes as new variants with a new protocol version,
/// which the handshake checks first.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// Handshake: who I am.
    Hello(Hello),
    /// Handshake: I know the cluster secret.
    Proof(Proof),
    /// Handshake refused, with the reason; the connection closes after it.
    Reject(Reject),
    /// One or more one-way messages of one type to a named actor.
    Tell(Tell),
    /// A request to a named actor; answered by a [`Reply`] with the same id.
    Ask(Ask),
    /// The answer to an [`Ask`].
    Reply(Reply),
}

/// One-way messages to an actor exposed on the receiving node: one or more messages of one type,
/// sent one after the other, travel in one `Tell` (see [`OpenTell`](super::OpenTell)).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Tell {
    /// The name the actor is exposed under.
    pub to: String,
    /// The message type's stable tag.
    pub tag: String,
    /// How many messages `bodies` holds. The receiver delivers at most this many, and counts
    /// as lost any it does not find.
    pub count: u32,
    /// The messages one after the other, each a `u32` big-endian length and that many bytes
    /// of MessagePack (at least one message). The lengths let a receiver take each message
    /// without walking it, and lose only that one when it does not decode.
    #[serde(with = "serde_bytes")]
    pub bodies: Vec<u8>,
}

impl Tell {
    /// A tell of `messages` (each its own MessagePack bytes) to the actor exposed as `to`.
    pub fn of<'m>(
        to: impl Into<String>,
        tag: impl Into<String>,
        messages: impl IntoIterator<Item = &'m [u8]>,
    ) -> Tell {
        let (mut count, mut bodies) = (0u32, Vec::new());
        for m in messages {
            bodies.extend_from_slice(&(m.len() as u32).to_be_bytes());
            bodies.extend_from_slice(m);
            count += 1;
        }
        Tell {
            to: to.into(),
            tag: tag.into(),
            count,
            bodies,
        }
    }
}

/// A request to an actor exposed on the receiving node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// Chosen by the asker, unique among its pending asks on this connection.
    pub id: u64,
    /// The name the actor is exposed under.
    pub to: String,
    /// The message type's stable tag.
    pub tag: String,
    /// How long the asker waits, in milliseconds: the serving node gives up (and replies
    /// [`RemoteError::Timeout`]) after that.
    pub timeout_ms: u32,
    /// The message, MessagePack-encoded.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// The answer to an [`Ask`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The id of the ask answered.
    pub id: u64,
    /// The reply, MessagePack-encoded, or why there is none.
    pub result: Result<serde_bytes::ByteBuf, RemoteError>,
}

/// Why a remote node could not answer an ask (or dropped a tell, where it can say so).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// No actor is exposed under that name.
    #[error("no actor is exposed as `{actor}`")]
    NoSuchActor {
        /// The name asked for.
        actor: String,
    },
    /// The actor is exposed, but not for this message type.
    #[error("actor `{actor}` does not accept messages tagged `{tag}`")]
    UnknownTag {
        /// The actor.
        actor: String,
        /// The tag sent.
        tag: String,
    },
    /// The message (or the reply) did not decode as the type its tag names.
    #[error("could not decode `{tag}`: {detail}")]
    Decode {
        /// The tag.
        tag: String,
        /// The decoder's complaint.
        detail: String,
    },
    /// The actor could not take the message (full mailbox, restarting, ended) or died before
    /// replying.
    #[error("actor `{actor}` did not handle the message: {detail}")]
    Unavailable {
        /// The actor.
        actor: String,
        /// What happened.
        detail: String,
    },
    /// The remote ask timed out on the serving node.
    #[error("actor `{actor}` did not reply in time")]
    Timeout {
        /// The actor.
        actor: String,
    },
}

/// A frame body that is not a valid envelope of this protocol version.
#[derive(Debug, thiserror::Error)]
#[error("malformed envelope: {0}")]
pub struct DecodeError(pub(crate) String);

/// An envelope that could not be encoded (it would exceed the frame limit).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded envelope is larger than the frame limit.
    #[error("message of {len} bytes exceeds the frame limit of {max} bytes")]
    TooLarge {
        /// The encoded size.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The serializer failed (a type whose `Serialize` errs).
    #[error("could not encode: {0}")]
    Serialize(String),
}

impl Envelope {
    /// Decodes one frame body.
    ///
    /// # Errors
    /// [`DecodeError`] names what was wrong (an unknown variant, a missing field, trailing
    /// garbage, random bytes).
    pub fn decode(body: &[u8]) -> Result<Envelope, DecodeError> {
        decode_whole(body)
    }

    /// Encodes this envelope as a whole frame (length prefix included) at the end of `dst`.
    ///
    /// # Errors
    /// [`EncodeError::TooLarge`] if the body would exceed `max`; `dst` is then left as it was.
    pub fn encode_frame(&self, max: u32, dst: &mut BytesMut) -> Result<(), EncodeError> {
        encode_frame_of(self, max, dst)
    }
}

/// Decodes a whole frame body as one `T`, refusing trailing bytes.
fn decode_whole<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    match super::msgpack::value_len(body) {
        Some(len) if len == body.len() => {}
        Some(len) => {
            return Err(DecodeError(format!(
                "{} bytes of trailing garbage after the envelope",
                body.len() - len
            )))
        }
        None => return Err(DecodeError("not a complete MessagePack value".into())),
    }
    rmp_serde::from_slice(body).map_err(|e| DecodeError(e.to_string()))
}

/// An envelope viewed in place in its frame: traffic variants borrow their names and bodies
/// (no allocation per message); handshake variants are owned (they are rare).
///
/// Encodes to the same bytes as the matching [`Envelope`]: variants are encoded by name.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Clone)]
pub enum EnvelopeRef<'a> {
    /// As [`Envelope::Hello`].
    Hello(Hello),
    /// As [`Envelope::Proof`].
    Proof(Proof),
    /// As [`Envelope::Reject`].
    Reject(Reject),
    /// As [`Envelope::Tell`].
    #[serde(borrow)]
    Tell(TellRef<'a>),
    /// As [`Envelope::Ask`].
    #[serde(borrow)]
    Ask(AskRef<'a>),
    /// As [`Envelope::Reply`].
    #[serde(borrow)]
    Reply(ReplyRef<'a>),
}

/// [`Tell`], borrowed.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Clone, Copy)]
pub struct TellRef<'a> {
    /// The name the actor is exposed under.
    pub to: &'a str,
    /// The message type's stable tag.
    pub tag: &'a str,
    /// As [`Tell::count`].
    pub count: u32,
    /// As [`Tell::bodies`].
    #[serde(with = "serde_bytes")]
    pub bodies: &'a [u8],
}

impl<'a> TellRef<'a> {
    /// The messages one by one, each as its own MessagePack bytes. Ends after a length that
    /// runs past the bodies (an `Err`): where the next one starts is then unknown.
    pub fn messages(&self) -> Messages<'a> {
        Messages { rest: self.bodies }
    }
}

/// The messages of a [`TellRef`] ([`TellRef::messages`]).
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    /// The messages in `bodies` (as [`Tell::bodies`]).
    pub fn new(bodies: &'a [u8]) -> Self {
        Messages { rest: bodies }
    }

    /// How many bytes of the bodies are not taken yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<&'a [u8], DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let left = self.rest.len();
        let len = match self.rest {
            [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]) as usize,
            _ => usize::MAX,
        };
        match self.rest.get(4..).and_then(|r| r.get(..len)) {
            Some(one) => {
                self.rest = &self.rest[4 + len..];
                Some(Ok(one))
            }
            None => {
                self.rest = &[];
                Some(Err(DecodeError(format!(
                    "the last {left} bytes of a tell are not a length and a message"
                ))))
            }
        }
    }
}

/// One step of a [`TellCursor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TellItem {
    /// The next message: where its MessagePack bytes lie in the bodies.
    Message(std::ops::Range<usize>),
    /// Messages that will not be delivered: counted but not held (or held beyond a malformed
    /// length), or held beyond the count.
    Lost {
        /// How many.
        count: u64,
        /// What was wrong with the frame.
        why: String,
    },
}

/// Where a receiver is in a tell's messages, walked by the tell's count: at most `count`
/// messages are delivered; those the frame counts but does not hold, and those it holds
/// beyond its count, are reported lost. It borrows nothing, so the owner of the frame's bytes
/// keeps it beside them and passes the bodies to each step.
#[derive(Debug, Clone)]
pub struct TellCursor {
    at: usize,
    left: u32,
}

impl TellCursor {
    /// At the start of a tell that counts `count` messages.
    pub fn new(count: u32) -> Self {
        TellCursor { at: 0, left: count }
    }

    /// The next step in `bodies` (always the same tell's), or `None` when they are done.
    #[inline]
    pub fn next(&mut self, bodies: &[u8]) -> Option<TellItem> {
        // The usual case, a whole message where one is counted, read in place.
        if self.left > 0 {
            if let Some(&[a, b, c, d]) = bodies.get(self.at..self.at + 4) {
                let start = self.at + 4;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len <= bodies.len() - start {
                    self.left -= 1;
                    self.at = start + len;
                    return Some(TellItem::Message(start..self.at));
                }
            }
        }
        self.next_otherwise(bodies)
    }

    /// [`TellCursor::next`] where the next step is not a whole counted message: the end, or
    /// what is lost.
    #[cold]
    #[inline(never)]
    fn next_otherwise(&mut self, bodies: &[u8]) -> Option<TellItem> {
        let rest = bodies.get(self.at..).unwrap_or_default();
        if self.left > 0 {
            self.left -= 1;
            let mut messages = Messages::new(rest);
            let item = match messages.next() {
                Some(Ok(body)) => {
                    let end = bodies.len() - messages.remaining();
                    TellItem::Message(end - body.len()..end)
                }
                // Where the next message starts is unknown: the rest of the frame is lost.
                Some(Err(e)) => TellItem::Lost {
                    count: 1 + u64::from(std::mem::take(&mut self.left)),
                    why: e.to_string(),
                },
                None => {
                    let count = 1 + u64::from(std::mem::take(&mut self.left));
                    TellItem::Lost {
                        count,
                        why: format!("the frame holds {count} messages fewer than it counts"),
                    }
                }
            };
            self.at = bodies.len() - messages.remaining();
            return Some(item);
        }
        if rest.is_empty() {
            return None;
        }
        let extra = Messages::new(rest).count() as u64;
        self.at = bodies.len();
        Some(TellItem::Lost {
            count: extra,
            why: format!("the frame holds {extra} messages more than it counts"),
        })
    }

    /// Stops here: the messages the tell counts that were not taken yet, now never to be.
    pub fn give_up(&mut self, bodies: &[u8]) -> u64 {
        self.at = bodies.len();
        u64::from(std::mem::take(&mut self.left))
    }
}

/// [`Ask`], borrowed.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Clone, Copy)]
pub struct AskRef<'a> {
    /// As [`Ask::id`].
    pub id: u64,
    /// The name the actor is exposed under.
    pub to: &'a str,
    /// The message type's stable tag.
    pub tag: &'a str,
    /// As [`Ask::timeout_ms`].
    pub timeout_ms: u32,
    /// The message, MessagePack-encoded.
    #[serde(with = "serde_bytes")]
    pub body: &'a [u8],
}

/// [`Reply`], borrowed.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Clone)]
pub struct ReplyRef<'a> {
    /// As [`Reply::id`].
    pub id: u64,
    /// The reply, or why there is none.
    #[serde(borrow)]
    pub result: Result<&'a serde_bytes::Bytes, RemoteError>,
}

impl<'a> EnvelopeRef<'a> {
    /// Decodes one frame body in place.
    ///
    /// # Errors
    /// As [`Envelope::decode`].
    pub fn decode(body: &'a [u8]) -> Result<EnvelopeRef<'a>, DecodeError> {
        // Traffic in its canonical shape is read by hand; anything else goes the generic way.
        if let Some(env) = super::traffic::decode(body) {
            return Ok(env);
        }
        // Traffic ends with a borrowed body: whether the envelope took the whole frame is a
        // pointer comparison. Anything else is measured by walking its headers.
        let env: EnvelopeRef<'a> = match rmp_serde::from_slice(body) {
            Ok(env) => env,
            Err(e) => return Err(DecodeError(e.to_string())),
        };
        let last: Option<&[u8]> = match &env {
            EnvelopeRef::Tell(t) => Some(t.bodies),
            EnvelopeRef::Ask(a) => Some(a.body),
            EnvelopeRef::Reply(ReplyRef { result: Ok(b), .. }) => Some(&b[..]),
            _ => None,
        };
        let measure = || {
            super::msgpack::value_len(body)
                .ok_or_else(|| DecodeError("not a complete MessagePack value".into()))
        };
        let used = match last {
            Some(tail) => match tail.as_ptr() as usize + tail.len() - body.as_ptr() as usize {
                end if end == body.len() => end,
                // The borrowed field is not last (a shape serde reads but does not write,
                // such as an array with more elements than the fields): measure the value.
                _ => measure()?,
            },
            None => measure()?,
        };
        if used != body.len() {
            return Err(DecodeError(format!(
                "{} bytes of trailing garbage after the envelope",
                body.len() - used
            )));
        }
        Ok(env)
    }

    /// Encodes this envelope as a whole frame at the end of `dst` (see
    /// [`Envelope::encode_frame`]).
    ///
    /// # Errors
    /// As [`Envelope::encode_frame`].
    pub fn encode_frame(&self, max: u32, dst: &mut BytesMut) -> Result<(), EncodeError> {
        frame(max, dst, |body| {
            if super::traffic::encode(self, body) {
                Ok(())
            } else {
                serialize(self, body)
            }
        })
    }

    /// The same envelope, owning its contents.
    pub fn into_owned(self) -> Envelope {
        match self {
            EnvelopeRef::Hello(h) => Envelope::Hello(h),
            EnvelopeRef::Proof(p) => Envelope::Proof(p),
            EnvelopeRef::Reject(r) => Envelope::Reject(r),
            EnvelopeRef::Tell(t) => Envelope::Tell(Tell {
                to: t.to.into(),
                tag: t.tag.into(),
                count: t.count,
                bodies: t.bodies.into(),
            }),
            EnvelopeRef::Ask(a) => Envelope::Ask(Ask {
                id: a.id,
                to: a.to.into(),
                tag: a.tag.into(),
                timeout_ms: a.timeout_ms,
                body: a.body.into(),
            }),
            EnvelopeRef::Reply(r) => Envelope::Reply(Reply {
                id: r.id,
                result: r.result.map(|b| serde_bytes::ByteBuf::from(b.to_vec())),
            }),
        }
    }
}

fn encode_frame_of<T: Serialize>(
    value: &T,
    max: u32,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    frame(max, dst, |body| serialize(value, body))
}

/// Appends `value`'s MessagePack bytes to `dst`.
fn serialize<T: Serialize>(value: &T, dst: &mut BytesMut) -> Result<(), EncodeError> {
    rmp_serde::encode::write(&mut Append(dst), value)
        .map_err(|e| EncodeError::Serialize(e.to_string()))
}

/// Appends a whole frame to `dst`: the length prefix, then the body `write` appends. On an
/// error, or a body over `max`, `dst` is left as it was.
fn frame(
    max: u32,
    dst: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = dst.len();
    dst.put_u32(0);
    if let Err(e) = write(dst) {
        dst.truncate(start);
        return Err(e);
    }
    let len = dst.len() - start - 4;
    if len > max as usize {
        dst.truncate(start);
        return Err(EncodeError::TooLarge { len, max });
    }
    dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Encodes a message body (the payload of a tell, ask or reply) as MessagePack.
///
/// # Errors
/// [`EncodeError::Serialize`] if the value's `Serialize` fails.
pub fn encode_body<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    rmp_serde::to_vec(value).map_err(|e| EncodeError::Serialize(e.to_string()))
}

/// Encodes a message body into `dst` (cleared first), reusing its allocation.
///
/// # Errors
/// [`EncodeError::Serialize`] if the value's `Serialize` fails.
pub fn encode_body_into<T: Serialize + ?Sized>(
    value: &T,
    dst: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    dst.clear();
    rmp_serde::encode::write(dst, value).map_err(|e| EncodeError::Serialize(e.to_string()))
}

/// Decodes a message body.
///
/// # Errors
/// The decoder's complaint, as text.
pub fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::FrameCodec;
    use tokio_util::codec::Decoder;

    fn walk(tell: &Tell) -> Vec<TellItem> {
        let mut cursor = TellCursor::new(tell.count);
        std::iter::from_fn(|| cursor.next(&tell.bodies)).collect()
    }

    #[test]
    fn a_tell_cursor_delivers_what_the_count_says_and_reports_the_difference() {
        let msgs: [&[u8]; 3] = [&[1], &[2, 2], &[3]];
        let mut tell = Tell::of("a", "t", msgs);
        let ranges = walk(&tell);
        let got: Vec<&[u8]> = ranges
            .iter()
            .map(|i| match i {
                TellItem::Message(r) => &tell.bodies[r.clone()],
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, msgs);
        // Counts five, holds three.
        tell.count = 5;
        let items = walk(&tell);
        assert_eq!(items.len(), 4);
        assert!(matches!(&items[3], TellItem::Lost { count: 2, why } if why.contains("fewer")));
        // Counts one, holds three.
        tell.count = 1;
        let items = walk(&tell);
        assert!(matches!(items[0], TellItem::Message(_)));
        assert!(matches!(&items[1], TellItem::Lost { count: 2, why } if why.contains("more")));
        assert_eq!(items.len(), 2);
        // A length past the end loses it and every message counted after it.
        tell.count = 5;
        tell.bodies.extend([0, 0, 0, 9, 0xc0]);
        let items = walk(&tell);
        assert_eq!(items.len(), 4);
        assert!(matches!(items[3], TellItem::Lost { count: 2, .. }));
    }

    #[test]
    fn a_tell_cursor_given_up_reports_what_it_did_not_take() {
        let tell = Tell::of("a", "t", [&[1u8][..], &[2], &[3]]);
        let mut cursor = TellCursor::new(tell.count);
        assert!(matches!(
            cursor.next(&tell.bodies),
            Some(TellItem::Message(_))
        ));
        assert_eq!(cursor.give_up(&tell.bodies), 2);
        assert_eq!(cursor.next(&tell.bodies), None);
    }

    fn tell() -> Envelope {
        Envelope::Tell(Tell {
            to: "counter".into(),
            tag: "counter.add".into(),
            count: 1,
            bodies: [&[0, 0, 0, 1][..], &encode_body(&5u64).unwrap()].concat(),
        })
    }

    #[test]
    fn envelopes_round_trip_through_frames() {
        let envs = vec![
            tell(),
            Envelope::Ask(Ask {
                id: 9,
                to: "a".into(),
                tag: "t".into(),
                timeout_ms: 1000,
                body: vec![1, 2, 3],
            }),
            Envelope::Reply(Reply {
                id: 9,
                result: Ok(serde_bytes::ByteBuf::from(vec![4u8])),
            }),
            Envelope::Reply(Reply {
                id: 10,
                result: Err(RemoteError::NoSuchActor { actor: "x".into() }),
            }),
        ];
        let mut wire = BytesMut::new();
        for e in &envs {
            e.encode_frame(1 << 20, &mut wire).unwrap();
        }
        let mut codec = FrameCodec::default();
        let mut back = Vec::new();
        while let Some(f) = codec.decode(&mut wire).unwrap() {
            back.push(Envelope::decode(&f).unwrap());
        }
        assert_eq!(back, envs);
    }

    #[test]
    fn borrowed_views_encode_and_decode_like_the_owned_envelope() {
        let owned = tell();
        let Envelope::Tell(t) = &owned else {
            unreachable!()
        };
        let view = EnvelopeRef::Tell(TellRef {
            to: &t.to,
            tag: &t.tag,
            count: t.count,
            bodies: &t.bodies,
        });
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        owned.encode_frame(1 << 20, &mut a).unwrap();
        view.encode_frame(1 << 20, &mut b).unwrap();
        assert_eq!(a, b, "same bytes on the wire");
        assert_eq!(EnvelopeRef::decode(&a[4..]).unwrap(), view);
        let reply = Envelope::Reply(Reply {
            id: 3,
            result: Ok(serde_bytes::ByteBuf::from(vec![1u8, 2])),
        });
        let mut c = BytesMut::new();
        reply.encode_frame(1 << 20, &mut c).unwrap();
        match EnvelopeRef::decode(&c[4..]).unwrap() {
            EnvelopeRef::Reply(r) => {
                assert_eq!(r.id, 3);
                assert_eq!(&r.result.unwrap()[..], &[1, 2]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn both_decoders_agree_on_a_reply_whose_body_is_not_its_last_element() {
        // Found by the frame_decoder fuzz target: a `Reply` in a shape serde reads but never
        // writes (its array holds more elements than the struct has fields), so that its body
        // is not the last thing in the envelope: the borrowed decoder took the end of the body
        // for the end of the envelope and reported trailing garbage where serde decoded it.
        let body: &[u8] = &[
            0x81, 0x05, 0x83, 0x01, 0x81, 0x00, 0xa1, 0x1d, 0xa1, 0x1d, 0x00, 0x00, 0x00,
        ];
        let owned = Envelope::decode(body);
        let borrowed = EnvelopeRef::decode(body);
        assert_eq!(owned.is_ok(), borrowed.is_ok(), "{owned:?} vs {borrowed:?}");
        if let (Ok(o), Ok(b)) = (owned, borrowed) {
            assert_eq!(o, b.into_owned());
        }
    }

    #[test]
    fn trailing_garbage_after_a_borrowed_tell_is_refused() {
        let mut body = rmp_serde::to_vec(&tell()).unwrap();
        assert!(EnvelopeRef::decode(&body).is_ok());
        body.extend_from_slice(&[0xc0, 0xc0]);
        let err = EnvelopeRef::decode(&body).unwrap_err().to_string();
        assert!(err.contains("2 bytes of trailing garbage"), "{err}");
    }

    #[test]
    fn unknown_variant_is_rejected_by_name() {
        #[derive(Serialize)]
        enum Future {
            Gossip(u32),
        }
        let body = rmp_serde::to_vec(&Future::Gossip(1)).unwrap();
        let err = Envelope::decode(&body).unwrap_err().to_string();
        assert!(err.contains("Gossip"), "{err}");
    }

    #[test]
    fn random_bytes_and_trailing_garbage_are_rejected() {
        let mut rng = 0x2545F4914F6CDD1Du64;
        for _ in 0..1000 {
            let len = (rng % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect();
            // Never panics; almost always an error.
            let _ = Envelope::decode(&bytes);
        }
        let mut body = rmp_serde::to_vec(&tell()).unwrap();
        body.push(0xc0);
        assert!(Envelope::decode(&body)
            .unwrap_err()
            .to_string()
            .contains("trailing"));
    }

    #[test]
    fn oversized_envelope_is_not_encoded() {
        let big = Envelope::Tell(Tell {
            to: "a".into(),
            tag: "t".into(),
            count: 2000,
            bodies: vec![0; 2000],
        });
        let mut dst = BytesMut::from(&b"xy"[..]);
        assert!(matches!(
            big.encode_frame(1000, &mut dst),
            Err(EncodeError::TooLarge { max: 1000, .. })
        ));
        assert_eq!(&dst[..], b"xy", "nothing written");
    }
}
