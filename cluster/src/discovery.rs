//! The service directory: what every node offers (services and cluster-wide actor names),
//! replicated to every node by anti-entropy.
//!
//! Each node owns one [`NodeRecord`] and is the only one to change it; every change raises the
//! record's `version`, and a restarted node starts a new `incarnation`. Replicas keep, per node,
//! the record with the highest `(incarnation, version)`, so merging is idempotent, commutative
//! and order-free: applying the same records in any order, any number of times, gives the same
//! directory.
//!
//! Anti-entropy (as memberlist's push-pull): a node sends a peer its [`Digest`] (node →
//! `(incarnation, version)`); the peer answers with the records it has that are newer, and its
//! own digest; the first node sends back what the peer lacks. A full exchange with each new
//! member, and periodically with a random peer, converges every directory, whatever gossip
//! broadcasts were lost.
//!
//! A node declared down is dropped with its services, and its replica remembers which of the
//! node's incarnations went down: a peer that has not heard of it yet still holds the record
//! and offers it in the next exchange or push, and merging it would bring the dead node's
//! services back for good (no one would drop them again). Records of that incarnation or an
//! earlier one are refused until the node is seen up again (a member wrongly declared down
//! comes back with the same incarnation); a restarted node's new incarnation is taken at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A service a node offers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Service {
    /// Its name (`orders`, `db`).
    pub name: String,
    /// Where to reach it.
    pub addr: SocketAddr,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
}

/// Everything one node offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id.
    pub node: String,
    /// Raised on every start of the node.
    pub incarnation: u64,
    /// Raised on every change within an incarnation.
    pub version: u64,
    /// Its services.
    pub services: Vec<Service>,
    /// The actor names it serves cluster-wide.
    pub actors: Vec<String>,
    /// The topics it has subscribers for.
    #[serde(default)]
    pub topics: Vec<String>,
}

impl NodeRecord {
    fn stamp(&self) -> (u64, u64) {
        (self.incarnation, self.version)
    }
}

/// Per node, the `(incarnation, version)` of the record held.
pub type Digest = BTreeMap<String, (u64, u64)>;

/// A change a subscriber sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryEvent {
    /// A service appeared on a node.
    ServiceAdded {
        /// The node.
        node: String,
        /// The service.
        service: Service,
    },
    /// A service went away from a node (deregistered, or the node is gone).
    ServiceRemoved {
        /// The node.
        node: String,
        /// The service.
        service: Service,
    },
}

/// One node's replica of the directory.
#[derive(Clone, Debug)]
pub struct Directory {
    me: String,
    records: BTreeMap<String, NodeRecord>,
    /// Per node declared down and not seen up since, the latest incarnation that went down.
    gone: BTreeMap<String, u64>,
}

fn diff(node: &str, old: &[Service], new: &[Service]) -> Vec<DirectoryEvent> {
    let mut events = Vec::new();
    for s in old.iter().filter(|s| !new.contains(s)) {
        events.push(DirectoryEvent::ServiceRemoved {
            node: node.into(),
            service: s.clone(),
        });
    }
    for s in new.iter().filter(|s| !old.contains(s)) {
        events.push(DirectoryEvent::ServiceAdded {
            node: node.into(),
            service: s.clone(),
        });
    }
    events
}

impl Directory {
    /// The directory of node `me` in its `incarnation`, offering nothing yet.
    pub fn new(me: &str, incarnation: u64) -> Self {
        let mut records = BTreeMap::new();
        records.insert(
            me.to_string(),
            NodeRecord {
                node: me.into(),
                incarnation,
                version: 0,
                services: Vec::new(),
                actors: Vec::new(),
                topics: Vec::new(),
            },
        );
        Directory {
            me: me.into(),
            records,
            gone: BTreeMap::new(),
        }
    }

    /// The directory of node `me` in its `incarnation`, resuming its own record `kept` (as the
    /// node's view saved it before it restarted): the same services, actors and topics, at a
    /// higher version than any peer has of it, so peers take the record again. A record of
    /// another node or incarnation is ignored (the directory starts empty, as [`Directory::new`]).
    pub fn resume(me: &str, incarnation: u64, kept: Option<NodeRecord>) -> Self {
        let mut dir = Directory::new(me, incarnation);
        if let Some(mut rec) = kept.filter(|r| r.node == me && r.incarnation == incarnation) {
            rec.version += 1;
            *dir.mine() = rec;
        }
        dir
    }

