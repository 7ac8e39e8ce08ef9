//! `cadre bench agent`: what the node agent costs. Five idle `cadre node` processes on
//! 127.0.0.1 (three with the store role, the `lan` profile, default status period), first with
//! their agents off (`CADRE_AGENT=false`, the baseline), then with them on; the CPU time each
//! cluster's processes use over the same window once formed, from `/proc/<pid>/stat`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::child::NodeChild;

/// `cadre bench agent`'s options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// How long to measure each cluster, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Measurements of each variant, alternating (the machine is shared and noisy).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

const SECRET: &str = "bench-agent-secret";

fn start(
    name: &str,
    store: bool,
    seed: Option<&str>,
    dir: &std::path::Path,
    agent: bool,
) -> anyhow::Result<NodeChild> {
    let data = dir.join(name);
    let data = data
        .to_str()
        .context("a data directory's path is not UTF-8")?;
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--name",
        name,
        "--cluster",
        "bench-agent",
        "--data-dir",
        data,
    ];
    if store {
        args.extend(["--roles", "store"]);
    }
    if let Some(seed) = seed {
        args.extend(["--seed", seed]);
    }
    let agent = agent.to_string();
    let env = [
        ("CADRE_SECRET", SECRET),
        ("CADRE_AGENT", agent.as_str()),
        ("CADRE_LOG", "info,openraft=error"),
    ];
    NodeChild::start(&args, &env)
}

/// User and system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat (this benchmark needs Linux)"))?;
    // The fields after the command name (which may hold spaces) start after its `)`.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11)
        .zip(fields.get(12))
        .and_then(|(u, s)| Some(u.parse::<u64>().ok()? + s.parse::<u64>().ok()?))
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    // Linux reports in clock ticks of 1/100 s (USER_HZ) on every architecture cadre runs on.
    Ok(Duration::from_millis(ticks * 10))
}

/// Starts the five nodes, waits until they are formed (and, with agents, until every node's
/// agent reports), measures their CPU over `window`; returns the CPU % per node.
fn measure(agent: bool, window: Duration) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!(
        "cadre-bench-agent-{}-{}",
        std::process::id(),
        agent
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut s0 = start("s0", true, None, &dir, agent)?;
    let seed = s0.addr.clone();
    let mut nodes = Vec::new();
    for (name, store) in [("s1", true), ("s2", true), ("n3", false), ("n4", false)] {
        nodes.push(start(name, store, Some(&seed), &dir, agent)?);
    }
    s0.wait_line("store groups formed")?;
    nodes.push(s0);
    if agent {
        for n in &mut nodes {
            n.wait_line("reporting this node's status to the store")?;
        }
    }
    let pids: Vec<u32> = nodes.iter().map(|n| n.proc.0.id()).collect();
    let before: Vec<Duration> = pids
        .iter()
        .map(|p| cpu_time(*p))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    // The measurement itself: an idle cluster for the whole window.
    std::thread::sleep(window);
    let elapsed = started.elapsed();
    let after: Vec<Duration> = pids
        .iter()
        .map(|p| cpu_time(*p))
        .collect::<Result<_, _>>()?;
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
    let used: Duration = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .sum();
    Ok(used.as_secs_f64() / elapsed.as_secs_f64() * 100.0 / pids.len() as f64)
}

pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    if opts.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let window = Duration::from_secs(opts.seconds.max(1));
    println!(
        "five idle nodes (three store), lan profile, status every 1 s; CPU per node over {window:?}, {} rounds",
        opts.rounds
    );
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 1..=opts.rounds {
        let a = measure(false, window)?;
        let b = measure(true, window)?;
        println!("round {round}: agents off {a:.2} % | agents on {b:.2} % of a CPU per node");
        off.push(a);
        on.push(b);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        if v.len() % 2 == 0 {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        }
    };
    let (a, b) = (median(&mut off), median(&mut on));
    println!(
        "agent cost: off {a:.2} % | on {b:.2} % of a CPU per node (medians) | on - off {:.2} points | on/off {:.2}x",
        b - a,
        if a > 0.0 { b / a } else { f64::NAN }
    );
    Ok(())
}
