//! A linearizability checker for key-value histories (Wing & Gong's search with memoization, as
//! in Porcupine), for tests that record what concurrent clients saw.
//!
//! A history is a list of operations, each with the time it was called and the time it
//! returned. It is linearizable if every operation can be given one instant between its call
//! and its return so that, in the order of those instants, each read returns the value of the
//! last write before it. Linearizability is local, so each key is checked on its own. An
//! operation whose outcome is unknown (a write whose reply was lost) has no return time: it may
//! take effect at any instant after its call, or never.

use std::collections::{BTreeMap, HashSet};

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Wrote a value (`None`: deleted the key).
    Put(Option<Vec<u8>>),
    /// Read the key and saw this value (`None`: absent).
    Get(Option<Vec<u8>>),
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The key.
    pub key: Vec<u8>,
    /// When it was called (any monotonic unit).
    pub call: u64,
    /// When it returned; `None` if its outcome is unknown (a write only).
    pub ret: Option<u64>,
    /// What it did.
    pub op: KvOp,
}

/// Why a history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the operations on key {key:?} are not linearizable ({ops} operations)")]
pub struct NotLinearizable {
    /// The key.
    pub key: String,
    /// How many operations it had.
    pub ops: usize,
}

/// Checks a history, key by key.
///
/// # Errors
/// The first key whose operations cannot be linearized.
pub fn check(history: &[Operation]) -> Result<(), NotLinearizable> {
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        if !linearizable(&ops) {
            return Err(NotLinearizable {
                key: String::from_utf8_lossy(key).into_owned(),
                ops: ops.len(),
            });
        }
    }
    Ok(())
}

fn ret(op: &Operation) -> u64 {
    op.ret.unwrap_or(u64::MAX)
}

/// One register's history, by depth-first search over linearization orders.
fn linearizable(ops: &[&Operation]) -> bool {
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let mut done = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Option<Vec<u8>>)> = HashSet::new();
    search(ops, &mut done, None, &mut seen)
}

fn is_done(done: &[u64], i: usize) -> bool {
    done[i / 64] & (1 << (i % 64)) != 0
}

fn search(
    ops: &[&Operation],
    done: &mut Vec<u64>,
    state: Option<Vec<u8>>,
    seen: &mut HashSet<(Vec<u64>, Option<Vec<u8>>)>,
) -> bool {
    // Finished when every operation with a known return is placed: writes of unknown outcome
    // may take effect after everything, which is the same as never.
    let pending: Vec<usize> = (0..ops.len()).filter(|i| !is_done(done, *i)).collect();
    if pending.iter().all(|i| ops[*i].ret.is_none()) {
        return true;
    }
    if !seen.insert((done.clone(), state.clone())) {
        return false;
    }
    // Only an operation called before every pending one returned can go next.
    let horizon = pending
        .iter()
        .map(|i| ret(ops[*i]))
        .min()
        .unwrap_or(u64::MAX);
    for &i in &pending {
        let op = ops[i];
        if op.call > horizon {
            continue;
        }
        let next = match &op.op {
            KvOp::Put(v) => v.clone(),
            KvOp::Get(seen_value) => {
                if *seen_value != state {
                    continue;
                }
                state.clone()
            }
        };
        done[i / 64] |= 1 << (i % 64);
        if search(ops, done, next, seen) {
            return true;
        }
        done[i / 64] &= !(1 << (i % 64));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(call: u64, ret: Option<u64>, v: &str) -> Operation {
        Operation {
            key: b"k".to_vec(),
            call,
            ret,
            op: KvOp::Put(Some(v.as_bytes().to_vec())),
        }
    }

    fn get(call: u64, ret: u64, v: Option<&str>) -> Operation {
        Operation {
            key: b"k".to_vec(),
            call,
            ret: Some(ret),
            op: KvOp::Get(v.map(|v| v.as_bytes().to_vec())),
        }
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // A read overlapping a write may see the old or the new value.
        let h = [
            put(0, Some(10), "a"),
            put(20, Some(40), "b"),
            get(25, 30, Some("a")),
            get(35, 50, Some("b")),
        ];
        assert_eq!(check(&h), Ok(()));
        let h = [
            put(0, Some(10), "a"),
            put(20, Some(40), "b"),
            get(25, 30, Some("b")),
            get(45, 50, Some("b")),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_stale_read_after_a_finished_write_is_rejected() {
        // "b" was written and acknowledged before the read began: reading "a" is stale.
        let h = [
            put(0, Some(10), "a"),
            put(20, Some(30), "b"),
            get(40, 50, Some("a")),
        ];
        assert!(check(&h).is_err());
        // Values going back and forth between two reads is rejected too.
        let h = [
            put(0, Some(10), "a"),
            put(15, Some(100), "b"),
            get(20, 30, Some("b")),
            get(40, 50, Some("a")),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_write_of_unknown_outcome_may_or_may_not_have_happened() {
        let lost = put(20, None, "b");
        assert_eq!(
            check(&[put(0, Some(10), "a"), lost.clone(), get(30, 40, Some("a"))]),
            Ok(())
        );
        assert_eq!(
            check(&[put(0, Some(10), "a"), lost.clone(), get(30, 40, Some("b"))]),
            Ok(())
        );
        // But not before it was called.
        assert!(check(&[put(0, Some(10), "a"), get(12, 15, Some("b")), lost]).is_err());
    }

    #[test]
    fn keys_are_checked_separately() {
        let mut other = get(0, 5, Some("zzz"));
        other.key = b"other".to_vec();
        let err = check(&[put(0, Some(10), "a"), get(20, 30, Some("a")), other]).unwrap_err();
        assert_eq!(err.key, "other");
    }

    #[test]
    fn a_read_of_a_never_written_value_is_rejected() {
        assert!(check(&[get(0, 5, Some("ghost"))]).is_err());
        assert_eq!(check(&[get(0, 5, None)]), Ok(()));
    }
}
