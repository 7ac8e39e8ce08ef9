//! Gossip membership over real UDP on 127.0.0.1 (port 0), in one process, with the fast
//! `local_test` profile: convergence, crash detection, graceful leave, and a wrong secret.

use std::time::Duration;

use cadre_actors::membership::{Gossip, GossipConfig};
use cadre_cluster::membership::{MemberEvent, Profile};
use cadre_cluster::wire::Secret;
use cadre_runtime::testkit::run;
use cadre_runtime::Runtime;
use tokio::sync::broadcast;

const T: Duration = Duration::from_secs(10);

fn config(seeds: Vec<std::net::SocketAddr>, secret: &str) -> GossipConfig {
    GossipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        seeds,
        profile: Profile::LocalTest,
        cluster_size: 5,
        secret: Secret::new(secret.as_bytes().to_vec()).unwrap(),
    }
}

/// Starts a gossip member on 127.0.0.1 that joins through `seeds`.
async fn gossip(rt: &Runtime, seeds: Vec<std::net::SocketAddr>, secret: &str) -> Gossip {
    Gossip::start(config(seeds, secret), rt)
        .await
        .expect("the gossip member starts")
}

/// Waits (at most `T`) for an event matching `pred`.
async fn expect(
    rx: &mut broadcast::Receiver<MemberEvent>,
    what: &str,
    pred: impl Fn(&MemberEvent) -> bool,
) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if pred(&e) => return,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => panic!("event stream broke while waiting for {what}: {e}"),
            Err(_) => panic!("no {what} within {T:?}"),
        }
    }
}

/// Waits (at most `T`) until every node sees `n - 1` others.
async fn converged(nodes: &[Gossip]) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let mut all = true;
        for g in nodes {
            all &= g.members().await.len() == nodes.len() - 1;
        }
        if all {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence within {T:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn five_nodes_converge_and_a_stopped_node_is_seen_down() {
    run(async {
        let rt = Runtime::default();
        let seed = gossip(&rt, vec![], "s").await;
        let mut nodes = vec![seed.clone()];
        for _ in 0..4 {
            nodes.push(gossip(&rt, vec![seed.local_addr()], "s").await);
        }
        converged(&nodes).await;
        let victim = nodes.pop().unwrap();
        let victim_addr = victim.local_addr();
        let mut watch = nodes[0].subscribe();
        victim.stop(T).await; // silently: peers must detect it
        expect(
            &mut watch,
            "the stopped node down",
            |e| matches!(e, MemberEvent::Down(id) if id.addr == victim_addr),
        )
        .await;
        converged(&nodes).await;
    });
}

#[test]
fn a_leaving_node_is_seen_down_and_a_wrong_secret_never_joins() {
    run(async {
        let rt = Runtime::default();
        let a = gossip(&rt, vec![], "s").await;
        let b = gossip(&rt, vec![a.local_addr()], "s").await;
        converged(&[a.clone(), b.clone()]).await;
        let intruder = gossip(&rt, vec![a.local_addr()], "other").await;
        let mut watch = a.subscribe();
        let b_addr = b.local_addr();
        b.leave(T).await;
        expect(
            &mut watch,
            "b down after leaving",
            |e| matches!(e, MemberEvent::Down(id) if id.addr == b_addr),
        )
        .await;
        assert!(
            a.members().await.is_empty(),
            "the intruder never became a member"
        );
        assert!(intruder.members().await.is_empty());
    });
}

#[test]
fn ten_and_thirty_nodes_converge_over_udp() {
    for n in [10, 30] {
        run(async move {
            let rt = Runtime::default();
            let seed = gossip(&rt, vec![], "s").await;
            let mut nodes = vec![seed.clone()];
            for _ in 1..n {
                nodes.push(gossip(&rt, vec![seed.local_addr()], "s").await);
            }
            converged(&nodes).await;
            for g in &nodes {
                g.stop(T).await;
            }
        });
    }
}

#[test]
fn a_restarted_node_replaces_its_old_identity_everywhere() {
    run(async {
        let rt = Runtime::default();
        let a = gossip(&rt, vec![], "s").await;
        let b = gossip(&rt, vec![a.local_addr()], "s").await;
        let c = gossip(&rt, vec![a.local_addr()], "s").await;
        converged(&[a.clone(), b.clone(), c.clone()]).await;
        let old = c.identity().await.unwrap();
        let mut watch = a.subscribe();
        c.stop(T).await;
        expect(
            &mut watch,
            "c down",
            |e| matches!(e, MemberEvent::Down(id) if *id == old),
        )
        .await;
        // c comes back on the same address: a later start, a higher bump.
        let mut cfg = config(vec![a.local_addr()], "s");
        cfg.listen = old.addr;
        let c2 = Gossip::start(cfg, &rt).await.unwrap();
        // Every other node comes to know c under its new identity, and not the old one.
        // (Read c's identity each time: rejoining may renew it once more.)
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let new = c2.identity().await.unwrap();
            let mut done = new.addr == old.addr && new != old;
            for g in [&a, &b] {
                let members = g.members().await;
                done &= members.contains(&new) && !members.contains(&old);
            }
            if done {
                assert!(
                    new.bump.wrapping_sub(old.bump) < u32::MAX / 2,
                    "{new:?} beats {old:?}"
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "c's new identity {new:?} never replaced {old:?}: a sees {:?}, b sees {:?}",
                a.members().await,
                b.members().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}
