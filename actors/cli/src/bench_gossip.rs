//! `cadre bench gossip`: crash detection with real UDP sockets on 127.0.0.1: N gossip nodes in
//! one process with the chosen profile; once they converge, one is stopped silently and the time
//! until every other node reports it down is measured, over several rounds.

use std::time::{Duration, Instant};

use actix::System;
use anyhow::{anyhow, bail};
use cadre_actors::membership::{Gossip, GossipConfig};
use cadre_cluster::membership::{MemberEvent, Profile};
use cadre_cluster::wire::Secret;
use cadre_runtime::Runtime;

/// Options of `cadre bench gossip`.
#[derive(clap::Args, Debug)]
pub(crate) struct Options {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Crashes to measure (one per round, each on a fresh cluster).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// `lan` or `local_test`.
    #[arg(long, default_value = "lan", value_parser = profile)]
    profile: Profile,
    /// Instead of crashes: hog every core with busy threads for this many seconds on a
    /// converged cluster and count members wrongly declared down.
    #[arg(long)]
    saturate: Option<u64>,
}

fn profile(s: &str) -> Result<Profile, String> {
    cadre_actors::node::config::parse_profile("--profile", s).map_err(|e| e.to_string())
}

/// Starts `opts.nodes` gossip nodes and waits for them to converge.
async fn cluster(opts: &Options, secret: &Secret, rt: &Runtime) -> anyhow::Result<Vec<Gossip>> {
    let config = |seeds| GossipConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        seeds,
        profile: opts.profile,
        cluster_size: opts.nodes as u32,
        secret: secret.clone(),
    };
    let seed = Gossip::start(config(vec![]), rt).await?;
    let mut nodes = vec![seed.clone()];
    for _ in 1..opts.nodes {
        nodes.push(Gossip::start(config(vec![seed.local_addr()]), rt).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut all = true;
        for g in &nodes {
            all &= g.members().await.len() == opts.nodes - 1;
        }
        if all {
            return Ok(nodes);
        }
        if Instant::now() > deadline {
            bail!("{} nodes did not converge within 120 s", opts.nodes);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Counts members declared down on a converged cluster while busy threads hog every core.
async fn saturated(opts: &Options, secret: &Secret, seconds: u64) -> anyhow::Result<usize> {
    let rt = Runtime::new("bench");
    let nodes = cluster(opts, secret, &rt).await?;
    let mut watches: Vec<_> = nodes.iter().map(Gossip::subscribe).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: Vec<_> = (0..2 * cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        let _ = h.join();
    }
    let mut downs = 0;
    for w in &mut watches {
        while let Ok(e) = w.try_recv() {
            downs += usize::from(matches!(e, MemberEvent::Down(_)));
        }
    }
    for g in &nodes {
        g.stop(Duration::from_secs(1)).await;
    }
    Ok(downs)
}

async fn round(opts: &Options, secret: &Secret) -> anyhow::Result<Duration> {
    let rt = Runtime::new("bench");
    let mut nodes = cluster(opts, secret, &rt).await?;
    let victim = nodes.pop().ok_or_else(|| anyhow!("no nodes"))?;
    let gone = victim.local_addr();
    let mut watches: Vec<_> = nodes.iter().map(Gossip::subscribe).collect();
    let t0 = Instant::now();
    victim.stop(Duration::from_secs(1)).await;
    for w in &mut watches {
        loop {
            match tokio::time::timeout(Duration::from_secs(60), w.recv()).await {
                Ok(Ok(MemberEvent::Down(id))) if id.addr == gone => break,
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => bail!("event stream: {e}"),
                Err(_) => bail!("a node never saw the crash within 60 s"),
            }
        }
    }
    let took = t0.elapsed();
    for g in &nodes {
        g.stop(Duration::from_secs(1)).await;
    }
    Ok(took)
}

pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    if opts.nodes < 2 || opts.rounds == 0 {
        bail!("--nodes must be at least 2 and --rounds at least 1");
    }
    let secret = Secret::new(b"bench-gossip".to_vec())?;
    if let Some(seconds) = opts.saturate {
        let downs = System::new().block_on(saturated(&opts, &secret, seconds))?;
        println!(
            "false positives, {:?} profile, {} nodes, every core hogged for {seconds} s: {downs} members declared down (target 0)",
            opts.profile, opts.nodes
        );
        return Ok(());
    }
    let mut times = Vec::new();
    for r in 0..opts.rounds {
        let took = System::new().block_on(round(&opts, &secret))?;
        println!(
            "  round {}: crash seen down by all {} others in {took:.2?}",
            r + 1,
            opts.nodes - 1
        );
        times.push(took);
    }
    times.sort();
    println!(
        "crash detection, {:?} profile, {} nodes over UDP on 127.0.0.1: median {:.2?}, worst {:.2?} (target 3 s)",
        opts.profile,
        opts.nodes,
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}
