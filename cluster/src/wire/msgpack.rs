//! The length of one MessagePack value, found by walking its headers.

use bytes::BytesMut;
use rmp::Marker;

/// An `io::Write` that appends to a `BytesMut`, for the encoder: its many small writes (a
/// marker, a length, a field) stay inline instead of each going through a call.
pub(crate) struct Append<'a>(pub(crate) &'a mut BytesMut);

impl std::io::Write for Append<'_> {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice(buf);
        Ok(())
    }

    #[inline]
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The deepest nesting accepted (a hostile frame of nested arrays cannot exhaust the stack).
const MAX_DEPTH: usize = 64;

/// The number of bytes the first MessagePack value in `buf` takes, or `None` if `buf` does not
/// start with a complete, well-formed value (or nests deeper than 64).
pub(crate) fn value_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    skip(buf, &mut pos, 0)?;
    Some(pos)
}

fn take(buf: &[u8], pos: &mut usize, n: usize) -> Option<()> {
    let end = pos.checked_add(n)?;
    if end > buf.len() {
        return None;
    }
    *pos = end;
    Some(())
}

fn uint(buf: &[u8], pos: &mut usize, n: usize) -> Option<usize> {
    let start = *pos;
    take(buf, pos, n)?;
    let mut v: usize = 0;
    for b in &buf[start..start + n] {
        v = v.checked_mul(256)?.checked_add(usize::from(*b))?;
    }
    Some(v)
}

fn skip(buf: &[u8], pos: &mut usize, depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    let first = *buf.get(*pos)?;
    *pos += 1;
    let items = |n: usize, per: usize, pos: &mut usize| -> Option<()> {
        for _ in 0..n.checked_mul(per)? {
            skip(buf, pos, depth + 1)?;
        }
        Some(())
    };
    match Marker::from_u8(first) {
        Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
            Some(())
        }
        Marker::U8 | Marker::I8 => take(buf, pos, 1),
        Marker::U16 | Marker::I16 => take(buf, pos, 2),
        Marker::U32 | Marker::I32 | Marker::F32 => take(buf, pos, 4),
        Marker::U64 | Marker::I64 | Marker::F64 => take(buf, pos, 8),
        Marker::FixStr(n) => take(buf, pos, n.into()),
        Marker::Str8 | Marker::Bin8 => {
            let n = uint(buf, pos, 1)?;
            take(buf, pos, n)
        }
        Marker::Str16 | Marker::Bin16 => {
            let n = uint(buf, pos, 2)?;
            take(buf, pos, n)
        }
        Marker::Str32 | Marker::Bin32 => {
            let n = uint(buf, pos, 4)?;
            take(buf, pos, n)
        }
        Marker::FixArray(n) => items(n.into(), 1, pos),
        Marker::Array16 => {
            let n = uint(buf, pos, 2)?;
            items(n, 1, pos)
        }
        Marker::Array32 => {
            let n = uint(buf, pos, 4)?;
            items(n, 1, pos)
        }
        Marker::FixMap(n) => items(n.into(), 2, pos),
        Marker::Map16 => {
            let n = uint(buf, pos, 2)?;
            items(n, 2, pos)
        }
        Marker::Map32 => {
            let n = uint(buf, pos, 4)?;
            items(n, 2, pos)
        }
        Marker::FixExt1 => take(buf, pos, 2),
        Marker::FixExt2 => take(buf, pos, 3),
        Marker::FixExt4 => take(buf, pos, 5),
        Marker::FixExt8 => take(buf, pos, 9),
        Marker::FixExt16 => take(buf, pos, 17),
        Marker::Ext8 => {
            let n = uint(buf, pos, 1)?;
            take(buf, pos, n + 1)
        }
        Marker::Ext16 => {
            let n = uint(buf, pos, 2)?;
            take(buf, pos, n + 1)
        }
        Marker::Ext32 => {
            let n = uint(buf, pos, 4)?;
            take(buf, pos, n + 1)
        }
        Marker::Reserved => None,
    }
}

#[cfg(test)]
mod tests {
    use super::value_len;
    use serde::Serialize;

    #[derive(Serialize)]
    struct Sample {
        a: u64,
        b: String,
        #[serde(with = "serde_bytes")]
        c: Vec<u8>,
        d: Vec<(i64, f64, bool, Option<u8>)>,
        e: std::collections::BTreeMap<String, i32>,
    }

    #[test]
    fn measures_whole_values_and_refuses_partial_ones() {
        let sample = Sample {
            a: u64::MAX,
            b: "x".repeat(300),
            c: vec![7; 70_000],
            d: vec![(-5, 1.5, true, None), (i64::MIN, -0.0, false, Some(3))],
            e: [("k".to_string(), -1)].into_iter().collect(),
        };
        let bytes = rmp_serde::to_vec(&sample).unwrap();
        assert_eq!(value_len(&bytes), Some(bytes.len()));
        for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(value_len(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        assert_eq!(value_len(&two), Some(bytes.len()));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut deep = vec![0x91u8; 10_000]; // [[[[...
        deep.push(0xc0);
        assert_eq!(value_len(&deep), None);
    }
}
