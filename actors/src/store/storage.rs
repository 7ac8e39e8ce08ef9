//! A shard replica's storage for openraft: its log, vote and committed id, and its snapshots,
//! in one `redb` file per node shared by every shard on it; the state machine itself
//! ([`StateMachine`]) lives in memory and is rebuilt from the last snapshot plus the
//! committed log after a restart.
//!
//! # Layout (redb tables)
//! | table | key | value |
//! |---|---|---|
//! | `log` | (shard, index) | a log entry, MessagePack |
//! | `meta` | (shard, `vote` \| `committed` \| `purged`) | MessagePack |
//! | `snapshot` | shard | the last snapshot: its metadata and the state machine, MessagePack |
//!
//! Every write of the log, the vote and the snapshots commits with redb's immediate durability
//! (an fsync) before openraft is told it is done; the committed id is written without one and
//! reaches the disk with the next durable commit (openraft treats it as optional).

// openraft's traits fix the error type (`StorageError`, over 200 bytes); the helpers here
// return it as the traits do.
#![allow(clippy::result_large_err)]

use std::cell::RefCell;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use cadre_cluster::store::{Event, Request, Response, Revision, StateMachine};
use cadre_cluster::wire::{decode_body, encode_body};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What a shard's log holds and its state machine answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The shard's revision after the entry.
    pub revision: Revision,
    /// The command's response (none for Raft's own entries).
    pub response: Option<Response>,
}

openraft::declare_raft_types!(
    /// The Raft types of a status-store shard.
    pub ShardRaft:
        D = Request,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

type NodeId = u64;
/// A range of a shard's log keys.
type KeyRange = (Bound<(u16, u64)>, Bound<(u16, u64)>);
type StoreResult<T> = Result<T, StorageError<NodeId>>;

const LOG: TableDefinition<(u16, u64), &[u8]> = TableDefinition::new("log");
const META: TableDefinition<(u16, &str), &[u8]> = TableDefinition::new("meta");
const SNAPSHOT: TableDefinition<u16, &[u8]> = TableDefinition::new("snapshot");

fn read(e: AnyError) -> StorageIOError<NodeId> {
    StorageIOError::read(e)
}
fn write(e: AnyError) -> StorageIOError<NodeId> {
    StorageIOError::write(e)
}
fn read_logs(e: AnyError) -> StorageIOError<NodeId> {
    StorageIOError::read_logs(e)
}
fn write_logs(e: AnyError) -> StorageIOError<NodeId> {
    StorageIOError::write_logs(e)
}
fn read_snapshot(e: AnyError) -> StorageIOError<NodeId> {
    StorageIOError::read_snapshot(None, e)
}
fn write_snapshot(e: AnyError) -> StorageIOError<NodeId> {
    StorageIOError::write_snapshot(None, e)
}

/// A redb error as openraft's storage error of the given kind.
fn io(
    make: fn(AnyError) -> StorageIOError<NodeId>,
    e: impl Into<redb::Error>,
) -> StorageError<NodeId> {
    make(AnyError::new(&e.into())).into()
}

/// A (de)serialization error as openraft's storage error of the given kind.
fn codec(make: fn(AnyError) -> StorageIOError<NodeId>, e: impl ToString) -> StorageError<NodeId> {
    make(AnyError::error(e)).into()
}

/// The node's store file.
#[derive(Clone)]
pub struct Disk {
    db: Arc<Database>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk").finish_non_exhaustive()
    }
}

impl Disk {
    /// Opens (or creates) the store file at `path`.
    ///
    /// # Errors
    /// The file cannot be opened or is not a store file.
    pub fn open(path: &Path) -> Result<Disk, redb::Error> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.open_table(SNAPSHOT)?;
        txn.commit()?;
        Ok(Disk { db: Arc::new(db) })
    }

    /// How many handles share the file (this one included).
    pub(crate) fn users(&self) -> usize {
        Arc::strong_count(&self.db)
    }

    /// The log store and the state machine of `shard`, with the state machine restored from
    /// the shard's last snapshot (openraft then re-applies the committed log after it).
    ///
    /// # Errors
    /// The snapshot cannot be read.
    pub fn shard(&self, shard: u16) -> StoreResult<(LogStore, ShardState)> {
        let log = LogStore {
            db: self.db.clone(),
            shard,
        };
        let state = ShardState {
            db: self.db.clone(),
            shard,
            inner: Rc::new(RefCell::new(Inner::default())),
        };
        if let Some(snap) = state.read_snapshot()? {
            state.restore(&snap)?;
        }
        Ok((log, state))
    }
}

