//! The ordered key-value state with revisions and leases.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{LeaseId, Revision};

/// A key and its value, with its revisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The value (empty in a delete event, or with `keys_only`).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// When the key was created (since its last delete).
    pub create_revision: Revision,
    /// Its last change (for a delete event: the delete's revision).
    pub mod_revision: Revision,
    /// Puts since it was created (0 in a delete event).
    pub version: u64,
    /// The lease it is bound to.
    pub lease: Option<LeaseId>,
}

/// Put or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A key was created or changed.
    Put,
    /// A key was deleted.
    Delete,
}

/// One change of one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (a delete: the key, an empty value, `mod_revision` the
    /// delete's revision).
    pub kv: KeyValue,
    /// The key before the change, if it existed.
    pub prev: Option<KeyValue>,
}

/// Put a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Bind it to this lease (it must exist); none unbinds it.
    pub lease: Option<LeaseId>,
    /// Return the previous key-value.
    pub prev_kv: bool,
}

/// Delete a key, or every key under a prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// The key, or the prefix.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Treat `key` as a prefix.
    pub prefix: bool,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

/// Read a key, or the keys under a prefix, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    /// The key, or the prefix.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Treat `key` as a prefix.
    pub prefix: bool,
    /// At most this many (0: no limit).
    pub limit: usize,
    /// Leave the values out.
    pub keys_only: bool,
}

/// What a range found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    /// The key-values, in key order.
    pub kvs: Vec<KeyValue>,
    /// How many keys matched (beyond the limit too).
    pub count: usize,
    /// Whether the limit cut the answer short.
    pub more: bool,
    /// The shard's revision when it was read.
    pub revision: Revision,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// Equal.
    Eq,
    /// Not equal.
    NotEq,
    /// Less than.
    Less,
    /// Greater than.
    Greater,
}

/// What a comparison looks at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The value (a missing key compares as no value: only `NotEq` holds).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The version (0 for a missing key).
    Version(u64),
    /// The create revision (0 for a missing key).
    CreateRevision(Revision),
    /// The mod revision (0 for a missing key).
    ModRevision(Revision),
}

/// One condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The operator.
    pub op: CmpOp,
    /// What to compare, and with what.
    pub target: CompareTarget,
}

/// An operation inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A put.
    Put(PutRequest),
    /// A delete.
    Delete(DeleteRequest),
    /// A read (it sees the writes before it in the same branch).
    Range(RangeRequest),
}

/// If every comparison holds, the success operations, else the failure ones; at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    /// The conditions.
    pub compare: Vec<Compare>,
    /// Applied if all hold.
    pub success: Vec<Op>,
    /// Applied otherwise.
    pub failure: Vec<Op>,
}

/// What one operation of a transaction did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResponse {
    /// A put: the previous key-value, if asked for and present.
    Put {
        /// The previous key-value.
        prev: Option<KeyValue>,
    },
    /// A delete: how many keys, and them if asked for.
    Delete {
        /// Keys deleted.
        deleted: usize,
        /// Their last key-values.
        prev: Vec<KeyValue>,
    },
    /// A range.
    Range(RangeResponse),
}

/// A command in a shard's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Put a key.
    Put(PutRequest),
    /// Delete keys.
    Delete(DeleteRequest),
    /// A transaction.
    Txn(TxnRequest),
    /// Grant a lease.
    LeaseGrant {
        /// Its id (chosen by the proposer, unique).
        id: LeaseId,
        /// Its TTL in milliseconds.
        ttl_ms: u64,
    },
    /// Revoke a lease (also how expiry enters the log) and delete its keys.
    LeaseRevoke {
        /// The lease.
        id: LeaseId,
    },
    /// Forget the change history before `revision`.
    Compact {
        /// The first revision kept.
        revision: Revision,
    },
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A put, a delete or a transaction: the revision after it, and what each part did.
    Write {
        /// The shard's revision after the command.
        revision: Revision,
        /// For a transaction: whether the comparisons held (always true otherwise).
        succeeded: bool,
        /// One per operation (a put or delete: one).
        responses: Vec<OpResponse>,
    },
    /// A lease was granted.
    LeaseGranted {
        /// Its id.
        id: LeaseId,
        /// Its TTL in milliseconds.
        ttl_ms: u64,
    },
    /// A lease was revoked.
    LeaseRevoked {
        /// Keys deleted with it.
        deleted: usize,
        /// The shard's revision after it.
        revision: Revision,
    },
    /// The history before `revision` is gone.
    Compacted {
        /// The first revision kept.
        revision: Revision,
    },
    /// Nothing changed.
    Error(StoreError),
}

