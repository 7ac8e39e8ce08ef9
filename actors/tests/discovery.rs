//! Three nodes in one process on 127.0.0.1: a service registered on one is found from the
//! others, a cluster-wide actor name reaches its actor from any node, and the services of a
//! crashed node vanish everywhere.

mod common;
mod counter;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cadre_actors::node::view::MemberState;
use cadre_actors::node::{ClusterNode, NodeConfig};
use cadre_cluster::discovery::{DirectoryEvent, Service};
use cadre_cluster::membership::Profile;
use cadre_cluster::wire::Secret;
use cadre_runtime::testkit::run;
use cadre_runtime::{ChildSpec, Runtime, SupervisorSpec};
use common::eventually_within;
use counter::{Counter, Incr};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(10);

async fn start(name: &str, seeds: Vec<SocketAddr>) -> ClusterNode {
    let config = NodeConfig {
        name: Some(name.into()),
        cluster: "test".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        seeds,
        profile: Profile::LocalTest,
        ..NodeConfig::default()
    };
    let secret = Secret::new(b"discovery".to_vec()).unwrap();
    ClusterNode::start(&config, secret, &Runtime::new(name))
        .await
        .unwrap()
}

#[test]
fn services_and_actor_names_reach_every_node_and_vanish_with_theirs() {
    run(async {
        let n0 = start("n0", vec![]).await;
        let n1 = start("n1", vec![n0.addr()]).await;
        let n2 = start("n2", vec![n0.addr()]).await;
        let nodes = [n0.clone(), n1.clone(), n2.clone()];
        eventually_within("all three see three members up", T, || async {
            for n in &nodes {
                let rows = n.members().await;
                if rows.len() != 3 || rows.iter().any(|r| r.state != MemberState::Up) {
                    return false;
                }
            }
            true
        })
        .await;

        let mut watch = n0.watch();
        let mut orders_watch = n1.watch_service("orders");
        let orders = Service {
            name: "orders".into(),
            addr: "127.0.0.1:9999".parse().unwrap(),
            tags: vec!["v1".into()],
            meta: BTreeMap::new(),
        };
        n2.register_service(orders.clone()).await;
        for n in [&n0, &n1] {
            eventually_within("orders found", T, || async {
                n.lookup("orders").await.len() == 1
            })
            .await;
            assert_eq!(
                n.lookup("orders").await,
                [("n2".to_string(), orders.clone())]
            );
        }
        match tokio::time::timeout(T, watch.recv()).await {
            Ok(Ok(DirectoryEvent::ServiceAdded { node, service })) => {
                assert_eq!((node.as_str(), service.name.as_str()), ("n2", "orders"))
            }
            other => panic!("expected ServiceAdded, got {other:?}"),
        }

        assert!(matches!(
            tokio::time::timeout(T, orders_watch.recv()).await.unwrap().unwrap(),
            DirectoryEvent::ServiceAdded { ref node, .. } if node == "n2"
        ));

        // A cluster-wide actor name, served by n1, reached from n0.
        let rt = Runtime::new("app");
        let spec = ChildSpec::new("counter", Counter::default);
        let counter = spec.actor_ref();
        SupervisorSpec::new("app")
            .child(spec)
            .start(&rt)
            .await
            .unwrap();
        n1.register_actor("counter", counter).await.accept::<Incr>();
        eventually_within("n0 finds counter", T, || async {
            n0.lookup_actor("counter").await.is_some()
        })
        .await;
        let remote = n0.lookup_actor("counter").await.unwrap();
        assert_eq!(remote.node(), "n1");
        assert_eq!(remote.ask(Incr, T).await.unwrap(), 1);

        // n2 crashes: its services vanish from every directory.
        n2.crash().await;
        for n in [&n0, &n1] {
            eventually_within("orders gone", T, || async {
                n.lookup("orders").await.is_empty()
            })
            .await;
        }
        let removed = async {
            loop {
                if let Ok(DirectoryEvent::ServiceRemoved { node, .. }) = watch.recv().await {
                    return node;
                }
            }
        };
        assert_eq!(tokio::time::timeout(T, removed).await.unwrap(), "n2");
    });
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Alert {
    n: u32,
}

#[test]
fn topic_events_reach_every_subscriber_on_every_node_once_in_order() {
    run(async {
        let n0 = start("n0", vec![]).await;
        let n1 = start("n1", vec![n0.addr()]).await;
        let n2 = start("n2", vec![n0.addr()]).await;
        let mut s1 = n1.subscribe::<Alert>("alerts").await.unwrap();
        let mut s2 = n2.subscribe::<Alert>("alerts").await.unwrap();
        let mut s2b = n2.subscribe::<Alert>("alerts").await.unwrap();
        eventually_within("n0 knows both subscribing nodes", T, || async {
            n0.topic_subscribers("alerts").await == ["n1", "n2"]
        })
        .await;
        for n in 1..=50 {
            assert_eq!(n0.publish("alerts", &Alert { n }).await.unwrap(), 2);
        }
        for sub in [&mut s1, &mut s2, &mut s2b] {
            for n in 1..=50 {
                let got = tokio::time::timeout(T, sub.recv()).await.unwrap().unwrap();
                assert_eq!(got, Alert { n });
            }
            // Once: nothing more.
            assert!(tokio::time::timeout(Duration::from_millis(100), sub.recv())
                .await
                .is_err());
        }
        assert!(n0.topic_subscribers("nobody").await.is_empty());
        assert_eq!(n0.publish("nobody", &Alert { n: 0 }).await.unwrap(), 0);
    });
}

#[test]
fn a_local_actor_receives_typed_cluster_events() {
    use cadre_actors::node::view::ClusterEvent;
    use cadre_runtime::testkit::Probe;
    run(async {
        let n0 = start("n0", vec![]).await;
        let mut probe = Probe::<ClusterEvent>::new("events");
        n0.subscribe_actor(probe.actor_ref());
        let n1 = start("n1", vec![n0.addr()]).await;
        // Skips whatever else comes first; at most `T` in all.
        async fn next_matching(
            probe: &mut Probe<ClusterEvent>,
            pred: impl Fn(&ClusterEvent) -> bool,
        ) -> ClusterEvent {
            loop {
                let e = probe.expect_msg(T).await;
                if pred(&e) {
                    return e;
                }
            }
        }
        let up = next_matching(&mut probe, |e| matches!(e, ClusterEvent::MemberUp { .. })).await;
        assert!(
            matches!(up, ClusterEvent::MemberUp { ref name, .. } if name == "n1"),
            "{up:?}"
        );
        n1.register_service(Service {
            name: "web".into(),
            addr: "127.0.0.1:8080".parse().unwrap(),
            tags: vec![],
            meta: BTreeMap::new(),
        })
        .await;
        let added = next_matching(&mut probe, |e| {
            matches!(e, ClusterEvent::ServiceAdded { .. })
        })
        .await;
        assert!(matches!(added, ClusterEvent::ServiceAdded { ref node, .. } if node == "n1"));
        n1.crash().await;
        let down =
            next_matching(&mut probe, |e| matches!(e, ClusterEvent::MemberDown { .. })).await;
        assert!(matches!(down, ClusterEvent::MemberDown { ref name, .. } if name == "n1"));
        let removed = next_matching(&mut probe, |e| {
            matches!(e, ClusterEvent::ServiceRemoved { .. })
        })
        .await;
        assert!(matches!(removed, ClusterEvent::ServiceRemoved { ref node, .. } if node == "n1"));
    });
}
