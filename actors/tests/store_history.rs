//! The status store keeps a bounded history: each shard's leader compacts revisions older than
//! `store_keep_revisions` away through the log, while a watcher that keeps up loses nothing.

use std::time::Duration;

use cadre_actors::node::{ClusterNode, NodeConfig};
use cadre_actors::store::Kv;
use cadre_cluster::membership::Profile;
use cadre_cluster::store::{Revision, WatchUpdate};
use cadre_cluster::wire::Secret;
use cadre_runtime::testkit::run;
use cadre_runtime::Runtime;
use common::{eventually_within, TempDir};

mod common;

const KEEP: u64 = 20;
const SHARDS: u16 = 4;
const PREFIX: &[u8] = b"hist/g/";

async fn start(dir: &TempDir) -> ClusterNode {
    let config = NodeConfig {
        name: Some("history".into()),
        cluster: "history".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        roles: vec!["store".into()],
        profile: Profile::LocalTest,
        data_dir: Some(dir.0.clone()),
        // Four shards: the test's keys and the node's own status (written by its agent every
        // period) are in different shards, so the test's shard counts only the test's writes.
        store_shards: SHARDS,
        bootstrap_expect: 1,
        store_keep_revisions: KEEP,
        ..NodeConfig::default()
    };
    let secret = Secret::new(b"history-test".to_vec()).unwrap();
    ClusterNode::start(&config, secret, &Runtime::new("history"))
        .await
        .unwrap()
}

async fn put(kv: &Kv, i: usize) -> Revision {
    let key = [PREFIX, format!("k{i}").as_bytes()].concat();
    kv.put(&key, format!("v{i}").as_bytes()).await.unwrap()
}

/// Whether the shard's history now starts at `at`: a watch from just before it is refused as
/// compacted, naming `at`.
async fn history_starts_at(kv: &Kv, at: Revision) -> bool {
    match kv.watch(PREFIX, at - 1).await {
        Err(e) => e.to_string().contains(&format!("history starts at {at}")),
        Ok(_) => false,
    }
}

/// The revisions of the next `n` changes of `watch`.
async fn next_revisions(watch: &mut cadre_actors::store::KvWatchStream, n: usize) -> Vec<Revision> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let update = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a change within 10 s")
            .expect("the watch goes on");
        if let WatchUpdate::Changes { revision, .. } = update.update {
            seen.push(revision);
        }
    }
    seen
}

#[test]
fn the_leader_compacts_history_beyond_what_it_keeps_and_a_watcher_keeping_up_loses_nothing() {
    run(async {
        use cadre_cluster::store::routing::shard_of;
        assert_ne!(
            shard_of(PREFIX, SHARDS),
            shard_of(b"nodes/history/status", SHARDS)
        );
        let dir = TempDir::new();
        let node = start(&dir).await;
        let kv = node.kv();
        eventually_within("the store answers", Duration::from_secs(30), || async {
            kv.put(b"hist/warm", b"x").await.is_ok()
        })
        .await;

        // A watcher that keeps up from the first put on.
        let first = put(&kv, 0).await;
        let mut live = kv.watch(PREFIX, first).await.unwrap();
        let mut last = first;
        for i in 1..100 {
            last = put(&kv, i).await;
        }
        let expected: Vec<Revision> = (first..=last).collect();
        assert_eq!(expected.len(), 100, "one revision per put");
        assert_eq!(
            next_revisions(&mut live, 100).await,
            expected,
            "every change once, in order, though the history was compacted meanwhile"
        );

        // Within a few ticks the history holds only the last KEEP revisions.
        eventually_within("the history is compacted", Duration::from_secs(20), || {
            history_starts_at(&kv, last - KEEP)
        })
        .await;
        // From the oldest kept revision, a new watch replays all that is kept, in order.
        let mut replay = kv.watch(PREFIX, last - KEEP).await.unwrap();
        assert_eq!(
            next_revisions(&mut replay, KEEP as usize + 1).await,
            ((last - KEEP)..=last).collect::<Vec<_>>()
        );

        // More writes: the history moves along with them.
        for i in 100..150 {
            last = put(&kv, i).await;
        }
        eventually_within("the history follows", Duration::from_secs(20), || {
            history_starts_at(&kv, last - KEEP)
        })
        .await;
        // Compacted history is gone, the keys are not.
        let kept = kv.get(b"hist/g/k0").await.unwrap().expect("k0 still there");
        assert_eq!(kept.value, b"v0");
        drop((live, replay));
        node.leave(Duration::from_secs(2)).await;
    });
}
