//! The agent actor: drives the [`Reporter`] and the [`CommandBook`] against the store, and
//! passes every event it sees through the [`Chain`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cadre_cluster::agent::commands::{self, CommandBook};
use cadre_cluster::agent::reporter::{self, Reporter, ReporterConfig};
use cadre_cluster::agent::{
    self as records, CommandResult, Load, ResultState, RunState, StatusRecord, RECORD_VERSION,
};
use cadre_cluster::store::{
    CmpOp, Compare, CompareTarget, DeleteRequest, LeaseId, Op, OpResponse, PutRequest,
    RangeRequest, Request, Response, Revision, TxnRequest, WatchUpdate,
};
use cadre_runtime::SupervisionEvent;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::chain::{AgentEvent, Chain, ChainCx, Reply};
use super::handlers::{AuditLog, Board, CommandExecutor, FaultReporter, StatusHandler};
use super::load::{hostname, HostSampler};
use super::{now_ms, AgentDeps};
use crate::node::view::ClusterEvent;
use crate::store::{Kv, KvError};

/// The longest wait between attempts to reach the store.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How long the goodbye (the `stopping` record and the lease's revocation) may take.
pub(crate) const FAREWELL: Duration = Duration::from_secs(3);

/// What reaches the agent from its subscriptions.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum Incoming {
    Cluster(ClusterEvent),
    Supervision(SupervisionEvent),
    /// An update of the command watch of sync `round`.
    Watch {
        round: u64,
        update: WatchUpdate,
    },
    /// A command watch of sync `round` ended.
    WatchEnded {
        round: u64,
    },
}

/// A broadcast receiver as a stream; a subscriber that fell behind logs how much it missed.
fn broadcast_stream<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
    what: &'static str,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, move |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(item) => return Some((item, rx)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, what, "the agent fell behind on events")
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// The node agent. One per node, a child of the node's root.
pub(crate) struct Agent {
    deps: AgentDeps,
    reporter: Reporter,
    book: CommandBook,
    chain: Chain,
    board: Arc<Mutex<Board>>,
    host: HostSampler,
    started: Instant,
    incarnation: u64,
    state_since_ms: u64,
    /// Stop commands whose recorded result stops the node.
    stops: HashSet<String>,
    /// The current command sync (listing, then watches); older watches' items are ignored.
    round: u64,
    synced: bool,
    sync_failures: u32,
    /// The store was reachable once (an outage after that is worth a warning).
    reached: bool,
    /// The runtime's counters at the last record, and when.
    counters: (cadre_runtime::stats::Snapshot, Instant),
    /// The command watches of the current round (cancelled when a new round starts).
    watches: Vec<SpawnHandle>,
    /// The host's name, read once.
    hostname: String,
}

impl Agent {
    pub(crate) fn new(deps: AgentDeps) -> Agent {
        let board = Arc::new(Mutex::new(Board::default()));
        let mut factories: Vec<super::HandlerFactory> = Vec::new();
        factories.push(Arc::new(|| Box::new(AuditLog)));
        factories.push(Arc::new(|| Box::<FaultReporter>::default()));
        let b = board.clone();
        factories.push(Arc::new(move || {
            Box::new(StatusHandler { board: b.clone() })
        }));
        factories.extend(deps.handlers.iter().cloned());
        let (root, workers, log) = (
            deps.node.root().clone(),
            deps.workers.clone(),
            deps.log.clone(),
        );
        factories.push(Arc::new(move || {
            Box::new(CommandExecutor {
                root: root.clone(),
                workers: workers.clone(),
                log: log.clone(),
            })
        }));
        let config = ReporterConfig {
            period: deps.config.period,
            ttl: deps.config.ttl,
            max_backoff: MAX_BACKOFF.max(deps.config.period),
        };
        Agent {
            reporter: Reporter::new(config),
            book: CommandBook::new(
                deps.node.name(),
                &format!("{}-{:016x}", deps.node.started_ms(), fastrand::u64(..)),
            ),
            chain: Chain::new(&factories),
            board,
            host: HostSampler::new(),
            started: Instant::now(),
            incarnation: deps.node.started_ms(),
            state_since_ms: now_ms(),
            stops: HashSet::new(),
            round: 0,
            synced: false,
            sync_failures: 0,
            reached: false,
            counters: (cadre_runtime::stats::snapshot(), Instant::now()),
            watches: Vec::new(),
            hostname: hostname(),
            deps,
        }
    }

