//! One supervision tree per node: every long-running part of a node is a child of its root,
//! and killing any one of them (an abnormal exit, as a crash) leaves the node whole once its
//! supervisor has restarted it: peers still find its services and reach its actors, its
//! subscriptions still receive, the store still takes writes, and its agent still reports.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use cadre_actors::agent;
use cadre_actors::node::{ClusterNode, NodeBuilder, NodeConfig, Subscription};
use cadre_actors::tasks::{Task, TaskRegistry, WorkerConfig};
use cadre_cluster::discovery::Service;
use cadre_cluster::wire::Secret;
use cadre_runtime::testkit::run;
use cadre_runtime::{ChildSpec, Intensity, Runtime};
use common::{eventually_within, node_config, TempDir};
use counter::{Counter, Incr};

mod common;
mod counter;

const T: Duration = Duration::from_secs(20);

fn config(
    name: &str,
    dir: &TempDir,
    roles: &[&str],
    seeds: Vec<std::net::SocketAddr>,
) -> NodeConfig {
    node_config("tree", name, dir, roles, seeds)
}

struct Noop;
impl Task for Noop {
    const NAME: &'static str = "noop";
    type Input = ();
    type Output = ();
}

/// The kills made on each node, to stay within the node root's restart intensity (3 within
/// 5 s: a fourth would end the node, which is the escalation working, not what is tested).
#[derive(Default)]
struct Pace(HashMap<String, Vec<Instant>>);

impl Pace {
    async fn kill(&mut self, node: &ClusterNode, child: &str) {
        let window = Intensity::default().within;
        let kills = self.0.entry(node.name().to_owned()).or_default();
        kills.retain(|t| t.elapsed() < window);
        if kills.len() >= 2 {
            // Waiting out the intensity window, not for anything to settle.
            tokio::time::sleep(window.saturating_sub(kills[0].elapsed())).await;
            kills.remove(0);
        }
        let killed = node.root().restart_child(child, T).await;
        assert!(killed.is_ok(), "{}/{child}: {killed:?}", node.name());
        kills.push(Instant::now());
    }
}

/// Everything a node offers works: membership both ways, its service found by the peer, its
/// actor reached from the peer, its subscription receiving, the store writable through it,
/// its task pool whole, and a fresh status report from it.
async fn whole(
    s0: &ClusterNode,
    w1: &ClusterNode,
    sub: &mut Subscription<String>,
    round: usize,
    what: &str,
) {
    let up = |n: &ClusterNode, other: &'static str| {
        let n = n.clone();
        async move {
            n.members()
                .await
                .iter()
                .any(|m| m.id == other && m.state == cadre_cluster::members::MemberState::Up)
        }
    };
    eventually_within(&format!("{what}: members up both ways"), T, || async {
        up(s0, "w1").await && up(w1, "s0").await
    })
    .await;
    eventually_within(&format!("{what}: w1's service found by s0"), T, || async {
        s0.lookup("orders").await.iter().any(|(n, _)| n == "w1")
    })
    .await;
    eventually_within(
        &format!("{what}: w1's actor reached from s0"),
        T,
        || async {
            s0.transport()
                .actor("w1", "counter")
                .ask(Incr, Duration::from_secs(2))
                .await
                .is_ok()
        },
    )
    .await;
    let topic = format!("{what} {round}");
    eventually_within(
        &format!("{what}: w1's subscription receives"),
        T,
        || async { s0.publish("t", &topic).await.unwrap_or(0) > 0 },
    )
    .await;
    loop {
        let got = tokio::time::timeout(T, sub.recv())
            .await
            .expect("an event in time");
        if got.as_deref() == Ok(topic.as_str()) {
            break;
        }
    }
    eventually_within(
        &format!("{what}: the store takes a write through w1"),
        T,
        || async {
            w1.kv()
                .put(format!("apps/tree/{round}").as_bytes(), b"x")
                .await
                .is_ok()
        },
    )
    .await;
    assert_eq!(w1.workers().unwrap().size().await, 2, "{what}");
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let kv = s0.kv();
    eventually_within(&format!("{what}: both agents report again"), T, || async {
        let s = agent::statuses(&kv).await.unwrap_or_default();
        s.len() == 2 && s.iter().all(|r| r.reported_ms > since)
    })
    .await;
    // Commands still reach both agents (their command watches survived, or were renewed).
    for node in ["s0", "w1"] {
        let target = agent::Target::Node(node.into());
        let kind = cadre_cluster::agent::CommandKind::Ping;
        let command = agent::issue(&kv, &target, kind, T, "test").await.unwrap();
        let result = agent::wait_result(&kv, node, &command.id, T).await;
        assert!(
            result.as_ref().is_ok_and(|r| r.message == "pong"),
            "{what}: a command to {node}: {result:?}"
        );
    }
}

#[test]
fn killing_any_child_of_a_nodes_root_leaves_the_node_whole() {
    run(async {
        let dir = TempDir::new();
        let secret = || Secret::new(b"tree-test".to_vec()).unwrap();
        let s0 = ClusterNode::start(
            &config("s0", &dir, &["store"], vec![]),
            secret(),
            &Runtime::new("s0"),
        )
        .await
        .unwrap();
        let counter = ChildSpec::new("counter", Counter::default);
        let counter_ref = counter.actor_ref();
        let registry = TaskRegistry::new().sync::<Noop, _, _>(|()| Ok::<_, String>(()));
        let w1 = NodeBuilder::new(config("w1", &dir, &[], vec![s0.addr()]), secret())
            .workers(
                registry,
                WorkerConfig {
                    workers: 2,
                    ..WorkerConfig::default()
                },
            )
            .actor(counter)
            .start(&Runtime::new("w1"))
            .await
            .unwrap();
        w1.register_actor("counter", counter_ref)
            .await
            .accept::<Incr>();
        w1.register_service(Service {
            name: "orders".into(),
            addr: w1.addr(),
            tags: vec![],
            meta: Default::default(),
        })
        .await;
        let mut sub = w1.subscribe::<String>("t").await.unwrap();
        whole(&s0, &w1, &mut sub, 0, "at start").await;

        // Every long-running part of a node is a child of its root: this list is the tree.
        let children = |n: &ClusterNode| {
            let n = n.clone();
            async move {
                n.root()
                    .which_children(T)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|c| c.id.to_string())
                    .collect::<BTreeSet<_>>()
            }
        };
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            children(&w1).await,
            set(&[
                "transport",
                "gossip",
                "view",
                "workers",
                "app",
                "gateway",
                "agent"
            ])
        );
        assert_eq!(
            children(&s0).await,
            set(&[
                "transport",
                "gossip",
                "view",
                "store",
                "app",
                "gateway",
                "store-bootstrap",
                "store-tracker",
                "agent"
            ])
        );

        let mut pace = Pace::default();
        let mut round = 0;
        for child in [
            "view",
            "agent",
            "gateway",
            "workers",
            "app",
            "gossip",
            "transport",
        ] {
            round += 1;
            pace.kill(&w1, child).await;
            whole(&s0, &w1, &mut sub, round, &format!("after w1/{child}")).await;
        }
        for child in ["store", "store-tracker", "view", "gateway", "transport"] {
            round += 1;
            pace.kill(&s0, child).await;
            whole(&s0, &w1, &mut sub, round, &format!("after s0/{child}")).await;
        }
        w1.leave(Duration::from_secs(5)).await;
        s0.leave(Duration::from_secs(5)).await;
    });
}
