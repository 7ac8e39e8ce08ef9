//! A shard replica's redb storage passes openraft's own storage test suite, and keeps what it
//! was given across a reopen.

use cadre_actors::store::storage::{Disk, LogStore, ShardRaft, ShardState};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

use common::TempDir;

mod common;

struct Builder;

impl StoreBuilder<ShardRaft, LogStore, ShardState, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, ShardState), StorageError<u64>> {
        let dir = TempDir::new();
        let disk = Disk::open(&dir.0.join("store.redb")).expect("the store file opens");
        let (log, sm) = disk.shard(3)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn the_redb_storage_passes_openrafts_suite() {
    Suite::test_all(Builder).unwrap();
}

#[test]
fn a_reopened_store_has_its_log_vote_and_state_back() {
    use cadre_cluster::store::{PutRequest, Request};
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload, RaftLogReader, RaftSnapshotBuilder, Vote};

    let dir = TempDir::new();
    let path = dir.0.join("store.redb");
    let put = |i: u64, key: &str| Entry::<ShardRaft> {
        log_id: log_id(1, 1, i),
        payload: EntryPayload::Normal(vec![Request::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease: None,
            prev_kv: false,
        })]),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let disk = Disk::open(&path).unwrap();
        // Two shards in one file: each keeps to itself.
        let (mut log, mut sm) = disk.shard(0).unwrap();
        let (mut other, _) = disk.shard(1).unwrap();
        log.save_vote(&Vote::new(2, 1)).await.unwrap();
        log.blocking_append([put(1, "a"), put(2, "b"), put(3, "c")])
            .await
            .unwrap();
        other.blocking_append([put(1, "z")]).await.unwrap();
        log.save_committed(Some(log_id(1, 1, 3))).await.unwrap();
        sm.apply([put(1, "a"), put(2, "b")]).await.unwrap();
        sm.build_snapshot().await.unwrap();
        sm.apply([put(3, "c")]).await.unwrap();
        assert_eq!(sm.read(|s| s.revision()), 3);
        drop((log, sm, other));
        disk.close();
    });
    rt.block_on(async {
        let disk = Disk::open(&path).unwrap();
        let (mut log, mut sm) = disk.shard(0).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 3)));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 3)));
        assert_eq!(log.try_get_log_entries(1..4).await.unwrap().len(), 3);
        // The state machine is back at its snapshot; openraft re-applies entry 3 from the log.
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 1, 2)));
        assert_eq!(sm.read(|s| s.revision()), 2);
        assert!(sm.read(|s| s.get(b"b").is_some() && s.get(b"c").is_none()));
        let (mut other, _) = disk.shard(1).unwrap();
        assert_eq!(other.try_get_log_entries(..).await.unwrap().len(), 1);
    });
}
