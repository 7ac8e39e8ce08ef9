//! A panic inside a supervised actor is reported as one log line, not through the process's
//! panic hook (the runtime handles it as the actor's exit); any other panic still reaches the
//! hook that was there before. Alone in its binary: the panic hook is the process's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cadre_runtime::testkit::{run, EventProbe};
use cadre_runtime::{ChildSpec, EventKind, ExitReason, Runtime, SupervisorSpec};

const T: Duration = Duration::from_secs(5);

struct Boom;
impl Actor for Boom {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Explode;
impl Handler<Explode> for Boom {
    type Result = ();
    fn handle(&mut self, _: Explode, _: &mut Context<Self>) {
        panic!("expected in this test");
    }
}

#[test]
fn a_panic_inside_an_actor_skips_the_previous_hook_and_others_reach_it() {
    // The environment of the test run may ask for backtraces; this test is about the default.
    std::env::remove_var("RUST_BACKTRACE");
    std::env::remove_var("CADRE_PANIC_BACKTRACE");
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    std::panic::set_hook(Box::new(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    }));
    run(async move {
        let rt = Runtime::new("hook");
        let mut events = EventProbe::new(&rt);
        let boom = ChildSpec::new("boom", || Boom);
        let handle = boom.actor_ref();
        let root = SupervisorSpec::new("root")
            .child(boom)
            .start(&rt)
            .await
            .unwrap();
        handle.tell(Explode).unwrap();
        let exit = events
            .expect("boom exited", T, |e| {
                &*e.child == "boom" && matches!(e.kind, EventKind::Exited { .. })
            })
            .await;
        assert_eq!(
            exit.kind,
            EventKind::Exited {
                generation: 1,
                reason: ExitReason::Panic("expected in this test".into())
            }
        );
        root.stop(T).await.unwrap();
    });
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the actor's panic skipped the previous hook"
    );
    let outside = std::thread::spawn(|| panic!("outside any actor")).join();
    assert!(outside.is_err());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a panic outside an actor reaches it"
    );
}