    fn kv(&self) -> Kv {
        self.deps.node.kv()
    }

    fn me(&self) -> &str {
        self.deps.node.name()
    }

    /// Passes `event` through the chain; carries out a state it asks for. Returns the chain's
    /// context (a command's answer). A handler that keeps panicking fails the agent.
    fn dispatch(&mut self, event: AgentEvent, ctx: &mut Context<Self>) -> ChainCx {
        let mut cx = ChainCx::default();
        if let Err(escalated) = self.chain.dispatch(&event, &mut cx, Instant::now()) {
            tracing::error!(%escalated, "the agent's chain escalates: the agent fails");
            panic!("{escalated}");
        }
        if let Some(state) = cx.take_state() {
            self.set_state(state, ctx);
        }
        cx
    }

    fn set_state(&mut self, state: RunState, ctx: &mut Context<Self>) {
        if state == self.reporter.state() {
            return;
        }
        self.state_since_ms = now_ms();
        self.feed_reporter(reporter::Input::State(state), ctx);
        self.dispatch(AgentEvent::StateChanged(state), ctx);
    }

    // ---- the status reporter ----

    fn feed_reporter(&mut self, input: reporter::Input, ctx: &mut Context<Self>) {
        for effect in self.reporter.handle(input) {
            self.apply_reporter(effect, ctx);
        }
    }

    fn apply_reporter(&mut self, effect: reporter::Effect, ctx: &mut Context<Self>) {
        match effect {
            reporter::Effect::Grant { ttl } => {
                let (kv, group, shards) = (
                    self.kv(),
                    format!("nodes/{}", self.me()),
                    self.deps.config.shards,
                );
                let grant = async move { kv.grant(ttl, group.as_bytes(), shards).await };
                ctx.spawn(grant.into_actor(self).map(|result, act, ctx| {
                    let input = match result {
                        Ok(id) => reporter::Input::Granted(id),
                        Err(e) => reporter::Input::Failed {
                            reason: e.to_string(),
                            lease_lost: false,
                        },
                    };
                    act.feed_reporter(input, ctx);
                }));
            }
            reporter::Effect::Report { lease, state } => {
                let record = self.record(state);
                // Bounded well within the lease's TTL: a report that hangs is a failed one (the
                // lease may be gone: the next attempt grants a new one).
                let (limit, deps) = (self.deps.config.ttl / 2, self.deps.clone());
                let report = async move {
                    match tokio::time::timeout(limit, report(deps, lease, record)).await {
                        Ok(done) => done,
                        Err(_) => Err((format!("the report took longer than {limit:?}"), true)),
                    }
                };
                ctx.spawn(report.into_actor(self).map(move |result, act, ctx| {
                    let input = match result {
                        Ok(()) => {
                            tracing::debug!(state = state.as_str(), lease, "status reported");
                            reporter::Input::Reported
                        }
                        Err((reason, lease_lost)) => reporter::Input::Failed { reason, lease_lost },
                    };
                    act.feed_reporter(input, ctx);
                }));
            }
            reporter::Effect::Schedule(after) => {
                ctx.run_later(after, |act, ctx| {
                    act.feed_reporter(reporter::Input::Tick, ctx)
                });
            }
            reporter::Effect::Reachability(why) => {
                match &why {
                    None => {
                        self.reached = true;
                        tracing::info!(
                            period = ?self.deps.config.period,
                            ttl = ?self.deps.config.ttl,
                            "reporting this node's status to the store"
                        )
                    }
                    // At start the store may still be forming: no cause for alarm yet.
                    Some(reason) if !self.reached => tracing::info!(
                        %reason,
                        "waiting for the store to report this node's status (it forms once \
                         `bootstrap_expect` nodes started with `--roles store` are up)"
                    ),
                    Some(reason) => tracing::warn!(
                        %reason,
                        "the store is unreachable: this node's status is not reported; \
                         retrying with backoff"
                    ),
                }
                self.dispatch(AgentEvent::StoreReachability(why), ctx);
            }
            reporter::Effect::Farewell { .. } => {} // carried out by the Farewell handler
        }
    }

