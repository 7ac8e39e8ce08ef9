//! The node agent, in process on 127.0.0.1: a store node and a worker node each report their
//! status under a lease; commands through the store run once, with a result; a graceful leave
//! takes the status away at once, a crash within the lease's TTL.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cadre_actors::agent::{self, AgentEvent, ChainCx, ChainHandler, Flow, Target};
use cadre_actors::node::{ClusterNode, NodeBuilder, NodeConfig};
use cadre_actors::store::Kv;
use cadre_actors::tasks::{Task, TaskRegistry, WorkerConfig};
use cadre_cluster::agent::{
    command_key, CommandKind, CommandResult, ResultState, RunState, StatusRecord,
};
use cadre_cluster::store::{PutRequest, Request};
use cadre_cluster::wire::Secret;
use cadre_runtime::testkit::run;
use cadre_runtime::Runtime;
use common::{eventually_within, node_config, TempDir};
use parking_lot::Mutex;

mod common;

const PERIOD_MS: u64 = 200;
const TTL_MS: u64 = 1_000;
const LONG_TTL_MS: u64 = 20_000;
const T: Duration = Duration::from_secs(20);

fn config(
    name: &str,
    dir: &TempDir,
    roles: &[&str],
    seeds: Vec<std::net::SocketAddr>,
) -> NodeConfig {
    config_ttl(name, dir, roles, seeds, TTL_MS)
}

fn config_ttl(
    name: &str,
    dir: &TempDir,
    roles: &[&str],
    seeds: Vec<std::net::SocketAddr>,
    ttl_ms: u64,
) -> NodeConfig {
    NodeConfig {
        status_period_ms: PERIOD_MS,
        status_ttl_ms: ttl_ms,
        ..node_config("agent", name, dir, roles, seeds)
    }
}

fn secret() -> Secret {
    Secret::new(b"agent-test".to_vec()).unwrap()
}

struct Noop;
impl Task for Noop {
    const NAME: &'static str = "noop";
    type Input = ();
    type Output = ();
}

/// Counts the runs of the custom command `count`, and answers it.
struct Counter(Arc<AtomicUsize>);
impl ChainHandler for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn handle(&mut self, event: &AgentEvent, cx: &mut ChainCx) -> Flow {
        match event {
            AgentEvent::Command(c) if c.kind.name() == "count" => {
                let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
                cx.reply(Ok(format!("run {n}")));
                Flow::Stop
            }
            _ => Flow::Pass,
        }
    }
}

struct Cluster {
    _dir: TempDir,
    store: ClusterNode,
    worker: ClusterNode,
    counted: Arc<AtomicUsize>,
    filters: Arc<Mutex<Vec<String>>>,
}

/// A store node (`s0`, the store alone) and a worker node (`w1`) with a chain handler and a
/// log control of its own.
async fn cluster() -> Cluster {
    cluster_ttl(TTL_MS).await
}

/// As [`cluster`], the worker's status under a lease of `ttl_ms`.
async fn cluster_ttl(ttl_ms: u64) -> Cluster {
    let dir = TempDir::new();
    let store = ClusterNode::start(
        &config("s0", &dir, &["store"], vec![]),
        secret(),
        &Runtime::new("s0"),
    )
    .await
    .unwrap();
    let counted = Arc::new(AtomicUsize::new(0));
    let filters = Arc::new(Mutex::new(Vec::new()));
    let (c, f) = (counted.clone(), filters.clone());
    let registry = TaskRegistry::new().sync::<Noop, _, _>(|()| Ok::<_, String>(()));
    let worker = NodeBuilder::new(
        config_ttl("w1", &dir, &[], vec![store.addr()], ttl_ms),
        secret(),
    )
    .workers(
        registry,
        WorkerConfig {
            workers: 2,
            ..WorkerConfig::default()
        },
    )
    .handler(move || Counter(c.clone()))
    .log_control(Arc::new(move |filter: &str| {
        f.lock().push(filter.to_owned());
        Ok(())
    }))
    .start(&Runtime::new("w1"))
    .await
    .unwrap();
    Cluster {
        _dir: dir,
        store,
        worker,
        counted,
        filters,
    }
}

/// Waits until `node` reports the state `normal`.
async fn reports_normal(kv: &Kv, node: &str) {
    eventually_within(&format!("{node} reports normal"), T, || async {
        statuses(kv)
            .await
            .iter()
            .any(|r| r.node == node && r.state == RunState::Normal)
    })
    .await;
}

async fn statuses(kv: &Kv) -> Vec<StatusRecord> {
    agent::statuses(kv).await.unwrap_or_default()
}

async fn command(kv: &Kv, node: &str, kind: CommandKind) -> CommandResult {
    let c = agent::issue(kv, &Target::Node(node.into()), kind, T, "test")
        .await
        .unwrap();
    agent::wait_result(kv, node, &c.id, T).await.unwrap()
}

