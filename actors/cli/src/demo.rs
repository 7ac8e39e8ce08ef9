//! `cadre demo`: a local cluster with no setup — this process as the master's node and worker
//! nodes as child processes on 127.0.0.1 — counting primes over ranges. Halfway through, one
//! worker process is killed with SIGKILL; its tasks run again elsewhere and every result still
//! arrives exactly once, which the summary checks against a sieve computed here.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::{anyhow, bail, Context as _};
use cadre_actors::node::{ClusterNode, NodeConfig};
use cadre_actors::tasks::{Master, MasterConfig, Task, TaskRegistry, WorkerConfig};
use cadre_actors::RemoteMessage;
use cadre_cluster::membership::Profile;
use cadre_cluster::wire::Secret;
use cadre_runtime::{ChildSpec, Runtime, SupervisorSpec};

use crate::child::ChildGuard;
use serde::{Deserialize, Serialize};

const SECRET_ENV: &str = "CADRE_DEMO_SECRET";
const CLUSTER: &str = "demo";

/// Counts the primes in `[lo, hi)`.
pub(crate) struct CountPrimes;
impl Task for CountPrimes {
    const NAME: &'static str = "demo.count_primes";
    type Input = (u64, u64);
    type Output = u64;
}

/// Does nothing (for `cadre bench tasks`).
pub(crate) struct Noop;
impl Task for Noop {
    const NAME: &'static str = "demo.noop";
    type Input = u32;
    type Output = u32;
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 || n % 3 == 0 {
        return false;
    }
    let mut d = 5;
    while d * d <= n {
        if n % d == 0 || n % (d + 2) == 0 {
            return false;
        }
        d += 6;
    }
    true
}

/// The task kinds of the demo, also hosted by `cadre node --roles worker`.
pub(crate) fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .sync::<CountPrimes, _, _>(|(lo, hi)| {
            if lo > hi {
                return Err(format!("empty range {lo}..{hi}"));
            }
            Ok((lo..hi).filter(|n| is_prime(*n)).count() as u64)
        })
        .sync::<Noop, _, _>(Ok::<u32, String>)
}

/// A plain remote ask target on each worker: the baseline of `cadre bench tasks`.
#[derive(Default)]
pub(crate) struct Echo;
impl Actor for Echo {
    type Context = Context<Self>;
}

/// Answers with itself.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u32")]
pub(crate) struct EchoMsg(pub(crate) u32);
impl RemoteMessage for EchoMsg {
    const TAG: &'static str = "demo.echo";
}
impl Handler<EchoMsg> for Echo {
    type Result = u32;
    fn handle(&mut self, m: EchoMsg, _: &mut Context<Self>) -> u32 {
        m.0
    }
}

/// `cadre demo`'s options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Worker processes to start.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Tasks (ranges of numbers) to run.
    #[arg(long, default_value_t = 1500)]
    tasks: u64,
    /// Numbers per range.
    #[arg(long, default_value_t = 20_000)]
    range: u64,
    /// Do not kill a worker halfway.
    #[arg(long)]
    no_kill: bool,
    /// Print the summary as JSON (and no progress bar).
    #[arg(long)]
    json: bool,
}

/// The worker process's options (started by `cadre demo` and `cadre bench tasks`).
#[derive(clap::Args)]
pub(crate) struct WorkerOptions {
    /// The node's name.
    #[arg(long)]
    name: String,
    /// The master node's address.
    #[arg(long)]
    seed: SocketAddr,
    /// Worker actors.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Tasks per worker at a time.
    #[arg(long, default_value_t = 1)]
    inflight: usize,
}

fn node_config(name: &str, seeds: Vec<SocketAddr>) -> NodeConfig {
    NodeConfig {
        name: Some(name.into()),
        cluster: CLUSTER.into(),
        listen: "127.0.0.1:0".parse().expect("an address"),
        seeds,
        profile: Profile::LocalTest,
        ..NodeConfig::default()
    }
}

fn secret_from_env() -> anyhow::Result<Secret> {
    let hex = std::env::var(SECRET_ENV).context("the demo secret is missing")?;
    Secret::new(hex.into_bytes()).map_err(anyhow::Error::from)
}

