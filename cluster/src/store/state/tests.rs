use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::store::{WatchHub, WatchId, WatchUpdate};

fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        lease: None,
        prev_kv: true,
    })
}

fn del(key: &str, prefix: bool) -> Request {
    Request::Delete(DeleteRequest {
        key: key.into(),
        prefix,
        prev_kv: true,
    })
}

fn revision(r: &Response) -> Revision {
    match r {
        Response::Write { revision, .. } | Response::LeaseRevoked { revision, .. } => *revision,
        other => panic!("not a write: {other:?}"),
    }
}

#[test]
fn revisions_versions_and_previous_values_follow_etcd() {
    let mut sm = StateMachine::new();
    let (r, ev) = sm.apply(put("a", "1"));
    assert_eq!(revision(&r), 1);
    assert_eq!(ev.unwrap().0, 1);
    sm.apply(put("b", "x"));
    let (r, _) = sm.apply(put("a", "2"));
    match r {
        Response::Write {
            revision,
            responses,
            ..
        } => {
            assert_eq!(revision, 3);
            assert!(matches!(&responses[0], OpResponse::Put { prev: Some(p) } if p.value == b"1"));
        }
        other => panic!("{other:?}"),
    }
    let a = sm.get(b"a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 3, 2));
    // Deleting nothing changes nothing, not even the revision.
    let (r, ev) = sm.apply(del("zzz", false));
    assert_eq!(revision(&r), 3);
    assert!(ev.is_none());
    sm.apply(del("a", false));
    sm.apply(put("a", "3"));
    let a = sm.get(b"a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
}

#[test]
fn ranges_are_ordered_limited_and_can_leave_values_out() {
    let mut sm = StateMachine::new();
    for k in ["p/c", "p/a", "q", "p/b", "p"] {
        sm.apply(put(k, k));
    }
    let r = sm.range(&RangeRequest {
        key: b"p/".to_vec(),
        prefix: true,
        limit: 2,
        keys_only: true,
    });
    let keys: Vec<&[u8]> = r.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [b"p/a".as_slice(), b"p/b"]);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!((r.count, r.more, r.revision), (3, true, 5));
    // A prefix ending in 0xff bytes.
    sm.apply(put("\u{7f}", "x"));
    let all = sm.range(&RangeRequest {
        key: vec![],
        prefix: true,
        ..RangeRequest::default()
    });
    assert_eq!(all.count, 6);
}

#[test]
fn a_prefix_delete_is_one_revision() {
    let mut sm = StateMachine::new();
    for k in ["d/1", "d/2", "e"] {
        sm.apply(put(k, "v"));
    }
    let (r, ev) = sm.apply(del("d/", true));
    assert!(
        matches!(&r, Response::Write { revision: 4, responses, .. } if matches!(&responses[0], OpResponse::Delete { deleted: 2, prev } if prev.len() == 2))
    );
    let (rev, events) = ev.unwrap();
    assert_eq!(rev, 4);
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == 4));
}