#[test]
fn every_node_reports_its_status_under_a_lease_and_a_leave_takes_it_away_at_once() {
    run(async {
        // A long TTL: gone at once means revoked, not expired.
        let c = cluster_ttl(LONG_TTL_MS).await;
        let kv = c.store.kv();
        eventually_within("both nodes report normal", T, || async {
            let s = statuses(&kv).await;
            s.len() == 2 && s.iter().all(|r| r.state == RunState::Normal)
        })
        .await;
        let records = statuses(&kv).await;
        let (s0, w1) = (&records[0], &records[1]);
        assert_eq!((s0.node.as_str(), w1.node.as_str()), ("s0", "w1"));
        assert_eq!(s0.roles, ["store"]);
        assert_eq!(w1.roles, ["worker"]);
        assert_eq!(w1.cluster, "agent");
        assert_eq!(w1.addr, Some(c.worker.addr()));
        assert_eq!(w1.incarnation, c.worker.started_ms());
        assert_eq!(w1.pid, std::process::id());
        assert_eq!(w1.period_ms, PERIOD_MS);
        assert_eq!(w1.cadre_version, cadre_actors::VERSION);
        assert!(w1.load.rss_bytes > 0, "the process's memory is measured");
        assert_eq!(w1.load.workers_busy + w1.load.workers_idle, 2);
        assert!(
            w1.services
                .iter()
                .any(|(name, _)| name == cadre_actors::tasks::TASKS_SERVICE),
            "{:?}",
            w1.services
        );
        // The record is bound to the node's lease, and fresh.
        let kv_entry = kv.get(b"nodes/w1/status").await.unwrap().unwrap();
        let (state, lease) = c.worker.agent_state().await.unwrap();
        assert_eq!((state, kv_entry.lease), (RunState::Normal, lease));
        let before = w1.reported_ms;
        eventually_within("a newer report", T, || async {
            statuses(&kv)
                .await
                .iter()
                .any(|r| r.node == "w1" && r.reported_ms > before)
        })
        .await;

        // A graceful leave writes `stopping` and revokes the lease: gone before the TTL.
        let left = std::time::Instant::now();
        c.worker.leave(Duration::from_secs(5)).await;
        eventually_within("w1's status gone", T, || async {
            statuses(&kv).await.iter().all(|r| r.node != "w1")
        })
        .await;
        assert!(
            left.elapsed() < Duration::from_millis(LONG_TTL_MS / 4),
            "{:?}",
            left.elapsed()
        );
        c.store.leave(Duration::from_secs(5)).await;
    });
}

#[test]
fn a_crashed_nodes_status_is_gone_within_its_ttl() {
    run(async {
        let c = cluster().await;
        let kv = c.store.kv();
        eventually_within("w1 reports", T, || async {
            statuses(&kv).await.iter().any(|r| r.node == "w1")
        })
        .await;
        let crashed = std::time::Instant::now();
        c.worker.crash().await;
        eventually_within("w1's status gone", T, || async {
            statuses(&kv).await.iter().all(|r| r.node != "w1")
        })
        .await;
        // Gone by the lease's expiry: a TTL after the last report at most (plus the leader's
        // expiry check and this test's polling).
        let waited = crashed.elapsed();
        assert!(waited < Duration::from_millis(TTL_MS + 2_000), "{waited:?}");
        c.store.leave(Duration::from_secs(5)).await;
    });
}