    /// This node's own record.
    pub fn own_record(&self) -> NodeRecord {
        self.records
            .get(&self.me)
            .cloned()
            .expect("own record always present")
    }

    fn mine(&mut self) -> &mut NodeRecord {
        self.records
            .get_mut(&self.me)
            .expect("own record always present")
    }

    /// Offers `service` from this node (replacing one of the same name).
    pub fn register(&mut self, service: Service) -> Vec<DirectoryEvent> {
        let me = self.me.clone();
        let rec = self.mine();
        let old = rec.services.clone();
        rec.services.retain(|s| s.name != service.name);
        rec.services.push(service);
        rec.services.sort();
        rec.version += 1;
        let new = rec.services.clone();
        diff(&me, &old, &new)
    }

    /// Withdraws this node's service `name`.
    pub fn deregister(&mut self, name: &str) -> Vec<DirectoryEvent> {
        let me = self.me.clone();
        let rec = self.mine();
        let old = rec.services.clone();
        rec.services.retain(|s| s.name != name);
        if rec.services.len() != old.len() {
            rec.version += 1;
        }
        let new = rec.services.clone();
        diff(&me, &old, &new)
    }

    /// Serves `actor` cluster-wide from this node.
    pub fn register_actor(&mut self, actor: &str) {
        let rec = self.mine();
        if !rec.actors.iter().any(|a| a == actor) {
            rec.actors.push(actor.into());
            rec.actors.sort();
            rec.version += 1;
        }
    }

    /// This node has subscribers for `topic` (`true`) or no longer has any (`false`).
    pub fn set_topic(&mut self, topic: &str, subscribed: bool) {
        let rec = self.mine();
        let has = rec.topics.iter().any(|t| t == topic);
        if subscribed && !has {
            rec.topics.push(topic.into());
            rec.topics.sort();
            rec.version += 1;
        } else if !subscribed && has {
            rec.topics.retain(|t| t != topic);
            rec.version += 1;
        }
    }

    /// The nodes with subscribers for `topic`.
    pub fn topic_nodes(&self, topic: &str) -> Vec<String> {
        self.records
            .values()
            .filter(|r| r.topics.iter().any(|t| t == topic))
            .map(|r| r.node.clone())
            .collect()
    }

    /// Every topic with subscribers, and the nodes that have them.
    pub fn topic_index(&self) -> BTreeMap<String, Vec<String>> {
        let mut index: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.records.values() {
            for t in &r.topics {
                index.entry(t.clone()).or_default().push(r.node.clone());
            }
        }
        index
    }

    /// The digest to open an exchange with.
    pub fn digest(&self) -> Digest {
        self.records
            .iter()
            .map(|(n, r)| (n.clone(), r.stamp()))
            .collect()
    }

    /// The records this replica has that are newer than (or absent from) `theirs`.
    pub fn newer_than(&self, theirs: &Digest) -> Vec<NodeRecord> {
        self.records
            .values()
            .filter(|r| theirs.get(&r.node).is_none_or(|stamp| r.stamp() > *stamp))
            .cloned()
            .collect()
    }

    /// Applies records from a peer, keeping the newest per node; its own record only a newer
    /// incarnation of itself could replace (which would be a bug elsewhere), so it is skipped,
    /// and so is a record of an incarnation that went down ([`Directory::node_down`]).
    pub fn merge(&mut self, records: Vec<NodeRecord>) -> Vec<DirectoryEvent> {
        let mut events = Vec::new();
        for rec in records {
            if rec.node == self.me {
                continue;
            }
            if self
                .gone
                .get(&rec.node)
                .is_some_and(|down| rec.incarnation <= *down)
            {
                continue;
            }
            let current = self.records.get(&rec.node);
            if current.is_some_and(|c| c.stamp() >= rec.stamp()) {
                continue;
            }
            let old = current.map(|c| c.services.clone()).unwrap_or_default();
            events.extend(diff(&rec.node, &old, &rec.services));
            self.records.insert(rec.node.clone(), rec);
        }
        events
    }