#[test]
fn transactions_compare_then_apply_one_branch_at_one_revision() {
    let mut sm = StateMachine::new();
    sm.apply(put("lock", "free"));
    let take = |expect_version: u64| {
        Request::Txn(TxnRequest {
            compare: vec![Compare {
                key: b"lock".to_vec(),
                op: CmpOp::Eq,
                target: CompareTarget::Version(expect_version),
            }],
            success: vec![
                Op::Put(PutRequest {
                    key: b"lock".to_vec(),
                    value: b"held".to_vec(),
                    lease: None,
                    prev_kv: false,
                }),
                Op::Put(PutRequest {
                    key: b"owner".to_vec(),
                    value: b"me".to_vec(),
                    lease: None,
                    prev_kv: false,
                }),
                Op::Range(RangeRequest {
                    key: b"owner".to_vec(),
                    ..RangeRequest::default()
                }),
            ],
            failure: vec![Op::Range(RangeRequest {
                key: b"lock".to_vec(),
                ..RangeRequest::default()
            })],
        })
    };
    let (r, ev) = sm.apply(take(1));
    match r {
        Response::Write {
            revision,
            succeeded,
            responses,
        } => {
            assert!(succeeded);
            assert_eq!(revision, 2);
            assert!(
                matches!(&responses[2], OpResponse::Range(rr) if rr.kvs[0].value == b"me" && rr.revision == 2)
            );
        }
        other => panic!("{other:?}"),
    }
    let (_, events) = ev.unwrap();
    assert_eq!(events.len(), 2);
    // The version moved on: the same transaction now takes the failure branch.
    let (r, ev) = sm.apply(take(1));
    assert!(matches!(
        r,
        Response::Write {
            revision: 2,
            succeeded: false,
            ..
        }
    ));
    assert!(ev.is_none());
    // A missing key's value compares only as not equal.
    let cmp = |op| Compare {
        key: b"nope".to_vec(),
        op,
        target: CompareTarget::Value(b"".to_vec()),
    };
    assert!(!sm.compare(&cmp(CmpOp::Eq)));
    assert!(sm.compare(&cmp(CmpOp::NotEq)));
    // Writing one key twice is refused whole.
    let twice = Request::Txn(TxnRequest {
        success: vec![
            Op::Put(PutRequest {
                key: b"k".to_vec(),
                value: vec![],
                lease: None,
                prev_kv: false
            });
            2
        ],
        ..TxnRequest::default()
    });
    assert!(matches!(
        sm.apply(twice).0,
        Response::Error(StoreError::DuplicateKey(_))
    ));
    assert_eq!(sm.revision(), 2);
}

#[test]
fn a_revoked_lease_deletes_its_keys_at_one_revision() {
    let mut sm = StateMachine::new();
    assert!(matches!(
        sm.apply(Request::LeaseGrant {
            id: 7,
            ttl_ms: 1000
        })
        .0,
        Response::LeaseGranted {
            id: 7,
            ttl_ms: 1000
        }
    ));
    assert_eq!(sm.revision(), 0, "a grant is not a key change");
    for k in ["n/1/status", "n/1/addr"] {
        sm.apply(Request::Put(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            lease: Some(7),
            prev_kv: false,
        }));
    }
    sm.apply(put("n/1/addr", "unbound")); // a put without the lease unbinds it
    let bad = Request::Put(PutRequest {
        key: b"x".to_vec(),
        value: vec![],
        lease: Some(8),
        prev_kv: false,
    });
    assert_eq!(
        sm.apply(bad).0,
        Response::Error(StoreError::LeaseNotFound(8))
    );
    let (r, ev) = sm.apply(Request::LeaseRevoke { id: 7 });
    assert_eq!(
        r,
        Response::LeaseRevoked {
            deleted: 1,
            revision: 4
        }
    );
    assert_eq!(ev.unwrap().1[0].kv.key, b"n/1/status");
    assert!(sm.get(b"n/1/addr").is_some());
    assert!(sm.leases().is_empty());
    assert_eq!(
        sm.apply(Request::LeaseRevoke { id: 7 }).0,
        Response::Error(StoreError::LeaseNotFound(7))
    );
}

