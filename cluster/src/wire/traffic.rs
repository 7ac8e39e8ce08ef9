//! The traffic envelopes (tell, ask, successful reply) read and written by hand.
//!
//! Every frame on a busy connection is one of these, and `rmp-serde`'s generic path (variant
//! names matched as strings through visitors, integers through a generic number reader) costs
//! more per frame than the rest of the receive path. The bytes are exactly those `rmp-serde`
//! writes for the same [`EnvelopeRef`] (a one-entry map from the variant name to an array of
//! the fields), so either side may use either path.
//!
//! Reading accepts only that canonical shape: unsigned integers, `str` names, `bin` bodies, an
//! array of exactly the fields, and nothing after the envelope. Anything else is left to the
//! generic decoder, which accepts what `rmp-serde` accepts and gives its errors; on what this
//! reader does accept, the two agree (checked by unit tests and by the `frame_decoder` fuzz
//! target).

use bytes::BytesMut;

use super::envelope::{AskRef, EnvelopeRef, ReplyRef, TellRef};
use super::msgpack::Append;

/// A cursor over a frame body.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0, |v, b| (v << 8) | u64::from(*b)),
        )
    }

    /// An unsigned integer, in any of MessagePack's unsigned encodings.
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            b @ 0x00..=0x7f => Some(u64::from(b)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    /// A `str`'s bytes, not checked to be UTF-8 (for names compared with known ones).
    fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        self.take(len)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.str_bytes()?).ok()
    }

    fn bin(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => return None,
        };
        self.take(usize::try_from(len).ok()?)
    }

    /// A fixed-size array header of exactly `n` elements.
    fn array(&mut self, n: u8) -> Option<()> {
        (self.byte()? == 0x90 | n).then_some(())
    }
}

/// The envelope in `body`, if it is a tell, an ask or a successful reply in the canonical
/// shape and nothing follows it; `None` otherwise (the generic decoder then decides).
pub(crate) fn decode(body: &[u8]) -> Option<EnvelopeRef<'_>> {
    let mut r = Reader { buf: body };
    if r.byte()? != 0x81 {
        return None;
    }
    // Variant names are compared as bytes: a name that matches is UTF-8.
    let env = match r.str_bytes()? {
        b"Tell" => {
            r.array(4)?;
            let (to, tag) = (r.str()?, r.str()?);
            let count = u32::try_from(r.uint()?).ok()?;
            EnvelopeRef::Tell(TellRef {
                to,
                tag,
                count,
                bodies: r.bin()?,
            })
        }
        b"Ask" => {
            r.array(5)?;
            let id = r.uint()?;
            let (to, tag) = (r.str()?, r.str()?);
            let timeout_ms = u32::try_from(r.uint()?).ok()?;
            EnvelopeRef::Ask(AskRef {
                id,
                to,
                tag,
                timeout_ms,
                body: r.bin()?,
            })
        }
        b"Reply" => {
            r.array(2)?;
            let id = r.uint()?;
            if r.byte()? != 0x81 || r.str_bytes()? != b"Ok" {
                return None;
            }
            let body = r.bin()?;
            EnvelopeRef::Reply(ReplyRef {
                id,
                result: Ok(serde_bytes::Bytes::new(body)),
            })
        }
        _ => return None,
    };
    r.buf.is_empty().then_some(env)
}

