//! `cadre bench kv`: three `cadre node --roles store` processes on 127.0.0.1 (fsync on every
//! commit), and this process as a client node: put throughput and latency with 1 and with 64
//! concurrent clients, 256-byte values, and watch notification latency. The baseline, measured
//! in the same run on the same disk: single-entry redb commits with the same durability, one
//! after the other, which is what one put costs at least on each replica; and the same from three
//! writers at once, each into its own file, which is how the three store processes share the
//! disk (its commits per second in total bound the commits of all three stores together).

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::System;
use anyhow::{anyhow, bail, Context as _};
use cadre_actors::node::{ClusterNode, NodeConfig};
use cadre_actors::store::Kv;
use cadre_cluster::membership::Profile;
use cadre_cluster::store::WatchUpdate;
use cadre_cluster::wire::Secret;
use cadre_runtime::Runtime;

use crate::child::NodeChild;

/// `cadre bench kv`'s options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Puts with one client.
    #[arg(long, default_value_t = 1_000)]
    single: usize,
    /// Puts with 64 concurrent clients.
    #[arg(long, default_value_t = 20_000)]
    concurrent: usize,
    /// Watched puts.
    #[arg(long, default_value_t = 500)]
    watched: usize,
}

const SECRET_ENV: &str = "CADRE_SECRET";

