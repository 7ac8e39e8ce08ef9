//! Defining task kinds and submitting them: three nodes in this process on 127.0.0.1 — one
//! submits, two run tasks — counting word frequencies over generated documents, with one
//! sync and one async task kind, a batch streamed in completion order, and a single task.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release -p cadre-examples --example tasks
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use cadre_actors::node::{ClusterNode, NodeConfig};
use cadre_actors::tasks::{Master, MasterConfig, Task, TaskPolicy, TaskRegistry, WorkerConfig};
use cadre_cluster::membership::Profile;
use cadre_cluster::wire::Secret;
use cadre_runtime::Runtime;

/// Counts the words of one document.
struct WordCount;
impl Task for WordCount {
    const NAME: &'static str = "example.word_count";
    type Input = String;
    type Output = BTreeMap<String, u64>;
}

/// Looks a word up somewhere slow (here: a short sleep); retried twice after an error.
struct Define;
impl Task for Define {
    const NAME: &'static str = "example.define";
    type Input = String;
    type Output = String;
    fn policy() -> TaskPolicy {
        TaskPolicy {
            max_retries: 2,
            ..TaskPolicy::default()
        }
    }
}

fn registry() -> TaskRegistry {
    TaskRegistry::new()
        // Sync handlers run on the blocking pool: heavy work never stalls the node.
        .sync::<WordCount, _, _>(|doc: String| {
            let mut counts = BTreeMap::new();
            for word in doc.split_whitespace() {
                *counts.entry(word.to_lowercase()).or_insert(0) += 1;
            }
            Ok::<_, String>(counts)
        })
        // Async handlers run on the worker's arbiter.
        .async_handler::<Define, _, _, _>(|word: String| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if word.is_empty() {
                return Err("no word".to_string());
            }
            Ok(format!("{word}: a word of {} letters", word.len()))
        })
}

fn config(name: &str, seeds: Vec<std::net::SocketAddr>) -> NodeConfig {
    NodeConfig {
        name: Some(name.into()),
        cluster: "example".into(),
        listen: "127.0.0.1:0".parse().expect("an address"),
        seeds,
        profile: Profile::LocalTest,
        ..NodeConfig::default()
    }
}

/// A small generated corpus: `n` documents drawn from a fixed vocabulary.
fn corpus(n: usize) -> Vec<String> {
    const WORDS: [&str; 12] = [
        "actor",
        "node",
        "task",
        "cluster",
        "raft",
        "gossip",
        "lease",
        "watch",
        "batch",
        "retry",
        "supervisor",
        "mailbox",
    ];
    let mut rng = 7u64;
    (0..n)
        .map(|_| {
            (0..200)
                .map(|_| {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    WORDS[(rng >> 33) as usize % WORDS.len()]
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    actix::System::new().block_on(async {
        let secret = || Secret::new(b"example-secret".to_vec()).expect("a secret");
        let rt = Runtime::new("example");
        let submitter = ClusterNode::start(&config("submitter", vec![]), secret(), &rt).await?;
        let mut workers = Vec::new();
        for name in ["worker-a", "worker-b"] {
            let (node, _pool) = ClusterNode::start_with_workers(
                &config(name, vec![submitter.addr()]),
                secret(),
                &rt,
                registry(),
                WorkerConfig::default(),
            )
            .await?;
            workers.push(node);
        }
        let master = Master::start(&submitter, MasterConfig::default(), &rt).await?;
        master
            .wait_for_workers(WordCount::NAME, 2, Duration::from_secs(10))
            .await?;
        println!("two worker nodes found; counting words over 500 documents");

        // A batch: results arrive in completion order, each exactly once.
        let mut results = master.submit_batch::<WordCount>(corpus(500)).await?;
        let mut total: BTreeMap<String, u64> = BTreeMap::new();
        let mut n = 0;
        while let Some((_id, counts)) = results.next().await {
            for (word, c) in counts? {
                *total.entry(word).or_insert(0) += c;
            }
            n += 1;
        }
        println!("{n} documents counted:");
        for (word, count) in &total {
            println!("  {word:<10} {count}");
        }
        let stats = master.node_stats().await;
        for (node, s) in &stats {
            println!("{node} completed {} tasks", s.completed);
        }

        // A single task: its handle is a future of its result.
        let definition = master.submit::<Define>("supervisor".into()).await?.await?;
        println!("{definition}");
        println!("progress: {:?}", master.progress().await);
        Ok(())
    })
}
