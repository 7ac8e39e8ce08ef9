//! [`StoreClient`]: requests to a shard's replicas, following not-leader hints.
//!
//! # Retries
//! A write is retried on another replica only when it certainly was not applied: the replica
//! said it is not the leader, or the request was never sent (no connection). A write whose
//! reply was lost (a timeout, a connection dropped while waiting, a replica shutting down
//! after taking it) fails with [`StoreClientError::Uncertain`]:
//! it may or may not have been applied, and only the caller knows whether repeating it is
//! safe (a transaction comparing a mod revision is). Reads, keep-alives and time-to-live
//! queries are retried on any failure but a refusal.

use std::collections::HashMap;
use std::time::Duration;

use cadre_cluster::store::{LeaseId, RangeRequest, RangeResponse, Request, Revision};
use parking_lot::Mutex;

use super::replica::{replica_name, KeepAlive, Read, ReplicaError, TimeToLive, Write};
use super::storage::Applied;
use super::watch::StoreWatch;
use crate::{Node, RemoteAskError};

/// Why a store request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreClientError {
    /// No replica of the shard answered as leader within the client's patience.
    #[error("shard {shard}: no leader found after {attempts} attempts ({last})")]
    NoLeader {
        /// The shard.
        shard: u16,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// No replica of the shard is known: no store node is among the members (none runs, or
    /// the store has not formed yet). Nothing was sent.
    #[error("shard {shard}: no replica known")]
    NoReplica {
        /// The shard.
        shard: u16,
    },
    /// The write may or may not have been applied (its reply was lost).
    #[error("shard {shard}: the outcome is unknown: {detail}")]
    Uncertain {
        /// The shard.
        shard: u16,
        /// What happened.
        detail: String,
    },
    /// The shard refused it.
    #[error("shard {shard}: {detail}")]
    Refused {
        /// The shard.
        shard: u16,
        /// Why.
        detail: String,
    },
}

/// A client of the store's shards, usable from any node.
pub struct StoreClient {
    transport: Node,
    /// The nodes holding each shard's replicas.
    replicas: Mutex<HashMap<u16, Vec<String>>>,
    /// When `replicas` was last set.
    replicas_set: Mutex<Option<std::time::Instant>>,
    leaders: Mutex<HashMap<u16, String>>,
    timeout: Duration,
    attempts: u32,
}

impl StoreClient {
    /// A client over `transport`, knowing which nodes hold each shard.
    pub fn new(transport: Node, replicas: HashMap<u16, Vec<String>>) -> Self {
        StoreClient {
            transport,
            replicas: Mutex::new(replicas),
            replicas_set: Mutex::new(None),
            leaders: Mutex::new(HashMap::new()),
            timeout: Duration::from_secs(5),
            attempts: 40,
        }
    }

    /// Waits at most `timeout` for each reply (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Replaces what the client knows of which nodes hold each shard.
    pub fn set_replicas(&self, replicas: HashMap<u16, Vec<String>>) {
        *self.replicas.lock() = replicas;
        *self.replicas_set.lock() = Some(std::time::Instant::now());
    }

    /// Whether the replicas were set more than `age` ago (or never).
    pub fn replicas_older_than(&self, age: Duration) -> bool {
        self.replicas_set.lock().is_none_or(|t| t.elapsed() > age)
    }

    /// The node to try for `shard` on attempt `n`: the known leader, else the replicas in turn.
    fn target(&self, shard: u16, n: u32) -> Option<String> {
        if let Some(l) = self.leaders.lock().get(&shard) {
            return Some(l.clone());
        }
        // Replicas in turn, starting from a reachable one.
        let replicas = self.replicas.lock();
        let nodes = replicas.get(&shard)?;
        nodes.get(n as usize % nodes.len().max(1)).cloned()
    }

    fn learn(&self, shard: u16, leader: Option<String>) {
        let mut leaders = self.leaders.lock();
        match leader {
            Some(l) => {
                leaders.insert(shard, l);
            }
            None => {
                leaders.remove(&shard);
            }
        }
    }

