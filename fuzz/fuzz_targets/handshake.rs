//! Arbitrary messages (framed in the input) fed to both sides of the handshake: it never panics,
//! and it never reports a peer established unless that peer sent a hello first.
#![no_main]

use bytes::BytesMut;
use cadre_cluster::wire::{Envelope, FrameCodec, Handshake, Hello, Secret, Step};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let secret = Secret::new(b"fuzz".to_vec()).expect("non-empty");
    let (mut dialer, _) = Handshake::dialer(Hello::new("c", "d", 1, [1; 32]), secret.clone());
    let mut acceptor = Handshake::acceptor(Hello::new("c", "a", 1, [2; 32]), secret);
    let mut codec = FrameCodec::new(64 * 1024);
    let mut buf = BytesMut::from(data);
    let (mut dialer_saw_hello, mut acceptor_saw_hello) = (false, false);
    let mut turn = 0u8;
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        let Ok(msg) = Envelope::decode(&frame) else {
            continue;
        };
        let hello = matches!(msg, Envelope::Hello(_));
        turn = turn.wrapping_add(1);
        let (hs, saw) = if turn % 2 == 0 {
            (&mut dialer, &mut dialer_saw_hello)
        } else {
            (&mut acceptor, &mut acceptor_saw_hello)
        };
        *saw |= hello;
        if let Ok(Step::Established(_, _)) = hs.handle(msg) {
            assert!(*saw, "established without a hello");
        }
    }
});
