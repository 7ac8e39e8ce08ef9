//! Messaging: bounded mailboxes, tell/ask errors that give the message back, asks that fail
//! fast when their actor dies, handles and names that follow restarts, panic isolation.

mod common;

use std::time::Duration;

use actix::prelude::*;
use cadre_runtime::testkit::{expect_terminated, run, run_paused, EventProbe, Probe};
use cadre_runtime::{
    defer_start, spawn, AskError, Backoff, ChildSpec, EventKind, ExitReason, Runtime, StartGate,
    SupervisorSpec, TellError,
};
use common::*;

/// An actor that blocks its mailbox until released, to fill it up.
struct Gate {
    open: bool,
}
impl Actor for Gate {
    type Context = Context<Self>;
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
struct Item(u32);

impl Handler<Item> for Gate {
    type Result = ();
    fn handle(&mut self, _: Item, _: &mut Context<Self>) {}
}

#[derive(Message)]
#[rtype(result = "()")]
struct Hold(Duration);

impl Handler<Hold> for Gate {
    type Result = ();
    fn handle(&mut self, m: Hold, ctx: &mut Context<Self>) {
        // `wait` stops mailbox processing until the future completes.
        self.open = false;
        ctx.wait(actix::fut::wrap_future(tokio::time::sleep(m.0)));
    }
}

#[test]
fn full_mailbox_refuses_and_gives_the_message_back() {
    run_paused(async {
        let gate = spawn("gate", 8, Gate { open: true });
        gate.tell(Hold(Duration::from_secs(3600))).unwrap();
        tokio::task::yield_now().await; // let it start holding
        let mut accepted = 0u32;
        let refused = loop {
            match gate.tell(Item(accepted)) {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted < 100, "the mailbox bound was not enforced");
        };
        // actix's channel admits `capacity` plus one per sender handle.
        assert!((8..=9).contains(&accepted), "accepted {accepted}");
        assert!(matches!(refused, TellError::Full(_)));
        assert_eq!(refused.into_inner().0, accepted, "the message comes back");
        match gate.ask(Item(999), T).await {
            Err(AskError::Full(Item(999))) => {}
            other => panic!("expected Full with the message back, got {other:?}"),
        }
    });
}

#[test]
fn ask_times_out_with_a_typed_error() {
    run_paused(async {
        let log = Log::default();
        let rt = Runtime::default();
        let a = worker("a", &log);
        let ha = a.actor_ref();
        let _root = start_root(&rt, a).await;
        let err = ha
            .ask(SlowPing(Duration::from_secs(10)), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, AskError::Timeout(d) if d == Duration::from_secs(1)));
    });
}

#[test]
fn ask_pending_on_an_actor_that_dies_fails_at_once() {
    run_paused(async {
        let log = Log::default();
        let rt = Runtime::default();
        let a = worker("a", &log);
        let ha = a.actor_ref();
        let _root = start_root(&rt, a).await;
        let h2 = ha.clone();
        let pending = tokio::task::spawn_local(async move {
            let t0 = tokio::time::Instant::now();
            let r = h2
                .ask(SlowPing(Duration::from_secs(30)), Duration::from_secs(60))
                .await;
            (r, t0.elapsed())
        });
        tokio::task::yield_now().await;
        ha.tell(Panic).unwrap();
        let (result, waited) = pending.await.unwrap();
        assert!(matches!(result, Err(AskError::ActorDied)), "{result:?}");
        assert!(
            waited < Duration::from_secs(1),
            "failed after {waited:?}, not at once"
        );
    });
}