/// A shard's log, vote and committed id.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    shard: u16,
}

impl LogStore {
    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>> {
        let txn = self.db.begin_read().map_err(|e| io(read, e))?;
        let table = txn.open_table(META).map_err(|e| io(read, e))?;
        match table.get((self.shard, key)).map_err(|e| io(read, e))? {
            Some(v) => Ok(Some(decode_body(v.value()).map_err(|e| codec(read, e))?)),
            None => Ok(None),
        }
    }

    /// Writes a meta value; `durable` commits with an fsync, otherwise it reaches the disk with
    /// the next durable commit.
    fn set_meta<T: Serialize>(&self, key: &str, value: &T, durable: bool) -> StoreResult<()> {
        let bytes = encode_body(value).map_err(|e| codec(write, e))?;
        let mut txn = self.db.begin_write().map_err(|e| io(write, e))?;
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| codec(write, e))?;
        }
        {
            let mut table = txn.open_table(META).map_err(|e| io(write, e))?;
            table
                .insert((self.shard, key), bytes.as_slice())
                .map_err(|e| io(write, e))?;
        }
        txn.commit().map_err(|e| io(write, e))
    }

    /// Removes the entries with index in `range`.
    fn remove(&self, range: impl RangeBounds<u64>) -> StoreResult<()> {
        let (lo, hi) = self.keys(range);
        let txn = self.db.begin_write().map_err(|e| io(write_logs, e))?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| io(write_logs, e))?;
            table
                .retain_in((lo, hi), |_, _| false)
                .map_err(|e| io(write_logs, e))?;
        }
        txn.commit().map_err(|e| io(write_logs, e))
    }

    fn keys(&self, range: impl RangeBounds<u64>) -> KeyRange {
        let s = self.shard;
        let lo = match range.start_bound() {
            Bound::Included(i) => Bound::Included((s, *i)),
            Bound::Excluded(i) => Bound::Excluded((s, *i)),
            Bound::Unbounded => Bound::Included((s, 0)),
        };
        let hi = match range.end_bound() {
            Bound::Included(i) => Bound::Included((s, *i)),
            Bound::Excluded(i) => Bound::Excluded((s, *i)),
            Bound::Unbounded => Bound::Included((s, u64::MAX)),
        };
        (lo, hi)
    }
}