/// Writes `env` (an ask or a successful reply) as `rmp-serde` would, at the end of `dst`;
/// `false` (and nothing written) for any other envelope.
pub(crate) fn encode(env: &EnvelopeRef<'_>, dst: &mut BytesMut) -> bool {
    /// Room for the headers: markers, lengths, two integers and the variant names.
    const HEADERS: usize = 48;
    let mut w = Append(dst);
    // One reservation for the whole envelope; writing to a `BytesMut` cannot fail.
    match env {
        EnvelopeRef::Ask(a) => {
            w.0.reserve(HEADERS + a.to.len() + a.tag.len() + a.body.len());
            let _ = rmp::encode::write_map_len(&mut w, 1);
            let _ = rmp::encode::write_str(&mut w, "Ask");
            let _ = rmp::encode::write_array_len(&mut w, 5);
            let _ = rmp::encode::write_uint(&mut w, a.id);
            let _ = rmp::encode::write_str(&mut w, a.to);
            let _ = rmp::encode::write_str(&mut w, a.tag);
            let _ = rmp::encode::write_uint(&mut w, a.timeout_ms.into());
            let _ = rmp::encode::write_bin(&mut w, a.body);
            true
        }
        EnvelopeRef::Reply(ReplyRef { id, result: Ok(b) }) => {
            w.0.reserve(HEADERS + b.len());
            let _ = rmp::encode::write_map_len(&mut w, 1);
            let _ = rmp::encode::write_str(&mut w, "Reply");
            let _ = rmp::encode::write_array_len(&mut w, 2);
            let _ = rmp::encode::write_uint(&mut w, *id);
            let _ = rmp::encode::write_map_len(&mut w, 1);
            let _ = rmp::encode::write_str(&mut w, "Ok");
            let _ = rmp::encode::write_bin(&mut w, b);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Envelope, RemoteError};

    fn generic(env: &EnvelopeRef<'_>) -> Vec<u8> {
        rmp_serde::to_vec(env).unwrap()
    }

    fn asks<'a>(body: &'a [u8], to: &'a str) -> Vec<EnvelopeRef<'a>> {
        let ids = [
            0,
            1,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX.into(),
            u64::MAX,
        ];
        ids.iter()
            .flat_map(|&id| {
                [0, 127, 128, 70_000, u32::MAX].map(|timeout_ms| {
                    EnvelopeRef::Ask(AskRef {
                        id,
                        to,
                        tag: "t.tag",
                        timeout_ms,
                        body,
                    })
                })
            })
            .collect()
    }

    #[test]
    fn asks_and_replies_are_written_as_the_generic_encoder_writes_them() {
        // Names in each of MessagePack's string encodings (fixstr, str8, str16, str32).
        let names = [1, 40, 300, 70_000].map(|n| "n".repeat(n));
        for len in [0, 1, 31, 32, 255, 256, 65_535, 65_536] {
            let body = vec![7u8; len];
            let mut envs: Vec<_> = names.iter().flat_map(|n| asks(&body, n)).collect();
            for id in [0, 200, u64::MAX] {
                envs.push(EnvelopeRef::Reply(ReplyRef {
                    id,
                    result: Ok(serde_bytes::Bytes::new(&body)),
                }));
            }
            for env in &envs {
                let mut mine = BytesMut::new();
                assert!(encode(env, &mut mine));
                assert_eq!(&mine[..], &generic(env)[..], "{env:?}");
                assert_eq!(decode(&mine).as_ref(), Some(env), "read back");
            }
        }
    }

    #[test]
    fn everything_but_asks_and_successful_replies_is_left_to_the_generic_encoder() {
        let err = EnvelopeRef::Reply(ReplyRef {
            id: 1,
            result: Err(RemoteError::NoSuchActor { actor: "x".into() }),
        });
        let tell = EnvelopeRef::Tell(TellRef {
            to: "a",
            tag: "t",
            count: 1,
            bodies: &[0, 0, 0, 1, 5],
        });
        let mut dst = BytesMut::new();
        assert!(!encode(&err, &mut dst));
        assert!(!encode(&tell, &mut dst));
        assert!(dst.is_empty());
        // The generic decoder's bytes of a tell are read here, and an error reply is not.
        assert_eq!(decode(&generic(&tell)), Some(tell));
        assert_eq!(decode(&generic(&err)), None);
    }

    #[test]
    fn what_the_reader_accepts_the_generic_decoder_reads_the_same() {
        let body = vec![1u8, 2, 3];
        for env in asks(&body, "actor") {
            let bytes = generic(&env);
            let owned = Envelope::decode(&bytes).unwrap();
            assert_eq!(decode(&bytes).unwrap().into_owned(), owned);
        }
    }

    #[test]
    fn other_shapes_and_trailing_bytes_are_left_to_the_generic_decoder() {
        let ask = EnvelopeRef::Ask(AskRef {
            id: 1,
            to: "a",
            tag: "t",
            timeout_ms: 5,
            body: &[1],
        });
        let good = generic(&ask);
        let mut trailing = good.clone();
        trailing.push(0xc0);
        assert_eq!(decode(&trailing), None);
        for cut in 0..good.len() {
            assert_eq!(decode(&good[..cut]), None, "cut at {cut}");
        }
        // The same ask with its fields as a map (which rmp-serde also reads): not canonical.
        let mut as_map = Vec::new();
        rmp::encode::write_map_len(&mut as_map, 1).unwrap();
        rmp::encode::write_str(&mut as_map, "Ask").unwrap();
        rmp::encode::write_map_len(&mut as_map, 1).unwrap();
        rmp::encode::write_str(&mut as_map, "id").unwrap();
        rmp::encode::write_uint(&mut as_map, 1).unwrap();
        assert_eq!(decode(&as_map), None);
        // A signed id, a string body, an invalid name: not canonical either.
        let mut signed = good.clone();
        signed[6] = 0xd0; // int 8 instead of the fixint id
        signed.insert(7, 1);
        assert_eq!(decode(&signed), None);
        let mut bad_name = good;
        bad_name[8] = 0xff; // the actor name `a` as an invalid UTF-8 byte
        assert_eq!(decode(&bad_name), None);
    }
}