#[test]
fn message_sent_while_restarting_is_refused_with_restarting_error() {
    run_paused(async {
        let log = Log::default();
        let rt = Runtime::default();
        let mut events = EventProbe::new(&rt);
        let a = worker("a", &log).backoff(Backoff::exponential(
            Duration::from_secs(1),
            Duration::from_secs(1),
        ));
        let ha = a.actor_ref();
        let _root = start_root(&rt, a).await;
        ha.tell(Panic).unwrap();
        events
            .expect("a restarting", T, |e| {
                matches!(e.kind, EventKind::Restarting { .. })
            })
            .await;
        assert!(matches!(ha.tell(Ping), Err(TellError::Restarting(Ping))));
        assert!(matches!(
            ha.ask(Ping, T).await,
            Err(AskError::Restarting(Ping))
        ));
        assert_eq!(ha.running_generation(2).await, Some(2));
        assert_eq!(ha.ask(Ping, T).await.unwrap(), (2, 1));
    });
}

/// Defers its start until it receives `Open`.
struct SlowStarter {
    gate: Option<StartGate>,
    log: Log,
}
impl Actor for SlowStarter {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        self.gate = defer_start();
        assert!(self.gate.is_some());
        self.log.push("slow started, not ready");
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Open;
impl Handler<Open> for SlowStarter {
    type Result = ();
    fn handle(&mut self, _: Open, _: &mut Context<Self>) {
        self.log.push("slow ready");
        if let Some(g) = self.gate.take() {
            g.ready();
        }
    }
}

#[test]
fn deferred_start_holds_the_supervisor_until_ready_and_queues_messages() {
    run(async {
        let log = Log::default();
        let rt = Runtime::default();
        let l = log.clone();
        let slow = ChildSpec::new("slow", move || SlowStarter {
            gate: None,
            log: l.clone(),
        });
        let hslow = slow.actor_ref();
        let spec = SupervisorSpec::new("root")
            .child(slow)
            .child(worker("after", &log));
        let rt2 = rt.clone();
        let start = tokio::task::spawn_local(async move { spec.start(&rt2).await });
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(log.snapshot(), ["slow started, not ready"]);
        // The handle accepts messages already; they queue in the bounded mailbox.
        hslow.tell(Open).unwrap();
        start.await.unwrap().unwrap();
        assert_eq!(
            log.take(),
            ["slow started, not ready", "slow ready", "start after"]
        );
    });
}

#[test]
fn handle_and_registered_name_follow_the_actor_across_restarts() {
    run(async {
        let log = Log::default();
        let rt = Runtime::default();
        let mut events = EventProbe::new(&rt);
        let _root = SupervisorSpec::new("root")
            .child(worker("db", &log).register("database"))
            .start(&rt)
            .await
            .unwrap();
        let by_name = rt
            .registry()
            .lookup::<Worker>("database")
            .expect("registered");
        assert_eq!(by_name.ask(Ping, T).await.unwrap(), (1, 1));
        by_name.tell(Panic).unwrap();
        events
            .expect("db restarted", T, |e| {
                e.kind == EventKind::Started { generation: 2 }
            })
            .await;
        let again = rt
            .registry()
            .lookup::<Worker>("database")
            .expect("still registered");
        assert_eq!(again, by_name);
        assert_eq!(again.ask(Ping, T).await.unwrap(), (2, 1));
        assert!(
            rt.registry().lookup::<Gate>("database").is_none(),
            "typed lookup"
        );
    });
}

#[test]
fn duplicate_name_fails_the_start() {
    run(async {
        let log = Log::default();
        let rt = Runtime::default();
        let err = SupervisorSpec::new("root")
            .child(worker("a", &log).register("same"))
            .child(worker("b", &log).register("same"))
            .start(&rt)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("`same` is already registered"),
            "{err}"
        );
        assert!(
            !rt.registry().contains("same"),
            "the stopped child's name went with it"
        );
    });
}

#[test]
fn name_is_removed_when_the_tree_stops() {
    run(async {
        let log = Log::default();
        let rt = Runtime::default();
        let root = SupervisorSpec::new("root")
            .child(worker("a", &log).register("a"))
            .start(&rt)
            .await
            .unwrap();
        assert_eq!(
            rt.registry().names(),
            ["a".into()] as [std::sync::Arc<str>; 1]
        );
        root.stop(T).await.unwrap();
        assert!(rt.registry().names().is_empty());
    });
}

