//! Where a shard's replicas should be, and the next membership change that gets them there.
//!
//! A shard's group is the [`REPLICAS`] store nodes that rank highest for it by rendezvous
//! hashing ([`routing::place`]) among the store nodes that can hold it. The shard's leader
//! compares that target with the group's voters and makes one change at a time: it adds a
//! missing node (as a learner first, caught up, then a voter) and retires the member it
//! displaces in the same membership change, so the group never has fewer voters than before.
//!
//! Which nodes can hold a shard:
//! - every store node that is up (or only suspected: suspicion is not failure);
//! - a voter that is down keeps its place for a grace period (`dead_after`): a restart or a
//!   short partition must not move data around; once it has been down that long it is dead and
//!   replaced, but only by a node that is up: with too few live store nodes the group keeps its
//!   dead members rather than shrink (shrinking would not make it any more available, and the
//!   member may come back).
//!
//! So a store node joining later takes over the shards it ranks highest for, a dead one is
//! replaced once a live node is there to take its place, and with exactly [`REPLICAS`] store
//! nodes nothing ever moves.
//!
//! The function is pure: the caller says who is up, who has been down and for how long, and
//! carries out the change it returns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::routing;

/// Replicas per shard: a Raft group of three tolerates one failure.
pub const REPLICAS: usize = 3;

/// What the placement sees of the store nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreNodes {
    /// Store nodes up (or suspected), by name.
    pub live: BTreeSet<String>,
    /// Store nodes down (or gone), by name, with how long they have been so.
    pub down: BTreeMap<String, Duration>,
}

/// One membership change of a shard's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// A node to bring in: first as a learner (until it has caught up), then as a voter.
    pub add: Option<String>,
    /// A voter to retire, in the same membership change that makes `add` a voter.
    pub remove: Option<String>,
}

/// The nodes that should hold `shard` (best first), given its current `voters`.
pub fn target(
    shard: u16,
    voters: &BTreeSet<String>,
    nodes: &StoreNodes,
    dead_after: Duration,
) -> Vec<String> {
    let dead = |n: &String| nodes.down.get(n).is_some_and(|d| *d >= dead_after);
    // Voters down for less than the grace keep their place.
    let mut candidates: BTreeSet<&str> = nodes.live.iter().map(String::as_str).collect();
    for v in voters {
        if !nodes.live.contains(v) && !dead(v) {
            candidates.insert(v);
        }
    }
    let candidates: Vec<&str> = candidates.into_iter().collect();
    if candidates.len() >= REPLICAS {
        return routing::place(shard, &candidates, REPLICAS)
            .into_iter()
            .map(String::from)
            .collect();
    }
    // Too few to choose from: keep every voter (dead ones too) and add what is live.
    let mut all: BTreeSet<&str> = candidates.into_iter().collect();
    all.extend(voters.iter().map(String::as_str));
    let all: Vec<&str> = all.into_iter().collect();
    routing::place(shard, &all, all.len())
        .into_iter()
        .map(String::from)
        .collect()
}

