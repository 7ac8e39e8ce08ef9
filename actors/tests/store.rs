//! The status store with three store nodes in one process on 127.0.0.1: a Raft group per
//! shard over cadre's transport, persisted with redb.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use cadre_actors::node::{ClusterNode, NodeConfig};
use cadre_actors::store::replica::{Initialize, Leader, RaftTimings};
use cadre_actors::store::{StoreClient, StoreNode, StoreWatch};
use cadre_cluster::membership::Profile;
use cadre_cluster::store::{PutRequest, RangeRequest, Request, WatchUpdate};
use cadre_cluster::wire::Secret;
use cadre_runtime::testkit::run;
use cadre_runtime::Runtime;
use common::{eventually, TempDir};

mod common;

const T: Duration = Duration::from_secs(20);

fn config(name: &str, seeds: Vec<SocketAddr>) -> NodeConfig {
    NodeConfig {
        name: Some(name.into()),
        cluster: "store".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        seeds,
        profile: Profile::LocalTest,
        ..NodeConfig::default()
    }
}

const NAMES: [&str; 3] = ["s0", "s1", "s2"];

/// Three connected nodes.
async fn nodes() -> Vec<ClusterNode> {
    let secret = || Secret::new(b"store-test".to_vec()).unwrap();
    let first = ClusterNode::start(&config(NAMES[0], vec![]), secret(), &Runtime::new("s0"))
        .await
        .unwrap();
    let mut nodes = vec![first.clone()];
    for name in &NAMES[1..] {
        let n = ClusterNode::start(
            &config(name, vec![first.addr()]),
            secret(),
            &Runtime::new(*name),
        )
        .await
        .unwrap();
        nodes.push(n);
    }
    for n in &nodes {
        eventually("every node reaches every other", || async {
            NAMES.iter().all(|m| n.transport().is_reachable(m))
        })
        .await;
    }
    nodes
}

async fn stores(nodes: &[ClusterNode], dirs: &[TempDir]) -> Vec<StoreNode> {
    let mut stores = Vec::new();
    for (n, d) in nodes.iter().zip(dirs) {
        let s = StoreNode::start(
            n.transport(),
            &d.0,
            &[0],
            RaftTimings::local_test(),
            &Runtime::new(n.name()),
        )
        .await
        .unwrap();
        stores.push(s);
    }
    stores
}

/// Three connected nodes, each with a replica of shard 0 in a directory of its own, the group
/// formed.
async fn group() -> (Vec<TempDir>, Vec<ClusterNode>, Vec<StoreNode>) {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new()).collect();
    let nodes = nodes().await;
    let stores = stores(&nodes, &dirs).await;
    let members: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    stores[0]
        .replica(0)
        .unwrap()
        .ask(Initialize(members), T)
        .await
        .unwrap()
        .unwrap();
    (dirs, nodes, stores)
}

fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        lease: None,
        prev_kv: false,
    })
}

fn client(on: &ClusterNode) -> StoreClient {
    let replicas = HashMap::from([(0u16, NAMES.iter().map(|s| s.to_string()).collect())]);
    StoreClient::new(on.transport().clone(), replicas)
}

async fn leader(store: &StoreNode) -> Option<String> {
    store.replica(0)?.ask(Leader, T).await.ok().flatten()
}