#[test]
fn panic_in_handler_restarts_child_and_spares_neighbours() {
    run(async {
        let log = Log::default();
        let rt = Runtime::default();
        let mut events = EventProbe::new(&rt);
        let a = worker("a", &log);
        let b = worker("b", &log);
        let (ha, hb) = (a.actor_ref(), b.actor_ref());
        let _root = SupervisorSpec::new("root")
            .child(a)
            .child(b)
            .start(&rt)
            .await
            .unwrap();
        let unsupervised = spawn("bystander", 16, Worker::new("x", &log));
        for _ in 0..3 {
            hb.ask(Ping, T).await.unwrap();
        }
        ha.tell(Panic).unwrap();
        events
            .expect("a restarted", T, |e| {
                e.kind == EventKind::Started { generation: 2 }
            })
            .await;
        // Same arbiter, same thread: the neighbours kept running with their state.
        assert_eq!(hb.ask(Ping, T).await.unwrap(), (1, 4));
        assert_eq!(unsupervised.ask(Ping, T).await.unwrap(), (1, 1));
    });
}

/// Panics in a chosen lifecycle hook, or in a timer it arms.
struct PanicsIn(&'static str);
impl Actor for PanicsIn {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.0 == "started" {
            panic!("panic in started");
        }
        if self.0 == "timer" {
            ctx.run_later(Duration::from_millis(1), |_, _| panic!("panic in a timer"));
        }
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        if self.0 == "stopped" {
            panic!("panic in stopped");
        }
    }
    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        if self.0 == "stopping" {
            panic!("panic in stopping");
        }
        Running::Stop
    }
}

#[test]
fn panic_in_lifecycle_hooks_is_an_abnormal_exit() {
    run(async {
        let rt = Runtime::default();
        let err = SupervisorSpec::new("root")
            .child(ChildSpec::new("p", || PanicsIn("started")))
            .start(&rt)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ExitReason::StartFailed { cause, .. } if **cause == ExitReason::Panic("panic in started".into())),
            "{err}"
        );

        let p = ChildSpec::new("p", || PanicsIn("stopping"));
        let hp = p.actor_ref();
        let root = SupervisorSpec::new("root2")
            .child(p)
            .start(&rt)
            .await
            .unwrap();
        root.stop(T).await.unwrap();
        assert_eq!(
            expect_terminated(&hp, T).await,
            ExitReason::Panic("panic in stopping".into())
        );
    });
}

#[test]
fn unsupervised_actor_panics_alone_and_reports_why() {
    run(async {
        let log = Log::default();
        let w = spawn("w", 16, Worker::new("w", &log));
        w.tell(Panic).unwrap();
        assert_eq!(
            expect_terminated(&w, T).await,
            ExitReason::Panic("boom in w".into())
        );
        assert!(matches!(w.tell(Ping), Err(TellError::Dead(Ping))));
    });
}

#[test]
fn probe_records_messages_in_order() {
    run(async {
        let mut probe = Probe::<Item>::new("probe");
        let recipient = probe.recipient();
        for i in 0..5 {
            recipient.do_send(Item(i));
        }
        for i in 0..5 {
            assert_eq!(probe.expect_msg(T).await.0, i);
        }
        probe.expect_no_msg(Duration::from_millis(50)).await;
        probe.actor_ref().tell(Item(7)).unwrap();
        assert_eq!(probe.expect_msg(T).await.0, 7);
    });
}

#[test]
fn virtual_time_drives_actor_timers() {
    // Under `run_paused`, a 30 s actor timer completes without 30 s passing.
    let started = std::time::Instant::now();
    run_paused(async {
        let log = Log::default();
        let rt = Runtime::default();
        let a = worker("a", &log);
        let ha = a.actor_ref();
        let _root = start_root(&rt, a).await;
        let t0 = tokio::time::Instant::now();
        let n = ha
            .ask(SlowPing(Duration::from_secs(30)), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert!(t0.elapsed() >= Duration::from_secs(30));
    });
    assert!(started.elapsed() < Duration::from_secs(10));
}
