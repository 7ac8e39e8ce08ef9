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

use super::LeaseId;

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