/// A worker process: a node with the demo's task kinds; runs until its stdin closes.
pub(crate) fn worker(opts: WorkerOptions) -> anyhow::Result<()> {
    let secret = secret_from_env()?;
    System::new().block_on(async move {
        let rt = Runtime::new(opts.name.as_str());
        let config = WorkerConfig {
            workers: opts.workers,
            inflight: opts.inflight,
            heartbeat: Duration::from_millis(200),
            ..WorkerConfig::default()
        };
        let (node, _workers) = ClusterNode::start_with_workers(
            &node_config(&opts.name, vec![opts.seed]),
            secret,
            &rt,
            registry(),
            config,
        )
        .await?;
        let echo = ChildSpec::new("echo", Echo::default);
        let echo_ref = echo.actor_ref();
        SupervisorSpec::new("demo")
            .child(echo)
            .start(&rt)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        node.transport()
            .expose("echo", echo_ref)
            .accept::<EchoMsg>();
        println!("READY {} {}", node.name(), node.addr());
        std::io::stdout().flush()?;
        crate::child::until_stdin_closes().await?;
        Ok(())
    })
}

/// A worker process, killed (SIGKILL) and reaped however the parent ends.
pub(crate) struct WorkerProc {
    pub(crate) name: String,
    child: ChildGuard,
}

impl WorkerProc {
    pub(crate) fn kill(&mut self) {
        self.child.kill();
    }
}

/// Starts a worker process joining `seed`; returns once it is up.
pub(crate) fn spawn_worker(
    name: &str,
    seed: SocketAddr,
    secret: &str,
    workers: usize,
    inflight: usize,
) -> anyhow::Result<WorkerProc> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args(["demo-worker", "--name", name, "--seed", &seed.to_string()])
        .args(["--workers", &workers.to_string()])
        .args(["--inflight", &inflight.to_string()])
        .env(SECRET_ENV, secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("could not start a worker process")?;
    let mut child = ChildGuard(child);
    child.ready_line(Duration::from_secs(30), "a worker process")?;
    Ok(WorkerProc {
        name: name.into(),
        child,
    })
}

/// A fresh random secret, hex.
pub(crate) fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The master's node and a master on it, and `n` worker processes that it has found.
pub(crate) async fn local_cluster(
    n: usize,
    workers: usize,
    inflight: usize,
    kind: &str,
    master: MasterConfig,
) -> anyhow::Result<(ClusterNode, Master, Vec<WorkerProc>)> {
    let secret = random_secret()?;
    let rt = Runtime::new("master");
    let node = ClusterNode::start(
        &node_config("master", vec![]),
        Secret::new(secret.clone().into_bytes())?,
        &rt,
    )
    .await?;
    let master = Master::start(&node, master, &rt)
        .await
        .map_err(|e| anyhow!("the master did not start: {e}"))?;
    let mut procs = Vec::new();
    for i in 0..n {
        let name = format!("worker-{}", i + 1);
        let addr = node.addr();
        let secret = secret.clone();
        let proc = tokio::task::spawn_blocking(move || {
            spawn_worker(&name, addr, &secret, workers, inflight)
        })
        .await??;
        procs.push(proc);
    }
    master
        .wait_for_workers(kind, n, Duration::from_secs(30))
        .await?;
    Ok((node, master, procs))
}

/// What `cadre demo` prints at the end (`--json` prints it as is).
#[derive(Serialize)]
struct Summary {
    tasks: u64,
    done: u64,
    failed: u64,
    results_received: u64,
    duplicates_received: u64,
    distinct_tasks: u64,
    reruns: u64,
    stale_reports_dropped: u64,
    seconds: f64,
    tasks_per_second: f64,
    killed: Option<String>,
    primes_counted: u64,
    primes_expected: u64,
    verified: bool,
    nodes: BTreeMap<String, NodeSummary>,
}

#[derive(Serialize)]
struct NodeSummary {
    completed: u64,
    lost: u64,
    up: bool,
}

fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = (done as usize * width) / total.max(1) as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

/// The primes below `n`, by a sieve.
fn sieve_count(n: u64) -> u64 {
    let n = n as usize;
    let mut composite = vec![false; n.max(2)];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}

/// Runs `cadre demo`.
pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    if opts.workers < 2 && !opts.no_kill {
        bail!("--workers must be at least 2 when one is killed (or pass --no-kill)");
    }
    if opts.tasks == 0 || opts.range == 0 {
        bail!("--tasks and --range must be positive");
    }
    let json = opts.json;
    let fancy = !json && std::io::stderr().is_terminal();
    let summary = System::new().block_on(async move { demo(opts, fancy).await })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    if !summary.verified {
        bail!("the results do not add up");
    }
    Ok(())
}

