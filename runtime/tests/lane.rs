//! The batch lane: batches handled in order by the actor's own handlers, asks answered through a
//! callback, bounds, restarts, waiting contexts and unsupervised actors that still stop.

mod common;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cadre_runtime::testkit::{expect_terminated, run, run_paused};
use cadre_runtime::{
    spawn, AskError, AskOutcome, ChildSpec, ExitReason, Restart, Runtime, TellError,
};
use common::{start_root, T};
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Records what it handles; panics on `Push(666)`; `Hold` makes its context wait.
#[derive(Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<u32>>>,
    /// Told how many pushes it saw when it stops.
    on_stop: Option<oneshot::Sender<usize>>,
}

impl Recorder {
    fn new(seen: &Arc<Mutex<Vec<u32>>>) -> Self {
        Recorder {
            seen: seen.clone(),
            on_stop: None,
        }
    }
}

impl Actor for Recorder {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(tx) = self.on_stop.take() {
            let _ = tx.send(self.seen.lock().len());
        }
    }
}

#[derive(Message, Debug, PartialEq)]
#[rtype(result = "()")]
struct Push(u32);

impl Handler<Push> for Recorder {
    type Result = ();
    fn handle(&mut self, m: Push, _: &mut Context<Self>) {
        assert_ne!(m.0, 666, "told to crash");
        self.seen.lock().push(m.0);
    }
}

/// Answers with how many pushes it saw.
#[derive(Message)]
#[rtype(result = "usize")]
struct Len;

impl Handler<Len> for Recorder {
    type Result = usize;
    fn handle(&mut self, _: Len, _: &mut Context<Self>) -> usize {
        self.seen.lock().len()
    }
}

/// Answers after `0`, asynchronously.
#[derive(Message)]
#[rtype(result = "u32")]
struct Later(Duration);

impl Handler<Later> for Recorder {
    type Result = ResponseActFuture<Self, u32>;
    fn handle(&mut self, m: Later, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            actix::fut::wrap_future(tokio::time::sleep(m.0))
                .map(|_, act: &mut Self, _| act.seen.lock().len() as u32),
        )
    }
}

/// Makes the context wait for `0` before anything else is handled.
#[derive(Message)]
#[rtype(result = "()")]
struct Hold(Duration);

impl Handler<Hold> for Recorder {
    type Result = ();
    fn handle(&mut self, m: Hold, ctx: &mut Context<Self>) {
        ctx.wait(actix::fut::wrap_future(tokio::time::sleep(m.0)));
    }
}

/// A reply callback that sends its outcome to a oneshot receiver.
fn catch<R: Send + 'static>() -> (
    impl FnOnce(AskOutcome<R>) + Send + 'static,
    oneshot::Receiver<AskOutcome<R>>,
) {
    let (tx, rx) = oneshot::channel();
    (
        move |outcome| {
            let _ = tx.send(outcome);
        },
        rx,
    )
}

async fn outcome<R>(rx: oneshot::Receiver<AskOutcome<R>>) -> AskOutcome<R> {
    outcome_within(rx, T).await
}

async fn outcome_within<R>(rx: oneshot::Receiver<AskOutcome<R>>, limit: Duration) -> AskOutcome<R> {
    tokio::time::timeout(limit, rx)
        .await
        .expect("the reply callback ran in time")
        .expect("the reply callback ran")
}

fn pushes(range: std::ops::Range<u32>) -> Vec<Push> {
    range.map(Push).collect()
}

#[test]
fn batches_are_handled_in_order_with_asks_among_them() {
    run(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = spawn("rec", 1024, Recorder::new(&seen));
        rec.tell_batch(pushes(0..100)).unwrap();
        let (reply, rx) = catch();
        rec.ask_then(Len, T, reply).unwrap();
        rec.tell_batch(pushes(100..250)).unwrap();
        let (reply2, rx2) = catch();
        rec.ask_then(Len, T, reply2).unwrap();
        // Each ask saw exactly the batches queued before it.
        assert_eq!(outcome(rx).await.unwrap(), 100);
        assert_eq!(outcome(rx2).await.unwrap(), 250);
        assert_eq!(*seen.lock(), (0..250).collect::<Vec<_>>());
    });
}

#[test]
fn an_asynchronous_response_reaches_the_callback_and_a_slow_one_times_out() {
    run_paused(async {
        let rec = spawn("rec", 1024, Recorder::default());
        rec.tell_batch(pushes(0..3)).unwrap();
        let (reply, rx) = catch();
        rec.ask_then(Later(Duration::from_millis(10)), T, reply)
            .unwrap();
        assert_eq!(outcome(rx).await.unwrap(), 3);
        let (reply, rx) = catch();
        rec.ask_then(
            Later(Duration::from_secs(60)),
            Duration::from_secs(1),
            reply,
        )
        .unwrap();
        assert!(matches!(
            outcome(rx).await,
            Err(AskError::Timeout(d)) if d == Duration::from_secs(1)
        ));
    });
}