/// Why a command or a read was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    /// No such lease.
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// A lease with this id exists.
    #[error("lease {0} already exists")]
    LeaseExists(LeaseId),
    /// A lease TTL of zero.
    #[error("a lease needs a TTL above zero")]
    ZeroTtl,
    /// The revision asked for was compacted away.
    #[error("revision {requested} is compacted (history starts at {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The first revision kept.
        compacted: Revision,
    },
    /// Compaction beyond the current revision.
    #[error("revision {requested} is in the future (current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// A transaction writes the same key twice.
    #[error("a transaction writes key {0:?} more than once")]
    DuplicateKey(String),
    /// A key, a value or the whole request is over its limit.
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// What (`a key`, `a value`, `the request`).
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Size limits on requests, checked before a request enters the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest key, in bytes (default 4 KiB).
    pub max_key: usize,
    /// The longest value, in bytes (default 1 MiB).
    pub max_value: usize,
    /// The largest request (keys, values and the rest), in bytes (default 1.5 MiB).
    pub max_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key: 4 * 1024,
            max_value: 1024 * 1024,
            max_request: 1536 * 1024,
        }
    }
}

impl Limits {
    /// Checks `request`.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] naming the first part over its limit.
    pub fn check(&self, request: &Request) -> Result<(), StoreError> {
        let too_large = |what: &str, size: usize, limit: usize| {
            if size > limit {
                Err(StoreError::TooLarge {
                    what: what.into(),
                    size,
                    limit,
                })
            } else {
                Ok(())
            }
        };
        let mut total = 0;
        let put = |p: &PutRequest| -> Result<usize, StoreError> {
            too_large("a key", p.key.len(), self.max_key)?;
            too_large("a value", p.value.len(), self.max_value)?;
            Ok(p.key.len() + p.value.len())
        };
        match request {
            Request::Put(p) => total += put(p)?,
            Request::Txn(t) => {
                for op in t.success.iter().chain(&t.failure) {
                    match op {
                        Op::Put(p) => total += put(p)?,
                        Op::Delete(DeleteRequest { key, .. })
                        | Op::Range(RangeRequest { key, .. }) => {
                            too_large("a key", key.len(), self.max_key)?;
                            total += key.len();
                        }
                    }
                }
                for c in &t.compare {
                    too_large("a key", c.key.len(), self.max_key)?;
                    total += c.key.len();
                    if let CompareTarget::Value(v) = &c.target {
                        too_large("a value", v.len(), self.max_value)?;
                        total += v.len();
                    }
                }
            }
            Request::Delete(d) => {
                too_large("a key", d.key.len(), self.max_key)?;
                total += d.key.len();
            }
            _ => {}
        }
        too_large("the request", total, self.max_request)
    }
}

/// A lease: its TTL and the keys bound to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The TTL in milliseconds.
    pub ttl_ms: u64,
    /// The keys bound to it.
    pub keys: BTreeSet<Vec<u8>>,
}

/// One shard's state: keys, revision, leases and the change history since the last compaction.
/// Serializable: a snapshot is the whole value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    kv: BTreeMap<Vec<u8>, KeyValue>,
    revision: Revision,
    /// The first revision whose changes are kept.
    compacted: Revision,
    history: BTreeMap<Revision, Vec<Event>>,
    leases: BTreeMap<LeaseId, LeaseInfo>,
}

/// The keys `key` names: itself, or every key it prefixes.
fn bounds(key: &[u8], prefix: bool) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    if !prefix {
        return (Bound::Included(key.to_vec()), Bound::Included(key.to_vec()));
    }
    // The first key after every key with this prefix: the prefix with its last byte below
    // 0xff incremented (and what follows dropped); none if all bytes are 0xff.
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (Bound::Included(key.to_vec()), Bound::Excluded(end));
        }
    }
    (Bound::Included(key.to_vec()), Bound::Unbounded)
}

