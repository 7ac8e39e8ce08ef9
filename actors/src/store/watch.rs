//! [`StoreWatch`]: a watch on a shard's keys, resumed on another replica when the one serving
//! it fails, so that the caller sees every change once, in revision order.

use std::collections::VecDeque;
use std::time::Duration;

use actix::prelude::*;
use cadre_cluster::store::{Revision, StoreError, WatchId, WatchUpdate};
use tokio::sync::mpsc;

use super::replica::{replica_name, WatchCancel, WatchEvents, WatchStart};
use super::StoreClientError;
use crate::Node;

/// Without a message (changes or progress) from the serving replica for this long, the watch
/// moves to another replica.
const SILENCE: Duration = Duration::from_secs(3);

/// How many messages wait for the watcher at most; beyond, one is dropped and the numbering
/// gap makes the watch start again after the last update delivered (nothing is lost).
const INBOX: usize = 1024;

/// Receives a watch's messages on the watcher's node.
struct Inbox {
    tx: mpsc::Sender<WatchEvents>,
}

impl Actor for Inbox {
    type Context = Context<Self>;

    /// Ends (normally) once its watch is dropped, instead of lingering until the node stops.
    fn started(&mut self, ctx: &mut Context<Self>) {
        stop_with_receiver(self.tx.clone(), self, ctx);
    }
}

impl Handler<WatchEvents> for Inbox {
    type Result = ();
    fn handle(&mut self, m: WatchEvents, ctx: &mut Context<Self>) {
        match self.tx.try_send(m) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }
}

/// Stops `actor` (normally) once the receiver of `tx` is dropped: for an inbox that hands what
/// it gets to a stream its owner reads.
pub(crate) fn stop_with_receiver<A, T>(tx: mpsc::Sender<T>, actor: &A, ctx: &mut Context<A>)
where
    A: Actor<Context = Context<A>>,
    T: Send + 'static,
{
    ctx.spawn(
        async move { tx.closed().await }
            .into_actor(actor)
            .map(|(), _, ctx| ctx.stop()),
    );
}

/// A watch of the keys under a prefix of one shard.
///
/// Updates come in revision order, every change of a revision together, none twice; when the
/// replica serving it stops answering (it went down, a message was lost on the way: updates
/// are numbered), the watch starts again on another replica from the revision after the last
/// one delivered. Progress notifications say how far the shard is when nothing changes.
pub struct StoreWatch {
    transport: Node,
    shard: u16,
    prefix: Vec<u8>,
    replicas: Vec<String>,
    inbox_name: String,
    rx: mpsc::Receiver<WatchEvents>,
    /// The serving replica and the watch id there.
    current: Option<(String, WatchId)>,
    next_seq: u64,
    /// The last revision delivered (changes or progress).
    last: Revision,
    ready: VecDeque<WatchUpdate>,
    turn: usize,
}

impl StoreWatch {
    /// Starts a watch of `shard`'s keys under `prefix` from `start` (0: the next change),
    /// served by the first reachable of `replicas` (nodes holding the shard), in turn.
    ///
    /// # Errors
    /// As [`StoreClient::watch`](super::StoreClient::watch).
    pub async fn start_on(
        transport: Node,
        shard: u16,
        prefix: Vec<u8>,
        start: Revision,
        replicas: Vec<String>,
    ) -> Result<StoreWatch, StoreClientError> {
        let (tx, rx) = mpsc::channel(INBOX);
        let inbox = cadre_runtime::spawn("store-watch", 4096, Inbox { tx });
        let inbox_name = format!("store.watcher.{:016x}", fastrand::u64(..));
        transport.expose(&inbox_name, inbox).accept::<WatchEvents>();
        let mut watch = StoreWatch {
            transport,
            shard,
            prefix,
            replicas,
            inbox_name,
            rx,
            current: None,
            next_seq: 1,
            last: start.saturating_sub(1),
            ready: VecDeque::new(),
            turn: 0,
        };
        watch.subscribe(start).await?;
        Ok(watch)
    }

    /// (Re)starts the watch from `from` on a reachable replica.
    async fn subscribe(&mut self, from: Revision) -> Result<(), StoreClientError> {
        if let Some((node, id)) = self.current.take() {
            let _ = self
                .transport
                .actor(&node, &replica_name(self.shard))
                .tell(WatchCancel(id));
        }
        if self.replicas.is_empty() {
            return Err(StoreClientError::NoReplica { shard: self.shard });
        }
        let mut last = String::new();
        for _ in 0..40 {
            let node = self.replicas[self.turn % self.replicas.len()].clone();
            self.turn += 1;
            if !self.transport.is_reachable(&node) {
                last = format!("{node} unreachable");
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
            let start = WatchStart {
                prefix: self.prefix.clone(),
                start: from,
                node: self.transport.id().to_string(),
                name: self.inbox_name.clone(),
            };
            let replica = self.transport.actor(&node, &replica_name(self.shard));
            match replica.ask(start, Duration::from_secs(5)).await {
                Ok(Ok((id, started))) => {
                    self.current = Some((node, id));
                    self.next_seq = 1;
                    self.last = self.last.max(started - 1);
                    return Ok(());
                }
                Ok(Err(e @ StoreError::Compacted { .. })) => {
                    return Err(StoreClientError::Refused {
                        shard: self.shard,
                        detail: e.to_string(),
                    })
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(StoreClientError::NoLeader {
            shard: self.shard,
            attempts: 40,
            last,
        })
    }

    /// The next update.
    ///
    /// # Errors
    /// The watch could not be resumed (no replica reachable), or its next revision was
    /// compacted away meanwhile.
    pub async fn next(&mut self) -> Result<WatchUpdate, StoreClientError> {
        loop {
            if let Some(update) = self.ready.pop_front() {
                match &update {
                    WatchUpdate::Changes { revision, .. } if *revision <= self.last => continue,
                    WatchUpdate::Changes { revision, .. } => self.last = *revision,
                    WatchUpdate::Progress { revision } => {
                        self.last = self.last.max(*revision);
                    }
                }
                return Ok(update);
            }
            match tokio::time::timeout(SILENCE, self.rx.recv()).await {
                Ok(Some(m)) => {
                    let Some((_, id)) = &self.current else {
                        continue;
                    };
                    if m.watch != *id {
                        continue; // from a watch given up
                    }
                    if m.seq != self.next_seq {
                        // Something was lost on the way: start again after what we have.
                        self.subscribe(self.last + 1).await?;
                        continue;
                    }
                    self.next_seq += 1;
                    self.ready.extend(m.updates);
                }
                Ok(None) => {
                    return Err(StoreClientError::NoLeader {
                        shard: self.shard,
                        attempts: 0,
                        last: "the watch's inbox closed".into(),
                    })
                }
                Err(_) => self.subscribe(self.last + 1).await?,
            }
        }
    }
}

impl Drop for StoreWatch {
    fn drop(&mut self) {
        if let Some((node, id)) = self.current.take() {
            let _ = self
                .transport
                .actor(&node, &replica_name(self.shard))
                .tell(WatchCancel(id));
        }
        self.transport.unexpose(&self.inbox_name);
    }
}