    /// Node `node` is down (or left) in `incarnation` (its start, if known): its record and
    /// services go away unless the record is of a later incarnation (the node restarted and its
    /// new record came first), and records of that incarnation or an earlier one are refused
    /// from now on, until [`Directory::node_up`]. With no incarnation known, the one of the
    /// record held goes down (or every one, if none is held).
    pub fn node_down(&mut self, node: &str, incarnation: Option<u64>) -> Vec<DirectoryEvent> {
        if node == self.me {
            return Vec::new();
        }
        let held = self.records.get(node).map(|r| r.incarnation);
        let down = incarnation.or(held).unwrap_or(u64::MAX);
        let entry = self.gone.entry(node.to_string()).or_insert(down);
        *entry = (*entry).max(down);
        match held {
            Some(inc) if inc <= down => {
                let rec = self.records.remove(node).expect("held");
                diff(node, &rec.services, &[])
            }
            _ => Vec::new(),
        }
    }

    /// Node `node` is up (again): its records are taken again, whatever its incarnation (a
    /// member wrongly declared down rejoins in the same one).
    pub fn node_up(&mut self, node: &str) {
        self.gone.remove(node);
    }

    /// The live endpoints of `service`, by node.
    pub fn lookup(&self, service: &str) -> Vec<(String, Service)> {
        self.records
            .values()
            .flat_map(|r| {
                r.services
                    .iter()
                    .filter(|s| s.name == service)
                    .map(|s| (r.node.clone(), s.clone()))
            })
            .collect()
    }