/// The next change that moves `shard`'s group from `voters` towards its [`target`], if any:
/// the best-ranked missing node comes in, and (when the group is full) the worst-ranked voter
/// that does not belong goes, dead ones first.
pub fn next_change(
    shard: u16,
    voters: &BTreeSet<String>,
    nodes: &StoreNodes,
    dead_after: Duration,
) -> Option<Change> {
    let target = target(shard, voters, nodes, dead_after);
    let add = target.iter().find(|n| !voters.contains(*n)).cloned();
    let extra: Vec<&String> = voters.iter().filter(|v| !target.contains(v)).collect();
    let remove = extra
        .iter()
        .find(|v| !nodes.live.contains(**v))
        .or(extra.first())
        .map(|v| (*v).clone());
    // Retire a voter only in exchange for a newcomer, or when the group is larger than its
    // target; never the last one.
    let remove = remove.filter(|_| add.is_some() || voters.len() > target.len().max(1));
    if add.is_none() && remove.is_none() {
        return None;
    }
    Some(Change { add, remove })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn nodes(live: &[&str], down: &[(&str, u64)]) -> StoreNodes {
        StoreNodes {
            live: set(live),
            down: down
                .iter()
                .map(|(n, s)| (n.to_string(), Duration::from_secs(*s)))
                .collect(),
        }
    }

    fn placed(shard: u16, names: &[&str]) -> BTreeSet<String> {
        routing::place(shard, names, REPLICAS)
            .into_iter()
            .map(String::from)
            .collect()
    }

    /// Applies changes until none is left; returns the voters and the number of steps.
    fn settle(
        shard: u16,
        mut voters: BTreeSet<String>,
        n: &StoreNodes,
    ) -> (BTreeSet<String>, usize) {
        for step in 0..10 {
            match next_change(shard, &voters, n, GRACE) {
                None => return (voters, step),
                Some(c) => {
                    assert!(
                        c.add.is_some() || voters.len() > REPLICAS,
                        "a removal without a newcomer from a full group: {c:?}"
                    );
                    if let Some(a) = c.add {
                        voters.insert(a);
                    }
                    if let Some(r) = c.remove {
                        voters.remove(&r);
                    }
                    assert!(!voters.is_empty());
                }
            }
        }
        panic!("no fixed point for shard {shard}: {voters:?}");
    }

    #[test]
    fn with_exactly_three_store_nodes_nothing_moves_even_when_one_dies() {
        let voters = set(&["a", "b", "c"]);
        for shard in 0..16 {
            assert_eq!(
                next_change(shard, &voters, &nodes(&["a", "b", "c"], &[]), GRACE),
                None
            );
            let dead_c = nodes(&["a", "b"], &[("c", 3600)]);
            assert_eq!(
                next_change(shard, &voters, &dead_c, GRACE),
                None,
                "never shrinks"
            );
        }
    }

    #[test]
    fn a_fourth_node_takes_the_shards_it_ranks_for_one_swap_each() {
        let all = ["a", "b", "c", "d"];
        let n = nodes(&all, &[]);
        let mut moved = 0;
        for shard in 0..64 {
            let before = set(&["a", "b", "c"]);
            let (after, steps) = settle(shard, before.clone(), &n);
            assert_eq!(after, placed(shard, &all), "shard {shard}");
            assert!(steps <= 1, "shard {shard}: {steps} steps");
            if after != before {
                moved += 1;
                let c = next_change(shard, &before, &n, GRACE).unwrap();
                assert_eq!(c.add.as_deref(), Some("d"));
                assert!(c.remove.is_some(), "a swap keeps three voters");
            }
        }
        // Rendezvous hashing: d takes about three quarters of the shards (3 of 4 places).
        assert!((32..=60).contains(&moved), "{moved} of 64 shards moved");
    }

    #[test]
    fn a_dead_member_is_replaced_only_after_the_grace_and_only_by_a_live_node() {
        let voters = set(&["a", "b", "c"]);
        for shard in 0..32 {
            // c down for 10 s: within the grace, c is ranked as if it were up (d displaces it
            // only on shards where d ranks above it anyway).
            let recent = nodes(&["a", "b", "d"], &[("c", 10)]);
            let as_if_up = nodes(&["a", "b", "c", "d"], &[]);
            assert_eq!(
                next_change(shard, &voters, &recent, GRACE),
                next_change(shard, &voters, &as_if_up, GRACE)
            );
            // c down for an hour: replaced by d, the only live node outside the group.
            let dead = nodes(&["a", "b", "d"], &[("c", 3600)]);
            let c = next_change(shard, &voters, &dead, GRACE).expect("a replacement");
            assert_eq!(c.add.as_deref(), Some("d"));
            assert_eq!(c.remove.as_deref(), Some("c"));
            let (after, _) = settle(shard, voters.clone(), &dead);
            assert_eq!(after, set(&["a", "b", "d"]));
        }
    }

    #[test]
    fn a_small_group_grows_towards_three_and_never_shrinks() {
        for shard in 0..16 {
            // A one-node development store joined by a second node.
            let (after, _) = settle(shard, set(&["a"]), &nodes(&["a", "b"], &[]));
            assert_eq!(after, set(&["a", "b"]));
            // Its only other member dies: the group keeps it.
            assert_eq!(
                next_change(
                    shard,
                    &set(&["a", "b"]),
                    &nodes(&["a"], &[("b", 3600)]),
                    GRACE
                ),
                None
            );
        }
    }

    #[test]
    fn an_oversized_group_sheds_its_extra_voters_dead_first() {
        let voters = set(&["a", "b", "c", "d"]);
        let n = nodes(&["a", "b", "c"], &[("d", 3600)]);
        let c = next_change(7, &voters, &n, GRACE).unwrap();
        assert_eq!(
            c,
            Change {
                add: None,
                remove: Some("d".into())
            }
        );
        let (after, _) = settle(7, voters, &n);
        assert_eq!(after, set(&["a", "b", "c"]));
    }

    #[test]
    fn random_clusters_settle_on_the_rendezvous_target_without_ever_shrinking() {
        let names = ["a", "b", "c", "d", "e", "f", "g"];
        let mut rng = 0x9E3779B97F4A7C15u64;
        let mut next = |m: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % m
        };
        for _ in 0..500 {
            let shard = next(64) as u16;
            let mut live = BTreeSet::new();
            let mut down = BTreeMap::new();
            for n in names {
                match next(4) {
                    0 => {
                        down.insert(n.to_string(), Duration::from_secs(next(60)));
                    }
                    _ => {
                        live.insert(n.to_string());
                    }
                }
            }
            let n = StoreNodes { live, down };
            let start: BTreeSet<String> = names
                .iter()
                .filter(|_| next(2) == 0)
                .take(3)
                .map(|s| s.to_string())
                .collect();
            if start.is_empty() {
                continue;
            }
            let (after, _) = settle(shard, start.clone(), &n);
            assert!(
                after.len() >= start.len().min(REPLICAS),
                "{start:?} -> {after:?}"
            );
            let alive_or_grace: Vec<&str> = names
                .iter()
                .copied()
                .filter(|x| {
                    n.live.contains(*x)
                        || (after.contains(*x) && n.down.get(*x).is_some_and(|d| *d < GRACE))
                })
                .collect();
            if alive_or_grace.len() >= REPLICAS {
                assert_eq!(after, placed(shard, &alive_or_grace), "{start:?} {n:?}");
            }
        }
    }
}