impl RaftLogReader<ShardRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<ShardRaft>>> {
        let txn = self.db.begin_read().map_err(|e| io(read_logs, e))?;
        let table = txn.open_table(LOG).map_err(|e| io(read_logs, e))?;
        let mut out = Vec::new();
        for item in table
            .range(self.keys(range))
            .map_err(|e| io(read_logs, e))?
        {
            let (_, v) = item.map_err(|e| io(read_logs, e))?;
            out.push(decode_body(v.value()).map_err(|e| codec(read_logs, e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<ShardRaft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<ShardRaft>> {
        let last_purged: Option<LogId<NodeId>> = self.meta("purged")?;
        let txn = self.db.begin_read().map_err(|e| io(read_logs, e))?;
        let table = txn.open_table(LOG).map_err(|e| io(read_logs, e))?;
        let last = table
            .range(self.keys(..))
            .map_err(|e| io(read_logs, e))?
            .next_back()
            .transpose()
            .map_err(|e| io(read_logs, e))?;
        let last_log_id = match last {
            Some((_, v)) => {
                let entry: Entry<ShardRaft> =
                    decode_body(v.value()).map_err(|e| codec(read_logs, e))?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        self.set_meta("vote", vote, true)
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        // Not worth an fsync: the committed id is an optimisation (a restarted replica that
        // lost it learns it again from the leader), so it rides on the next durable commit.
        self.set_meta("committed", &committed, false)
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(self.meta::<Option<LogId<NodeId>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<ShardRaft>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<ShardRaft>>,
    {
        let txn = self.db.begin_write().map_err(|e| io(write_logs, e))?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| io(write_logs, e))?;
            for entry in entries {
                let bytes = encode_body(&entry).map_err(|e| codec(write_logs, e))?;
                table
                    .insert((self.shard, entry.log_id.index), bytes.as_slice())
                    .map_err(|e| io(write_logs, e))?;
            }
        }
        txn.commit().map_err(|e| io(write_logs, e))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.remove(log_id.index..)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.set_meta("purged", &Some(log_id), true)?;
        self.remove(..=log_id.index)
    }
}

/// A snapshot as stored and sent: its metadata and the state machine.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    sm: StateMachine,
}

#[derive(Default)]
struct Inner {
    sm: StateMachine,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Where each revision's changes go (the replica's watch hub).
    changes: Option<mpsc::UnboundedSender<(Revision, Vec<Event>)>>,
    snapshots_built: u64,
}

/// A shard's state machine as openraft drives it. Clones share the state: the replica reads
/// it (serializable reads, watch history) on the same thread.
#[derive(Clone)]
pub struct ShardState {
    db: Arc<Database>,
    shard: u16,
    inner: Rc<RefCell<Inner>>,
}

impl ShardState {
    /// Runs `f` on the current state machine.
    pub fn read<T>(&self, f: impl FnOnce(&StateMachine) -> T) -> T {
        f(&self.inner.borrow().sm)
    }

    /// Sends every applied revision's changes to `tx` from now on.
    pub fn on_changes(&self, tx: mpsc::UnboundedSender<(Revision, Vec<Event>)>) {
        self.inner.borrow_mut().changes = Some(tx);
    }

    fn read_snapshot(&self) -> StoreResult<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(|e| io(read_snapshot, e))?;
        let table = txn.open_table(SNAPSHOT).map_err(|e| io(read_snapshot, e))?;
        Ok(table
            .get(self.shard)
            .map_err(|e| io(read_snapshot, e))?
            .map(|v| v.value().to_vec()))
    }

    fn write_snapshot(&self, bytes: &[u8]) -> StoreResult<()> {
        let txn = self.db.begin_write().map_err(|e| io(write_snapshot, e))?;
        {
            let mut table = txn
                .open_table(SNAPSHOT)
                .map_err(|e| io(write_snapshot, e))?;
            table
                .insert(self.shard, bytes)
                .map_err(|e| io(write_snapshot, e))?;
        }
        txn.commit().map_err(|e| io(write_snapshot, e))
    }

    fn restore(&self, bytes: &[u8]) -> StoreResult<SnapshotMeta<NodeId, BasicNode>> {
        let snap: StoredSnapshot = decode_body(bytes).map_err(|e| codec(read_snapshot, e))?;
        let mut inner = self.inner.borrow_mut();
        inner.sm = snap.sm;
        inner.last_applied = snap.meta.last_log_id;
        inner.membership = snap.meta.last_membership.clone();
        Ok(snap.meta)
    }
}

impl RaftSnapshotBuilder<ShardRaft> for ShardState {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<ShardRaft>> {
        let (meta, bytes) = {
            let mut inner = self.inner.borrow_mut();
            inner.snapshots_built += 1;
            let id = match &inner.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshots_built),
                None => format!("none-{}", inner.snapshots_built),
            };
            let meta = SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id: id,
            };
            let stored = StoredSnapshot {
                meta: meta.clone(),
                sm: inner.sm.clone(),
            };
            let bytes = encode_body(&stored).map_err(|e| codec(write_snapshot, e))?;
            (meta, bytes)
        };
        self.write_snapshot(&bytes)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<ShardRaft> for ShardState {
    type SnapshotBuilder = ShardState;

    async fn applied_state(
        &mut self,
    ) -> StoreResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = self.inner.borrow();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry<ShardRaft>>,
    {
        let mut inner = self.inner.borrow_mut();
        let mut out = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    None
                }
                EntryPayload::Normal(request) => {
                    let (response, changes) = inner.sm.apply(request);
                    if let (Some(changes), Some(tx)) = (changes, &inner.changes) {
                        let _ = tx.send(changes);
                    }
                    Some(response)
                }
            };
            out.push(Applied {
                revision: inner.sm.revision(),
                response,
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let bytes = snapshot.into_inner();
        let stored: StoredSnapshot = decode_body(&bytes).map_err(|e| codec(read_snapshot, e))?;
        // The metadata openraft gives is the one that counts.
        let stored = StoredSnapshot {
            meta: meta.clone(),
            sm: stored.sm,
        };
        let bytes = encode_body(&stored).map_err(|e| codec(write_snapshot, e))?;
        self.write_snapshot(&bytes)?;
        self.restore(&bytes)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<ShardRaft>>> {
        let Some(bytes) = self.read_snapshot()? else {
            return Ok(None);
        };
        let stored: StoredSnapshot = decode_body(&bytes).map_err(|e| codec(read_snapshot, e))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
