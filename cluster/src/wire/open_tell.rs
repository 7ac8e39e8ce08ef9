//! A tell frame written in place and grown one message at a time.
//!
//! A sender that tells one actor many messages of one type in a row should not pay a frame
//! header, an actor name and a tag for each: while a tell frame is the last one in an outbound
//! buffer, the next message to the same actor and type is appended to it. Each message is
//! written after a length placeholder that is filled in once the message is encoded; the
//! frame's length prefix, its count and its bodies' length are written when the frame is
//! finished ([`OpenTell::finish`]), which must happen before the buffer's bytes are used.
//!
//! The bytes are those of [`Envelope::Tell`](super::Envelope::Tell) as `rmp-serde` writes
//! it (a one-entry map from the variant name to a four-element array), except that the count
//! is always a `uint 32` and the bodies always use the `bin 32` header, so that both can be
//! patched in place.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use super::envelope::EncodeError;
use super::msgpack::Append;

/// The `bin 32` MessagePack marker.
const BIN32: u8 = 0xc6;

/// The `uint 32` MessagePack marker.
const UINT32: u8 = 0xce;

/// An open tell frame at the end of a buffer: where its length prefix and its bodies' length
/// are, so that messages can be appended to it, and how many it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTell {
    /// Offset of the frame's `u32` length prefix.
    frame_at: usize,
    /// Offset of the message count's `uint 32` value.
    count_at: usize,
    /// Offset of the bodies' `bin 32` length.
    bodies_len_at: usize,
    /// Messages in the frame.
    count: u32,
}

impl OpenTell {
    /// Appends a tell frame to `to` for messages tagged `tag` to `dst`, holding no message yet.
    /// Push at least one message ([`OpenTell::push`]) and [finish](OpenTell::finish) it before
    /// the buffer is sent; an empty frame is harmless (the receiver delivers nothing) but
    /// wasted.
    pub fn begin(dst: &mut BytesMut, to: &str, tag: &str) -> OpenTell {
        let frame_at = dst.len();
        dst.put_u32(0);
        let mut w = Append(dst);
        // Writing to a `BytesMut` cannot fail.
        let _ = rmp::encode::write_map_len(&mut w, 1);
        let _ = rmp::encode::write_str(&mut w, "Tell");
        let _ = rmp::encode::write_array_len(&mut w, 4);
        let _ = rmp::encode::write_str(&mut w, to);
        let _ = rmp::encode::write_str(&mut w, tag);
        dst.put_u8(UINT32);
        let count_at = dst.len();
        dst.put_u32(0);
        dst.put_u8(BIN32);
        let bodies_len_at = dst.len();
        dst.put_u32(0);
        let open = OpenTell {
            frame_at,
            count_at,
            bodies_len_at,
            count: 0,
        };
        open.finish(dst);
        open
    }

    /// The frame's size so far, length prefix included.
    pub fn frame_len(&self, dst: &BytesMut) -> usize {
        dst.len() - self.frame_at
    }

    /// Whether the frame holds no message yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many messages the frame holds.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Appends `msg` to the frame, which must still be the last thing in `dst`; the frame's
    /// headers are out of date until it is [finished](OpenTell::finish).
    ///
    /// # Errors
    /// [`EncodeError::Serialize`] if `msg` does not serialize, [`EncodeError::TooLarge`] if the
    /// frame would exceed `max` bytes; `dst` is then left as it was.
    #[inline]
    pub fn push<T: Serialize + ?Sized>(
        &mut self,
        dst: &mut BytesMut,
        msg: &T,
        max: u32,
    ) -> Result<(), EncodeError> {
        let before = dst.len();
        dst.put_u32(0);
        let written = rmp_serde::encode::write(&mut Append(dst), msg);
        if let Err(e) = written {
            dst.truncate(before);
            return Err(EncodeError::Serialize(e.to_string()));
        }
        let len = (dst.len() - before - 4) as u32;
        dst[before..before + 4].copy_from_slice(&len.to_be_bytes());
        let body = dst.len() - self.frame_at - 4;
        if body > max as usize {
            dst.truncate(before);
            return Err(EncodeError::TooLarge { len: body, max });
        }
        self.count += 1;
        Ok(())
    }

    /// Removes the frame from `dst` (for a frame left empty after a failed push).
    pub fn abandon(self, dst: &mut BytesMut) {
        dst.truncate(self.frame_at);
    }