impl StateMachine {
    /// An empty shard at revision 0.
    pub fn new() -> Self {
        StateMachine::default()
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The first revision whose changes are kept.
    pub fn compacted(&self) -> Revision {
        self.compacted
    }

    /// The compaction that keeps the changes of the last `keep` revisions only, if the history
    /// holds more than that (`keep` 0: keep all, none is due).
    pub fn compaction_due(&self, keep: u64) -> Option<Request> {
        let to = self.revision.saturating_sub(keep);
        (keep > 0 && to > self.compacted).then_some(Request::Compact { revision: to })
    }

    /// The leases, by id.
    pub fn leases(&self) -> &BTreeMap<LeaseId, LeaseInfo> {
        &self.leases
    }

    /// A key's current key-value.
    pub fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.kv.get(key)
    }

    /// Reads keys in order.
    pub fn range(&self, req: &RangeRequest) -> RangeResponse {
        let mut kvs = Vec::new();
        let mut count = 0;
        for (_, kv) in self.kv.range(bounds(&req.key, req.prefix)) {
            count += 1;
            if req.limit == 0 || kvs.len() < req.limit {
                let mut kv = kv.clone();
                if req.keys_only {
                    kv.value.clear();
                }
                kvs.push(kv);
            }
        }
        RangeResponse {
            more: count > kvs.len(),
            kvs,
            count,
            revision: self.revision,
        }
    }

    /// The changes of keys under `prefix` from revision `start` on, by revision.
    ///
    /// # Errors
    /// [`StoreError::Compacted`] if `start` is before the first revision kept.
    pub fn changes_since(
        &self,
        prefix: &[u8],
        start: Revision,
    ) -> Result<Vec<(Revision, Vec<Event>)>, StoreError> {
        if start < self.compacted {
            return Err(StoreError::Compacted {
                requested: start,
                compacted: self.compacted,
            });
        }
        Ok(self
            .history
            .range(start..)
            .filter_map(|(rev, events)| {
                let mine: Vec<Event> = events
                    .iter()
                    .filter(|e| e.kv.key.starts_with(prefix))
                    .cloned()
                    .collect();
                (!mine.is_empty()).then_some((*rev, mine))
            })
            .collect())
    }

