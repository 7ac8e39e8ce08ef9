//! [`KeyedVec`]: a supervisor's children in start order.

use std::ops::{Bound, RangeBounds};

/// Values ordered by a `u64` key, in one vector: a supervisor's children, whose keys only
/// grow, so an insert is a push. A third of the memory of a `BTreeMap` filled in order (whose
/// nodes are left half empty), with lookups by binary search; a removal shifts the tail.
#[derive(Debug)]
pub(crate) struct KeyedVec<T> {
    items: Vec<(u64, T)>,
}

impl<T> Default for KeyedVec<T> {
    fn default() -> Self {
        KeyedVec { items: Vec::new() }
    }
}

impl<T> KeyedVec<T> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        KeyedVec {
            items: Vec::with_capacity(n),
        }
    }

    pub(crate) fn reserve(&mut self, n: usize) {
        self.items.reserve_exact(n);
    }

    fn find(&self, key: u64) -> Result<usize, usize> {
        self.items.binary_search_by_key(&key, |(k, _)| *k)
    }

    /// Inserts or replaces the value for `key`.
    pub(crate) fn insert(&mut self, key: u64, value: T) {
        match self.items.last() {
            Some((last, _)) if *last >= key => match self.find(key) {
                Ok(i) => self.items[i].1 = value,
                Err(i) => self.items.insert(i, (key, value)),
            },
            _ => self.items.push((key, value)),
        }
    }

    pub(crate) fn get(&self, key: &u64) -> Option<&T> {
        self.find(*key).ok().map(|i| &self.items[i].1)
    }

    pub(crate) fn get_mut(&mut self, key: &u64) -> Option<&mut T> {
        self.find(*key).ok().map(|i| &mut self.items[i].1)
    }

    pub(crate) fn contains_key(&self, key: &u64) -> bool {
        self.find(*key).is_ok()
    }

    pub(crate) fn remove(&mut self, key: &u64) -> Option<T> {
        self.find(*key).ok().map(|i| self.items.remove(i).1)
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn keys(&self) -> impl DoubleEndedIterator<Item = &u64> + '_ {
        self.items.iter().map(|(k, _)| k)
    }

    pub(crate) fn values(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.items.iter().map(|(_, v)| v)
    }

    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&u64, &T)> + '_ {
        self.items.iter().map(|(k, v)| (k, v))
    }

    /// The entries whose keys fall in `range`, in key order.
    pub(crate) fn range(
        &self,
        range: impl RangeBounds<u64>,
    ) -> impl DoubleEndedIterator<Item = (&u64, &T)> + '_ {
        let lo = match range.start_bound() {
            Bound::Included(k) => self.find(*k).unwrap_or_else(|i| i),
            Bound::Excluded(k) => self.find(*k).map(|i| i + 1).unwrap_or_else(|i| i),
            Bound::Unbounded => 0,
        };
        let hi = match range.end_bound() {
            Bound::Included(k) => self.find(*k).map(|i| i + 1).unwrap_or_else(|i| i),
            Bound::Excluded(k) => self.find(*k).unwrap_or_else(|i| i),
            Bound::Unbounded => self.items.len(),
        };
        self.items[lo..hi.max(lo)].iter().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::KeyedVec;
    use std::collections::BTreeMap;

    /// Random operations against a `BTreeMap` model.
    #[test]
    fn behaves_like_a_btreemap() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut ours = KeyedVec::default();
        let mut model = BTreeMap::new();
        let mut next = 0u64;
        for _ in 0..5_000 {
            match rng.u8(0..10) {
                0..=4 => {
                    // Mostly growing keys, sometimes an old one.
                    let key = if rng.bool() { next } else { rng.u64(0..=next) };
                    next += 1;
                    let v = rng.u32(..);
                    ours.insert(key, v);
                    model.insert(key, v);
                }
                5..=6 => {
                    let key = rng.u64(0..=next);
                    assert_eq!(ours.remove(&key), model.remove(&key));
                }
                _ => {
                    let a = rng.u64(0..=next);
                    let b = rng.u64(a..=next + 1);
                    let got: Vec<_> = ours.range(a..b).rev().map(|(k, v)| (*k, *v)).collect();
                    let want: Vec<_> = model.range(a..b).rev().map(|(k, v)| (*k, *v)).collect();
                    assert_eq!(got, want);
                    assert_eq!(ours.get(&a), model.get(&a));
                }
            }
            assert_eq!(ours.len(), model.len());
        }
        let all: Vec<_> = ours.iter().map(|(k, v)| (*k, *v)).collect();
        let want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(all, want);
    }
}