    /// Applies `request` through `shard`'s log; returns what it did.
    ///
    /// # Errors
    /// [`StoreClientError`].
    pub async fn write(&self, shard: u16, request: Request) -> Result<Applied, StoreClientError> {
        let mut last = String::new();
        for n in 0..self.attempts {
            let Some(node) = self.target(shard, n) else {
                if n == 0 {
                    return Err(StoreClientError::NoReplica { shard });
                }
                break;
            };
            if !self.transport.is_reachable(&node) {
                // Not sent at all: try another replica (it may be down, or not yet connected).
                last = format!("{node} unreachable");
                self.learn(shard, None);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let replica = self.transport.actor(&node, &replica_name(shard));
            match replica.ask(Write(request.clone()), self.timeout).await {
                Ok(Ok(applied)) => {
                    self.learn(shard, Some(node));
                    return Ok(applied);
                }
                Ok(Err(ReplicaError::NotLeader(leader))) => {
                    last = self.follow(shard, &node, leader).await;
                }
                // Refused before the log (only reads are, today).
                Ok(Err(ReplicaError::NotVoter(leader))) => {
                    last = self.elsewhere(shard, &node, leader);
                }
                Ok(Err(e @ (ReplicaError::LeaseNotFound(_) | ReplicaError::Refused(_)))) => {
                    return Err(StoreClientError::Refused {
                        shard,
                        detail: e.to_string(),
                    })
                }
                // Raft failed after taking the request (the replica is shutting down, …): the
                // entry may still be committed.
                Ok(Err(e @ ReplicaError::Raft(_))) => {
                    self.learn(shard, None);
                    return Err(StoreClientError::Uncertain {
                        shard,
                        detail: e.to_string(),
                    });
                }
                Err(RemoteAskError::NoSuchActor(_) | RemoteAskError::QueueFull(_)) => {
                    last = format!("{node} did not take it");
                    self.learn(shard, None);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    self.learn(shard, None);
                    return Err(StoreClientError::Uncertain {
                        shard,
                        detail: e.to_string(),
                    });
                }
            }
        }
        Err(self.no_leader(shard, last))
    }

    /// Watches the keys of `shard` under `prefix` from revision `start` (0: from the next
    /// change), served by any replica and resumed on another when it fails.
    ///
    /// # Errors
    /// No replica could start it, or `start` is compacted away.
    pub async fn watch(
        &self,
        shard: u16,
        prefix: &[u8],
        start: Revision,
    ) -> Result<StoreWatch, StoreClientError> {
        let replicas = self
            .replicas
            .lock()
            .get(&shard)
            .cloned()
            .unwrap_or_default();
        StoreWatch::start_on(
            self.transport.clone(),
            shard,
            prefix.to_vec(),
            start,
            replicas,
        )
        .await
    }

    /// Keeps lease `id` alive for another TTL (it lives in shard
    /// [`shard_of_lease`](cadre_cluster::store::routing::shard_of_lease)`(id)`); returns the
    /// TTL. Safe to repeat: retried until the leader answers.
    ///
    /// # Errors
    /// [`StoreClientError::Refused`] for an unknown (or expired) lease, or no leader.
    pub async fn keep_alive(&self, shard: u16, id: LeaseId) -> Result<Duration, StoreClientError> {
        self.repeatable(shard, true, || KeepAlive(id))
            .await
            .map(Duration::from_millis)
    }

    /// How long lease `id` has left, and its TTL.
    ///
    /// # Errors
    /// As [`StoreClient::keep_alive`].
    pub async fn time_to_live(
        &self,
        shard: u16,
        id: LeaseId,
    ) -> Result<(Duration, Duration), StoreClientError> {
        self.repeatable(shard, true, || TimeToLive(id))
            .await
            .map(|(left, ttl)| (Duration::from_millis(left), Duration::from_millis(ttl)))
    }

    /// Takes a not-leader answer from `node`: remembers the leader it names, or waits a moment
    /// for an election when it names none. Returns what happened, for the error if all fails.
    async fn follow(&self, shard: u16, node: &str, leader: Option<String>) -> String {
        let known = leader.is_some();
        self.learn(shard, leader);
        if !known {
            tokio::time::sleep(Duration::from_millis(50)).await; // an election
        }
        format!("{node} is not the leader")
    }

    /// `node`'s replica is not a voter of the shard's group: the leader next if it knows one,
    /// else the next replica, at once (no election to wait for).
    fn elsewhere(&self, shard: u16, node: &str, leader: Option<String>) -> String {
        if leader.is_some() {
            self.learn(shard, leader);
        }
        format!("{node} is not a voter of shard {shard}")
    }

    fn no_leader(&self, shard: u16, last: String) -> StoreClientError {
        StoreClientError::NoLeader {
            shard,
            attempts: self.attempts,
            last,
        }
    }

    /// Sends a request that is safe to repeat, following not-leader hints and retrying on any
    /// failure but a refusal; `leader_only` requests teach the client the leader when answered.
    async fn repeatable<M, T>(
        &self,
        shard: u16,
        leader_only: bool,
        make: impl Fn() -> M,
    ) -> Result<T, StoreClientError>
    where
        M: crate::RemoteMessage<Result = Result<T, ReplicaError>>,
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        let mut last = String::new();
        for n in 0..self.attempts {
            let Some(node) = self.target(shard, n) else {
                if n == 0 {
                    return Err(StoreClientError::NoReplica { shard });
                }
                break;
            };
            let replica = self.transport.actor(&node, &replica_name(shard));
            match replica.ask(make(), self.timeout).await {
                Ok(Ok(r)) => {
                    if leader_only {
                        self.learn(shard, Some(node));
                    }
                    return Ok(r);
                }
                Ok(Err(ReplicaError::NotLeader(leader))) => {
                    last = self.follow(shard, &node, leader).await;
                }
                Ok(Err(ReplicaError::NotVoter(leader))) => {
                    last = self.elsewhere(shard, &node, leader);
                }
                Ok(Err(ReplicaError::Raft(e))) => last = e,
                Ok(Err(e)) => {
                    return Err(StoreClientError::Refused {
                        shard,
                        detail: e.to_string(),
                    })
                }
                Err(e) => {
                    last = e.to_string();
                    self.learn(shard, None);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(self.no_leader(shard, last))
    }

    /// Reads keys of `shard`: linearizable (through the leader) or serializable (any voter of
    /// its group).
    ///
    /// # Errors
    /// [`StoreClientError::NoLeader`] when no replica served it.
    pub async fn read(
        &self,
        shard: u16,
        range: RangeRequest,
        linearizable: bool,
    ) -> Result<RangeResponse, StoreClientError> {
        let read = || Read {
            range: range.clone(),
            linearizable,
        };
        self.repeatable(shard, linearizable, read).await
    }
}