    /// Writes the frame's headers (its length, count and bodies' length) for what it holds:
    /// `dst` then ends with a whole, valid frame. It may be pushed to and finished again.
    pub fn finish(&self, dst: &mut BytesMut) {
        let body = (dst.len() - self.frame_at - 4) as u32;
        let bodies = (dst.len() - self.bodies_len_at - 4) as u32;
        dst[self.frame_at..self.frame_at + 4].copy_from_slice(&body.to_be_bytes());
        dst[self.count_at..self.count_at + 4].copy_from_slice(&self.count.to_be_bytes());
        dst[self.bodies_len_at..self.bodies_len_at + 4].copy_from_slice(&bodies.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode_body, Envelope, EnvelopeRef, FrameCodec, Tell};
    use tokio_util::codec::Decoder;

    fn frames(mut wire: BytesMut) -> Vec<BytesMut> {
        let mut codec = FrameCodec::default();
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut wire).unwrap() {
            out.push(f);
        }
        assert!(wire.is_empty(), "only whole frames");
        out
    }

    #[test]
    fn a_grown_frame_decodes_as_one_tell_with_every_message_in_order() {
        let mut wire = BytesMut::new();
        let mut open = OpenTell::begin(&mut wire, "counter", "counter.add");
        assert!(open.is_empty());
        for n in [1u64, 300, 70_000] {
            open.push(&mut wire, &n, 1 << 20).unwrap();
        }
        open.finish(&mut wire);
        let f = frames(wire);
        assert_eq!(f.len(), 1);
        let bodies: Vec<_> = [1u64, 300, 70_000]
            .iter()
            .map(|n| encode_body(n).unwrap())
            .collect();
        let expected = Envelope::Tell(Tell::of(
            "counter",
            "counter.add",
            bodies.iter().map(Vec::as_slice),
        ));
        assert_eq!(Envelope::decode(&f[0]).unwrap(), expected);
        let EnvelopeRef::Tell(t) = EnvelopeRef::decode(&f[0]).unwrap() else {
            panic!("not a tell")
        };
        let got: Vec<u64> = t
            .messages()
            .map(|m| crate::wire::decode_body(m.unwrap()).unwrap())
            .collect();
        assert_eq!(got, vec![1, 300, 70_000]);
    }

    #[test]
    fn a_finished_frame_is_whole_and_takes_more_messages_after() {
        let mut wire = BytesMut::new();
        let mut open = OpenTell::begin(&mut wire, "a", "t");
        for i in 0..5u32 {
            open.push(&mut wire, &i, 1 << 20).unwrap();
            open.finish(&mut wire);
            let f = frames(wire.clone());
            let EnvelopeRef::Tell(t) = EnvelopeRef::decode(&f[0]).unwrap() else {
                panic!("not a tell")
            };
            assert_eq!(t.messages().count(), i as usize + 1);
            assert_eq!(t.count, i + 1);
            assert_eq!(open.count(), i + 1);
        }
    }

    #[test]
    fn a_message_over_the_limit_leaves_the_frame_as_it_was() {
        let mut wire = BytesMut::from(&b"xy"[..]);
        let mut open = OpenTell::begin(&mut wire, "a", "t");
        open.push(&mut wire, &1u8, 64).unwrap();
        let before = wire.clone();
        let err = open
            .push(&mut wire, &serde_bytes::Bytes::new(&[0; 100]), 64)
            .unwrap_err();
        assert!(
            matches!(err, EncodeError::TooLarge { max: 64, .. }),
            "{err}"
        );
        assert_eq!(wire, before);
        assert_eq!(open.count(), 1);
        open.abandon(&mut wire);
        assert_eq!(&wire[..], b"xy");
    }

    #[test]
    fn a_value_that_fails_to_serialize_leaves_the_frame_as_it_was() {
        struct Bad;
        impl Serialize for Bad {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let mut wire = BytesMut::new();
        let mut open = OpenTell::begin(&mut wire, "a", "t");
        let before = wire.clone();
        assert!(matches!(
            open.push(&mut wire, &Bad, 1 << 20),
            Err(EncodeError::Serialize(_))
        ));
        assert_eq!(wire, before);
    }

    #[test]
    fn malformed_bodies_end_the_messages_with_an_error() {
        let Tell { mut bodies, .. } = Tell::of("a", "t", [&encode_body(&7u8).unwrap()[..]]);
        bodies.extend([0, 0, 0, 9, 0xc0]); // a length past the end
        let t = crate::wire::TellRef {
            to: "a",
            tag: "t",
            count: 2,
            bodies: &bodies,
        };
        let got: Vec<_> = t.messages().collect();
        assert_eq!(got.len(), 2);
        assert_eq!(*got[0].as_ref().unwrap(), &[7u8][..]);
        assert!(got[1].is_err());
        // A length cut short is as bad.
        let cut = [&bodies[..5], &[0, 0][..]].concat();
        let t = crate::wire::TellRef { bodies: &cut, ..t };
        let got: Vec<_> = t.messages().collect();
        assert_eq!(got.len(), 2);
        assert!(got[1].is_err());
    }
}
