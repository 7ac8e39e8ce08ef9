//! `cadre bench topics`: publish → subscriber latency between two nodes on 127.0.0.1, beside a
//! baseline of a plain remote tell (same payload) to an exposed actor on the same node pair,
//! measured in the same run.

use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::{anyhow, bail};
use cadre_actors::node::{ClusterNode, NodeConfig};
use cadre_actors::RemoteMessage;
use cadre_cluster::membership::Profile;
use cadre_cluster::wire::Secret;
use cadre_runtime::{ChildSpec, Runtime, SupervisorSpec};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Options of `cadre bench topics`.
#[derive(clap::Args, Debug)]
pub(crate) struct Options {
    /// Events per measurement (one in flight at a time).
    #[arg(long, default_value_t = 2_000)]
    events: usize,
}

#[derive(Serialize, Deserialize, Clone)]
struct Tick(#[serde(with = "serde_bytes")] Vec<u8>);

/// The baseline: a remote tell to an actor that forwards into a channel.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Forward(#[serde(with = "serde_bytes")] Vec<u8>);
impl RemoteMessage for Forward {
    const TAG: &'static str = "bench.forward";
}

struct Forwarder(mpsc::UnboundedSender<()>);
impl Actor for Forwarder {
    type Context = Context<Self>;
}
impl Handler<Forward> for Forwarder {
    type Result = ();
    fn handle(&mut self, _: Forward, _: &mut Context<Self>) {
        let _ = self.0.send(());
    }
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

async fn start(name: &str, seeds: Vec<std::net::SocketAddr>) -> anyhow::Result<ClusterNode> {
    let config = NodeConfig {
        name: Some(name.into()),
        listen: "127.0.0.1:0".parse()?,
        seeds,
        profile: Profile::LocalTest,
        ..NodeConfig::default()
    };
    let secret = Secret::new(b"bench-topics".to_vec())?;
    Ok(ClusterNode::start(&config, secret, &Runtime::new(name)).await?)
}

pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    if opts.events == 0 {
        bail!("--events must be at least 1");
    }
    System::new().block_on(async move {
        let n0 = start("n0", vec![]).await?;
        let n1 = start("n1", vec![n0.addr()]).await?;
        let mut sub = n1
            .subscribe::<Tick>("ticks")
            .await
            .ok_or_else(|| anyhow!("no subscription"))?;
        // The baseline actor, exposed on n1.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let rt = Runtime::new("bench");
        let spec = ChildSpec::new("forwarder", move || Forwarder(tx.clone()));
        let fwd = spec.actor_ref();
        SupervisorSpec::new("bench")
            .child(spec)
            .start(&rt)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        n1.transport().expose("forwarder", fwd).accept::<Forward>();
        let deadline = Instant::now() + Duration::from_secs(20);
        while n0.topic_subscribers("ticks").await != ["n1"] {
            if Instant::now() > deadline {
                bail!("n0 never learnt of n1's subscription");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n0.transport().connect(n1.addr(), Duration::from_secs(5)).await?;
        let target = n0.transport().actor("n1", "forwarder");
        let payload = vec![7u8; 64];

        let (mut topic, mut tell) = (Vec::new(), Vec::new());
        for round in 0..2 * opts.events {
            let t0 = Instant::now();
            if round % 2 == 0 {
                n0.publish("ticks", &Tick(payload.clone())).await?;
                sub.recv().await.map_err(|e| anyhow!("{e}"))?;
                topic.push(t0.elapsed());
            } else {
                target
                    .tell_wait(Forward(payload.clone()))
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                rx.recv().await.ok_or_else(|| anyhow!("forwarder gone"))?;
                tell.push(t0.elapsed());
            }
        }
        let (t50, t99) = percentiles(topic);
        let (b50, b99) = percentiles(tell);
        println!(
            "topic delivery (publish -> subscriber, 64 B, two nodes on 127.0.0.1, {} events):",
            opts.events
        );
        println!(
            "  topic p50 {t50:.1} µs, p99 {t99:.1} µs | remote tell baseline p50 {b50:.1} µs, p99 {b99:.1} µs | ratio p50 {:.2}x, p99 {:.2}x",
            t50 / b50,
            t99 / b99
        );
        Ok(())
    })
}
