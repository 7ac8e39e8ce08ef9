//! [`Kv`]: the status store as a node's actors (or `cadre kv`) use it, through a node's
//! gateway.
//!
//! # Guarantees
//! - Writes go through the shard's Raft log: acknowledged means committed by a majority of the
//!   shard's replicas and on their disks.
//! - Reads are linearizable (the leader confirms it still leads before answering) unless asked
//!   serializable (the state of a voter of the shard's group, possibly behind).
//! - Watches deliver each shard's changes in revision order, a revision's changes together,
//!   none lost or repeated, resumed on another replica when the serving one fails.
//! - A lease's TTL is a minimum: its keys go no sooner than a TTL after the last keep-alive
//!   (a new leader gives every lease a full TTL), and all at one revision.

use std::time::Duration;

use actix::prelude::*;
use cadre_cluster::store::{
    routing, DeleteRequest, KeyValue, LeaseId, PutRequest, RangeRequest, RangeResponse, Request,
    Revision, TxnRequest,
};
use tokio::sync::mpsc;

use super::gateway::{
    KvCompact, KvKeepAlive, KvRead, KvTimeToLive, KvWatch, KvWatchEnded, KvWatchUpdate, KvWrite,
    STORE,
};
use super::storage::Applied;
use crate::{Node, RemoteRef};

/// How long one request may take (retries to find a leader included).
const PATIENCE: Duration = Duration::from_secs(30);

/// Why a store request failed, and what the caller can do about it. It travels from the
/// gateway that served the request to the caller as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum KvError {
    /// The request cannot be served as given (the keys of a transaction in several shards, a
    /// prefix delete across shards, a lease id of a shard the cluster does not have): change it.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No store node is known to this node: none runs, or the store has not formed yet.
    /// Nothing was applied. Start nodes with `--roles store` (the store forms once
    /// `bootstrap_expect` of them are up), or wait for them.
    #[error(
        "shard {shard}: no store node is known ({detail}): the store runs on nodes started with `--roles store`, and forms once `bootstrap_expect` of them are up"
    )]
    NoStore {
        /// The shard.
        shard: u16,
        /// What was tried.
        detail: String,
    },
    /// Store nodes are known but none answered as the shard's leader in time (an election, a
    /// minority partition). Nothing was applied: retry later.
    #[error("shard {shard}: no leader answered after {attempts} attempts ({last}); nothing was applied: retry later")]
    NoLeader {
        /// The shard.
        shard: u16,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The write may or may not have been applied (its answer was lost): read what it wrote
    /// before repeating it, unless repeating it is safe.
    #[error("{}the outcome is unknown ({detail}): read the keys before repeating the write", shard.map(|s| format!("shard {s}: ")).unwrap_or_default())]
    Uncertain {
        /// The shard, when known (not when the node the write went through did not answer).
        shard: Option<u16>,
        /// What happened.
        detail: String,
    },
    /// The shard refused the request; nothing changed (a lease that does not exist, a compacted
    /// revision, a key or value over its limit, a lease that exists already).
    #[error("shard {shard}: {detail}")]
    Refused {
        /// The shard.
        shard: u16,
        /// Why.
        detail: String,
    },
    /// The node the request went through did not answer, or answered nothing in time.
    #[error("the node did not answer: {0}")]
    Unavailable(String),
}

impl From<super::StoreClientError> for KvError {
    fn from(e: super::StoreClientError) -> Self {
        use super::StoreClientError as E;
        match e {
            E::NoReplica { shard } => KvError::NoStore {
                shard,
                detail: "no store node among this node's members".into(),
            },
            E::NoLeader {
                shard,
                attempts,
                last,
            } => KvError::NoLeader {
                shard,
                attempts,
                last,
            },
            E::Uncertain { shard, detail } => KvError::Uncertain {
                shard: Some(shard),
                detail,
            },
            E::Refused { shard, detail } => KvError::Refused { shard, detail },
        }
    }
}

/// The status store through one node's gateway. Cheap to clone.
///
/// Every request waits at most 30 s (finding a shard's leader and retrying where that is safe
/// included) and then fails with [`KvError::Unavailable`]; a cluster whose store has not formed
/// yet answers within that time once it has. [`ClusterNode::store_ready`](crate::node::ClusterNode::store_ready)
/// waits for the store first.
#[derive(Clone, Debug)]
pub struct Kv {
    transport: Node,
    gateway: RemoteRef,
}

impl Kv {
    /// The store through the gateway of node `node`, reached over `transport`.
    pub fn through(transport: Node, node: &str) -> Kv {
        Kv {
            gateway: transport.actor(node, STORE),
            transport,
        }
    }

