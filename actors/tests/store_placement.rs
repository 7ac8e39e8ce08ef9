//! Store placement in a cluster of store nodes: a store node joining later takes over the shards
//! it ranks highest for, a dead one is replaced once its grace is over, one that lost its data
//! directory comes back as a new member in its old one's place, and no acknowledged write is
//! lost on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cadre_actors::node::{ClusterNode, NodeConfig};
use cadre_actors::store::replica::{Group, GroupInfo, Read, ReplicaError};
use cadre_cluster::membership::Profile;
use cadre_cluster::store::routing;
use cadre_cluster::store::RangeRequest;
use cadre_cluster::wire::Secret;
use cadre_runtime::testkit::run;
use cadre_runtime::Runtime;
use common::{eventually_within, TempDir};

mod common;

const SHARDS: u16 = 4;

/// The longest a placement change may take here (a slow, shared machine).
const SETTLE: Duration = Duration::from_secs(90);

fn config(name: &str, seeds: Vec<SocketAddr>, dir: PathBuf) -> NodeConfig {
    NodeConfig {
        name: Some(name.into()),
        cluster: "placement".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        seeds,
        roles: vec!["store".into()],
        profile: Profile::LocalTest,
        data_dir: Some(dir),
        store_shards: SHARDS,
        bootstrap_expect: 3,
        store_dead_after_ms: 1_000,
        ..NodeConfig::default()
    }
}

async fn start(name: &str, seeds: Vec<SocketAddr>, dir: &TempDir) -> ClusterNode {
    let secret = Secret::new(b"placement-test".to_vec()).unwrap();
    ClusterNode::start(
        &config(name, seeds, dir.0.clone()),
        secret,
        &Runtime::new(name),
    )
    .await
    .unwrap()
}

/// Waits (at most `SETTLE`) until `check` holds.
async fn settles<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, SETTLE, check).await
}

/// Each shard's group as its leader reports it (asked of every node's replica).
async fn groups(nodes: &[&ClusterNode]) -> BTreeMap<u16, GroupInfo> {
    let mut out = BTreeMap::new();
    for shard in 0..SHARDS {
        for n in nodes {
            let Some(replica) = n.store().and_then(|s| s.replica(shard)) else {
                continue;
            };
            let Ok(info) = replica.ask(Group, Duration::from_secs(5)).await else {
                continue;
            };
            if info.leader.as_deref() == Some(n.name()) {
                out.insert(shard, info);
            }
        }
    }
    out
}

fn placed(shard: u16, names: &[&str]) -> BTreeSet<String> {
    routing::place(shard, names, 3)
        .into_iter()
        .map(String::from)
        .collect()
}

/// Whether every shard's group is exactly its rendezvous target among `names`, with no
/// learner left over.
async fn placed_on(nodes: &[&ClusterNode], names: &[&str]) -> bool {
    let g = groups(nodes).await;
    (0..SHARDS).all(|s| {
        g.get(&s).is_some_and(|info| {
            info.learners.is_empty()
                && info.voters.iter().cloned().collect::<BTreeSet<_>>() == placed(s, names)
        })
    })
}

fn key(i: usize) -> Vec<u8> {
    format!("apps/n{i}/status").into_bytes()
}

/// Writes `n` more keys through `via`, counting them in `written`.
async fn write(via: &ClusterNode, written: &mut usize, n: usize) {
    for _ in 0..n {
        via.kv()
            .put(&key(*written), format!("v{written}").as_bytes())
            .await
            .unwrap();
        *written += 1;
    }
}

/// Every key written so far reads back (linearizably) through `via`.
async fn all_there(via: &ClusterNode, written: usize) {
    for i in 0..written {
        let kv = via
            .kv()
            .get(&key(i))
            .await
            .unwrap_or_else(|e| panic!("key {i}: {e}"))
            .unwrap_or_else(|| panic!("key {i} is gone"));
        assert_eq!(kv.value, format!("v{i}").into_bytes());
    }
}