    /// Applies one command of the log; returns what it did and, if it changed keys, the
    /// revision and its changes (in the order they were made).
    pub fn apply(&mut self, request: Request) -> (Response, Option<(Revision, Vec<Event>)>) {
        let next = self.revision + 1;
        let mut events = Vec::new();
        let response = match request {
            Request::Put(put) => match self.put(put, next, &mut events) {
                Ok(r) => self.write(true, vec![r], &events),
                Err(e) => Response::Error(e),
            },
            Request::Delete(del) => {
                let r = self.delete(&del, next, &mut events);
                self.write(true, vec![r], &events)
            }
            Request::Txn(txn) => match self.txn(txn, next, &mut events) {
                Ok((succeeded, responses)) => self.write(succeeded, responses, &events),
                Err(e) => Response::Error(e),
            },
            Request::LeaseGrant { id, ttl_ms } => {
                if ttl_ms == 0 {
                    Response::Error(StoreError::ZeroTtl)
                } else {
                    match self.leases.entry(id) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            Response::Error(StoreError::LeaseExists(id))
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(LeaseInfo {
                                ttl_ms,
                                keys: BTreeSet::new(),
                            });
                            Response::LeaseGranted { id, ttl_ms }
                        }
                    }
                }
            }
            Request::LeaseRevoke { id } => match self.leases.remove(&id) {
                None => Response::Error(StoreError::LeaseNotFound(id)),
                Some(lease) => {
                    for key in lease.keys {
                        let del = DeleteRequest {
                            key,
                            prefix: false,
                            prev_kv: false,
                        };
                        self.delete(&del, next, &mut events);
                    }
                    let deleted = events.len();
                    if deleted > 0 {
                        self.revision = next;
                    }
                    Response::LeaseRevoked {
                        deleted,
                        revision: self.revision,
                    }
                }
            },
            Request::Compact { revision } => {
                if revision > self.revision + 1 {
                    Response::Error(StoreError::FutureRevision {
                        requested: revision,
                        current: self.revision,
                    })
                } else if revision < self.compacted {
                    Response::Error(StoreError::Compacted {
                        requested: revision,
                        compacted: self.compacted,
                    })
                } else {
                    self.compacted = revision;
                    self.history = self.history.split_off(&revision);
                    Response::Compacted { revision }
                }
            }
        };
        if events.is_empty() {
            return (response, None);
        }
        self.history.insert(next, events.clone());
        (response, Some((next, events)))
    }

    /// The response of a write, moving to the next revision if it changed anything.
    fn write(&mut self, succeeded: bool, responses: Vec<OpResponse>, events: &[Event]) -> Response {
        if !events.is_empty() {
            self.revision += 1;
        }
        Response::Write {
            revision: self.revision,
            succeeded,
            responses,
        }
    }

    fn put(
        &mut self,
        put: PutRequest,
        rev: Revision,
        events: &mut Vec<Event>,
    ) -> Result<OpResponse, StoreError> {
        if let Some(lease) = put.lease {
            if !self.leases.contains_key(&lease) {
                return Err(StoreError::LeaseNotFound(lease));
            }
        }
        let prev = self.kv.get(&put.key).cloned();
        if let Some(old) = prev.as_ref().and_then(|p| p.lease) {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(&put.key);
            }
        }
        if let Some(lease) = put.lease {
            self.leases
                .get_mut(&lease)
                .expect("checked")
                .keys
                .insert(put.key.clone());
        }
        let kv = KeyValue {
            key: put.key.clone(),
            value: put.value,
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease: put.lease,
        };
        self.kv.insert(put.key, kv.clone());
        events.push(Event {
            kind: EventKind::Put,
            kv,
            prev: prev.clone(),
        });
        Ok(OpResponse::Put {
            prev: if put.prev_kv { prev } else { None },
        })
    }

    fn delete(
        &mut self,
        del: &DeleteRequest,
        rev: Revision,
        events: &mut Vec<Event>,
    ) -> OpResponse {
        let keys: Vec<Vec<u8>> = self
            .kv
            .range(bounds(&del.key, del.prefix))
            .map(|(k, _)| k.clone())
            .collect();
        let mut prev = Vec::new();
        for key in &keys {
            let old = self.kv.remove(key).expect("listed");
            if let Some(l) = old.lease.and_then(|l| self.leases.get_mut(&l)) {
                l.keys.remove(key);
            }
            events.push(Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.clone(),
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision: rev,
                    version: 0,
                    lease: None,
                },
                prev: Some(old.clone()),
            });
            if del.prev_kv {
                prev.push(old);
            }
        }
        OpResponse::Delete {
            deleted: keys.len(),
            prev,
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let kv = self.kv.get(&c.key);
        let ord = match &c.target {
            CompareTarget::Value(v) => match kv {
                None => return c.op == CmpOp::NotEq,
                Some(kv) => kv.value.as_slice().cmp(v.as_slice()),
            },
            CompareTarget::Version(v) => kv.map_or(0, |kv| kv.version).cmp(v),
            CompareTarget::CreateRevision(r) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
            CompareTarget::ModRevision(r) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
        };
        match c.op {
            CmpOp::Eq => ord.is_eq(),
            CmpOp::NotEq => ord.is_ne(),
            CmpOp::Less => ord.is_lt(),
            CmpOp::Greater => ord.is_gt(),
        }
    }

    fn txn(
        &mut self,
        txn: TxnRequest,
        rev: Revision,
        events: &mut Vec<Event>,
    ) -> Result<(bool, Vec<OpResponse>), StoreError> {
        let succeeded = txn.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { txn.success } else { txn.failure };
        // Checked before anything is applied, so that a refused transaction changes nothing.
        let mut written = BTreeSet::new();
        for op in &ops {
            let key = match op {
                Op::Put(p) => {
                    if let Some(lease) = p.lease {
                        if !self.leases.contains_key(&lease) {
                            return Err(StoreError::LeaseNotFound(lease));
                        }
                    }
                    &p.key
                }
                Op::Delete(d) if !d.prefix => &d.key,
                _ => continue,
            };
            if !written.insert(key.clone()) {
                return Err(StoreError::DuplicateKey(
                    String::from_utf8_lossy(key).into_owned(),
                ));
            }
        }
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                Op::Put(p) => self.put(p, rev, events)?,
                Op::Delete(d) => self.delete(&d, rev, events),
                Op::Range(r) => {
                    let mut read = self.range(&r);
                    if !events.is_empty() {
                        read.revision = rev; // it sees this transaction's writes
                    }
                    OpResponse::Range(read)
                }
            });
        }
        Ok((succeeded, responses))
    }
}

#[cfg(test)]
mod tests;