#[test]
fn a_waiting_context_holds_back_the_rest_of_a_batch() {
    run_paused(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = spawn("rec", 1024, Recorder::new(&seen));
        let start = tokio::time::Instant::now();
        rec.tell_batch(vec![Push(1)]).unwrap();
        rec.tell_batch::<Hold>(vec![Hold(Duration::from_secs(5))])
            .unwrap();
        rec.tell_batch(pushes(2..5)).unwrap();
        let (reply, rx) = catch();
        rec.ask_then(Len, T, reply).unwrap();
        // The ask is answered only once the wait is over, after everything queued before it.
        assert_eq!(
            outcome_within(rx, Duration::from_secs(30)).await.unwrap(),
            4
        );
        assert!(start.elapsed() >= Duration::from_secs(5));
        assert_eq!(*seen.lock(), vec![1, 2, 3, 4]);
    });
}

#[test]
fn the_lane_is_bounded_and_frees_up_as_it_drains() {
    run_paused(async {
        let rec = spawn("rec", 16, Recorder::default());
        let start = tokio::time::Instant::now();
        // Hold the context so nothing drains.
        rec.tell_batch::<Hold>(vec![Hold(Duration::from_secs(10))])
            .unwrap();
        tokio::task::yield_now().await;
        rec.tell_batch(pushes(0..10)).unwrap();
        let refused = rec.tell_batch(pushes(10..20)).unwrap_err();
        let TellError::Full(back) = refused else {
            panic!("expected Full, got {refused:?}")
        };
        assert_eq!(back, pushes(10..20), "the whole batch comes back");
        // Room comes once the lane drains (after the hold).
        tokio::time::timeout(Duration::from_secs(30), rec.wait_for_batch_room(back.len()))
            .await
            .expect("room within the hold");
        rec.tell_batch(back).unwrap();
        let (reply, rx) = catch();
        rec.ask_then(Len, T, reply).unwrap();
        assert_eq!(outcome(rx).await.unwrap(), 20);
        assert!(tokio::time::Instant::now() - start >= Duration::from_secs(10));
    });
}

#[test]
fn a_crash_drops_the_lane_fails_its_asks_and_the_next_instance_gets_a_lane() {
    run(async {
        let rt = Runtime::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let spec = ChildSpec::new("rec", move || Recorder::new(&s)).restart(Restart::Permanent);
        let rec = spec.actor_ref();
        let _root = start_root(&rt, spec).await;
        rec.tell_batch(pushes(0..3)).unwrap();
        // The crash comes before the ask in the same lane: the ask never runs.
        rec.tell_batch(vec![Push(666), Push(7)]).unwrap();
        let (reply, rx) = catch();
        rec.ask_then(Len, T, reply).unwrap();
        assert!(matches!(outcome(rx).await, Err(AskError::ActorDied)));
        // The next instance runs its own lane at once.
        assert_eq!(rec.running_generation(2).await, Some(2));
        rec.tell_batch(pushes(10..12)).unwrap();
        let (reply, rx) = catch();
        rec.ask_then(Len, T, reply).unwrap();
        assert_eq!(
            outcome(rx).await.unwrap(),
            5,
            "the shared log: 0,1,2 then 10,11"
        );
        assert_eq!(*seen.lock(), vec![0, 1, 2, 10, 11]);
    });
}

#[test]
fn a_dead_actor_refuses_batches_and_gives_them_back() {
    run(async {
        let rec = spawn("rec", 8, Recorder::default());
        rec.tell_batch(vec![Push(666)]).unwrap();
        let reason = expect_terminated(&rec, T).await;
        assert!(matches!(reason, ExitReason::Panic(_)), "{reason:?}");
        match rec.tell_batch(pushes(0..2)) {
            Err(TellError::Dead(back)) => assert_eq!(back, pushes(0..2)),
            other => panic!("expected Dead, got {other:?}"),
        }
        let (reply, _rx) = catch::<usize>();
        assert!(matches!(
            rec.ask_then(Len, T, reply),
            Err(TellError::Dead((Len, _)))
        ));
    });
}

#[test]
fn an_unsupervised_actor_with_a_lane_stops_once_its_handles_are_gone_after_draining() {
    run(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, stopped) = oneshot::channel();
        let rec = spawn(
            "rec",
            1024,
            Recorder {
                seen: seen.clone(),
                on_stop: Some(tx),
            },
        );
        rec.tell_batch(pushes(0..50)).unwrap();
        let (reply, rx) = catch();
        rec.ask_then(Len, T, reply).unwrap();
        assert_eq!(outcome(rx).await.unwrap(), 50);
        rec.tell_batch(pushes(50..60)).unwrap();
        drop(rec);
        // Nothing refers to it any more: it handles what its lane holds, then stops.
        let at_stop = tokio::time::timeout(T, stopped)
            .await
            .expect("it stopped in time")
            .expect("it told us");
        assert_eq!(at_stop, 60);
        assert_eq!(*seen.lock(), (0..60).collect::<Vec<_>>());
    });
}