#[test]
fn a_later_store_node_takes_its_share_and_a_dead_one_is_replaced_losing_nothing() {
    run(async {
        let dirs: Vec<TempDir> = (0..4).map(|_| TempDir::new()).collect();
        let s0 = start("s0", vec![], &dirs[0]).await;
        let s1 = start("s1", vec![s0.addr()], &dirs[1]).await;
        let s2 = start("s2", vec![s0.addr()], &dirs[2]).await;
        // The groups form on the three (bootstrap_expect) and take writes.
        settles("the store takes writes", || async {
            s0.kv().put(b"probe/x/y", b"1").await.is_ok()
        })
        .await;
        let mut written = 0;
        write(&s1, &mut written, 40).await;
        // Three store nodes: every group is all three, and stays so.
        assert!(placed_on(&[&s0, &s1, &s2], &["s0", "s1", "s2"]).await);

        // A fourth store node joins: each shard moves to its rendezvous target among four.
        let four = ["s0", "s1", "s2", "s3"];
        let moving = (0..SHARDS)
            .filter(|s| placed(*s, &four).contains("s3"))
            .count();
        assert!(moving > 0, "the test needs s3 to rank for some shard");
        let s3 = start("s3", vec![s0.addr()], &dirs[3]).await;
        settles("s3 takes its share of the shards", || async {
            placed_on(&[&s0, &s1, &s2, &s3], &["s0", "s1", "s2", "s3"]).await
        })
        .await;
        write(&s3, &mut written, 20).await;
        all_there(&s3, written).await;
        // s3's own replicas hold the data of the shards it joined (caught up from the leader).
        for shard in 0..SHARDS {
            if !placed(shard, &["s0", "s1", "s2", "s3"]).contains("s3") {
                continue;
            }
            settles("s3's replica has caught up", || {
                replica_has_all(&s3, shard, written)
            })
            .await;
        }

        // A replica outside its shard's group serves no read, even a serializable one (its
        // state never followed the shard); the client reads from the group instead.
        let outside = (0..SHARDS)
            .find(|s| !placed(*s, &four).contains("s3"))
            .expect("the test needs a shard s3 is not in");
        let idle = s3.store().unwrap().replica(outside).unwrap().clone();
        match idle
            .ask(serializable(b"apps/", true), Duration::from_secs(5))
            .await
        {
            Ok(Err(ReplicaError::NotVoter(_))) => {}
            other => panic!("a replica outside the group answered a read: {other:?}"),
        }
        let i = (0..written)
            .find(|i| routing::shard_of(&key(*i), SHARDS) == outside)
            .expect("a key of that shard");
        let got = s3
            .kv()
            .range(serializable(&key(i), false).range, true)
            .await
            .unwrap();
        assert_eq!(
            got.kvs.len(),
            1,
            "the serializable read is served by the group"
        );

        // s0 dies. After the grace, every shard it held moves to the live node outside it.
        assert!(
            (0..SHARDS).any(|s| placed(s, &four).contains("s0")),
            "the test needs s0 to hold some shard"
        );
        s0.crash().await;
        settles("s0's shards are given to live nodes", || async {
            placed_on(&[&s1, &s2, &s3], &["s1", "s2", "s3"]).await
        })
        .await;
        all_there(&s2, written).await;
        s2.kv().put(b"apps/after/status", b"ok").await.unwrap();
        s1.leave(Duration::from_secs(5)).await;
        s2.leave(Duration::from_secs(5)).await;
        s3.leave(Duration::from_secs(5)).await;
    });
}

/// The Raft id `name` has in each shard's group, as the shards' leaders report it.
async fn member_ids(nodes: &[&ClusterNode], name: &str) -> BTreeMap<u16, u64> {
    groups(nodes)
        .await
        .into_iter()
        .filter_map(|(shard, info)| {
            let at = info.voters.iter().position(|v| v == name)?;
            Some((shard, info.voter_ids[at]))
        })
        .collect()
}

/// Every key of `shard` written so far is in `node`'s own replica of it.
async fn replica_has_all(node: &ClusterNode, shard: u16, written: usize) -> bool {
    let mine = (0..written)
        .filter(|i| routing::shard_of(&key(*i), SHARDS) == shard)
        .count();
    let Some(replica) = node.store().and_then(|s| s.replica(shard)) else {
        return false;
    };
    let read = serializable(b"apps/", true);
    matches!(replica.ask(read, Duration::from_secs(5)).await, Ok(Ok(r)) if r.kvs.len() == mine)
}

/// A serializable read of `key` (or of the keys under it, with `prefix`).
fn serializable(key: &[u8], prefix: bool) -> Read {
    Read {
        range: RangeRequest {
            key: key.to_vec(),
            prefix,
            ..RangeRequest::default()
        },
        linearizable: false,
    }
}

#[test]
fn a_store_node_that_lost_its_data_comes_back_as_a_new_member_losing_nothing() {
    run(async {
        let names = ["s0", "s1", "s2"];
        let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new()).collect();
        let s0 = start("s0", vec![], &dirs[0]).await;
        let seed = s0.addr();
        let mut nodes = vec![s0];
        for (name, dir) in names.iter().zip(&dirs).skip(1) {
            nodes.push(start(name, vec![seed], dir).await);
        }
        settles("the store takes writes", || async {
            nodes[0].kv().put(b"probe/x/y", b"1").await.is_ok()
        })
        .await;
        let mut written = 0;
        write(&nodes[0], &mut written, 40).await;
        // The victim: shard 0's leader, so that a leader is lost with its data.
        let all: Vec<&ClusterNode> = nodes.iter().collect();
        let leader = groups(&all).await[&0]
            .leader
            .clone()
            .expect("shard 0 has a leader");
        let v = names.iter().position(|n| *n == leader).unwrap();
        let before = member_ids(&all, &leader).await;
        assert_eq!(
            before.len(),
            usize::from(SHARDS),
            "{leader} is in every group"
        );

        // It dies and its data directory is lost; it comes back under the same name.
        nodes[v].crash().await;
        std::fs::remove_dir_all(&dirs[v].0).unwrap();
        std::fs::create_dir_all(&dirs[v].0).unwrap();
        let seed = nodes[(v + 1) % 3].addr();
        nodes[v] = start(&leader, vec![seed], &dirs[v]).await;
        let all: Vec<&ClusterNode> = nodes.iter().collect();

        // In every shard its old member (which acknowledged writes it no longer has) is
        // replaced by its new one, which catches up: never the old member with an empty log.
        settles("the new members replace the old ones", || async {
            let now = member_ids(&all, &leader).await;
            let g = groups(&all).await;
            now.len() == usize::from(SHARDS)
                && now.iter().all(|(shard, id)| before[shard] != *id)
                && g.values()
                    .all(|info| info.learners.is_empty() && info.voters.len() == 3)
        })
        .await;
        for shard in 0..SHARDS {
            settles("the new replica has every key again", || {
                replica_has_all(&nodes[v], shard, written)
            })
            .await;
        }
        all_there(&nodes[(v + 1) % 3], written).await;
        write(&nodes[v], &mut written, 10).await;
        all_there(&nodes[v], written).await;
        for n in &nodes {
            n.leave(Duration::from_secs(5)).await;
        }
    });
}
