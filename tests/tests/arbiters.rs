//! A supervised actor's handle used from other arbiters (other threads): tell and ask reach
//! the current instance across its restarts, whichever thread sends.

use std::time::Duration;

use actix::prelude::*;
use cadre_runtime::testkit::{run, EventProbe};
use cadre_runtime::{AskError, ChildSpec, EventKind, Runtime, SupervisorSpec};

const T: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counter(u64);
impl Actor for Counter {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Add(u64);
impl Handler<Add> for Counter {
    type Result = u64;
    fn handle(&mut self, m: Add, _: &mut Context<Self>) -> u64 {
        self.0 += m.0;
        self.0
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Crash;
impl Handler<Crash> for Counter {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("crash requested");
    }
}

#[test]
fn handle_works_from_other_arbiters_across_restarts() {
    run(async {
        let rt = Runtime::new("node-a");
        let mut events = EventProbe::new(&rt);
        let spec = ChildSpec::new("counter", Counter::default);
        let counter = spec.actor_ref();
        let root = SupervisorSpec::new("root")
            .child(spec)
            .start(&rt)
            .await
            .unwrap();

        // Four other arbiters (threads) each add 1..=25 through the same handle.
        let arbiters: Vec<_> = (0..4).map(|_| Arbiter::new()).collect();
        let mut done = Vec::new();
        for arbiter in &arbiters {
            let c = counter.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            arbiter.spawn(async move {
                let mut last = 0;
                for _ in 0..25 {
                    last = c.ask(Add(1), T).await.expect("ask from another thread");
                }
                let _ = tx.send(last);
            });
            done.push(rx);
        }
        for rx in done {
            rx.await.unwrap();
        }
        assert_eq!(counter.ask(Add(0), T).await.unwrap(), 100);

        // Crash it from another thread; the restart is seen here and the state is fresh.
        let c = counter.clone();
        arbiters[0].spawn(async move {
            c.tell(Crash).expect("tell from another thread");
        });
        events
            .expect("counter restarted", T, |e| {
                &*e.child == "counter" && e.kind == EventKind::Started { generation: 2 }
            })
            .await;
        let c = counter.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        arbiters[1].spawn(async move {
            let _ = tx.send(c.ask(Add(5), T).await);
        });
        assert_eq!(rx.await.unwrap().unwrap(), 5);

        root.stop(T).await.unwrap();
        let c = counter.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        arbiters[2].spawn(async move {
            let _ = tx.send(c.ask(Add(1), T).await);
        });
        assert!(matches!(rx.await.unwrap(), Err(AskError::Dead(Add(1)))));
        for a in arbiters {
            a.stop();
            a.join().unwrap();
        }
    });
}
