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
//! | `identity` | `store_id` | this file's store id: random, drawn when the file was created |
//!
//! The store id tells this file apart from any other a node of the same name ever had: a node
//! whose data directory was lost comes back with a new one, so its replicas are new Raft
//! members, not the ones that acknowledged what the lost file held (see
//! [`member_id`](cadre_cluster::store::placement::member_id)). A file written before store ids
//! existed has id 0.
//!
//! Every write of the log, the vote and the snapshots commits with redb's immediate durability
//! (an fsync) before openraft is told it is done; the committed id costs no commit of its own:
//! the latest one rides on the next commit of the log or vote (openraft treats it as optional).

// openraft's traits fix the error type (`StorageError`, over 200 bytes); the helpers here
// return it as the traits do.
#![allow(clippy::result_large_err)]

use std::cell::RefCell;
use std::collections::BTreeMap;
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
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
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
    /// The Raft types of a status-store shard: an entry is a batch of requests, applied in
    /// order (each at its own revision if it changes keys), answered one by one.
    pub ShardRaft:
        D = Vec<Request>,
        R = Vec<Applied>,
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
const IDENTITY: TableDefinition<&str, u64> = TableDefinition::new("identity");

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

/// Changes a write transaction (run on the writer thread).
type Apply = Box<dyn FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send>;
/// Told the outcome once the transaction that carried its change has committed.
type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Job {
    apply: Apply,
    done: Done,
}

/// Log entries handed to the writer and not yet committed, by (shard, index): readers see
/// them; the version tells a stale removal from a newer entry at the same index.
type Pending = Arc<parking_lot::Mutex<BTreeMap<(u16, u64), (u64, Arc<Vec<u8>>)>>>;

/// Each shard's latest committed id (encoded) not yet written: it goes with the next commit.
type Committed = Arc<parking_lot::Mutex<BTreeMap<u16, Vec<u8>>>>;

/// The writer thread: takes every change queued (of every shard on the node), applies them in
/// one transaction with the committed ids waiting, commits once (one fsync), then tells each
/// its outcome. Group commit: while one commit syncs, the next batch gathers.
fn writer(db: Arc<Database>, jobs: std::sync::mpsc::Receiver<Job>, committed: Committed) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut dones = Vec::with_capacity(batch.len());
        let mut applies = Vec::with_capacity(batch.len());
        for job in batch {
            applies.push(job.apply);
            dones.push(job.done);
        }
        let outcome = (|| -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            for apply in applies {
                apply(&txn)?;
            }
            let waiting = std::mem::take(&mut *committed.lock());
            if !waiting.is_empty() {
                let mut meta = txn.open_table(META)?;
                for (shard, bytes) in &waiting {
                    meta.insert((*shard, "committed"), bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })()
        .map_err(|e| e.to_string());
        for done in dones {
            done(outcome.clone());
        }
    }
}

/// A random non-zero store id.
fn new_store_id() -> Result<u64, redb::Error> {
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes)
            .map_err(|e| redb::Error::Io(std::io::Error::other(format!("no randomness: {e}"))))?;
        let id = u64::from_le_bytes(bytes);
        if id != 0 {
            return Ok(id);
        }
    }
}

