//! Actor-level test helpers (the `testkit` feature).
//!
//! - [`run`] and [`run_paused`] run a test body on a fresh actix system.
//! - [`Probe`] is an actor that records the messages it receives; its `expect_*` methods wait
//!   with a timeout and panic with a clear message when the expectation fails.
//! - [`EventProbe`] waits for supervision events.
//! - [`expect_terminated`] waits for an actor to end for good.
//!
//! # Virtual time under actix
//! [`run_paused`] pauses tokio's clock before the body runs. This works under actix because an
//! actix system drives its arbiter on a current-thread tokio runtime: `run_later`, `run_interval`,
//! `tokio::time::sleep` and timeouts of actors on that arbiter all use the paused clock, and the
//! runtime auto-advances to the next timer whenever every task is idle, so a test of a 5 s
//! intensity window or a 30 s backoff finishes at once. What does *not* follow virtual time:
//! actors on other arbiters (`Arbiter::new()` runs its own runtime on another thread, with a
//! real clock), `SyncArbiter` actors, and anything measured with `std::time::Instant`. Blocking
//! the thread (`std::thread::sleep`) stalls everything, virtual or not.

use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler, Message, Recipient};
use tokio::sync::{broadcast, mpsc};

use crate::actor_ref::{spawn, ActorRef};
use crate::events::SupervisionEvent;
use crate::exit::ExitReason;
use crate::runtime::Runtime;

/// How many messages a probe holds before it flags an overflow.
pub const PROBE_CAPACITY: usize = 65_536;

/// Runs `body` on a fresh actix system and returns its output.
pub fn run<F: Future>(body: F) -> F::Output {
    actix::System::new().block_on(body)
}

/// Runs `body` on a fresh actix system with tokio's clock paused (see the module docs).
pub fn run_paused<F: Future>(body: F) -> F::Output {
    actix::System::new().block_on(async move {
        tokio::time::pause();
        body.await
    })
}

/// An actor that records every `M` it receives, for a test to inspect.
pub struct Probe<M: Message<Result = ()> + Send + 'static> {
    rx: mpsc::Receiver<M>,
    overflow: Arc<AtomicBool>,
    actor: ActorRef<ProbeActor<M>>,
    recipient: Recipient<M>,
}

/// The actor behind a [`Probe`].
pub struct ProbeActor<M: Message<Result = ()> + Send + 'static> {
    tx: mpsc::Sender<M>,
    overflow: Arc<AtomicBool>,
}

impl<M: Message<Result = ()> + Send + 'static> Actor for ProbeActor<M> {
    type Context = Context<Self>;
}

impl<M: Message<Result = ()> + Send + 'static> Handler<M> for ProbeActor<M> {
    type Result = ();

    fn handle(&mut self, msg: M, _: &mut Context<Self>) {
        if self.tx.try_send(msg).is_err() {
            self.overflow.store(true, Ordering::Relaxed);
        }
    }
}

impl<M: Message<Result = ()> + Send + Debug + 'static> Probe<M> {
    /// Starts a probe on the current arbiter.
    ///
    /// # Panics
    /// Outside an actix system.
    pub fn new(name: &str) -> Self {
        let (tx, rx) = mpsc::channel(PROBE_CAPACITY);
        let overflow = Arc::new(AtomicBool::new(false));
        let actor = spawn(
            name,
            PROBE_CAPACITY,
            ProbeActor {
                tx,
                overflow: overflow.clone(),
            },
        );
        let recipient = actor
            .current_addr()
            .expect("a freshly spawned probe runs")
            .recipient();
        Probe {
            rx,
            overflow,
            actor,
            recipient,
        }
    }

    /// The probe's handle.
    pub fn actor_ref(&self) -> ActorRef<ProbeActor<M>> {
        self.actor.clone()
    }

    /// A `Recipient<M>` that reaches the probe, for actors that take an actix recipient.
    pub fn recipient(&self) -> Recipient<M> {
        self.recipient.clone()
    }

    fn check_overflow(&self) {
        assert!(
            !self.overflow.load(Ordering::Relaxed),
            "probe overflowed: more than {PROBE_CAPACITY} messages unread"
        );
    }

    /// Waits at most `timeout` for the next message and returns it.
    ///
    /// # Panics
    /// If no message arrives in time.
    pub async fn expect_msg(&mut self, timeout: Duration) -> M {
        self.check_overflow();
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => panic!("probe closed while waiting for a message"),
            Err(_) => panic!("expected a message within {timeout:?}, got none"),
        }
    }

    /// Asserts that no message arrives within `within`.
    ///
    /// # Panics
    /// If a message arrives.
    pub async fn expect_no_msg(&mut self, within: Duration) {
        self.check_overflow();
        if let Ok(Some(m)) = tokio::time::timeout(within, self.rx.recv()).await {
            panic!("expected no message within {within:?}, got {m:?}");
        }
    }
}

/// Waits at most `timeout` for `actor` to end for good and returns why.
///
/// # Panics
/// If it is still alive (or restarting) after `timeout`.
pub async fn expect_terminated<A: Actor>(actor: &ActorRef<A>, timeout: Duration) -> ExitReason {
    match tokio::time::timeout(timeout, actor.terminated()).await {
        Ok(reason) => reason,
        Err(_) => panic!(
            "expected {} to terminate within {timeout:?}; it is still alive",
            actor.path()
        ),
    }
}

/// A subscription to a runtime's supervision events, with expectations.
pub struct EventProbe {
    rx: broadcast::Receiver<SupervisionEvent>,
}

impl EventProbe {
    /// Subscribes to `runtime`'s events from now on.
    pub fn new(runtime: &Runtime) -> Self {
        EventProbe {
            rx: runtime.subscribe(),
        }
    }

    /// The next event, if one arrives within `timeout`.
    ///
    /// # Panics
    /// If the subscription lagged (events were missed).
    pub async fn next(&mut self, timeout: Duration) -> Option<SupervisionEvent> {
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Ok(e)) => Some(e),
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                panic!("event probe lagged: {n} events missed")
            }
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => None,
        }
    }

    /// Skips events until one matches `pred`, waiting at most `timeout` in all, and returns it.
    ///
    /// # Panics
    /// If none matches in time.
    pub async fn expect(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&SupervisionEvent) -> bool,
    ) -> SupervisionEvent {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(e) if pred(&e) => return e,
                Some(e) => seen.push(e),
                None => {
                    panic!("expected event `{what}` within {timeout:?}; saw instead: {seen:#?}")
                }
            }
        }
    }

    /// Asserts that no event matching `pred` arrives within `within`.
    ///
    /// # Panics
    /// If one does.
    pub async fn expect_none(
        &mut self,
        what: &str,
        within: Duration,
        mut pred: impl FnMut(&SupervisionEvent) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(e) if pred(&e) => panic!("expected no `{what}` within {within:?}, got {e:?}"),
                Some(_) => continue,
                None => return,
            }
        }
    }
}
