//! Which shard holds a key or a lease, and which store nodes hold a shard's replicas.
//!
//! # The routing rule
//! Keys are `/`-separated paths. A key's *group* is its first two segments (`nodes/n1/status`
//! and `nodes/n1/addr` are both in group `nodes/n1`; a key with fewer segments is its own
//! group), and a key lives in shard `fnv1a64(group) mod S`. A lease lives in one shard too,
//! written into its id (the top 16 bits); a lease is granted in the shard of the group whose
//! keys it will carry ([`lease_shard`] of a key of that group), so a node's lease and that
//! node's status keys are in one shard, one Raft group, and expire together atomically.
//!
//! # Placement
//! A shard's replicas go on the `replicas` store nodes with the highest rendezvous score
//! `fnv1a64(shard, node)`: every node computes the same placement from the same member list,
//! and a node joining or leaving moves only the shards it gains or loses.

use super::{Compare, DeleteRequest, LeaseId, Op, RangeResponse, Request};

/// Why a request cannot go to one shard: change the request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The keys of a transaction lie in several shards.
    #[error(
        "the keys of one transaction must be in one shard (one group: the same first two `/` \
         segments)"
    )]
    TxnAcrossShards,
    /// A transaction without a key.
    #[error("a transaction needs at least one key")]
    EmptyTxn,
    /// A prefix delete shorter than a group touches every shard.
    #[error(
        "a prefix delete must stay within one group (two `/` segments, e.g. `nodes/n1/`): `{0}` \
         spans every shard"
    )]
    DeleteAcrossShards(String),
    /// A lease id names a shard the cluster does not have.
    #[error("lease {id} names shard {shard}, beyond the {shards} shards")]
    LeaseBeyondShards {
        /// The lease.
        id: LeaseId,
        /// The shard it names.
        shard: u16,
        /// The cluster's shards.
        shards: u16,
    },
    /// Compaction is asked of a shard, not routed by key.
    #[error("compaction is per shard: not served by key")]
    Compaction,
}

/// The shards a prefix touches: its group's, or all when it is shorter than a group.
pub fn shards_of_prefix(prefix: &[u8], shards: u16) -> Vec<u16> {
    let slashes = prefix.iter().filter(|b| **b == b'/').count();
    if slashes >= 2 || (slashes == 1 && !prefix.ends_with(b"/")) {
        vec![shard_of(prefix, shards)]
    } else {
        (0..shards).collect()
    }
}

/// The shard of lease `id` among `shards`.
///
/// # Errors
/// [`RouteError::LeaseBeyondShards`].
pub fn shard_of_lease_checked(id: LeaseId, shards: u16) -> Result<u16, RouteError> {
    let shard = shard_of_lease(id);
    if shard >= shards {
        return Err(RouteError::LeaseBeyondShards { id, shard, shards });
    }
    Ok(shard)
}

fn one_shard(keys: &[&[u8]], shards: u16) -> Result<u16, RouteError> {
    let mut found: Option<u16> = None;
    for key in keys {
        let s = shard_of(key, shards);
        if found.is_some_and(|f| f != s) {
            return Err(RouteError::TxnAcrossShards);
        }
        found = Some(s);
    }
    found.ok_or(RouteError::EmptyTxn)
}

/// The shard a write goes to.
///
/// # Errors
/// [`RouteError`] when it cannot go to one shard.
pub fn shard_of_request(request: &Request, shards: u16) -> Result<u16, RouteError> {
    match request {
        Request::Put(p) => Ok(shard_of(&p.key, shards)),
        Request::Delete(DeleteRequest { key, prefix, .. }) => {
            let touched = if *prefix {
                shards_of_prefix(key, shards)
            } else {
                vec![shard_of(key, shards)]
            };
            match touched[..] {
                [s] => Ok(s),
                _ => Err(RouteError::DeleteAcrossShards(
                    String::from_utf8_lossy(key).into_owned(),
                )),
            }
        }
        Request::Txn(t) => {
            let mut keys: Vec<&[u8]> = t
                .compare
                .iter()
                .map(|c: &Compare| c.key.as_slice())
                .collect();
            for op in t.success.iter().chain(&t.failure) {
                keys.push(match op {
                    Op::Put(p) => &p.key,
                    Op::Delete(d) => &d.key,
                    Op::Range(r) => &r.key,
                });
            }
            one_shard(&keys, shards)
        }
        Request::LeaseGrant { id, .. } | Request::LeaseRevoke { id } => {
            shard_of_lease_checked(*id, shards)
        }
        Request::Compact { .. } => Err(RouteError::Compaction),
    }
}

