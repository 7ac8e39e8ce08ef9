//! `cadre bench tasks`: no-op tasks from one master (this process) to workers in two other
//! processes on 127.0.0.1 — throughput with batching, beside the same master sending one task
//! per message, measured in the same run — and the round trip of a single task, beside a plain
//! remote ask to an actor on the same worker node.

use std::time::{Duration, Instant};

use actix::System;
use anyhow::{anyhow, Context as _};
use cadre_actors::tasks::{Master, MasterConfig, Task};
use cadre_runtime::Runtime;

use crate::demo::{local_cluster, EchoMsg, Noop};

/// `cadre bench tasks`'s options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// No-op tasks per batched throughput round.
    #[arg(long, default_value_t = 200_000)]
    tasks: u32,
    /// Tasks per unbatched round (one task per message is slow: fewer tasks).
    #[arg(long, default_value_t = 20_000)]
    unbatched_tasks: u32,
    /// Throughput rounds (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Sequential round trips measured, for the task and for the baseline ask.
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs `cadre bench tasks`.
pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    System::new().block_on(async move {
        let (node, batched, _procs) = local_cluster(
            2,
            2,
            256,
            Noop::NAME,
            MasterConfig {
                name: "bench.batched".into(),
                batch_max: 256,
                ..MasterConfig::default()
            },
        )
        .await?;
        let unbatched = Master::start(
            &node,
            MasterConfig {
                name: "bench.unbatched".into(),
                batch_max: 1,
                batch_delay: Duration::ZERO,
                ..MasterConfig::default()
            },
            &Runtime::new("master"),
        )
        .await
        .map_err(|e| anyhow!("the second master did not start: {e}"))?;
        unbatched
            .wait_for_workers(Noop::NAME, 2, Duration::from_secs(30))
            .await?;
        println!("cadre bench tasks: master here, 2 worker processes (2 workers each), 127.0.0.1");
        let mut with = Vec::new();
        let mut without = Vec::new();
        for round in 1..=opts.rounds {
            let w = throughput(&batched, opts.tasks).await?;
            let wo = throughput(&unbatched, opts.unbatched_tasks).await?;
            println!(
                "  round {round}: batched {:>9.0} tasks/s   one per message {:>9.0} tasks/s",
                w, wo
            );
            with.push(w);
            without.push(wo);
        }
        let (w, wo) = (median(with), median(without));

        let task_rtt = task_round_trips(&batched, opts.samples).await?;
        let ask = node.transport().actor("worker-1", "echo");
        let mut ask_rtt = Vec::with_capacity(opts.samples);
        for i in 0..opts.samples {
            let t = Instant::now();
            ask.ask(EchoMsg(i as u32), Duration::from_secs(5)).await?;
            ask_rtt.push(t.elapsed());
        }
        ask_rtt.sort();
        let (t50, t99) = (percentile(&task_rtt, 0.5), percentile(&task_rtt, 0.99));
        let (a50, a99) = (percentile(&ask_rtt, 0.5), percentile(&ask_rtt, 0.99));
        println!();
        println!("| figure | cadre tasks | baseline | ratio |");
        println!("|---|---|---|---|");
        println!(
            "| no-op tasks/s, batched (median of {}) | {:.0} | {:.0} (one task per message) | {:.1}x |",
            opts.rounds,
            w,
            wo,
            w / wo
        );
        println!(
            "| one task round trip p50 | {:.1} µs | {:.1} µs (remote ask) | {:.2}x |",
            micros(t50),
            micros(a50),
            micros(t50) / micros(a50)
        );
        println!(
            "| one task round trip p99 | {:.1} µs | {:.1} µs (remote ask) | {:.2}x |",
            micros(t99),
            micros(a99),
            micros(t99) / micros(a99)
        );
        Ok(())
    })
}

/// Tasks per second for `n` no-op tasks, submitted as one batch.
async fn throughput(master: &Master, n: u32) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut results = master.submit_batch::<Noop>(0..n).await?;
    let mut got = 0u32;
    while let Some((_, r)) = tokio::time::timeout(Duration::from_secs(60), results.next())
        .await
        .context("no result for 60 s")?
    {
        r?;
        got += 1;
    }
    anyhow::ensure!(got == n, "{got} results for {n} tasks");
    Ok(f64::from(n) / start.elapsed().as_secs_f64())
}

/// `samples` single tasks one after the other, sorted round trips.
async fn task_round_trips(master: &Master, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let mut rtt = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = Instant::now();
        let handle = master.submit::<Noop>(i as u32).await?;
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .context("a task took over 5 s")??;
        rtt.push(t.elapsed());
    }
    rtt.sort();
    Ok(rtt)
}
