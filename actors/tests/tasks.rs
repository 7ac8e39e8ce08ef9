//! Distributed tasks with every node in one process on 127.0.0.1: a master node and worker
//! nodes. Each task's result reaches the caller exactly once, whatever happens to workers.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use cadre_actors::node::{ClusterNode, NodeConfig};
use cadre_actors::tasks::{
    Master, MasterConfig, SubmitError, Task, TaskError, TaskPolicy, TaskRegistry, TaskWorkers,
    WorkerConfig,
};
use cadre_cluster::membership::Profile;
use cadre_cluster::wire::Secret;
use cadre_runtime::testkit::run;
use cadre_runtime::Runtime;

mod common;

const T: Duration = Duration::from_secs(30);

struct Square;
impl Task for Square {
    const NAME: &'static str = "test.square";
    type Input = u64;
    type Output = u64;
}

/// Sleeps the given milliseconds, then returns them.
struct Slow;
impl Task for Slow {
    const NAME: &'static str = "test.slow";
    type Input = u64;
    type Output = u64;
}

/// Panics on the first call for each input.
struct PanicsOnce;
impl Task for PanicsOnce {
    const NAME: &'static str = "test.panics_once";
    type Input = u64;
    type Output = u64;
}

/// Always panics.
struct Poison;
impl Task for Poison {
    const NAME: &'static str = "test.poison";
    type Input = u64;
    type Output = u64;
}

/// Hangs forever on the first call for each input; a short lease.
struct HangsOnce;
impl Task for HangsOnce {
    const NAME: &'static str = "test.hangs_once";
    type Input = u64;
    type Output = u64;
    fn policy() -> TaskPolicy {
        TaskPolicy {
            lease: Duration::from_millis(600),
            ..TaskPolicy::default()
        }
    }
}

/// Fails on the first call for each input; retried after an error.
struct FlakyRetried;
impl Task for FlakyRetried {
    const NAME: &'static str = "test.flaky_retried";
    type Input = u64;
    type Output = u64;
    fn policy() -> TaskPolicy {
        TaskPolicy {
            max_retries: 2,
            backoff_min: Duration::from_millis(10),
            ..TaskPolicy::default()
        }
    }
}

/// Fails on the first call for each input; not retried.
struct FlakyNotRetried;
impl Task for FlakyNotRetried {
    const NAME: &'static str = "test.flaky";
    type Input = u64;
    type Output = u64;
}

/// Calls per (kind, input), across every worker of the process.
static CALLS: Mutex<BTreeMap<(&'static str, u64), u32>> = Mutex::new(BTreeMap::new());

fn call(kind: &'static str, input: u64) -> u32 {
    let mut calls = CALLS.lock().unwrap();
    let n = calls.entry((kind, input)).or_default();
    *n += 1;
    *n
}

fn calls(kind: &'static str, input: u64) -> u32 {
    CALLS
        .lock()
        .unwrap()
        .get(&(kind, input))
        .copied()
        .unwrap_or(0)
}

fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .sync::<Square, _, _>(|x| Ok::<_, String>(x * x))
        .async_handler::<Slow, _, _, _>(|ms| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(ms)
        })
        .sync::<PanicsOnce, _, _>(|x| {
            if call(PanicsOnce::NAME, x) == 1 {
                panic!("first call of {x}");
            }
            Ok::<_, String>(x)
        })
        .sync::<Poison, _, _>(|x| -> Result<u64, String> {
            call(Poison::NAME, x);
            panic!("poison {x}")
        })
        .async_handler::<HangsOnce, _, _, _>(|x| async move {
            if call(HangsOnce::NAME, x) == 1 {
                std::future::pending::<()>().await;
            }
            Ok::<_, String>(x)
        })
        .sync::<FlakyRetried, _, _>(|x| {
            if call(FlakyRetried::NAME, x) == 1 {
                return Err(format!("flaky {x}"));
            }
            Ok(x)
        })
        .sync::<FlakyNotRetried, _, _>(|x| {
            if call(FlakyNotRetried::NAME, x) == 1 {
                return Err(format!("flaky {x}"));
            }
            Ok(x)
        })
}

fn config(name: &str, seeds: Vec<SocketAddr>) -> NodeConfig {
    NodeConfig {
        name: Some(name.into()),
        cluster: "tasks".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        seeds,
        profile: Profile::LocalTest,
        ..NodeConfig::default()
    }
}

