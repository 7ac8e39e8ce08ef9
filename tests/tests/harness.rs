//! Clusters in one process under faults, on the shared harness: a partitioned node is seen down
//! and comes back when healed; a store node killed and restarted under its name rejoins with
//! its data, the store serving throughout; membership converges over lossy, reordering gossip.

use std::time::Duration;

use cadre_cluster::members::MemberState;
use cadre_runtime::testkit::run;
use cadre_tests::{eventually, Cluster, NodeSpec};

const T: Duration = Duration::from_secs(30);

async fn state_of(cluster: &Cluster, viewer: usize, member: &str) -> Option<MemberState> {
    cluster
        .node(viewer)
        .members()
        .await
        .into_iter()
        .find(|m| m.id == member)
        .map(|m| m.state)
}

#[test]
fn a_partitioned_node_is_seen_down_and_back_up_once_healed() {
    run(async {
        let c = Cluster::start(&[
            NodeSpec::new("a", &[]),
            NodeSpec::new("b", &[]),
            NodeSpec::new("c", &[]),
        ])
        .await;
        for viewer in 0..3 {
            for member in ["a", "b", "c"] {
                let c = &c;
                eventually(&format!("{viewer} sees {member} up"), T, || async move {
                    c.node(viewer).name() == member
                        || state_of(c, viewer, member).await == Some(MemberState::Up)
                })
                .await;
            }
        }
        c.partition(0, 2);
        c.partition(1, 2);
        eventually("a sees c gone", T, || async {
            matches!(
                state_of(&c, 0, "c").await,
                Some(MemberState::Down | MemberState::Suspect)
            )
        })
        .await;
        assert!(
            !c.node(0).transport().is_reachable("c"),
            "no message crosses a partition"
        );
        c.heal(0, 2);
        c.heal(1, 2);
        eventually("a sees c up again", T, || async {
            state_of(&c, 0, "c").await == Some(MemberState::Up)
        })
        .await;
        c.stop().await;
    });
}

#[test]
fn a_killed_store_node_restarted_under_its_name_rejoins_with_its_data() {
    run(async {
        let mut c = Cluster::start(&[
            NodeSpec::new("s0", &["store"]),
            NodeSpec::new("s1", &["store"]),
            NodeSpec::new("s2", &["store"]),
        ])
        .await;
        c.node(0).store_ready(T).await.unwrap();
        for i in 0..20 {
            let key = format!("apps/k{i}/v");
            c.node(i % 3).kv().put(key.as_bytes(), b"1").await.unwrap();
        }
        c.kill(2).await;
        // Two of three: the store goes on, once the shards s2 led have elected another leader
        // (until then a write says `NoLeader`: nothing applied, retry).
        for i in 20..30 {
            let key = format!("apps/k{i}/v");
            let kv = c.node(i % 2).kv();
            eventually(&format!("{key} written without s2"), T, || async {
                match kv.put(key.as_bytes(), b"1").await {
                    Ok(_) => true,
                    Err(cadre_actors::store::KvError::NoLeader { .. }) => false,
                    Err(e) => panic!("{key}: {e}"),
                }
            })
            .await;
        }
        c.restart(2).await;
        let kv = c.node(2).kv();
        eventually(
            "every key reads back through the restarted node",
            T,
            || async {
                let mut all = true;
                for i in 0..30 {
                    let key = format!("apps/k{i}/v");
                    all &= matches!(kv.get(key.as_bytes()).await, Ok(Some(_)));
                }
                all
            },
        )
        .await;
        eventually("the restarted node reports its status", T, || async {
            cadre_actors::agent::statuses(&kv).await.is_ok_and(|s| {
                s.iter()
                    .any(|r| r.node == "s2" && r.incarnation == c.node(2).started_ms())
            })
        })
        .await;
        c.stop().await;
    });
}

#[test]
fn membership_converges_over_lossy_reordering_gossip() {
    run(async {
        let c = Cluster::start(&[
            NodeSpec::new("a", &[]),
            NodeSpec::new("b", &[]),
            NodeSpec::new("c", &[]),
            NodeSpec::new("d", &[]),
        ])
        .await;
        for from in 0..4 {
            for to in 0..4 {
                if from != to {
                    c.degrade(from, to, 0.2, Duration::from_millis(30));
                }
            }
        }
        for viewer in 0..4 {
            let c = &c;
            eventually(
                &format!("node {viewer} sees all four up (seed {})", c.seed()),
                T,
                || async move {
                    let rows = c.node(viewer).members().await;
                    rows.len() == 4 && rows.iter().all(|m| m.state == MemberState::Up)
                },
            )
            .await;
        }
        c.stop().await;
    });
}