    async fn call<M>(&self, msg: M) -> Result<M::Result, KvError>
    where
        M: crate::RemoteMessage,
        M::Result: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        self.gateway
            .ask(msg, PATIENCE)
            .await
            .map_err(|e| KvError::Unavailable(e.to_string()))
    }

    /// As [`Kv::call`], for a write: a request that may have reached the gateway and got no
    /// answer (a timeout, a connection dropped while waiting, a handler that failed) may have
    /// been applied, so it is [`KvError::Uncertain`]; only one that was certainly not taken
    /// (no such actor, a full queue, not encodable) is [`KvError::Unavailable`].
    async fn call_write<M>(&self, msg: M) -> Result<M::Result, KvError>
    where
        M: crate::RemoteMessage,
        M::Result: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        use crate::RemoteAskError as E;
        self.gateway.ask(msg, PATIENCE).await.map_err(|e| match e {
            E::NoSuchActor(_) | E::QueueFull(_) | E::Encode(_) => {
                KvError::Unavailable(e.to_string())
            }
            other => KvError::Uncertain {
                shard: None,
                detail: format!("no answer from the node the write went through: {other}"),
            },
        })
    }

    /// Applies a write (put, delete, transaction, lease grant or revoke). A write the state
    /// machine refused (a lease that does not exist, a lease id taken) is an error,
    /// [`KvError::Refused`], never an `Ok` carrying the refusal. A transaction whose comparisons
    /// failed is not refused: its response says `succeeded: false`.
    ///
    /// # Errors
    /// [`KvError`].
    pub async fn write(&self, request: Request) -> Result<Applied, KvError> {
        self.call_write(KvWrite(request)).await?
    }

    /// Puts `key`; returns the shard's revision after it.
    ///
    /// # Errors
    /// [`KvError`].
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<Revision, KvError> {
        let put = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease: None,
            prev_kv: false,
        };
        Ok(self.write(Request::Put(put)).await?.revision)
    }

    /// Forgets the change history before `revision` of the shard holding `key`'s group
    /// (revisions are per shard; watches from before it then fail with `Compacted`).
    ///
    /// # Errors
    /// [`KvError`]: among them a revision beyond the shard's, or before its last compaction.
    pub async fn compact(&self, key: &[u8], revision: Revision) -> Result<(), KvError> {
        let applied = self
            .call_write(KvCompact {
                key: key.to_vec(),
                revision,
            })
            .await??;
        let _ = applied;
        Ok(())
    }

    /// Reads (linearizable unless `serializable`).
    ///
    /// # Errors
    /// [`KvError`].
    pub async fn range(
        &self,
        range: RangeRequest,
        serializable: bool,
    ) -> Result<RangeResponse, KvError> {
        self.call(KvRead {
            range,
            serializable,
        })
        .await?
    }

    /// The key-value of `key`, linearizable.
    ///
    /// # Errors
    /// [`KvError`].
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, KvError> {
        let range = RangeRequest {
            key: key.to_vec(),
            ..RangeRequest::default()
        };
        Ok(self.range(range, false).await?.kvs.into_iter().next())
    }

    /// Deletes `key` (or the keys under it, with `prefix`); returns how many.
    ///
    /// # Errors
    /// [`KvError`].
    pub async fn delete(&self, key: &[u8], prefix: bool) -> Result<usize, KvError> {
        let del = DeleteRequest {
            key: key.to_vec(),
            prefix,
            prev_kv: false,
        };
        let applied = self.write(Request::Delete(del)).await?;
        Ok(match applied.response {
            Some(cadre_cluster::store::Response::Write { responses, .. }) => {
                match responses.first() {
                    Some(cadre_cluster::store::OpResponse::Delete { deleted, .. }) => *deleted,
                    _ => 0,
                }
            }
            _ => 0,
        })
    }

    /// A transaction (its keys in one shard).
    ///
    /// # Errors
    /// [`KvError`].
    pub async fn txn(&self, txn: TxnRequest) -> Result<Applied, KvError> {
        self.write(Request::Txn(txn)).await
    }

    /// Grants a lease of `ttl` in the shard of `group` (the group of keys it will carry, e.g.
    /// `nodes/n1`), with `shards` shards in the cluster; returns its id.
    ///
    /// # Errors
    /// [`KvError`].
    pub async fn grant(
        &self,
        ttl: Duration,
        group: &[u8],
        shards: u16,
    ) -> Result<LeaseId, KvError> {
        let shard = routing::lease_shard(group, shards);
        let id = routing::lease_id(shard, fastrand::u64(1..));
        let grant = Request::LeaseGrant {
            id,
            ttl_ms: ttl.as_millis().max(1) as u64,
        };
        match self.write(grant).await?.response {
            Some(cadre_cluster::store::Response::LeaseGranted { id: granted, .. })
                if granted == id =>
            {
                Ok(id)
            }
            other => Err(KvError::Refused {
                shard,
                detail: format!("the grant was answered with {other:?}"),
            }),
        }
    }

    /// Keeps a lease alive for another TTL; returns the TTL.
    ///
    /// # Errors
    /// [`KvError`] (an unknown or expired lease among them).
    pub async fn keep_alive(&self, id: LeaseId) -> Result<Duration, KvError> {
        let ms = self.call(KvKeepAlive(id)).await??;
        Ok(Duration::from_millis(ms))
    }

    /// Revokes a lease: its keys are deleted.
    ///
    /// # Errors
    /// [`KvError`].
    pub async fn revoke(&self, id: LeaseId) -> Result<Applied, KvError> {
        self.write(Request::LeaseRevoke { id }).await
    }

    /// How long a lease has left, and its TTL.
    ///
    /// # Errors
    /// [`KvError`].
    pub async fn time_to_live(&self, id: LeaseId) -> Result<(Duration, Duration), KvError> {
        let (left, ttl) = self.call(KvTimeToLive(id)).await??;
        Ok((Duration::from_millis(left), Duration::from_millis(ttl)))
    }

    /// Watches the keys under `prefix` from revision `start` (0: the next change).
    ///
    /// # Errors
    /// [`KvError`].
    pub async fn watch(&self, prefix: &[u8], start: Revision) -> Result<KvWatchStream, KvError> {
        let (tx, rx) = mpsc::channel(1024);
        let inbox = cadre_runtime::spawn("kv-watch", 1024, WatchInbox { tx });
        let name = format!("kv.watcher.{:016x}", fastrand::u64(..));
        self.transport
            .expose(&name, inbox)
            .accept::<KvWatchUpdate>()
            .accept::<KvWatchEnded>();
        let watch = KvWatch {
            prefix: prefix.to_vec(),
            start,
            node: self.transport.id().to_string(),
            name: name.clone(),
        };
        if let Err(e) = self.call(watch).await.and_then(|r| r) {
            self.transport.unexpose(&name);
            return Err(e);
        }
        Ok(KvWatchStream {
            rx,
            transport: self.transport.clone(),
            name,
        })
    }
}

