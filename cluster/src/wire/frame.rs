//! Length-prefixed frames: a `u32` big-endian length, then that many bytes of body.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The default largest frame body: 4 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 4 * 1024 * 1024;

/// Why a frame could not be read or written. Any of these closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the configured maximum. Nothing was allocated for
    /// it; the connection must be closed (the stream cannot be resynchronised).
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The configured maximum.
        max: u32,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed inside a frame ({have} of {need} bytes received)")]
    Truncated {
        /// Bytes of the frame received (prefix included).
        have: usize,
        /// Bytes the frame needed (prefix included).
        need: usize,
    },
    /// The underlying transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// The frame codec for `tokio_util::codec::Framed`.
///
/// Decoding checks the length prefix against `max` before reserving anything, so a hostile
/// 4 GiB prefix costs nothing but the connection. Encoding refuses bodies over `max` the same
/// way, so a node never sends what its peer would refuse.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max: u32,
}

impl FrameCodec {
    /// A codec accepting bodies of at most `max` bytes.
    pub fn new(max: u32) -> Self {
        FrameCodec { max }
    }

    /// The largest body accepted.
    pub fn max(&self) -> u32 {
        self.max
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        if len > self.max {
            return Err(FrameError::TooLarge {
                len: len.into(),
                max: self.max,
            });
        }
        let need = 4 + len as usize;
        if src.len() < need {
            // Within the bound: safe to make room for the rest of this frame.
            src.reserve(need - src.len());
            return Ok(None);
        }
        src.advance(4);
        Ok(Some(src.split_to(len as usize)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let need = if src.len() >= 4 {
                    4 + u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize
                } else {
                    4
                };
                Err(FrameError::Truncated {
                    have: src.len(),
                    need,
                })
            }
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&body[..], dst)
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, body: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = u32::try_from(body.len())
            .ok()
            .filter(|l| *l <= self.max)
            .ok_or(FrameError::TooLarge {
                len: body.len() as u64,
                max: self.max,
            })?;
        dst.reserve(4 + body.len());
        dst.put_u32(len);
        dst.put_slice(body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        FrameCodec::default().encode(body, &mut b).unwrap();
        b
    }

    #[test]
    fn round_trip_across_split_reads() {
        let mut codec = FrameCodec::default();
        let mut wire = frame(b"hello");
        wire.extend_from_slice(&frame(b""));
        wire.extend_from_slice(&frame(&[7u8; 1000]));
        // Feed it a byte at a time.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            buf.extend_from_slice(&[byte]);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f.to_vec());
            }
        }
        assert_eq!(got, vec![b"hello".to_vec(), vec![], vec![7u8; 1000]]);
    }

    #[test]
    fn oversized_prefix_is_refused_before_allocating() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let before = buf.capacity();
        match codec.decode(&mut buf) {
            Err(FrameError::TooLarge { len, max: 1024 }) => assert_eq!(len, u32::MAX as u64),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(
            buf.capacity(),
            before,
            "nothing reserved for the hostile length"
        );
    }

    #[test]
    fn frame_at_the_limit_passes_and_one_over_is_refused() {
        let mut codec = FrameCodec::new(16);
        let mut buf = frame(&[1u8; 16]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 16);
        let mut out = BytesMut::new();
        assert!(matches!(
            codec.encode(&[0u8; 17][..], &mut out),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn truncated_frame_at_eof_is_an_error() {
        let mut codec = FrameCodec::default();
        let mut buf = frame(b"0123456789");
        buf.truncate(8);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FrameError::Truncated { have: 8, need: 14 })
        ));
        let mut empty = BytesMut::new();
        assert!(codec.decode_eof(&mut empty).unwrap().is_none());
    }
}