#[test]
fn commands_run_once_with_a_result_and_bad_ones_get_an_error_that_says_why() {
    run(async {
        let c = cluster().await;
        let kv = c.store.kv();
        reports_normal(&kv, "w1").await;

        let r = command(&kv, "w1", CommandKind::Ping).await;
        assert_eq!(
            (r.state, r.message.as_str(), r.command.as_str()),
            (ResultState::Ok, "pong", "ping")
        );
        // Done: the node's own command key is gone, its result stays.
        assert!(kv
            .get(command_key("w1", &r.id).as_bytes())
            .await
            .unwrap()
            .is_none());

        let r = command(&kv, "w1", CommandKind::ScaleWorkers { workers: 3 }).await;
        assert_eq!(
            (r.state, r.message.as_str()),
            (ResultState::Ok, "3 workers")
        );
        assert_eq!(c.worker.workers().unwrap().size().await, 3);

        let r = command(
            &kv,
            "w1",
            CommandKind::LogLevel {
                filter: "debug".into(),
            },
        )
        .await;
        assert_eq!(r.state, ResultState::Ok);
        assert_eq!(*c.filters.lock(), ["debug"]);

        // restart-actor: the view restarts (a new generation) and serves again.
        let view = || async {
            c.worker
                .root()
                .which_children(T)
                .await
                .unwrap()
                .into_iter()
                .find(|ch| &*ch.id == "view")
                .unwrap()
        };
        assert_eq!(view().await.generation, 1);
        let r = command(
            &kv,
            "w1",
            CommandKind::RestartActor {
                path: "node/view".into(),
            },
        )
        .await;
        assert_eq!(r.state, ResultState::Ok, "{}", r.message);
        eventually_within("the view runs again", T, || async {
            let v = view().await;
            v.running && v.generation == 2
        })
        .await;
        assert!(
            c.worker.members().await.iter().any(|m| m.id == "s0"),
            "the restarted view knows the other node"
        );
        let r = command(
            &kv,
            "w1",
            CommandKind::RestartActor {
                path: "node/nope".into(),
            },
        )
        .await;
        assert_eq!(r.state, ResultState::Failed);
        assert!(r.message.contains("has no child `nope`"), "{}", r.message);

        // A command of the user's handler; an unknown one; one nobody can run.
        let custom = |name: &str| CommandKind::Custom {
            name: name.into(),
            args: vec![],
        };
        let r = command(&kv, "w1", custom("count")).await;
        assert_eq!((r.state, r.message.as_str()), (ResultState::Ok, "run 1"));
        let r = command(&kv, "w1", custom("bogus")).await;
        assert_eq!(r.state, ResultState::Failed);
        assert!(
            r.message.contains("unknown command `bogus`"),
            "{}",
            r.message
        );
        let r = command(&kv, "s0", CommandKind::ScaleWorkers { workers: 1 }).await;
        assert_eq!(r.state, ResultState::Failed);
        assert!(r.message.contains("--roles worker"), "{}", r.message);

        // A malformed command: an error result naming why; the agent goes on.
        let put = PutRequest {
            key: command_key("w1", "junk").into_bytes(),
            value: b"not a command".to_vec(),
            lease: None,
            prev_kv: false,
        };
        kv.write(Request::Put(put)).await.unwrap();
        let r = agent::wait_result(&kv, "w1", "junk", T).await.unwrap();
        assert_eq!(r.state, ResultState::Failed);
        assert!(r.message.starts_with("malformed command"), "{}", r.message);

        // An expired command is not run.
        let cmd = agent::issue(
            &kv,
            &Target::Node("w1".into()),
            custom("count"),
            Duration::ZERO,
            "test",
        )
        .await
        .unwrap();
        let r = agent::wait_result(&kv, "w1", &cmd.id, T).await.unwrap();
        assert_eq!(r.state, ResultState::Expired);

        // A command for every node: each records its own result.
        let cmd = agent::issue(&kv, &Target::All, CommandKind::Ping, T, "test")
            .await
            .unwrap();
        for node in ["s0", "w1"] {
            let r = agent::wait_result(&kv, node, &cmd.id, T).await.unwrap();
            assert_eq!((r.state, r.node.as_str()), (ResultState::Ok, node));
        }
        assert_eq!(c.counted.load(Ordering::SeqCst), 1, "count ran once");
        c.worker.leave(Duration::from_secs(5)).await;
        c.store.leave(Duration::from_secs(5)).await;
    });
}

#[test]
fn a_command_given_while_the_agent_restarts_runs_exactly_once() {
    run(async {
        let c = cluster().await;
        let kv = c.store.kv();
        reports_normal(&kv, "w1").await;
        let custom = CommandKind::Custom {
            name: "count".into(),
            args: vec![],
        };
        // Twice, then once more below: within the node root's intensity (3 restarts in 5 s).
        for round in 1..=2 {
            // Kill the agent, then give the command while it restarts.
            c.worker.root().restart_child("agent", T).await.unwrap();
            let cmd = agent::issue(&kv, &Target::Node("w1".into()), custom.clone(), T, "test")
                .await
                .unwrap();
            let r = agent::wait_result(&kv, "w1", &cmd.id, T).await.unwrap();
            assert_eq!(
                (r.state, r.message.clone()),
                (ResultState::Ok, format!("run {round}"))
            );
        }
        // The agent restarting while it runs a command records it `interrupted`, and never
        // runs it again.
        let r = command(
            &kv,
            "w1",
            CommandKind::RestartActor {
                path: "node/agent".into(),
            },
        )
        .await;
        assert_eq!(r.state, ResultState::Interrupted, "{}", r.message);
        let r = command(&kv, "w1", CommandKind::Ping).await;
        assert_eq!(r.state, ResultState::Ok);
        assert_eq!(c.counted.load(Ordering::SeqCst), 2);
        c.worker.leave(Duration::from_secs(5)).await;
        c.store.leave(Duration::from_secs(5)).await;
    });
}
