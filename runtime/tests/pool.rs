//! Dynamic pools of identical children.

mod common;

use std::time::Duration;

use cadre_runtime::testkit::{expect_terminated, run, EventProbe};
use cadre_runtime::{
    ChildSpec, EventKind, ExitReason, PoolSpec, Restart, Runtime, SupervisorError,
};
use common::*;

#[test]
fn pool_children_are_added_and_removed_at_run_time() {
    run(async {
        let log = Log::default();
        let rt = Runtime::default();
        let pool = PoolSpec::new("workers", worker("w", &log)).size(2);
        let pref = pool.pool_ref();
        let _root = start_root(&rt, pool).await;
        assert_eq!(pref.members().len(), 2);
        let mut added = Vec::new();
        for _ in 0..3 {
            added.push(pref.add(T).await.unwrap());
        }
        assert_eq!(pref.members().len(), 5);
        for h in &added {
            assert_eq!(h.ask(Ping, T).await.unwrap(), (1, 1));
        }
        let children = pref.supervisor().which_children(T).await.unwrap();
        assert_eq!(children.len(), 5);
        assert!(children.iter().all(|c| c.running));

        pref.remove(&added[1], T).await.unwrap();
        assert_eq!(expect_terminated(&added[1], T).await, ExitReason::Shutdown);
        assert_eq!(pref.members().len(), 4);
        assert_eq!(pref.supervisor().which_children(T).await.unwrap().len(), 4);
        // Removing again is a no-op.
        pref.remove(&added[1], T).await.unwrap();
    });
}

#[test]
fn pool_restarts_a_crashed_child_alone() {
    run(async {
        let log = Log::default();
        let rt = Runtime::default();
        let mut events = EventProbe::new(&rt);
        let pool = PoolSpec::new("workers", worker("w", &log)).size(3);
        let pref = pool.pool_ref();
        let _root = start_root(&rt, pool).await;
        let members = pref.members();
        members[1].tell(Panic).unwrap();
        events
            .expect("w-2 restarted", T, |e| {
                &*e.child == "w-2" && e.kind == EventKind::Started { generation: 2 }
            })
            .await;
        assert_eq!(members[0].generation(), Some(1));
        assert_eq!(members[1].generation(), Some(2));
        assert_eq!(members[2].generation(), Some(1));
    });
}

#[test]
fn pool_add_that_fails_to_start_is_an_error_and_not_kept() {
    run(async {
        let rt = Runtime::default();
        let pool = PoolSpec::new(
            "bad",
            ChildSpec::new("b", || -> Worker { panic!("no resources") }),
        );
        let pref = pool.start(&rt).await.unwrap();
        let err = pref.add(T).await.unwrap_err();
        assert_eq!(
            err,
            SupervisorError::StartFailed(ExitReason::Panic("no resources".into()))
        );
        assert!(pref.members().is_empty());
        assert!(pref
            .supervisor()
            .which_children(T)
            .await
            .unwrap()
            .is_empty());
    });
}

#[test]
fn temporary_pool_children_leave_the_pool_when_they_end() {
    run(async {
        let log = Log::default();
        let rt = Runtime::default();
        let pool = PoolSpec::new("jobs", worker("j", &log).restart(Restart::Temporary));
        let pref = pool.start(&rt).await.unwrap();
        let j = pref.add(T).await.unwrap();
        j.tell(Quit).unwrap();
        assert_eq!(expect_terminated(&j, T).await, ExitReason::Normal);
        assert!(pref
            .supervisor()
            .which_children(T)
            .await
            .unwrap()
            .is_empty());
        assert!(pref.members().is_empty());
    });
}

#[test]
fn removed_child_fails_its_pending_asks_at_once() {
    run(async {
        let log = Log::default();
        let rt = Runtime::default();
        let pool = PoolSpec::new("workers", worker("w", &log));
        let pref = pool.start(&rt).await.unwrap();
        let w = pref.add(T).await.unwrap();
        let w2 = w.clone();
        // A reply future in flight when the removal starts.
        let slow = tokio::task::spawn_local(async move {
            w2.ask(SlowPing(Duration::from_millis(100)), T).await
        });
        tokio::task::yield_now().await;
        let t0 = std::time::Instant::now();
        pref.remove(&w, T).await.unwrap();
        // actix cancels a stopping actor's response futures: the caller is told at once rather
        // than left to time out.
        let r = slow.await.unwrap();
        assert!(
            matches!(r, Err(cadre_runtime::AskError::ActorDied)),
            "{r:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2));
    });
}

#[test]
fn add_to_a_stopped_pool_is_an_error() {
    run(async {
        let log = Log::default();
        let rt = Runtime::default();
        let pool = PoolSpec::new("workers", worker("w", &log));
        let pref = pool.start(&rt).await.unwrap();
        pref.supervisor().stop(T).await.unwrap();
        assert!(matches!(
            pref.add(Duration::from_millis(200)).await,
            Err(SupervisorError::NotRunning(_))
        ));
    });
}