fn secret() -> Secret {
    Secret::new(b"tasks-test".to_vec()).unwrap()
}

fn workers(n: usize, inflight: usize) -> WorkerConfig {
    WorkerConfig {
        workers: n,
        inflight,
        heartbeat: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

/// A master node and `n` worker nodes (each with `w` workers taking `inflight` tasks).
struct Cluster {
    master: Master,
    _master_node: ClusterNode,
    nodes: Vec<(ClusterNode, TaskWorkers)>,
}

async fn cluster(n: usize, w: usize, inflight: usize) -> Cluster {
    let master_node = ClusterNode::start(&config("m", vec![]), secret(), &Runtime::new("m"))
        .await
        .unwrap();
    let mut nodes = Vec::new();
    for i in 0..n {
        let name = format!("w{i}");
        let started = ClusterNode::start_with_workers(
            &config(&name, vec![master_node.addr()]),
            secret(),
            &Runtime::new(name.as_str()),
            registry(),
            workers(w, inflight),
        )
        .await
        .unwrap();
        nodes.push(started);
    }
    let master = Master::start(
        &master_node,
        MasterConfig {
            tick: Duration::from_millis(50),
            ..MasterConfig::default()
        },
        &Runtime::new("m"),
    )
    .await
    .unwrap();
    master
        .wait_for_workers(Square::NAME, n, T)
        .await
        .expect("the worker nodes are found");
    Cluster {
        master,
        _master_node: master_node,
        nodes,
    }
}

/// Collects every result of `results`, failing on a task seen twice.
async fn collect<O: serde::de::DeserializeOwned>(
    mut results: cadre_actors::tasks::Results<O>,
) -> HashMap<u64, Result<O, TaskError>> {
    let mut seen = HashMap::new();
    while let Some((id, r)) = tokio::time::timeout(T, results.next())
        .await
        .expect("results keep coming")
    {
        assert!(seen.insert(id, r).is_none(), "task {id} delivered twice");
    }
    seen
}

#[test]
fn every_task_completes_exactly_once_and_unknown_kinds_are_refused() {
    run(async {
        let c = cluster(2, 2, 8).await;
        let one = c.master.submit::<Square>(12).await.unwrap();
        assert_eq!(tokio::time::timeout(T, one).await.unwrap(), Ok(144));

        let results = c
            .master
            .submit_batch::<Square>((0..3000u64).collect::<Vec<_>>())
            .await
            .unwrap();
        let got = collect(results).await;
        assert_eq!(got.len(), 3000);
        let mut outputs: Vec<u64> = got.into_values().map(Result::unwrap).collect();
        outputs.sort_unstable();
        assert_eq!(outputs, (0..3000u64).map(|x| x * x).collect::<Vec<_>>());
        let stats = c.master.node_stats().await;
        assert!(
            stats.values().all(|s| s.completed > 0),
            "both nodes worked: {stats:?}"
        );
        let p = c.master.progress().await;
        assert_eq!(
            (p.total, p.done, p.failed, p.running, p.queued),
            (3001, 3001, 0, 0, 0)
        );

        struct Unknown;
        impl Task for Unknown {
            const NAME: &'static str = "test.nobody_runs_this";
            type Input = u64;
            type Output = u64;
        }
        assert_eq!(
            c.master.submit::<Unknown>(1).await.err(),
            Some(SubmitError::NoWorker(Unknown::NAME.into()))
        );
        assert!(matches!(
            c.master.submit_batch::<Unknown>(vec![1, 2]).await,
            Err(SubmitError::NoWorker(_))
        ));
    });
}

#[test]
fn a_worker_node_killed_mid_run_loses_no_task_and_duplicates_none() {
    run(async {
        let c = cluster(3, 2, 2).await;
        let mut results = c
            .master
            .submit_batch::<Slow>(vec![20u64; 300])
            .await
            .unwrap();
        let mut seen = HashMap::new();
        let mut killed = false;
        while let Some((id, r)) = tokio::time::timeout(T, results.next()).await.unwrap() {
            assert!(seen.insert(id, r).is_none(), "task {id} delivered twice");
            if seen.len() == 60 && !killed {
                killed = true;
                c.nodes[0].0.crash().await;
            }
        }
        assert_eq!(seen.len(), 300);
        assert!(seen.values().all(|r| *r == Ok(20)));
        // The failure detector may declare w0 down after the others have finished the batch.
        common::eventually_within("the master sees w0 down", T, || async {
            !c.master.node_stats().await["w0"].up
        })
        .await;
        let stats = c.master.node_stats().await;
        let w0 = &stats["w0"];
        assert!(w0.lost > 0, "w0 held tasks when it died: {stats:?}");
        assert!(c.master.progress().await.retries >= w0.lost);
    });
}

#[test]
fn a_panicking_handler_kills_its_worker_and_the_task_runs_again() {
    run(async {
        let c = cluster(1, 2, 1).await;
        let handle = c.master.submit::<PanicsOnce>(7).await.unwrap();
        assert_eq!(tokio::time::timeout(T, handle).await.unwrap(), Ok(7));
        assert_eq!(calls(PanicsOnce::NAME, 7), 2);
        assert_eq!(c.master.progress().await.retries, 1);
        // The pool restarted the worker: the node still has both.
        assert_eq!(c.nodes[0].1.size().await, 2);
        let again = c.master.submit::<Square>(3).await.unwrap();
        assert_eq!(tokio::time::timeout(T, again).await.unwrap(), Ok(9));
    });
}

#[test]
fn a_poison_task_stops_at_the_cutoff_and_the_node_lives_on() {
    run(async {
        let c = cluster(1, 2, 1).await;
        let poison = c.master.submit::<Poison>(1).await.unwrap();
        let fine = c.master.submit::<Square>(5).await.unwrap();
        match tokio::time::timeout(T, poison).await.unwrap() {
            Err(TaskError::Poison { kills: 3, .. }) => {}
            other => panic!("expected poison after 3 kills, got {other:?}"),
        }
        assert_eq!(calls(Poison::NAME, 1), 3);
        assert_eq!(tokio::time::timeout(T, fine).await.unwrap(), Ok(25));
        let after = c.master.submit::<Square>(6).await.unwrap();
        assert_eq!(tokio::time::timeout(T, after).await.unwrap(), Ok(36));
    });
}

#[test]
fn a_stuck_task_is_run_again_after_its_lease() {
    run(async {
        let c = cluster(1, 2, 1).await;
        let handle = c.master.submit::<HangsOnce>(11).await.unwrap();
        assert_eq!(tokio::time::timeout(T, handle).await.unwrap(), Ok(11));
        assert_eq!(calls(HangsOnce::NAME, 11), 2);
        assert_eq!(c.master.progress().await.retries, 1);
        // The stuck worker is out of the count; the other one still serves.
        assert_eq!(c.nodes[0].1.load().await.map(|l| l.1), Some(1));
        let more = c.master.submit::<Square>(4).await.unwrap();
        assert_eq!(tokio::time::timeout(T, more).await.unwrap(), Ok(16));
    });
}

#[test]
fn errors_are_retried_only_when_the_kind_opts_in() {
    run(async {
        let c = cluster(1, 1, 1).await;
        let retried = c.master.submit::<FlakyRetried>(1).await.unwrap();
        assert_eq!(tokio::time::timeout(T, retried).await.unwrap(), Ok(1));
        assert_eq!(calls(FlakyRetried::NAME, 1), 2);
        let not = c.master.submit::<FlakyNotRetried>(1).await.unwrap();
        assert_eq!(
            tokio::time::timeout(T, not).await.unwrap(),
            Err(TaskError::Failed {
                error: "flaky 1".into(),
                attempts: 1
            })
        );
    });
}

#[test]
fn scaling_a_pool_mid_run_loses_nothing() {
    run(async {
        let c = cluster(1, 4, 1).await;
        let pool = &c.nodes[0].1;
        let mut results = c
            .master
            .submit_batch::<Slow>(vec![10u64; 200])
            .await
            .unwrap();
        let mut seen = HashMap::new();
        while let Some((id, r)) = tokio::time::timeout(T, results.next()).await.unwrap() {
            assert!(seen.insert(id, r).is_none(), "task {id} delivered twice");
            if seen.len() == 40 {
                pool.resize(1).await.unwrap();
                assert_eq!(pool.size().await, 1);
            }
            if seen.len() == 120 {
                pool.resize(3).await.unwrap();
                assert_eq!(pool.size().await, 3);
            }
        }
        assert_eq!(seen.len(), 200);
        assert!(seen.values().all(|r| *r == Ok(10)));
        assert_eq!(c.master.progress().await.retries, 0, "nothing was lost");
        assert_eq!(pool.load().await, Some((0, 3)));
    });
}

#[test]
fn cancelled_tasks_end_once_as_cancelled() {
    run(async {
        let c = cluster(1, 1, 1).await;
        let running = c.master.submit::<Slow>(60_000).await.unwrap();
        let queued = c.master.submit::<Slow>(60_000).await.unwrap();
        running.cancel();
        queued.cancel();
        assert_eq!(
            tokio::time::timeout(T, running).await.unwrap(),
            Err(TaskError::Cancelled)
        );
        assert_eq!(
            tokio::time::timeout(T, queued).await.unwrap(),
            Err(TaskError::Cancelled)
        );
        let batch = c
            .master
            .submit_batch::<Slow>(vec![60_000u64; 5])
            .await
            .unwrap();
        batch.cancel();
        let got = collect(batch).await;
        assert_eq!(got.len(), 5);
        assert!(got.values().all(|r| *r == Err(TaskError::Cancelled)));
    });
}

#[test]
fn submitting_waits_for_room_in_the_window() {
    run(async {
        let master_node = ClusterNode::start(&config("m", vec![]), secret(), &Runtime::new("m"))
            .await
            .unwrap();
        let _w = ClusterNode::start_with_workers(
            &config("w", vec![master_node.addr()]),
            secret(),
            &Runtime::new("w"),
            registry(),
            workers(1, 1),
        )
        .await
        .unwrap();
        let master = Master::start(
            &master_node,
            MasterConfig {
                window: 2,
                ..MasterConfig::default()
            },
            &Runtime::new("m"),
        )
        .await
        .unwrap();
        master.wait_for_workers(Slow::NAME, 1, T).await.unwrap();
        let a = master.submit::<Slow>(1).await.unwrap();
        let _b = master.submit::<Slow>(1).await.unwrap();
        let third = master.submit::<Slow>(1);
        let mut third = std::pin::pin!(third);
        // The window is full until a result is taken.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut third)
                .await
                .is_err(),
            "a third task was admitted into a window of two"
        );
        assert_eq!(tokio::time::timeout(T, a).await.unwrap(), Ok(1));
        let c = tokio::time::timeout(T, third).await.unwrap().unwrap();
        assert_eq!(tokio::time::timeout(T, c).await.unwrap(), Ok(1));
    });
}

/// Sleeps a node-specific time.
struct Work;
impl Task for Work {
    const NAME: &'static str = "test.work";
    type Input = u64;
    type Output = u64;
}

fn sleeper(ms: u64) -> TaskRegistry {
    TaskRegistry::new().async_handler::<Work, _, _, _>(move |x| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, String>(x)
    })
}