/// The node's store file, and its writer thread.
#[derive(Clone)]
pub struct Disk {
    db: Arc<Database>,
    store_id: u64,
    jobs: std::sync::mpsc::Sender<Job>,
    pending: Pending,
    committed: Committed,
    versions: Arc<std::sync::atomic::AtomicU64>,
    thread: Arc<parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>>,
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
        let store_id = {
            let log = txn.open_table(LOG)?;
            let meta = txn.open_table(META)?;
            txn.open_table(SNAPSHOT)?;
            let mut identity = txn.open_table(IDENTITY)?;
            let known = identity.get("store_id")?.map(|v| v.value());
            match known {
                Some(id) => id,
                None => {
                    // A file with data and no id predates store ids: it keeps id 0 (and the
                    // Raft ids its replicas always had).
                    let id = if log.is_empty()? && meta.is_empty()? {
                        new_store_id()?
                    } else {
                        0
                    };
                    identity.insert("store_id", id)?;
                    id
                }
            }
        };
        txn.commit()?;
        let db = Arc::new(db);
        let (tx, rx) = std::sync::mpsc::channel();
        let w = db.clone();
        let committed = Committed::default();
        let c = committed.clone();
        let thread = std::thread::Builder::new()
            .name("cadre-store-writer".into())
            .spawn(move || {
                // A panic here is logged with its message; every write after it fails ("the
                // store's writer has stopped"), Raft stops on the storage error, and each
                // replica fails with it (see the replica's fatal watch), up the node's tree.
                let run = std::panic::AssertUnwindSafe(|| writer(w, rx, c));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    let message = cadre_runtime::panic_message(panic.as_ref());
                    tracing::error!(panic = %message, "the store's writer thread panicked: the store on this node fails");
                }
            })
            .map_err(redb::Error::Io)?;
        Ok(Disk {
            db,
            store_id,
            jobs: tx,
            pending: Pending::default(),
            committed,
            versions: Arc::default(),
            thread: Arc::new(parking_lot::Mutex::new(Some(thread))),
        })
    }

    /// This file's store id (see the module's docs).
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// How many handles share the file: this one, its other clones, and the writer thread.
    pub(crate) fn users(&self) -> usize {
        Arc::strong_count(&self.db)
    }

    /// Lets go of the file: when this is the last handle (every shard's stores dropped), the
    /// writer thread ends and the file closes before this returns, so that it can be opened
    /// again at once.
    pub fn close(self) {
        let thread = self.thread.lock().take();
        let last = Arc::strong_count(&self.db) <= 2;
        drop(self);
        if let (true, Some(t)) = (last, thread) {
            let _ = t.join();
        }
    }

    /// Queues a change for the writer; `done` is told once it is committed (and synced).
    fn submit(&self, apply: Apply, done: Done) {
        let job = Job { apply, done };
        if let Err(std::sync::mpsc::SendError(job)) = self.jobs.send(job) {
            (job.done)(Err("the store's writer has stopped".into()));
        }
    }

    /// Applies a change and waits until it is committed.
    async fn write(&self, apply: Apply) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            apply,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await
            .unwrap_or_else(|_| Err("the store's writer has stopped".into()))
    }

    /// The log store and the state machine of `shard`, with the state machine restored from
    /// the shard's last snapshot (openraft then re-applies the committed log after it).
    ///
    /// # Errors
    /// The snapshot cannot be read.
    pub fn shard(&self, shard: u16) -> StoreResult<(LogStore, ShardState)> {
        let log = LogStore {
            disk: self.clone(),
            shard,
        };
        let state = ShardState {
            disk: self.clone(),
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
    disk: Disk,
    shard: u16,
}

impl LogStore {
    fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>> {
        let txn = self.disk.db.begin_read().map_err(|e| io(read, e))?;
        let table = txn.open_table(META).map_err(|e| io(read, e))?;
        match table.get((self.shard, key)).map_err(|e| io(read, e))? {
            Some(v) => Ok(Some(decode_body(v.value()).map_err(|e| codec(read, e))?)),
            None => Ok(None),
        }
    }

    /// Writes a meta value durably.
    async fn set_meta<T: Serialize>(&self, key: &'static str, value: &T) -> StoreResult<()> {
        let bytes = encode_body(value).map_err(|e| codec(write, e))?;
        let shard = self.shard;
        let apply: Apply = Box::new(move |txn| {
            txn.open_table(META)?
                .insert((shard, key), bytes.as_slice())?;
            Ok(())
        });
        self.disk.write(apply).await.map_err(|e| codec(write, e))
    }

    /// Removes the entries with index in `range`.
    async fn remove(&self, range: impl RangeBounds<u64>) -> StoreResult<()> {
        let (lo, hi) = self.keys(range);
        let (l, h) = (lo, hi);
        let apply: Apply = Box::new(move |txn| {
            txn.open_table(LOG)?.retain_in((l, h), |_, _| false)?;
            Ok(())
        });
        self.disk
            .write(apply)
            .await
            .map_err(|e| codec(write_logs, e))?;
        self.disk
            .pending
            .lock()
            .retain(|k, _| !(lo, hi).contains(k));
        Ok(())
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
        let keys = self.keys(range);
        let txn = self.disk.db.begin_read().map_err(|e| io(read_logs, e))?;
        let table = txn.open_table(LOG).map_err(|e| io(read_logs, e))?;
        let mut found: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for item in table.range(keys).map_err(|e| io(read_logs, e))? {
            let (k, v) = item.map_err(|e| io(read_logs, e))?;
            found.insert(k.value().1, v.value().to_vec());
        }
        // Entries handed to the writer and not yet committed count as written.
        for ((_, index), (_, bytes)) in self.disk.pending.lock().range(keys) {
            found.insert(*index, bytes.to_vec());
        }
        found
            .values()
            .map(|b| decode_body(b).map_err(|e| codec(read_logs, e)))
            .collect()
    }
}

impl RaftLogStorage<ShardRaft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StoreResult<LogState<ShardRaft>> {
        let last_purged: Option<LogId<NodeId>> = self.meta("purged")?;
        let txn = self.disk.db.begin_read().map_err(|e| io(read_logs, e))?;
        let table = txn.open_table(LOG).map_err(|e| io(read_logs, e))?;
        let stored = table
            .range(self.keys(..))
            .map_err(|e| io(read_logs, e))?
            .next_back()
            .transpose()
            .map_err(|e| io(read_logs, e))?
            .map(|(k, v)| (k.value().1, v.value().to_vec()));
        let pending = self
            .disk
            .pending
            .lock()
            .range(self.keys(..))
            .next_back()
            .map(|((_, i), (_, b))| (*i, b.to_vec()));
        let last = match (stored, pending) {
            (Some(s), Some(p)) => Some(if p.0 >= s.0 { p } else { s }),
            (s, p) => s.or(p),
        };
        let last_log_id = match last {
            Some((_, bytes)) => {
                let entry: Entry<ShardRaft> =
                    decode_body(&bytes).map_err(|e| codec(read_logs, e))?;
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
        self.set_meta("vote", vote).await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        // Not worth a commit of its own: the committed id is an optimisation (a restarted
        // replica that lost it learns it again from the leader), so it rides on the next one.
        let bytes = encode_body(&committed).map_err(|e| codec(write, e))?;
        self.disk.committed.lock().insert(self.shard, bytes);
        Ok(())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        let waiting = self.disk.committed.lock().get(&self.shard).cloned();
        let committed: Option<Option<LogId<NodeId>>> = match waiting {
            Some(bytes) => Some(decode_body(&bytes).map_err(|e| codec(read, e))?),
            None => self.meta("committed")?,
        };
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<ShardRaft>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<ShardRaft>>,
    {
        // Handed to the writer: readers see the entries at once, and openraft is told they are
        // on disk once the commit that carries them (with other shards' appends) has synced.
        let shard = self.shard;
        let mut batch = Vec::new();
        {
            let mut pending = self.disk.pending.lock();
            for entry in entries {
                let bytes = Arc::new(encode_body(&entry).map_err(|e| codec(write_logs, e))?);
                let version = self
                    .disk
                    .versions
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                pending.insert((shard, entry.log_id.index), (version, bytes.clone()));
                batch.push((entry.log_id.index, version, bytes));
            }
        }
        let written = batch.clone();
        let apply: Apply = Box::new(move |txn| {
            let mut table = txn.open_table(LOG)?;
            for (index, _, bytes) in &written {
                table.insert((shard, *index), bytes.as_slice())?;
            }
            Ok(())
        });
        let pending = self.disk.pending.clone();
        let done: Done = Box::new(move |outcome| {
            if outcome.is_ok() {
                let mut pending = pending.lock();
                for (index, version, _) in &batch {
                    if pending
                        .get(&(shard, *index))
                        .is_some_and(|(v, _)| v == version)
                    {
                        pending.remove(&(shard, *index));
                    }
                }
            }
            callback.log_io_completed(outcome.map_err(std::io::Error::other));
        });
        self.disk.submit(apply, done);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.remove(log_id.index..).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.set_meta("purged", &Some(log_id)).await?;
        self.remove(..=log_id.index).await
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
    disk: Disk,
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
        let txn = self
            .disk
            .db
            .begin_read()
            .map_err(|e| io(read_snapshot, e))?;
        let table = txn.open_table(SNAPSHOT).map_err(|e| io(read_snapshot, e))?;
        Ok(table
            .get(self.shard)
            .map_err(|e| io(read_snapshot, e))?
            .map(|v| v.value().to_vec()))
    }

    async fn write_snapshot(&self, bytes: &[u8]) -> StoreResult<()> {
        let (shard, bytes) = (self.shard, bytes.to_vec());
        let apply: Apply = Box::new(move |txn| {
            txn.open_table(SNAPSHOT)?.insert(shard, bytes.as_slice())?;
            Ok(())
        });
        self.disk
            .write(apply)
            .await
            .map_err(|e| codec(write_snapshot, e))
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
        self.write_snapshot(&bytes).await?;
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

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<Vec<Applied>>>
    where
        I: IntoIterator<Item = Entry<ShardRaft>>,
    {
        let mut inner = self.inner.borrow_mut();
        let mut out = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            let applied = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    Vec::new()
                }
                EntryPayload::Normal(requests) => requests
                    .into_iter()
                    .map(|request| {
                        let (response, changes) = inner.sm.apply(request);
                        if let (Some(changes), Some(tx)) = (changes, &inner.changes) {
                            let _ = tx.send(changes);
                        }
                        Applied {
                            revision: inner.sm.revision(),
                            response: Some(response),
                        }
                    })
                    .collect(),
            };
            out.push(applied);
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
        self.write_snapshot(&bytes).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cadre-storage-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("store.redb")
    }

    #[test]
    fn a_new_store_file_draws_a_store_id_and_keeps_it() {
        let path = temp_file("fresh");
        let disk = Disk::open(&path).unwrap();
        let id = disk.store_id();
        assert_ne!(id, 0);
        disk.close();
        let disk = Disk::open(&path).unwrap();
        assert_eq!(disk.store_id(), id, "reopened, the file keeps its id");
        disk.close();
        // A new file in its place (the data directory lost) has another id.
        std::fs::remove_file(&path).unwrap();
        let disk = Disk::open(&path).unwrap();
        assert_ne!(disk.store_id(), id);
        disk.close();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_store_file_with_data_from_before_store_ids_has_id_0() {
        let path = temp_file("legacy");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(LOG)
                .unwrap()
                .insert((0, 1), b"entry".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let disk = Disk::open(&path).unwrap();
        assert_eq!(disk.store_id(), 0);
        disk.close();
        let disk = Disk::open(&path).unwrap();
        assert_eq!(disk.store_id(), 0, "and keeps it");
        disk.close();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