#[test]
fn watches_replay_history_then_follow_and_refuse_compacted_starts() {
    let mut sm = StateMachine::new();
    let mut hub = WatchHub::new();
    for (k, v) in [("a/1", "x"), ("b/1", "y"), ("a/2", "z")] {
        sm.apply(put(k, v));
    }
    let (w, backlog) = hub.watch(&sm, b"a/", 2).unwrap();
    assert_eq!(backlog.len(), 1, "revision 3 only: 2 was under b/");
    assert!(matches!(
        &backlog[0],
        WatchUpdate::Changes { revision: 3, .. }
    ));
    let (_, ev) = sm.apply(put("a/1", "w"));
    let (rev, events) = ev.unwrap();
    let sent = hub.applied(rev, &events);
    assert!(matches!(&sent[..], [(id, WatchUpdate::Changes { revision: 4, .. })] if *id == w));
    sm.apply(Request::Compact { revision: 3 });
    assert_eq!(
        hub.watch(&sm, b"a/", 2).err(),
        Some(StoreError::Compacted {
            requested: 2,
            compacted: 3
        })
    );
    assert!(hub.watch(&sm, b"a/", 3).is_ok());
    assert!(matches!(
        sm.apply(Request::Compact { revision: 9 }).0,
        Response::Error(StoreError::FutureRevision { .. })
    ));
    assert!(matches!(
        &hub.progress(&sm)[0].1,
        WatchUpdate::Progress { revision: 4 }
    ));
}

/// A key in the model: value, create revision, mod revision, version, lease.
type ModelKey = (Vec<u8>, Revision, Revision, u64, Option<LeaseId>);

/// A plain model: the whole key space after every revision.
#[derive(Default)]
struct Model {
    rev: Revision,
    kv: BTreeMap<Vec<u8>, ModelKey>,
    leases: BTreeMap<LeaseId, BTreeSet<Vec<u8>>>,
    /// The values after each revision (index 0: empty).
    snapshots: Vec<BTreeMap<Vec<u8>, Vec<u8>>>,
    compacted: Revision,
}

impl Model {
    fn values(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.kv
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    }

    fn commit(&mut self, changed: bool) {
        if changed {
            self.rev += 1;
            self.snapshots.push(self.values());
        }
    }

    fn unbind(&mut self, key: &[u8]) {
        if let Some((_, _, _, _, Some(l))) = self.kv.get(key) {
            if let Some(keys) = self.leases.get_mut(l) {
                keys.remove(key);
            }
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8], lease: Option<LeaseId>) {
        let next = self.rev + 1;
        self.unbind(key);
        let (create, version) = match self.kv.get(key) {
            Some(old) => (old.1, old.3 + 1),
            None => (next, 1),
        };
        if let Some(l) = lease {
            self.leases.get_mut(&l).unwrap().insert(key.to_vec());
        }
        self.kv
            .insert(key.to_vec(), (value.to_vec(), create, next, version, lease));
    }

    fn delete(&mut self, key: &[u8], prefix: bool) -> bool {
        let keys: Vec<Vec<u8>> = self
            .kv
            .keys()
            .filter(|k| {
                if prefix {
                    k.starts_with(key)
                } else {
                    k.as_slice() == key
                }
            })
            .cloned()
            .collect();
        for k in &keys {
            self.unbind(k);
            self.kv.remove(k);
        }
        !keys.is_empty()
    }
}