    /// The record as of now, with `state`; the parts that need asking are filled in by
    /// [`report`].
    fn record(&mut self, state: RunState) -> StatusRecord {
        let host = self.host.sample();
        let restarts = self.board.lock().restarts_within(Instant::now());
        let (now, at) = (cadre_runtime::stats::snapshot(), Instant::now());
        let window = now.since(&self.counters.0, at.duration_since(self.counters.1));
        let alive = now.gauge(cadre_runtime::stats::Metric::Alive);
        self.counters = (now, at);
        let node = &self.deps.node;
        StatusRecord {
            version: RECORD_VERSION,
            node: node.name().to_owned(),
            incarnation: self.incarnation,
            cluster: self.deps.config.cluster.clone(),
            addr: Some(node.addr()),
            admin_addr: None,
            services: Vec::new(),
            roles: self.deps.config.roles.clone(),
            hostname: self.hostname.clone(),
            pid: std::process::id(),
            cadre_version: crate::VERSION.into(),
            state,
            state_since_ms: self.state_since_ms,
            reported_ms: now_ms(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            period_ms: self.deps.config.period.as_millis() as u64,
            load: Load {
                process_cpu_percent: host.process_cpu_percent,
                host_cpu_percent: host.host_cpu_percent,
                rss_bytes: host.rss_bytes,
                host_available_bytes: host.host_available_bytes,
                restarts_last_minute: restarts,
                local_msgs_per_sec: Some(window.local_per_sec),
                remote_in_per_sec: Some(window.remote_in_per_sec),
                remote_out_per_sec: Some(window.remote_out_per_sec),
                ask_p50_us: window.ask_p50_us,
                ask_p99_us: window.ask_p99_us,
                actors_alive: Some(alive),
                ..Load::default()
            },
        }
    }

    // ---- commands ----

    fn feed_book(&mut self, input: commands::Input, ctx: &mut Context<Self>) {
        for effect in self.book.handle(input, now_ms()) {
            self.apply_book(effect, ctx);
        }
    }

    fn apply_book(&mut self, effect: commands::Effect, ctx: &mut Context<Self>) {
        match effect {
            commands::Effect::Claim { result } => {
                let (kv, id) = (self.kv(), result.id.clone());
                let key = records::result_key(self.me(), &result.id).into_bytes();
                let claim = async move {
                    let txn = TxnRequest {
                        compare: vec![Compare {
                            key: key.clone(),
                            op: CmpOp::Eq,
                            target: CompareTarget::Version(0),
                        }],
                        success: vec![put(key.clone(), &result)?],
                        // Lost: read what is there (this agent's own claim whose answer was
                        // lost, an earlier agent's, or a final result).
                        failure: vec![Op::Range(RangeRequest {
                            key,
                            ..RangeRequest::default()
                        })],
                    };
                    let applied = kv.txn(txn).await.map_err(|e| e.to_string())?;
                    match applied.response {
                        Some(Response::Write {
                            succeeded: true, ..
                        }) => Ok((true, None)),
                        Some(Response::Write { responses, .. }) => {
                            let found = match responses.into_iter().next() {
                                Some(OpResponse::Range(r)) => {
                                    r.kvs.into_iter().next().and_then(|kv| {
                                        let rev = kv.mod_revision;
                                        records::decode::<CommandResult>(&kv.value)
                                            .ok()
                                            .map(|r| (r, rev))
                                    })
                                }
                                _ => None,
                            };
                            Ok((false, found))
                        }
                        other => Err(format!("unexpected answer {other:?}")),
                    }
                };
                ctx.spawn(claim.into_actor(self).map(move |claimed, act, ctx| {
                    let input = match claimed {
                        Ok((won, found)) => commands::Input::Claimed { id, won, found },
                        Err(reason) => {
                            tracing::debug!(%id, %reason, "a command's claim was not written; retrying");
                            commands::Input::WriteFailed { id }
                        }
                    };
                    act.feed_book(input, ctx);
                }));
            }
            commands::Effect::Run { command } => {
                let id = command.id.clone();
                if command.kind == records::CommandKind::Stop {
                    self.stops.insert(id.clone());
                }
                let mut cx = self.dispatch(AgentEvent::Command(command), ctx);
                match cx.take_reply() {
                    Some(Reply::Now(result)) => self.finished(id, result, ctx),
                    Some(Reply::Later(pending)) => {
                        ctx.spawn(
                            pending
                                .into_actor(self)
                                .map(move |result, act, ctx| act.finished(id, result, ctx)),
                        );
                    }
                    None => self.finished(
                        id,
                        Err("no handler in this node's chain answered the command".into()),
                        ctx,
                    ),
                }
            }
            commands::Effect::Record {
                result,
                delete,
                only_if,
            } => {
                let kv = self.kv();
                let key = records::result_key(self.me(), &result.id).into_bytes();
                let record = result.clone();
                let write = async move {
                    let compare = only_if
                        .map(|rev| Compare {
                            key: key.clone(),
                            op: CmpOp::Eq,
                            target: CompareTarget::ModRevision(rev),
                        })
                        .into_iter()
                        .collect();
                    let mut success = vec![put(key, &record)?];
                    if let Some(key) = delete {
                        success.push(Op::Delete(DeleteRequest {
                            key,
                            prefix: false,
                            prev_kv: false,
                        }));
                    }
                    let txn = TxnRequest {
                        compare,
                        success,
                        failure: Vec::new(),
                    };
                    // A failed comparison: the result moved on meanwhile; nothing to record.
                    succeeded(kv.txn(txn).await).map(|_| ())
                };
                ctx.spawn(write.into_actor(self).map(move |written, act, ctx| match written {
                    Ok(()) => act.recorded(result, ctx),
                    Err(reason) => {
                        tracing::debug!(id = %result.id, %reason, "a command's result was not written; retrying");
                        act.feed_book(commands::Input::WriteFailed { id: result.id }, ctx);
                    }
                }));
            }
        }
    }

    fn finished(&mut self, id: String, result: Result<String, String>, ctx: &mut Context<Self>) {
        let (ok, message) = match result {
            Ok(m) => (true, m),
            Err(m) => (false, m),
        };
        if !ok {
            self.stops.remove(&id);
        }
        self.feed_book(commands::Input::Finished { id, ok, message }, ctx);
    }

    fn recorded(&mut self, result: CommandResult, ctx: &mut Context<Self>) {
        self.feed_book(
            commands::Input::Written {
                id: result.id.clone(),
            },
            ctx,
        );
        let stop = self.stops.remove(&result.id) && result.state == ResultState::Ok;
        self.dispatch(AgentEvent::CommandDone(result), ctx);
        if stop {
            self.deps.node.request_stop();
        }
    }

    /// Lists the node's results and commands, feeds them to the book, then watches both
    /// command prefixes from the revision after the listing. Retried with backoff.
    fn sync(&mut self, ctx: &mut Context<Self>) {
        self.round += 1;
        let round = self.round;
        let (kv, me) = (self.kv(), self.me().to_owned());
        let listing = async move {
            let results = list(&kv, &records::results_prefix(&me)).await?;
            let own = list(&kv, &records::commands_prefix(&me)).await?;
            let all = list(&kv, records::ALL_COMMANDS_PREFIX).await?;
            let own_watch = kv
                .watch(records::commands_prefix(&me).as_bytes(), own.1 + 1)
                .await?;
            let all_watch = kv
                .watch(records::ALL_COMMANDS_PREFIX.as_bytes(), all.1 + 1)
                .await?;
            Ok::<_, KvError>((results.0, own.0, all.0, own_watch, all_watch))
        };
        ctx.spawn(listing.into_actor(self).map(move |listed, act, ctx| {
            if round != act.round {
                return;
            }
            let (results, own, all, own_watch, all_watch) = match listed {
                Ok(listed) => listed,
                Err(e) => {
                    act.sync_failures += 1;
                    let wait = (Duration::from_millis(250) * (1 << act.sync_failures.min(6)))
                        .min(MAX_BACKOFF);
                    tracing::debug!(error = %e, ?wait, "cannot list this node's commands yet");
                    ctx.run_later(wait, |act, ctx| act.sync(ctx));
                    return;
                }
            };
            act.sync_failures = 0;
            for kv in results {
                match records::decode::<CommandResult>(&kv.value) {
                    Ok(r) => act.feed_book(
                        commands::Input::Recorded {
                            id: r.id,
                            state: r.state,
                            command: r.command,
                            revision: kv.mod_revision,
                        },
                        ctx,
                    ),
                    Err(e) => tracing::warn!(
                        key = %String::from_utf8_lossy(&kv.key), error = %e,
                        "an unreadable command result; ignored"
                    ),
                }
            }
            for kv in own.into_iter().chain(all) {
                act.feed_book(
                    commands::Input::Seen {
                        key: kv.key,
                        value: kv.value,
                    },
                    ctx,
                );
            }
            for handle in act.watches.drain(..) {
                ctx.cancel_future(handle);
            }
            for watch in [own_watch, all_watch] {
                let updates = watch
                    .map(move |u| Incoming::Watch {
                        round,
                        update: u.update,
                    })
                    .chain(futures_util::stream::once(async move {
                        Incoming::WatchEnded { round }
                    }));
                act.watches.push(ctx.add_stream(updates));
            }
            if !act.synced {
                act.synced = true;
                if act.reporter.state() == RunState::Starting {
                    act.set_state(RunState::Normal, ctx);
                }
            }
        }));
    }
}

/// Lists the keys under `prefix`, linearizably, with the shard's revision.
async fn list(
    kv: &Kv,
    prefix: &str,
) -> Result<(Vec<cadre_cluster::store::KeyValue>, Revision), KvError> {
    let range = RangeRequest {
        key: prefix.as_bytes().to_vec(),
        prefix: true,
        ..RangeRequest::default()
    };
    let answer = kv.range(range, false).await?;
    Ok((answer.kvs, answer.revision))
}

fn put(key: Vec<u8>, result: &CommandResult) -> Result<Op, String> {
    Ok(Op::Put(PutRequest {
        key,
        value: records::encode(result).map_err(|e| e.to_string())?,
        lease: None,
        prev_kv: false,
    }))
}

/// Whether a transaction's comparisons held, or why it was not applied.
fn succeeded(applied: Result<crate::store::storage::Applied, KvError>) -> Result<bool, String> {
    match applied.map_err(|e| e.to_string())?.response {
        Some(Response::Write { succeeded, .. }) => Ok(succeeded),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// Keeps `lease` alive, fills in what needs asking, and writes the record under the lease.
/// `Err((why, the lease may be gone))`.
async fn report(
    deps: AgentDeps,
    lease: LeaseId,
    mut record: StatusRecord,
) -> Result<(), (String, bool)> {
    let kv = deps.node.kv();
    kv.keep_alive(lease)
        .await
        .map_err(|e| (format!("keep-alive of lease {lease}: {e}"), true))?;
    record.services = deps
        .node
        .local_services()
        .await
        .into_iter()
        .map(|s| (s.name, s.addr))
        .collect();
    if let Some(workers) = &deps.workers {
        if let Some((size, held)) = workers.usage().await {
            let (size, held) = (size as u64, held as u64);
            record.load.tasks_held = held;
            record.load.workers_busy = held.min(size);
            record.load.workers_idle = size.saturating_sub(held);
        }
    }
    let value = records::encode(&record).map_err(|e| (e.to_string(), false))?;
    let put = PutRequest {
        key: records::status_key(&record.node).into_bytes(),
        value,
        lease: Some(lease),
        prev_kv: false,
    };
    kv.write(Request::Put(put))
        .await
        .map_err(|e| (format!("status write: {e}"), false))?;
    Ok(())
}

impl Actor for Agent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.add_stream(
            broadcast_stream(self.deps.node.events(), "cluster events").map(Incoming::Cluster),
        );
        ctx.add_stream(
            broadcast_stream(self.deps.runtime.subscribe(), "supervision events")
                .map(Incoming::Supervision),
        );
        self.feed_reporter(reporter::Input::Tick, ctx);
        // Failed command writes are retried every period, whatever the reports do.
        ctx.run_interval(self.deps.config.period, |act, ctx| {
            act.feed_book(commands::Input::Tick, ctx)
        });
        self.sync(ctx);
    }
}

impl StreamHandler<Incoming> for Agent {
    fn handle(&mut self, item: Incoming, ctx: &mut Context<Self>) {
        match item {
            Incoming::Cluster(e) => {
                self.dispatch(AgentEvent::Cluster(e), ctx);
            }
            Incoming::Supervision(e) => {
                self.dispatch(AgentEvent::Supervision(e), ctx);
            }
            Incoming::Watch { round, update } => {
                if round != self.round {
                    return;
                }
                if let WatchUpdate::Changes { events, .. } = update {
                    for event in events {
                        if event.kind == cadre_cluster::store::EventKind::Put {
                            let input = commands::Input::Seen {
                                key: event.kv.key,
                                value: event.kv.value,
                            };
                            self.feed_book(input, ctx);
                        }
                    }
                }
            }
            Incoming::WatchEnded { round } => {
                if round == self.round {
                    tracing::debug!("a command watch ended; listing and watching again");
                    self.round += 1; // the other watch of this round is dropped too
                    ctx.run_later(Duration::from_millis(200), |act, ctx| act.sync(ctx));
                }
            }
        }
    }

