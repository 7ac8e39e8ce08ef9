//! Arbitrary bytes, fed in arbitrary chunks, through the frame codec, both envelope decoders and
//! the walk over a tell's messages: errors are fine, panics and unbounded allocations are not.
#![no_main]

use bytes::BytesMut;
use cadre_cluster::wire::{Envelope, EnvelopeRef, FrameCodec, TellCursor, TellItem};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut codec = FrameCodec::new(64 * 1024);
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let owned = Envelope::decode(&frame);
                    let borrowed = EnvelopeRef::decode(&frame);
                    // The two decoders agree on what is a valid envelope, and on what it says
                    // (the borrowed one reads traffic by hand, the owned one through serde).
                    assert_eq!(owned.is_ok(), borrowed.is_ok(), "{owned:?} vs {borrowed:?}");
                    if let (Ok(o), Ok(b)) = (&owned, &borrowed) {
                        assert_eq!(o, &b.clone().into_owned());
                    }
                    if let Ok(EnvelopeRef::Tell(t)) = borrowed {
                        // The messages take the bodies whole, each within them, up to a
                        // malformed tail that ends the walk.
                        let mut messages = t.messages();
                        let mut left = t.bodies.len();
                        while let Some(m) = messages.next() {
                            match m {
                                Ok(body) => {
                                    assert_eq!(left - messages.remaining(), 4 + body.len());
                                }
                                Err(_) => assert_eq!(messages.remaining(), 0),
                            }
                            left = messages.remaining();
                        }
                        assert_eq!(messages.remaining(), 0);
                        // Walked by its count: every message within the bodies, no more
                        // delivered than counted, and the walk ends.
                        let mut cursor = TellCursor::new(t.count);
                        let mut delivered = 0u64;
                        let mut steps = 0u64;
                        while let Some(item) = cursor.next(t.bodies) {
                            if let TellItem::Message(at) = item {
                                assert!(at.end <= t.bodies.len());
                                delivered += 1;
                            }
                            steps += 1;
                            assert!(steps <= u64::from(t.count) + 1, "the walk never ends");
                        }
                        assert!(delivered <= u64::from(t.count));
                    }
                }
                Ok(None) => break,
                Err(_) => return, // the connection would close here
            }
        }
        assert!(buf.capacity() <= 4 * 64 * 1024 + data.len(), "unbounded buffer growth");
    }
    let _ = codec.decode_eof(&mut buf);
});