/// Starts a store node.
fn store_node(
    name: &str,
    seed: Option<&str>,
    dir: &std::path::Path,
    secret: &str,
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
        "--roles",
        "store",
        "--profile",
        "local_test",
        "--cluster",
        "bench-kv",
        "--data-dir",
        data,
    ];
    if let Some(seed) = seed {
        args.extend(["--seed", seed]);
    }
    NodeChild::start(
        &args,
        &[(SECRET_ENV, secret), ("CADRE_LOG", "info,openraft=error")],
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Single-entry redb commits of 256-byte values with immediate durability, one after the
/// other, into a file of its own: what one put costs at least on each replica.
fn raw_commits(path: &std::path::Path, n: usize) -> anyhow::Result<f64> {
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("bench");
    let db = redb::Database::create(path)?;
    let value = [7u8; 256];
    let start = Instant::now();
    for i in 0..n as u64 {
        let txn = db.begin_write()?;
        {
            let mut t = txn.open_table(T)?;
            t.insert(i, value.as_slice())?;
        }
        txn.commit()?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// [`raw_commits`] from three threads at once, each into its own file, as the three store
/// processes commit on this one disk: the disk's commits per second in total.
fn raw_commits_shared(dir: &std::path::Path, n: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let path = dir.join(format!("baseline-shared-{i}.redb"));
            std::thread::spawn(move || raw_commits(&path, n))
        })
        .collect();
    for w in writers {
        w.join()
            .map_err(|_| anyhow!("a baseline writer panicked"))??;
    }
    Ok(3.0 * n as f64 / start.elapsed().as_secs_f64())
}

/// Runs `cadre bench kv`.
pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    let dir: PathBuf = std::env::temp_dir().join(format!("cadre-bench-kv-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&opts, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(opts: &Options, dir: &std::path::Path) -> anyhow::Result<()> {
    let secret = crate::demo::random_secret()?;
    let mut s0 = store_node("s0", None, dir, &secret)?;
    let seed = s0.addr.clone();
    let s1 = store_node("s1", Some(&seed), dir, &secret)?;
    let s2 = store_node("s2", Some(&seed), dir, &secret)?;
    s0.wait_line("store groups formed")?;
    let _procs = [s0, s1, s2];
    let baseline = raw_commits(&dir.join("baseline.redb"), 500)?;
    let shared = raw_commits_shared(dir, 300)?;
    System::new().block_on(async move {
        let config = NodeConfig {
            name: Some("bench".into()),
            cluster: "bench-kv".into(),
            listen: "127.0.0.1:0".parse()?,
            seeds: vec![seed.parse()?],
            profile: Profile::LocalTest,
            ..NodeConfig::default()
        };
        let secret = Secret::new(secret.into_bytes())?;
        let node = ClusterNode::start(&config, secret, &Runtime::new("bench")).await?;
        let kv = node.kv();
        // Warm up: until every shard answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        for g in 0..64 {
            while kv.put(format!("bench/{g}/warm").as_bytes(), b"x").await.is_err() {
                if Instant::now() > deadline {
                    bail!("the store did not answer within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let value = vec![b'v'; 256];
        println!("cadre bench kv: 3 store processes (4 shards, fsync per commit) on 127.0.0.1");
        let (one_rate, one_lat) = puts(&kv, 1, opts.single, &value).await?;
        let (many_rate, many_lat) = puts(&kv, 64, opts.concurrent, &value).await?;
        let watch = watch_latency(&kv, opts.watched, &value).await?;
        println!();
        println!("| figure | cadre | baseline | ratio |");
        println!("|---|---|---|---|");
        println!(
            "| puts/s, 1 client | {one_rate:.0} | {baseline:.0} (raw redb fsync'd commits/s) | {:.2}x |",
            one_rate / baseline
        );
        println!(
            "| puts/s, 64 clients | {many_rate:.0} | {baseline:.0} (raw redb fsync'd commits/s) | {:.2}x |",
            many_rate / baseline
        );
        println!(
            "| the disk, 3 writers at once (as the 3 stores) | | {shared:.0} raw commits/s in total | |"
        );
        println!(
            "| put latency, 1 client, p50 / p99 | {:.2} / {:.2} ms | {:.2} ms (one raw commit) | |",
            ms(percentile(&one_lat, 0.5)),
            ms(percentile(&one_lat, 0.99)),
            1e3 / baseline
        );
        println!(
            "| put latency, 64 clients, p50 / p99 | {:.2} / {:.2} ms | | |",
            ms(percentile(&many_lat, 0.5)),
            ms(percentile(&many_lat, 0.99))
        );
        println!(
            "| watch notification, p50 / p99 (put called → event seen) | {:.2} / {:.2} ms | | |",
            ms(percentile(&watch, 0.5)),
            ms(percentile(&watch, 0.99))
        );
        node.leave(Duration::from_secs(2)).await;
        Ok(())
    })
}

/// `n` puts from `clients` concurrent clients; the rate and the sorted latencies.
async fn puts(
    kv: &Kv,
    clients: usize,
    n: usize,
    value: &[u8],
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let per = n.div_ceil(clients);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (kv, value) = (kv.clone(), value.to_vec());
        tasks.push(actix::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let key = format!("bench/{}/k{c}-{i}", (c * per + i) % 1024);
                let t = Instant::now();
                kv.put(key.as_bytes(), &value).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::with_capacity(per * clients);
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    Ok((rate, all))
}

/// Puts one after the other under a watched prefix; for each, the time from the put's call to
/// its event at the watcher.
async fn watch_latency(kv: &Kv, n: usize, value: &[u8]) -> anyhow::Result<Vec<Duration>> {
    let group = b"watched/g/";
    let mut watch = kv.watch(group, 0).await?;
    let sent: Rc<std::cell::RefCell<HashMap<Vec<u8>, Instant>>> = Rc::default();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("watched/g/{i}").into_bytes();
        sent.borrow_mut().insert(key.clone(), Instant::now());
        kv.put(&key, value).await?;
        loop {
            let update = tokio::time::timeout(Duration::from_secs(5), watch.next())
                .await
                .context("no watch event within 5 s")?
                .ok_or_else(|| anyhow!("the watch ended"))?;
            let WatchUpdate::Changes { events, .. } = update.update else {
                continue;
            };
            let mut got = false;
            for e in events {
                if let Some(t) = sent.borrow_mut().remove(&e.kv.key) {
                    lat.push(t.elapsed());
                    got |= e.kv.key == key;
                }
            }
            if got {
                break;
            }
        }
    }
    lat.sort();
    Ok(lat)
}
