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
//! A member is a node's name *and* its store file: [`member_id`]. A node that comes back with a
//! new store file (its data directory lost) is a new member under the same name, and
//! [`renewal`] says which old member to replace with it.
//!
//! The functions are pure: the caller says who is up, who has been down and for how long (and
//! which member each node answers as), and carries out the change they return.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::routing;
use crate::members::MemberState;

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

/// The store nodes as one store node follows them in its membership: who is up, and since
/// when each of the others has been down.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreView {
    /// Store nodes up (or suspected, or leaving), by name.
    pub live: BTreeSet<String>,
    /// Store nodes known and not live (down, gone, or not described yet), with when they were
    /// first seen so.
    pub down_since: BTreeMap<String, Instant>,
}

impl StoreView {
    /// Takes in the states of the store members seen at `now`. A node once known stays known:
    /// when it is no longer listed, it counts as down from then. Returns whether the view
    /// changed.
    pub fn observe<'a>(
        &mut self,
        members: impl IntoIterator<Item = (&'a str, MemberState)>,
        now: Instant,
    ) -> bool {
        let mut known: BTreeSet<String> = self.live.iter().cloned().collect();
        known.extend(self.down_since.keys().cloned());
        let mut live = BTreeSet::new();
        for (name, state) in members {
            known.insert(name.to_string());
            match state {
                MemberState::Up | MemberState::Suspect | MemberState::Leaving => {
                    live.insert(name.to_string());
                }
                MemberState::Joining | MemberState::Left | MemberState::Down => {}
            }
        }
        let mut down_since = self.down_since.clone();
        down_since.retain(|n, _| !live.contains(n));
        for n in known.into_iter().filter(|n| !live.contains(n)) {
            down_since.entry(n).or_insert(now);
        }
        let next = StoreView { live, down_since };
        let changed = *self != next;
        *self = next;
        changed
    }

    /// The store nodes as the placement sees them at `now`.
    pub fn at(&self, now: Instant) -> StoreNodes {
        StoreNodes {
            live: self.live.clone(),
            down: self
                .down_since
                .iter()
                .map(|(n, since)| (n.clone(), now.saturating_duration_since(*since)))
                .collect(),
        }
    }
}

/// One membership change of a shard's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// A node to bring in: first as a learner (until it has caught up), then as a voter.
    pub add: Option<String>,
    /// A voter to retire, in the same membership change that makes `add` a voter.
    pub remove: Option<String>,
    /// Learners that no longer belong (left over from an addition that did not finish), to
    /// remove first.
    pub drop_learners: BTreeSet<String>,
}

/// A replica's Raft id: a stable hash of its node's name and its store file's id. A store file
/// from before store ids (id 0) keeps the name's hash alone (its members keep their ids).
pub fn member_id(node: &str, store_id: u64) -> u64 {
    if store_id == 0 {
        return routing::stable_hash(node.as_bytes());
    }
    let mut key = node.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&store_id.to_le_bytes());
    routing::stable_hash(&key)
}

/// A member to replace with its node's new member (see [`renewal`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// The node's name.
    pub name: String,
    /// The member it was (in the group).
    pub old: u64,
    /// The member it is now.
    pub new: u64,
    /// Whether the old member is a voter (else a learner). A voter is replaced: the new member
    /// joins as a learner, catches up, and takes the old one's place in one membership change.
    /// A learner is dropped (the placement adds the node again, as what it is now).
    pub voter: bool,
}