    /// The nodes serving the cluster-wide actor `name`.
    pub fn lookup_actor(&self, name: &str) -> Vec<String> {
        self.records
            .values()
            .filter(|r| r.actors.iter().any(|a| a == name))
            .map(|r| r.node.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, port: u16) -> Service {
        Service {
            name: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            tags: vec![],
            meta: BTreeMap::new(),
        }
    }

    /// One push-pull between `a` and `b`.
    fn exchange(dirs: &mut [Directory], a: usize, b: usize) {
        let da = dirs[a].digest();
        let for_a = dirs[b].newer_than(&da);
        let db = dirs[b].digest();
        dirs[a].merge(for_a);
        let for_b = dirs[a].newer_than(&db);
        dirs[b].merge(for_b);
    }

    #[test]
    fn random_push_pull_converges_every_replica() {
        let mut rng = fastrand::Rng::with_seed(5);
        let n = 12;
        let mut dirs: Vec<_> = (0..n)
            .map(|i| Directory::new(&format!("n{i}"), 1))
            .collect();
        for (i, d) in dirs.iter_mut().enumerate() {
            d.register(svc("web", 8000 + i as u16));
            if i % 3 == 0 {
                d.register(svc("db", 9000 + i as u16));
                d.register_actor("leader");
            }
            if i % 10 == 1 {
                d.set_topic("alerts", true);
                d.set_topic("noise", true);
                d.set_topic("noise", false);
            }
        }
        for _ in 0..200 {
            let (a, b) = (rng.usize(0..n), rng.usize(0..n));
            if a != b {
                exchange(&mut dirs, a, b);
            }
        }
        for d in &dirs {
            assert_eq!(d.lookup("web").len(), n);
            assert_eq!(d.lookup("db").len(), 4);
            assert_eq!(d.lookup_actor("leader"), ["n0", "n3", "n6", "n9"]);
            assert_eq!(d.topic_nodes("alerts"), ["n1", "n11"]);
            assert_eq!(d.digest(), dirs[0].digest());
        }
    }

    #[test]
    fn merging_is_idempotent_and_order_free_and_newer_wins() {
        let mut a = Directory::new("a", 1);
        let mut b = Directory::new("b", 1);
        b.register(svc("x", 1));
        let v1 = b.newer_than(&Digest::new());
        b.register(svc("x", 2)); // replaces x
        let v2 = b.newer_than(&Digest::new());
        // Newer first, then the stale one: the stale one changes nothing.
        let events = a.merge(v2.clone());
        assert_eq!(events.len(), 1);
        assert!(a.merge(v1).is_empty());
        assert!(a.merge(v2).is_empty(), "idempotent");
        assert_eq!(a.lookup("x")[0].1.addr.port(), 2);
    }

    #[test]
    fn a_restarted_node_replaces_its_old_record_and_a_dead_one_vanishes() {
        let mut a = Directory::new("a", 1);
        let mut b = Directory::new("b", 1);
        for i in 0..5 {
            b.register(svc("old", 100 + i));
        }
        a.merge(b.newer_than(&a.digest()));
        assert_eq!(a.lookup("old").len(), 1);
        // b restarts: a new incarnation at version 1 beats the old one at version 5.
        let mut b2 = Directory::new("b", 2);
        b2.register(svc("new", 1));
        let events = a.merge(b2.newer_than(&a.digest()));
        assert!(events.iter().any(
            |e| matches!(e, DirectoryEvent::ServiceRemoved { service, .. } if service.name == "old")
        ));
        assert!(a.lookup("old").is_empty());
        assert_eq!(a.lookup("new").len(), 1);
        let gone = a.node_down("b", Some(2));
        assert_eq!(gone.len(), 1);
        assert!(a.lookup("new").is_empty());
        assert!(
            a.node_down("a", None).is_empty(),
            "a node never drops itself"
        );
    }

    #[test]
    fn a_dead_nodes_record_offered_again_by_a_peer_stays_out_until_it_is_up_again() {
        let mut a = Directory::new("a", 1);
        let mut c = Directory::new("c", 1);
        let mut b = Directory::new("b", 7);
        b.register(svc("work", 1));
        a.merge(b.newer_than(&a.digest()));
        c.merge(b.newer_than(&c.digest()));
        // a sees b go down; c has not yet, and offers b's record in an exchange and a push.
        assert_eq!(a.node_down("b", Some(7)).len(), 1);
        assert!(a.merge(c.newer_than(&a.digest())).is_empty());
        assert!(a
            .merge(vec![b.newer_than(&Digest::new())[0].clone()])
            .is_empty());
        assert!(
            a.lookup("work").is_empty(),
            "the dead node's service stays gone"
        );
        // b was wrongly declared down: it rejoins in the same incarnation and is taken again.
        a.node_up("b");
        assert_eq!(a.merge(c.newer_than(&a.digest())).len(), 1);
        assert_eq!(a.lookup("work").len(), 1);
    }

    #[test]
    fn a_restarted_node_is_taken_at_once_and_a_late_down_of_its_old_self_keeps_it() {
        let mut a = Directory::new("a", 1);
        let mut old = Directory::new("b", 7);
        old.register(svc("work", 1));
        a.merge(old.newer_than(&a.digest()));
        // b restarted (incarnation 9): its new record comes before the old one is seen down.
        let mut new = Directory::new("b", 9);
        new.register(svc("work", 2));
        a.merge(new.newer_than(&a.digest()));
        assert!(a.node_down("b", Some(7)).is_empty(), "the new record stays");
        assert_eq!(a.lookup("work")[0].1.addr.port(), 2);
        // The old incarnation's record, offered late, is refused; the new one's changes pass.
        assert!(a.merge(old.newer_than(&Digest::new())).is_empty());
        new.register(svc("more", 3));
        assert_eq!(a.merge(new.newer_than(&a.digest())).len(), 1);
        // Down with the incarnation unknown: the record held goes, and so do its late copies.
        let copy = new.newer_than(&Digest::new());
        assert_eq!(a.node_down("b", None).len(), 2);
        assert!(a.merge(copy).is_empty());
    }

    #[test]
    fn deregistering_withdraws_and_reports() {
        let mut a = Directory::new("a", 1);
        a.register(svc("x", 1));
        let events = a.deregister("x");
        assert!(matches!(
            &events[..],
            [DirectoryEvent::ServiceRemoved { .. }]
        ));
        assert!(a.deregister("x").is_empty());
    }
    #[test]
    fn a_resumed_directory_offers_its_services_again_at_a_version_peers_take() {
        let mut before = Directory::new("a", 7);
        before.register(svc("db", 1));
        before.register_actor("counter");
        let kept = before.own_record();
        // A peer holds the record as it was.
        let mut peer = Directory::new("b", 1);
        peer.merge(before.newer_than(&Digest::new()));
        let resumed = Directory::resume("a", 7, Some(kept.clone()));
        let mine = resumed.own_record();
        assert_eq!(
            (mine.services.clone(), mine.actors.clone()),
            (kept.services.clone(), kept.actors.clone())
        );
        assert!(mine.version > kept.version);
        // The peer's digest is behind: the resumed record is newer for it.
        assert_eq!(resumed.newer_than(&peer.digest()), vec![mine]);
        // Another incarnation's record is not resumed.
        assert!(Directory::resume("a", 8, Some(kept))
            .own_record()
            .services
            .is_empty());
    }
}