/// Random puts, deletes, transactions, lease grants and expiries, and compactions, against
/// the model; then every watch's stream replayed over the model's snapshots.
#[test]
fn random_operations_match_a_plain_model_and_watches_replay_its_changes() {
    let keys = ["a/1", "a/2", "a/3", "b/1", "b/2", "c"];
    for seed in 0..30u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut sm = StateMachine::new();
        let mut model = Model {
            snapshots: vec![BTreeMap::new()],
            ..Model::default()
        };
        let mut hub = WatchHub::new();
        let (all, _) = hub.watch(&sm, b"", 0).unwrap();
        let (only_a, _) = hub.watch(&sm, b"a/", 1).unwrap();
        let mut streams: BTreeMap<WatchId, Vec<WatchUpdate>> = BTreeMap::new();
        let mut next_lease = 1;
        for _ in 0..400 {
            let key = keys[rng.usize(..keys.len())].as_bytes().to_vec();
            let value = vec![rng.u8(..)];
            let lease = if rng.u8(..3) == 0 && !model.leases.is_empty() {
                let ids: Vec<_> = model.leases.keys().copied().collect();
                Some(ids[rng.usize(..ids.len())])
            } else {
                None
            };
            let request = match rng.u8(..10) {
                0..=3 => {
                    model.put(&key, &value, lease);
                    model.commit(true);
                    Request::Put(PutRequest {
                        key,
                        value,
                        lease,
                        prev_kv: false,
                    })
                }
                4 => {
                    let prefix = rng.bool();
                    let key = if prefix {
                        key[..key.len().min(2)].to_vec()
                    } else {
                        key
                    };
                    let changed = model.delete(&key, prefix);
                    model.commit(changed);
                    Request::Delete(DeleteRequest {
                        key,
                        prefix,
                        prev_kv: false,
                    })
                }
                5 => {
                    // Put if the version is as the model says (or, randomly, one off).
                    let version =
                        model.kv.get(&key).map_or(0, |v| v.3) + u64::from(rng.u8(..4) == 0);
                    let holds = model.kv.get(&key).map_or(0, |v| v.3) == version;
                    let other = keys[rng.usize(..keys.len())].as_bytes().to_vec();
                    if holds {
                        model.put(&key, &value, None);
                    } else if other != key {
                        model.delete(&other, false);
                    }
                    let changed = model.snapshots.last().unwrap() != &model.values() || holds;
                    model.commit(changed);
                    let failure = if other != key {
                        vec![Op::Delete(DeleteRequest {
                            key: other,
                            prefix: false,
                            prev_kv: false,
                        })]
                    } else {
                        vec![]
                    };
                    Request::Txn(TxnRequest {
                        compare: vec![Compare {
                            key: key.clone(),
                            op: CmpOp::Eq,
                            target: CompareTarget::Version(version),
                        }],
                        success: vec![Op::Put(PutRequest {
                            key,
                            value,
                            lease: None,
                            prev_kv: false,
                        })],
                        failure,
                    })
                }
                6 => {
                    let id = next_lease;
                    next_lease += 1;
                    model.leases.insert(id, BTreeSet::new());
                    Request::LeaseGrant { id, ttl_ms: 100 }
                }
                7 if !model.leases.is_empty() => {
                    // Expiry, as the leader proposes it.
                    let ids: Vec<_> = model.leases.keys().copied().collect();
                    let id = ids[rng.usize(..ids.len())];
                    let keys = model.leases.remove(&id).unwrap();
                    for k in &keys {
                        model.kv.remove(k);
                    }
                    model.commit(!keys.is_empty());
                    Request::LeaseRevoke { id }
                }
                8 if model.rev > 0 && rng.u8(..4) == 0 => {
                    let to =
                        model.compacted.max(1) + rng.u64(..=model.rev + 1 - model.compacted.max(1));
                    model.compacted = to;
                    Request::Compact { revision: to }
                }
                _ => continue,
            };
            let (response, changes) = sm.apply(request);
            assert!(
                !matches!(response, Response::Error(_)),
                "seed {seed}: {response:?}"
            );
            if let Some((rev, events)) = changes {
                for (id, update) in hub.applied(rev, &events) {
                    streams.entry(id).or_default().push(update);
                }
            }
            assert_eq!(sm.revision(), model.rev, "seed {seed}");
            for k in &keys {
                let got = sm.get(k.as_bytes()).map(|kv| {
                    (
                        kv.value.clone(),
                        kv.create_revision,
                        kv.mod_revision,
                        kv.version,
                        kv.lease,
                    )
                });
                assert_eq!(
                    got.as_ref(),
                    model.kv.get(k.as_bytes()),
                    "seed {seed}, key {k}"
                );
            }
            let leases: BTreeMap<LeaseId, BTreeSet<Vec<u8>>> = sm
                .leases()
                .iter()
                .map(|(id, l)| (*id, l.keys.clone()))
                .collect();
            assert_eq!(leases, model.leases, "seed {seed}");
        }
        // The whole-key-space watch saw every revision once, in order, and replaying it gives
        // the model's state after each revision.
        let replay = |updates: &[WatchUpdate],
                      mut state: BTreeMap<Vec<u8>, Vec<u8>>,
                      prefix: &[u8],
                      from: Revision| {
            let mut expect = from;
            for u in updates {
                let WatchUpdate::Changes { revision, events } = u else {
                    continue;
                };
                assert!(*revision >= expect, "seed {seed}: out of order or repeated");
                expect = revision + 1;
                for e in events {
                    match e.kind {
                        EventKind::Put => state.insert(e.kv.key.clone(), e.kv.value.clone()),
                        EventKind::Delete => state.remove(&e.kv.key),
                    };
                }
                let want: BTreeMap<_, _> = model.snapshots[*revision as usize]
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(state, want, "seed {seed}: after revision {revision}");
            }
        };
        let all_updates = streams.remove(&all).unwrap_or_default();
        assert_eq!(
            all_updates.len() as u64,
            model.rev,
            "seed {seed}: a revision per update"
        );
        replay(&all_updates, BTreeMap::new(), b"", 1);
        replay(
            &streams.remove(&only_a).unwrap_or_default(),
            BTreeMap::new(),
            b"a/",
            1,
        );
        // A watch started late, from the first revision still kept, replays from there.
        let from = sm.compacted().max(1);
        match hub.watch(&sm, b"", from) {
            Ok((_, backlog)) => {
                let base = model.snapshots[(from - 1) as usize].clone();
                replay(&backlog, base, b"", from);
            }
            Err(e) => panic!("seed {seed}: {e}"),
        }
        if from > 1 {
            assert!(matches!(
                hub.watch(&sm, b"", from - 1),
                Err(StoreError::Compacted { .. })
            ));
        }
    }
}