/// Hands updates to the stream, waiting (its mailbox filling, then the sender's connection)
/// while the stream's reader is behind: nothing is dropped and nothing waits unbounded.
struct WatchInbox {
    tx: mpsc::Sender<KvWatchUpdate>,
}

impl Actor for WatchInbox {
    type Context = Context<Self>;

    /// Ends (normally) once its stream is dropped, instead of lingering until the node stops.
    fn started(&mut self, ctx: &mut Context<Self>) {
        super::watch::stop_with_receiver(self.tx.clone(), self, ctx);
    }
}

impl Handler<KvWatchUpdate> for WatchInbox {
    type Result = ();
    fn handle(&mut self, m: KvWatchUpdate, ctx: &mut Context<Self>) {
        let tx = self.tx.clone();
        ctx.wait(
            async move { tx.send(m).await.is_ok() }
                .into_actor(self)
                .map(|open, _, ctx| {
                    if !open {
                        ctx.stop();
                    }
                }),
        );
    }
}

impl Handler<KvWatchEnded> for WatchInbox {
    type Result = ();
    fn handle(&mut self, m: KvWatchEnded, ctx: &mut Context<Self>) {
        tracing::debug!(shard = m.shard, reason = %m.reason, "a watch ended");
        // Gone with its senders: the stream ends (`None`) once it has taken what came before.
        ctx.stop();
    }
}

/// The updates of a [`Kv::watch`], each with its shard.
pub struct KvWatchStream {
    rx: mpsc::Receiver<KvWatchUpdate>,
    transport: Node,
    name: String,
}

impl KvWatchStream {
    /// The next update; `None` once the watch ended (one of its shards' watches could not go
    /// on, or the gateway's node is gone): list and watch again.
    pub async fn next(&mut self) -> Option<KvWatchUpdate> {
        self.rx.recv().await
    }
}

/// The updates as a stream (with `futures`' `StreamExt`: `while let Some(u) = watch.next().await`).
impl futures_core::Stream for KvWatchStream {
    type Item = KvWatchUpdate;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<KvWatchUpdate>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for KvWatchStream {
    fn drop(&mut self) {
        // The gateway's next send fails and ends its watches.
        self.transport.unexpose(&self.name);
    }
}