/// One answer from the answers of the shards a range touched: their keys in key order, cut
/// at `limit` (0: none); the revision only when one shard answered (revisions are per shard,
/// and no one revision stands for several).
pub fn merge_ranges(answers: Vec<RangeResponse>, limit: usize) -> RangeResponse {
    let one = answers.len() == 1;
    let mut merged = RangeResponse {
        kvs: Vec::new(),
        count: 0,
        more: false,
        revision: 0,
    };
    for r in answers {
        if one {
            merged.revision = r.revision;
        }
        merged.kvs.extend(r.kvs);
        merged.count += r.count;
    }
    merged.kvs.sort_by(|a, b| a.key.cmp(&b.key));
    if limit > 0 && merged.kvs.len() > limit {
        merged.kvs.truncate(limit);
    }
    merged.more = merged.count > merged.kvs.len();
    merged
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike `std`'s hasher).
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A stable 64-bit hash of `bytes` (FNV-1a), the same on every build and platform.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    fnv1a64(&[bytes])
}

/// A key's group: its first two `/`-separated segments.
pub fn group(key: &[u8]) -> &[u8] {
    let mut slashes = key.iter().enumerate().filter(|(_, b)| **b == b'/');
    match slashes.nth(1) {
        Some((i, _)) => &key[..i],
        None => key,
    }
}

/// The shard of `key` among `shards`.
pub fn shard_of(key: &[u8], shards: u16) -> u16 {
    (fnv1a64(&[group(key)]) % u64::from(shards.max(1))) as u16
}

/// The shard a lease for the keys of `key`'s group is granted in.
pub fn lease_shard(key: &[u8], shards: u16) -> u16 {
    shard_of(key, shards)
}

/// A lease id in `shard`, from a sequence number unique within the shard (48 bits).
pub fn lease_id(shard: u16, seq: u64) -> LeaseId {
    (u64::from(shard) << 48) | (seq & 0xffff_ffff_ffff)
}

/// The shard a lease id belongs to.
pub fn shard_of_lease(id: LeaseId) -> u16 {
    (id >> 48) as u16
}