async fn values(c: &StoreClient, linearizable: bool) -> Vec<(String, String)> {
    let all = RangeRequest {
        key: b"k/".to_vec(),
        prefix: true,
        ..RangeRequest::default()
    };
    c.read(0, all, linearizable)
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key).unwrap(),
                String::from_utf8(kv.value).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_killed_leader_is_replaced_and_no_acknowledged_write_is_lost() {
    run(async {
        let (_dirs, nodes, stores) = group().await;
        let mut old = None;
        for s in &stores {
            eventually("a leader is elected", || async {
                leader(s).await.is_some()
            })
            .await;
            old = leader(s).await;
        }
        let old = old.unwrap();
        let k = NAMES.iter().position(|n| *n == old).unwrap();
        // A client on a node that survives.
        let survivor = (k + 1) % 3;
        let c = client(&nodes[survivor]);
        // A watch from the first revision, served by the old leader's replica.
        let mut watch = StoreWatch::start_on(
            nodes[survivor].transport().clone(),
            0,
            b"k/".to_vec(),
            1,
            vec![old.clone(), NAMES[survivor].to_string()],
        )
        .await
        .unwrap();
        let mut acked = Vec::new();
        for i in 0..20 {
            let applied = c
                .write(0, put(&format!("k/{i:02}"), &format!("v{i}")))
                .await
                .unwrap();
            assert_eq!(applied.revision, i + 1);
            acked.push((format!("k/{i:02}"), format!("v{i}")));
        }
        assert_eq!(values(&c, true).await, acked);

        stores[k].stop(T).await;
        nodes[k].crash().await;
        let others: Vec<usize> = (0..3).filter(|i| *i != k).collect();
        for &i in &others {
            eventually("a new leader", || async {
                leader(&stores[i]).await.is_some_and(|l| l != old)
            })
            .await;
        }
        for i in 20..30 {
            let applied = c
                .write(0, put(&format!("k/{i:02}"), &format!("v{i}")))
                .await
                .unwrap();
            assert_eq!(applied.revision, i + 1);
            acked.push((format!("k/{i:02}"), format!("v{i}")));
        }
        assert_eq!(
            values(&c, true).await,
            acked,
            "every acknowledged write is there"
        );
        // The watch moved to a surviving replica and saw every put once, in order.
        let mut seen = Vec::new();
        while seen.len() < 30 {
            match tokio::time::timeout(T, watch.next())
                .await
                .unwrap()
                .unwrap()
            {
                WatchUpdate::Changes { revision, events } => {
                    assert_eq!(events.len(), 1);
                    let kv = &events[0].kv;
                    seen.push((revision, String::from_utf8(kv.key.clone()).unwrap()));
                }
                WatchUpdate::Progress { .. } => {}
            }
        }
        let expected: Vec<(u64, String)> =
            (0..30u64).map(|i| (i + 1, format!("k/{i:02}"))).collect();
        assert_eq!(seen, expected);
        // Each survivor's own replica has them too.
        for &i in &others {
            let own = StoreClient::new(
                nodes[i].transport().clone(),
                HashMap::from([(0u16, vec![NAMES[i].to_string()])]),
            );
            eventually("the follower caught up", || async {
                values(&own, false).await == acked
            })
            .await;
        }
    });
}

#[test]
fn every_replica_restarted_from_disk_has_all_acknowledged_data() {
    run(async {
        let (dirs, nodes, first) = group().await;
        let c = client(&nodes[0]);
        let mut acked = Vec::new();
        for i in 0..15 {
            c.write(0, put(&format!("k/{i:02}"), "x")).await.unwrap();
            acked.push((format!("k/{i:02}"), "x".to_string()));
        }
        for s in &first {
            s.stop(T).await;
        }
        let again = stores(&nodes, &dirs).await;
        for s in &again {
            eventually("a leader after the restart", || async {
                leader(s).await.is_some()
            })
            .await;
        }
        let c = client(&nodes[1]);
        assert_eq!(values(&c, true).await, acked);
        let applied = c.write(0, put("k/99", "after")).await.unwrap();
        assert_eq!(applied.revision, 16, "revisions go on from where they were");
    });
}