#[test]
fn requests_over_a_limit_are_named() {
    let limits = Limits {
        max_key: 8,
        max_value: 16,
        max_request: 20,
    };
    assert_eq!(limits.check(&put("k", "v")), Ok(()));
    assert_eq!(
        limits.check(&put("a-very-long-key", "v")),
        Err(StoreError::TooLarge {
            what: "a key".into(),
            size: 15,
            limit: 8
        })
    );
    let big = "x".repeat(17);
    assert!(
        matches!(limits.check(&put("k", &big)), Err(StoreError::TooLarge { what, .. }) if what == "a value")
    );
    let txn = Request::Txn(TxnRequest {
        success: vec![
            Op::Put(PutRequest {
                key: b"k1".to_vec(),
                value: vec![0; 12],
                lease: None,
                prev_kv: false,
            }),
            Op::Put(PutRequest {
                key: b"k2".to_vec(),
                value: vec![0; 12],
                lease: None,
                prev_kv: false,
            }),
        ],
        ..TxnRequest::default()
    });
    assert!(
        matches!(limits.check(&txn), Err(StoreError::TooLarge { what, size: 28, .. }) if what == "the request")
    );
}

#[test]
fn a_compaction_is_due_once_the_history_is_longer_than_it_keeps() {
    let mut sm = StateMachine::new();
    for i in 0..10 {
        sm.apply(put(&format!("k{i}"), "v"));
    }
    assert_eq!(sm.revision(), 10);
    assert_eq!(sm.compaction_due(0), None, "0 keeps all");
    assert_eq!(sm.compaction_due(10), None);
    assert_eq!(sm.compaction_due(20), None);
    let due = sm.compaction_due(4).expect("10 revisions held, 4 kept");
    assert_eq!(due, Request::Compact { revision: 6 });
    sm.apply(due);
    assert_eq!(sm.compacted(), 6);
    assert_eq!(sm.compaction_due(4), None, "done until more come");
    sm.apply(put("k10", "v"));
    assert_eq!(sm.compaction_due(4), Some(Request::Compact { revision: 7 }));
}