/// A feed for the tests: numbers queued by the test are delivered as pushes when the lane
/// reads it; it counts reads and releases and keeps the waker of the last read. With `pause`,
/// a read that delivers keeps no waker and asks to be read again (`Poll::Ready`), as a
/// connection does that stops once it handed over a request.
#[derive(Default)]
struct Numbers {
    pause: bool,
    queued: Mutex<Vec<u32>>,
    to: Mutex<Option<cadre_runtime::ActorRef<Recorder>>>,
    waker: Mutex<Option<std::task::Waker>>,
    reads: std::sync::atomic::AtomicUsize,
    released: std::sync::atomic::AtomicUsize,
    /// Notified once a read delivered something.
    delivered: tokio::sync::Notify,
}

impl cadre_runtime::Feed for Numbers {
    fn poll_feed(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let batch: Vec<Push> = self.queued.lock().drain(..).map(Push).collect();
        if !batch.is_empty() {
            let n = batch.len();
            let to = self.to.lock().clone().expect("the actor is set");
            assert!(to.tell_iter(batch.into_iter(), n).is_ok());
            self.delivered.notify_one();
            if self.pause {
                return std::task::Poll::Ready(());
            }
        }
        *self.waker.lock() = Some(cx.waker().clone());
        std::task::Poll::Pending
    }

    fn release(&self) {
        self.released
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Numbers {
    /// Queues numbers and wakes the last reader, as a socket with new data would.
    fn arrive(&self, numbers: &[u32]) {
        self.queued.lock().extend_from_slice(numbers);
        if let Some(w) = self.waker.lock().take() {
            w.wake();
        }
    }

    fn count(n: &std::sync::atomic::AtomicUsize) -> usize {
        n.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn an_idle_lane_reads_its_feed_handles_what_it_brings_and_releases_it_when_replaced_or_ended() {
    run(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let actor = spawn("fed", 64, Recorder::new(&seen));
        let first = Arc::new(Numbers::default());
        *first.to.lock() = Some(actor.clone());
        let feed: Arc<dyn cadre_runtime::Feed> = first.clone();
        // An ask that names the feed: once the lane is empty again, the actor reads it.
        let (reply, rx) = catch();
        assert!(actor.ask_then_fed(Len, T, reply, Some(&feed)).is_ok());
        assert_eq!(outcome(rx).await.unwrap(), 0);
        assert!(
            Numbers::count(&first.reads) >= 1,
            "the idle lane read its feed"
        );
        // What comes on the feed is read by the actor's own task and handled, in order.
        first.arrive(&[1, 2, 3]);
        first.delivered.notified().await;
        first.arrive(&[4]);
        first.delivered.notified().await;
        let (reply, rx) = catch();
        assert!(actor.ask_then(Len, T, reply).is_ok());
        assert_eq!(outcome(rx).await.unwrap(), 4);
        assert_eq!(*seen.lock(), [1, 2, 3, 4]);
        assert_eq!(Numbers::count(&first.released), 0);
        // A request naming another feed: the first one is released, the second read.
        let second = Arc::new(Numbers::default());
        *second.to.lock() = Some(actor.clone());
        let other: Arc<dyn cadre_runtime::Feed> = second.clone();
        let (reply, rx) = catch();
        assert!(actor.ask_then_fed(Len, T, reply, Some(&other)).is_ok());
        assert_eq!(outcome(rx).await.unwrap(), 4);
        assert_eq!(Numbers::count(&first.released), 1);
        assert!(Numbers::count(&second.reads) >= 1);
        // The instance ends (a crash): its feed is released with its lane.
        second.arrive(&[666]);
        let reason = expect_terminated(&actor, T).await;
        assert!(matches!(reason, ExitReason::Panic(_)), "{reason:?}");
        assert_eq!(Numbers::count(&second.released), 1);
        assert_eq!(Numbers::count(&first.released), 1);
    });
}

#[test]
fn a_feed_that_pauses_after_delivering_is_read_again_once_the_work_is_handled() {
    run(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let actor = spawn("paused", 64, Recorder::new(&seen));
        let feed = Arc::new(Numbers {
            pause: true,
            ..Numbers::default()
        });
        *feed.to.lock() = Some(actor.clone());
        let dyn_feed: Arc<dyn cadre_runtime::Feed> = feed.clone();
        let (reply, rx) = catch();
        assert!(actor.ask_then_fed(Len, T, reply, Some(&dyn_feed)).is_ok());
        assert_eq!(outcome(rx).await.unwrap(), 0);
        // Each arrival is delivered by a read that keeps no waker: only the read the lane makes
        // after handling it leaves one, so the next arrival is seen only if that read happened.
        // Nothing else wakes the actor meanwhile.
        for n in 1..=5u32 {
            feed.arrive(&[n]);
            tokio::time::timeout(T, feed.delivered.notified())
                .await
                .expect("the lane read its feed again after the last delivery");
        }
        let (reply, rx) = catch();
        assert!(actor.ask_then(Len, T, reply).is_ok());
        assert_eq!(outcome(rx).await.unwrap(), 5);
        assert_eq!(*seen.lock(), [1, 2, 3, 4, 5]);
        assert!(
            Numbers::count(&feed.reads) >= 11,
            "each delivering read, and one after each"
        );
    });
}