/// The store nodes that hold `shard`'s replicas: the `replicas` highest rendezvous scores,
/// best first.
pub fn place<'a>(shard: u16, nodes: &[&'a str], replicas: usize) -> Vec<&'a str> {
    let mut scored: Vec<(u64, &str)> = nodes
        .iter()
        .map(|n| (fnv1a64(&[&shard.to_be_bytes(), n.as_bytes()]), *n))
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(replicas).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_keys_and_its_lease_share_a_shard() {
        assert_eq!(group(b"nodes/n1/status"), b"nodes/n1");
        assert_eq!(group(b"nodes/n1"), b"nodes/n1");
        assert_eq!(group(b"top"), b"top");
        for n in 0..200 {
            let node = format!("nodes/n{n}");
            let s = shard_of(format!("{node}/status").as_bytes(), 4);
            assert_eq!(s, shard_of(format!("{node}/addr/tcp").as_bytes(), 4));
            let lease = lease_id(lease_shard(node.as_bytes(), 4), n);
            assert_eq!(shard_of_lease(lease), s);
        }
    }

    #[test]
    fn a_write_goes_to_its_groups_shard_and_one_across_shards_is_refused_naming_why() {
        use crate::store::{PutRequest, TxnRequest};
        let put = |k: &str| PutRequest {
            key: k.into(),
            value: vec![],
            lease: None,
            prev_kv: false,
        };
        let r = Request::Put(put("nodes/n1/status"));
        assert_eq!(shard_of_request(&r, 4), Ok(shard_of(b"nodes/n1/x", 4)));
        // Two groups in different shards (found by search: the hash decides).
        let (a, b) = (0..64).map(|i| format!("g/{i}/k")).fold(
            (None::<String>, None::<String>),
            |(a, b), k| match (&a, &b) {
                (None, _) => (Some(k), b),
                (Some(x), None) if shard_of(x.as_bytes(), 4) != shard_of(k.as_bytes(), 4) => {
                    (a, Some(k))
                }
                _ => (a, b),
            },
        );
        let txn = TxnRequest {
            compare: vec![],
            success: vec![Op::Put(put(&a.unwrap())), Op::Put(put(&b.unwrap()))],
            failure: vec![],
        };
        assert_eq!(
            shard_of_request(&Request::Txn(txn), 4),
            Err(RouteError::TxnAcrossShards)
        );
        assert_eq!(
            shard_of_request(&Request::Txn(TxnRequest::default()), 4),
            Err(RouteError::EmptyTxn)
        );
        let del = Request::Delete(DeleteRequest {
            key: b"nodes/".to_vec(),
            prefix: true,
            prev_kv: false,
        });
        assert!(
            matches!(shard_of_request(&del, 4), Err(RouteError::DeleteAcrossShards(k)) if k == "nodes/")
        );
        let beyond = Request::LeaseRevoke { id: lease_id(9, 1) };
        assert_eq!(
            shard_of_request(&beyond, 4),
            Err(RouteError::LeaseBeyondShards {
                id: lease_id(9, 1),
                shard: 9,
                shards: 4
            })
        );
        assert_eq!(
            shards_of_prefix(b"nodes/n1/", 4),
            vec![shard_of(b"nodes/n1", 4)]
        );
        assert_eq!(shards_of_prefix(b"nodes/", 4), vec![0, 1, 2, 3]);
    }

    #[test]
    fn ranges_of_several_shards_merge_in_key_order_cut_at_the_limit_with_no_revision() {
        use crate::store::KeyValue;
        let kv = |k: &str| KeyValue {
            key: k.into(),
            value: vec![],
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        };
        let answer = |keys: &[&str], revision| RangeResponse {
            kvs: keys.iter().map(|k| kv(k)).collect(),
            count: keys.len(),
            more: false,
            revision,
        };
        let merged = merge_ranges(vec![answer(&["b", "d"], 7), answer(&["a", "c"], 9)], 3);
        let keys: Vec<&[u8]> = merged.kvs.iter().map(|k| k.key.as_slice()).collect();
        assert_eq!(keys, [b"a", b"b", b"c"]);
        assert_eq!((merged.count, merged.more, merged.revision), (4, true, 0));
        let one = merge_ranges(vec![answer(&["a"], 5)], 0);
        assert_eq!((one.count, one.more, one.revision), (1, false, 5));
    }

    #[test]
    fn groups_spread_over_the_shards() {
        let mut counts = [0u32; 4];
        for n in 0..4000 {
            counts[shard_of(format!("nodes/n{n}/status").as_bytes(), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn placement_is_stable_and_moves_little_when_a_node_joins() {
        let three = ["s1", "s2", "s3"];
        let four = ["s1", "s2", "s3", "s4"];
        for shard in 0..4 {
            let p = place(shard, &three, 3);
            assert_eq!(p.len(), 3);
            assert_eq!(p, place(shard, &["s3", "s1", "s2"], 3), "order of the list");
        }
        // With a fourth node, each shard loses at most one replica to it.
        for shard in 0..64 {
            let before = place(shard, &three, 3);
            let after = place(shard, &four, 3);
            let kept = after.iter().filter(|n| before.contains(n)).count();
            assert!(kept >= 2, "shard {shard}: {before:?} → {after:?}");
        }
        assert_eq!(place(0, &["s1"], 3), ["s1"]);
    }
}