    // One subscription ending does not end the agent.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

/// Writes the `stopping` record and revokes the node's lease (its status goes at once).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Farewell;

impl Handler<Farewell> for Agent {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Farewell, _: &mut Context<Self>) -> Self::Result {
        let effects = self.reporter.handle(reporter::Input::Stop);
        let lease = effects.iter().find_map(|e| match e {
            reporter::Effect::Farewell { lease } => *lease,
            _ => None,
        });
        let record = self.record(RunState::Stopping);
        let deps = self.deps.clone();
        Box::pin(
            async move {
                let Some(lease) = lease else { return };
                if let Err((reason, _)) = report(deps.clone(), lease, record).await {
                    tracing::debug!(%reason, "the `stopping` record was not written");
                }
                if let Err(e) = deps.node.kv().revoke(lease).await {
                    tracing::debug!(error = %e, "the node's lease was not revoked; it expires");
                }
            }
            .into_actor(self),
        )
    }
}

/// The agent's run state and lease (for tests and the admin API).
#[derive(Message)]
#[rtype(result = "(RunState, Option<LeaseId>)")]
pub(crate) struct GetState;

impl Handler<GetState> for Agent {
    type Result = MessageResult<GetState>;

    fn handle(&mut self, _: GetState, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.reporter.state(), self.reporter.lease()))
    }
}