async fn demo(opts: Options, fancy: bool) -> anyhow::Result<Summary> {
    let say = |line: String| {
        if !opts.json {
            eprintln!("{line}");
        }
    };
    say(format!(
        "starting a local cluster: this process (master) and {} worker processes on 127.0.0.1",
        opts.workers
    ));
    let (_node, master, mut procs) = local_cluster(
        opts.workers,
        2,
        1,
        CountPrimes::NAME,
        MasterConfig {
            batch_max: 8,
            ..MasterConfig::default()
        },
    )
    .await?;
    say(format!(
        "{} worker nodes joined; counting primes below {} in {} ranges of {}",
        procs.len(),
        opts.tasks * opts.range,
        opts.tasks,
        opts.range
    ));
    let ranges: Vec<(u64, u64)> = (0..opts.tasks)
        .map(|i| (i * opts.range, (i + 1) * opts.range))
        .collect();
    let expected = tokio::task::spawn_blocking({
        let n = opts.tasks * opts.range;
        move || sieve_count(n)
    });
    let started = Instant::now();
    let mut results = master.submit_batch::<CountPrimes>(ranges).await?;
    let mut seen = HashSet::new();
    let (mut received, mut duplicates, mut primes) = (0u64, 0u64, 0u64);
    let mut killed = None;
    let mut last_draw = Instant::now();
    let total = opts.tasks;
    while let Some((id, result)) = tokio::time::timeout(Duration::from_secs(120), results.next())
        .await
        .context("no result for 120 s")?
    {
        received += 1;
        if !seen.insert(id) {
            duplicates += 1;
        }
        match result {
            Ok(count) => primes += count,
            Err(e) => say(format!("task {id} failed: {e}")),
        }
        if killed.is_none() && !opts.no_kill && received >= total / 2 {
            let victim = &mut procs[0];
            victim.kill();
            killed = Some(victim.name.clone());
            if fancy {
                eprint!("\r\x1b[2K");
            }
            say(format!(
                "halfway: killed {} with SIGKILL; its tasks will run elsewhere",
                victim.name
            ));
        }
        if fancy && (last_draw.elapsed() > Duration::from_millis(50) || received == total) {
            last_draw = Instant::now();
            let p = master.progress().await;
            eprint!(
                "\r\x1b[2K[{}] {}/{} done, {} failed, {} re-run, {} running",
                bar(received, total, 30),
                p.done,
                total,
                p.failed,
                p.retries,
                p.running
            );
        }
    }
    if fancy {
        eprintln!();
    }
    let seconds = started.elapsed().as_secs_f64();
    let expected = expected.await?;
    let p = master.progress().await;
    let nodes = master
        .node_stats()
        .await
        .into_iter()
        .map(|(name, s)| {
            (
                name,
                NodeSummary {
                    completed: s.completed,
                    lost: s.lost,
                    up: s.up,
                },
            )
        })
        .collect();
    drop(procs);
    Ok(Summary {
        tasks: total,
        done: p.done,
        failed: p.failed,
        results_received: received,
        duplicates_received: duplicates,
        distinct_tasks: seen.len() as u64,
        reruns: p.retries,
        stale_reports_dropped: p.stale_reports,
        seconds,
        tasks_per_second: total as f64 / seconds,
        killed,
        primes_counted: primes,
        primes_expected: expected,
        verified: primes == expected && duplicates == 0 && seen.len() as u64 == total,
        nodes,
    })
}

fn print_summary(s: &Summary) {
    println!();
    println!("tasks            {}", s.tasks);
    println!(
        "results          {} received, {} distinct, {} duplicates",
        s.results_received, s.distinct_tasks, s.duplicates_received
    );
    println!("done / failed    {} / {}", s.done, s.failed);
    println!(
        "re-runs          {} (attempts lost with a worker, run again elsewhere)",
        s.reruns
    );
    println!("late reports     {} dropped", s.stale_reports_dropped);
    println!(
        "time             {:.2} s, {:.0} tasks/s",
        s.seconds, s.tasks_per_second
    );
    println!();
    println!("{:<12} {:>10} {:>6}  state", "node", "completed", "lost");
    for (name, n) in &s.nodes {
        let state = match (&s.killed, n.up) {
            (Some(k), false) if k == name => "killed halfway",
            (_, false) => "down",
            _ => "up",
        };
        println!("{name:<12} {:>10} {:>6}  {state}", n.completed, n.lost);
    }
    if let Some(k) = &s.killed {
        let lost = s.nodes.get(k).map_or(0, |n| n.lost);
        let others: Vec<&String> = s.nodes.keys().filter(|n| *n != k).collect();
        println!();
        println!(
            "{k} was killed with {lost} tasks in hand; {} took them over.",
            others
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" and ")
        );
    }
    println!();
    if s.verified {
        println!(
            "every result arrived exactly once: {} primes counted, {} expected (a sieve here) ✓",
            s.primes_counted, s.primes_expected
        );
    } else {
        println!(
            "MISMATCH: {} primes counted, {} expected",
            s.primes_counted, s.primes_expected
        );
    }
}