#[test]
fn a_dead_holders_lease_expires_and_watchers_see_its_keys_deleted() {
    use cadre_cluster::store::{routing, EventKind, Response};
    use std::rc::Rc;

    run(async {
        let (_dirs, nodes, _stores) = group().await;
        // The lease holder: a node that is not a store node.
        let secret = Secret::new(b"store-test".to_vec()).unwrap();
        let app = ClusterNode::start(
            &config("app", vec![nodes[0].addr()]),
            secret,
            &Runtime::new("app"),
        )
        .await
        .unwrap();
        eventually("app reaches the store nodes", || async {
            NAMES.iter().all(|m| app.transport().is_reachable(m))
        })
        .await;
        let holder = Rc::new(client(&app));
        let id = routing::lease_id(0, 42);
        let granted = holder
            .write(0, Request::LeaseGrant { id, ttl_ms: 800 })
            .await
            .unwrap();
        assert_eq!(
            granted.response,
            Some(Response::LeaseGranted { id, ttl_ms: 800 })
        );
        let watcher = client(&nodes[1]);
        let mut watch = watcher.watch(0, b"apps/", 0).await.unwrap();
        for key in ["apps/app/status", "apps/app/addr"] {
            holder
                .write(
                    0,
                    Request::Put(PutRequest {
                        key: key.into(),
                        value: b"up".to_vec(),
                        lease: Some(id),
                        prev_kv: false,
                    }),
                )
                .await
                .unwrap();
        }
        let h = holder.clone();
        actix::spawn(async move {
            // A keep-alive that fails under load is retried; once the holder's node has
            // crashed they all fail (its transport is gone). Bounded: 100 tries.
            for _ in 0..100 {
                let _ = h.keep_alive(0, id).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        // Kept alive for twice its TTL: still there.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let (left, ttl) = holder.time_to_live(0, id).await.unwrap();
        assert_eq!(ttl, Duration::from_millis(800));
        assert!(left > Duration::from_millis(400), "{left:?} left");
        let alive = watcher
            .read(
                0,
                RangeRequest {
                    key: b"apps/app/".to_vec(),
                    prefix: true,
                    ..RangeRequest::default()
                },
                true,
            )
            .await
            .unwrap();
        assert_eq!(alive.count, 2);

        app.crash().await;
        let crashed = tokio::time::Instant::now();
        let mut deleted = Vec::new();
        while deleted.len() < 2 {
            if let WatchUpdate::Changes { revision, events } = tokio::time::timeout(T, watch.next())
                .await
                .unwrap()
                .unwrap()
            {
                for e in events {
                    if e.kind == EventKind::Delete {
                        deleted.push((revision, String::from_utf8(e.kv.key).unwrap()));
                    }
                }
            }
        }
        let after = crashed.elapsed();
        // No keep-alive since the crash: the TTL ran out (less the last keep-alive's age).
        assert!(
            after >= Duration::from_millis(550),
            "deleted after {after:?}"
        );
        assert_eq!(deleted[0].0, deleted[1].0, "both keys go at one revision");
        deleted.sort();
        assert_eq!(
            deleted.iter().map(|d| d.1.as_str()).collect::<Vec<_>>(),
            ["apps/app/addr", "apps/app/status"]
        );
        let gone = watcher
            .read(
                0,
                RangeRequest {
                    key: b"apps/app/".to_vec(),
                    prefix: true,
                    ..RangeRequest::default()
                },
                true,
            )
            .await
            .unwrap();
        assert_eq!(gone.count, 0);
        assert!(matches!(
            watcher.time_to_live(0, id).await,
            Err(cadre_actors::store::StoreClientError::Refused { .. })
        ));
    });
}

#[test]
fn histories_of_concurrent_clients_during_leader_kills_are_linearizable() {
    use cadre_actors::store::StoreClientError;
    use cadre_cluster::store::check::{check, KvOp, Operation};
    use std::cell::RefCell;
    use std::rc::Rc;

    run(async {
        let (dirs, nodes, mut stores) = group().await;
        for s in &stores {
            eventually("a leader", || async { leader(s).await.is_some() }).await;
        }
        let t0 = tokio::time::Instant::now();
        let now = move || t0.elapsed().as_micros() as u64;
        let history: Rc<RefCell<Vec<Operation>>> = Rc::default();
        let running = Rc::new(std::cell::Cell::new(true));
        let mut clients = Vec::new();
        for (c, node) in nodes.iter().enumerate() {
            let client = client(node);
            let (history, running) = (history.clone(), running.clone());
            clients.push(actix::spawn(async move {
                let mut n = 0u32;
                while running.get() {
                    n += 1;
                    let key = format!("k/{}", fastrand::u8(..3));
                    let call = now();
                    if fastrand::bool() {
                        let value = format!("c{c}-{n}");
                        let ret = match client.write(0, put(&key, &value)).await {
                            Ok(_) => Some(now()),
                            Err(StoreClientError::Uncertain { .. }) => None,
                            Err(_) => continue, // certainly not applied
                        };
                        history.borrow_mut().push(Operation {
                            key: key.into_bytes(),
                            call,
                            ret,
                            op: KvOp::Put(Some(value.into_bytes())),
                        });
                    } else {
                        let range = RangeRequest {
                            key: key.clone().into_bytes(),
                            ..RangeRequest::default()
                        };
                        if let Ok(r) = client.read(0, range, true).await {
                            history.borrow_mut().push(Operation {
                                key: key.into_bytes(),
                                call,
                                ret: Some(now()),
                                op: KvOp::Get(r.kvs.into_iter().next().map(|kv| kv.value)),
                            });
                        }
                    }
                }
            }));
        }
        // Kill the leader's replica twice, each time bringing it back from its disk.
        let mut kills = 0;
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let mut at = None;
            for s in &stores {
                if let Some(l) = leader(s).await {
                    at = NAMES.iter().position(|n| *n == l);
                    break;
                }
            }
            let Some(k) = at else { continue };
            stores[k].stop(T).await;
            kills += 1;
            tokio::time::sleep(Duration::from_millis(400)).await;
            stores[k] = StoreNode::start(
                nodes[k].transport(),
                &dirs[k].0,
                &[0],
                RaftTimings::local_test(),
                &Runtime::new(NAMES[k]),
            )
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        running.set(false);
        for c in clients {
            c.await.unwrap();
        }
        assert_eq!(kills, 2);
        let history = history.borrow();
        let done = history.iter().filter(|o| o.ret.is_some()).count();
        assert!(done > 50, "only {done} operations completed");
        check(&history).expect("the history is linearizable");
    });
}

#[test]
fn a_minority_cannot_commit_and_oversized_requests_are_refused() {
    use cadre_actors::store::StoreClientError;

    run(async {
        let (dirs, nodes, mut stores) = group().await;
        let c = client(&nodes[0]);
        c.write(0, put("k/before", "1")).await.unwrap();
        // Over the value limit (1 MiB): refused, nothing applied.
        let big = "x".repeat(1024 * 1024 + 1);
        match c.write(0, put("k/big", &big)).await {
            Err(StoreClientError::Refused { detail, .. }) => {
                assert!(detail.contains("a value is 1048577 bytes"), "{detail}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Only the leader's replica left: a minority.
        let l = leader(&stores[0]).await.unwrap();
        let k = NAMES.iter().position(|n| *n == l).unwrap();
        for i in (0..3).filter(|i| *i != k) {
            stores[i].stop(T).await;
        }
        let alone = StoreClient::new(
            nodes[k].transport().clone(),
            HashMap::from([(0u16, vec![l.clone()])]),
        )
        .with_timeout(Duration::from_millis(1500));
        let lost = alone.write(0, put("k/minority", "x")).await;
        assert!(
            matches!(
                lost,
                Err(StoreClientError::Uncertain { .. } | StoreClientError::NoLeader { .. })
            ),
            "a lone replica acknowledged a write: {lost:?}"
        );
        let read = RangeRequest {
            key: b"k/before".to_vec(),
            ..RangeRequest::default()
        };
        assert!(
            alone.read(0, read.clone(), true).await.is_err(),
            "no linearizable read either"
        );
        // A majority again: the store serves, with everything acknowledged before.
        let back = (k + 1) % 3;
        stores[back] = StoreNode::start(
            nodes[back].transport(),
            &dirs[back].0,
            &[0],
            RaftTimings::local_test(),
            &Runtime::new(NAMES[back]),
        )
        .await
        .unwrap();
        let c = client(&nodes[back]);
        let r = c.read(0, read, true).await.unwrap();
        assert_eq!(r.kvs[0].value, b"1");
        c.write(0, put("k/after", "2")).await.unwrap();
    });
}

#[test]
fn a_partitioned_leader_commits_nothing_and_its_writes_vanish_when_it_heals() {
    use cadre_actors::store::StoreClientError;

    run(async {
        let (_dirs, nodes, stores) = group().await;
        client(&nodes[0])
            .write(0, put("k/0", "before"))
            .await
            .unwrap();
        let old = leader(&stores[0]).await.unwrap();
        let k = NAMES.iter().position(|n| *n == old).unwrap();
        let others: Vec<usize> = (0..3).filter(|i| *i != k).collect();
        // Cut the leader off from both followers, both ways.
        for &i in &others {
            nodes[k].transport().cut_off(NAMES[i]);
            nodes[i].transport().cut_off(NAMES[k]);
        }
        // The old leader's side is a minority: nothing it takes is acknowledged.
        let alone = StoreClient::new(
            nodes[k].transport().clone(),
            HashMap::from([(0u16, vec![old.clone()])]),
        )
        .with_timeout(Duration::from_millis(1500));
        let lost = alone.write(0, put("k/0", "minority")).await;
        assert!(
            matches!(
                lost,
                Err(StoreClientError::Uncertain { .. } | StoreClientError::NoLeader { .. })
            ),
            "the minority acknowledged a write: {lost:?}"
        );
        // The majority elects a leader of its own and goes on.
        let majority = StoreClient::new(
            nodes[others[0]].transport().clone(),
            HashMap::from([(0u16, others.iter().map(|i| NAMES[*i].to_string()).collect())]),
        );
        majority.write(0, put("k/0", "majority")).await.unwrap();
        majority.write(0, put("k/1", "majority")).await.unwrap();
        // Healed: the old leader follows, and its write that was never committed is gone.
        for &i in &others {
            nodes[k].transport().restore(NAMES[i]);
            nodes[i].transport().restore(NAMES[k]);
        }
        let own = StoreClient::new(
            nodes[k].transport().clone(),
            HashMap::from([(0u16, vec![old.clone()])]),
        );
        eventually("the old leader catches up", || async {
            values(&own, false).await
                == vec![
                    ("k/0".to_string(), "majority".to_string()),
                    ("k/1".to_string(), "majority".to_string()),
                ]
        })
        .await;
        let everyone = client(&nodes[k]);
        assert_eq!(
            values(&everyone, true).await,
            vec![
                ("k/0".to_string(), "majority".to_string()),
                ("k/1".to_string(), "majority".to_string()),
            ]
        );
    });
}

#[test]
fn a_watcher_that_falls_behind_loses_nothing() {
    run(async {
        let (_dirs, nodes, _stores) = group().await;
        let c = client(&nodes[1]);
        let mut watch = c.watch(0, b"k/", 0).await.unwrap();
        // More changes than the watcher's inbox holds, while it reads nothing.
        let n = 1300u64;
        let c = std::rc::Rc::new(c);
        let mut writers = Vec::new();
        for w in 0..13u64 {
            let c = c.clone();
            writers.push(actix::spawn(async move {
                for i in 0..n / 13 {
                    c.write(0, put(&format!("k/{w:02}-{i:03}"), "v"))
                        .await
                        .unwrap();
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        let mut next = 1;
        let mut keys = std::collections::BTreeSet::new();
        while next <= n {
            match tokio::time::timeout(T, watch.next())
                .await
                .unwrap()
                .unwrap()
            {
                WatchUpdate::Changes { revision, events } => {
                    assert_eq!(revision, next, "in order, none twice, none lost");
                    assert!(keys.insert(events[0].kv.key.clone()));
                    next += 1;
                }
                WatchUpdate::Progress { .. } => {}
            }
        }
    });
}