/// The first member of the group (voters before learners, by name) whose node now answers as
/// another member (`answered_as`: node name to the member id it answered as), if any.
pub fn renewal(
    voters: &BTreeMap<String, u64>,
    learners: &BTreeMap<String, u64>,
    answered_as: &HashMap<String, u64>,
) -> Option<Renewal> {
    voters
        .iter()
        .map(|m| (m, true))
        .chain(learners.iter().map(|m| (m, false)))
        .find_map(|((name, old), voter)| {
            let new = *answered_as.get(name)?;
            (new != *old).then(|| Renewal {
                name: name.clone(),
                old: *old,
                new,
                voter,
            })
        })
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

/// The next change that moves `shard`'s group from `voters` (and `learners`) towards its
/// [`target`], if any: the best-ranked missing node comes in, (when the group is full) the
/// worst-ranked voter that does not belong goes, dead ones first, and learners that are neither
/// in the target nor coming in are dropped.
pub fn next_change(
    shard: u16,
    voters: &BTreeSet<String>,
    learners: &BTreeSet<String>,
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
    let drop_learners: BTreeSet<String> = learners
        .iter()
        .filter(|l| !target.contains(l) && add.as_ref() != Some(*l))
        .cloned()
        .collect();
    if add.is_none() && remove.is_none() && drop_learners.is_empty() {
        return None;
    }
    Some(Change {
        add,
        remove,
        drop_learners,
    })
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
            match next_change(shard, &voters, &BTreeSet::new(), n, GRACE) {
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
                next_change(
                    shard,
                    &voters,
                    &BTreeSet::new(),
                    &nodes(&["a", "b", "c"], &[]),
                    GRACE
                ),
                None
            );
            let dead_c = nodes(&["a", "b"], &[("c", 3600)]);
            assert_eq!(
                next_change(shard, &voters, &BTreeSet::new(), &dead_c, GRACE),
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
                let c = next_change(shard, &before, &BTreeSet::new(), &n, GRACE).unwrap();
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
                next_change(shard, &voters, &BTreeSet::new(), &recent, GRACE),
                next_change(shard, &voters, &BTreeSet::new(), &as_if_up, GRACE)
            );
            // c down for an hour: replaced by d, the only live node outside the group.
            let dead = nodes(&["a", "b", "d"], &[("c", 3600)]);
            let c =
                next_change(shard, &voters, &BTreeSet::new(), &dead, GRACE).expect("a replacement");
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
                    &BTreeSet::new(),
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
        let c = next_change(7, &voters, &BTreeSet::new(), &n, GRACE).unwrap();
        assert_eq!(
            c,
            Change {
                add: None,
                remove: Some("d".into()),
                drop_learners: BTreeSet::new()
            }
        );
        let (after, _) = settle(7, voters, &n);
        assert_eq!(after, set(&["a", "b", "c"]));
    }

    #[test]
    fn leftover_learners_are_dropped_but_not_the_one_coming_in() {
        let all = ["a", "b", "c", "d"];
        let n = nodes(&all, &[("e", 3600)]);
        for shard in 0..32 {
            let voters = set(&["a", "b", "c"]);
            let c = next_change(shard, &voters, &set(&["d", "e"]), &n, GRACE).expect("e goes");
            assert!(c.drop_learners.contains("e"), "a dead learner is dropped");
            let d_belongs = placed(shard, &all).contains("d");
            assert_eq!(c.add.as_deref() == Some("d"), d_belongs);
            assert_eq!(
                !c.drop_learners.contains("d"),
                d_belongs,
                "shard {shard}: {c:?}"
            );
        }
    }

    #[test]
    fn the_view_marks_nodes_down_from_when_they_stop_being_live_and_remembers_them() {
        use MemberState::*;
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(5);
        let t2 = t0 + Duration::from_secs(9);
        let mut v = StoreView::default();
        assert!(v.observe([("a", Up), ("b", Suspect), ("c", Up)], t0));
        assert_eq!(v.live, set(&["a", "b", "c"]));
        assert!(
            !v.observe([("a", Up), ("b", Suspect), ("c", Up)], t1),
            "nothing new"
        );
        // c goes down at t1 and then vanishes from the list: down since t1 all along.
        assert!(v.observe([("a", Up), ("b", Up), ("c", Down)], t1));
        v.observe([("a", Up), ("b", Up)], t2);
        assert_eq!(v.down_since.get("c"), Some(&t1));
        assert_eq!(v.at(t2).down.get("c"), Some(&Duration::from_secs(4)));
        // Back up: live again, no longer down.
        v.observe([("a", Up), ("b", Up), ("c", Up)], t2);
        assert!(v.live.contains("c") && v.down_since.is_empty());
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

    #[test]
    fn a_member_is_a_name_and_a_store_file() {
        assert_eq!(
            member_id("s1", 0),
            routing::stable_hash(b"s1"),
            "a file from before store ids"
        );
        let mut key = b"s1".to_vec();
        key.push(0);
        key.extend_from_slice(&7u64.to_le_bytes());
        assert_eq!(member_id("s1", 7), routing::stable_hash(&key));
        assert_ne!(
            member_id("s1", 7),
            member_id("s1", 8),
            "a new store file: a new member"
        );
        assert_ne!(member_id("s1", 7), member_id("s2", 7));
        assert_ne!(member_id("s1", 7), member_id("s1", 0));
    }

    #[test]
    fn a_node_answering_as_another_member_is_renewed_voters_first() {
        let members = |m: &[(&str, u64)]| -> BTreeMap<String, u64> {
            m.iter().map(|(n, id)| (n.to_string(), *id)).collect()
        };
        let voters = members(&[("s0", 10), ("s1", 11), ("s2", 12)]);
        let learners = members(&[("s3", 13)]);
        let mut answered = HashMap::new();
        assert_eq!(renewal(&voters, &learners, &answered), None);
        // Answering as the member it is: nothing to do.
        answered.insert("s1".to_string(), 11);
        assert_eq!(renewal(&voters, &learners, &answered), None);
        answered.insert("s3".to_string(), 33);
        let learner = Renewal {
            name: "s3".into(),
            old: 13,
            new: 33,
            voter: false,
        };
        assert_eq!(renewal(&voters, &learners, &answered), Some(learner));
        answered.insert("s2".to_string(), 22);
        let voter = Renewal {
            name: "s2".into(),
            old: 12,
            new: 22,
            voter: true,
        };
        assert_eq!(renewal(&voters, &learners, &answered), Some(voter));
    }
}