#[test]
fn a_slow_worker_node_is_not_swamped_and_never_holds_more_than_its_limit() {
    run(async {
        let m = ClusterNode::start(&config("m", vec![]), secret(), &Runtime::new("m"))
            .await
            .unwrap();
        let (fast, _) = ClusterNode::start_with_workers(
            &config("fast", vec![m.addr()]),
            secret(),
            &Runtime::new("fast"),
            sleeper(1),
            workers(1, 2),
        )
        .await
        .unwrap();
        let (_slow, slow_pool) = ClusterNode::start_with_workers(
            &config("slow", vec![m.addr()]),
            secret(),
            &Runtime::new("slow"),
            sleeper(40),
            workers(1, 2),
        )
        .await
        .unwrap();
        let master = Master::start(&m, MasterConfig::default(), &Runtime::new("m"))
            .await
            .unwrap();
        master.wait_for_workers(Work::NAME, 2, T).await.unwrap();
        let mut results = master.submit_batch::<Work>(0..300u64).await.unwrap();
        let mut n = 0;
        while let Some((_, r)) = tokio::time::timeout(T, results.next()).await.unwrap() {
            r.unwrap();
            n += 1;
            let (held, capacity) = slow_pool.load().await.unwrap();
            assert!(held <= capacity, "the slow node holds {held} > {capacity}");
            assert_eq!(capacity, 2);
        }
        assert_eq!(n, 300);
        let stats = master.node_stats().await;
        let (f, s) = (stats["fast"].completed, stats["slow"].completed);
        assert!(
            f > 5 * s,
            "the fast node did most of the work: fast {f}, slow {s}"
        );
        // Worker nodes carry the role.
        let rows = fast.members().await;
        assert!(rows[0].roles.contains(&"worker".to_string()), "{rows:?}");
    });
}
