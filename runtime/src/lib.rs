//! # cadre-runtime
//!
//! cadre's actor kernel: plain actix actors (`Actor` + `Handler<M>`) run under Erlang-grade
//! supervision trees, behind bounded mailboxes and handles that survive restarts.
//!
//! ```no_run
//! use std::time::Duration;
//! use actix::prelude::*;
//! use cadre_runtime::{ChildSpec, Restart, Runtime, SupervisorSpec, Strategy};
//!
//! #[derive(Default)]
//! struct Counter(u64);
//! impl Actor for Counter { type Context = Context<Self>; }
//!
//! #[derive(Message)]
//! #[rtype(result = "u64")]
//! struct Incr;
//! impl Handler<Incr> for Counter {
//!     type Result = u64;
//!     fn handle(&mut self, _: Incr, _: &mut Context<Self>) -> u64 { self.0 += 1; self.0 }
//! }
//!
//! # fn main() {
//! actix::System::new().block_on(async {
//!     let counter = ChildSpec::new("counter", Counter::default).restart(Restart::Permanent);
//!     let handle = counter.actor_ref();
//!     let runtime = Runtime::default();
//!     let root = SupervisorSpec::new("root")
//!         .strategy(Strategy::OneForOne)
//!         .child(counter)
//!         .start(&runtime)
//!         .await
//!         .expect("root starts");
//!     assert_eq!(handle.ask(Incr, Duration::from_secs(1)).await.unwrap(), 1);
//!     root.stop(Duration::from_secs(5)).await.unwrap();
//! });
//! # }
//! ```
//!
//! # Layout
//! - [`supervisor`]: [`SupervisorSpec`], [`ChildSpec`], [`PoolSpec`] and their handles; the
//!   decision logic is a pure state machine (`supervisor/core.rs`) driven by an actix actor
//!   (`supervisor/actor.rs`).
//! - `instance.rs`: how one actor instance runs: actix's context future, wrapped to catch
//!   panics, acknowledge the start and report the exit.
//! - [`ActorRef`] (`actor_ref.rs`): the restart-proof handle; [`spawn`] for an unsupervised
//!   actor.
//! - `lane.rs`: the batch lane, a second queue into an actor that runs whole batches inside its
//!   context (installed in an instance on first use).
//! - [`Registry`], [`Runtime`], [`SupervisionEvent`]: names, the per-node context, events.
//! - [`stats`]: per-thread counters of messages, remote asks and instances alive.
//! - `testkit` (feature `testkit`): probes, expectations with timeouts, and runners for
//!   actor-level tests, with tokio's virtual time where it works under actix.
//!
//! # Guarantees
//!
//! **Restart types** (per child):
//!
//! | type | normal exit | abnormal exit (panic, error, kill) | stopped by a sibling's restart |
//! |---|---|---|---|
//! | [`Restart::Permanent`] | restarted | restarted | restarted |
//! | [`Restart::Transient`] | ends | restarted | restarted |
//! | [`Restart::Temporary`] | ends | ends | ends (removed) |
//!
//! **Strategies** (per supervisor):
//!
//! | strategy | when child *c* must restart |
//! |---|---|
//! | [`Strategy::OneForOne`] | restart *c* alone |
//! | [`Strategy::OneForAll`] | stop the others right to left; start all left to right |
//! | [`Strategy::RestForOne`] | stop the children right of *c*, right to left; start *c* and them left to right |
//! | [`PoolSpec`] | a dynamic pool of identical children, each restarted alone |
//!
//! - **Fresh state.** A child's factory builds a new actor on every start and restart.
//! - **Intensity.** More than `max_restarts` restarts within `within` (default 3 within 5 s)
//!   and the supervisor stops all its children right to left and exits with
//!   [`ExitReason::Escalated`]; its parent sees an abnormal exit of a child. At the root,
//!   [`run_root`] returns the error, and a binary exits non-zero.
//! - **Ordered start and stop.** Children start left to right; a supervisor's start returns
//!   once every child has started (ran `started`, or confirmed a [`defer_start`]). A child
//!   that fails to start fails its supervisor's start with [`ExitReason::StartFailed`] after
//!   the children already started are stopped. Children stop right to left, each within its
//!   [`Shutdown`] policy. Children run on their supervisor's arbiter, and the supervisor runs a
//!   new instance's first poll (its `started` hook) inline, so it knows at once whether the
//!   start succeeded: a whole tree of non-deferred children starts in one pass.
//! - **Panic isolation.** A panic in any handler, lifecycle hook, spawned actor future or
//!   factory is an abnormal exit carrying the panic message; the other actors on the same
//!   arbiter keep running.
//! - **Generations.** Each instance has a generation (1, 2, …); a report from an instance
//!   already replaced is ignored.
//! - **Observability.** Every start, exit, restart and escalation is a [`SupervisionEvent`] on
//!   [`Runtime::subscribe`] and a `tracing` event; every actor runs in a span
//!   `actor{name, node, generation}`.
//! - **Handles survive restarts.** An [`ActorRef`] (and a registered name) reaches the
//!   current instance. Between instances a send fails with [`TellError::Restarting`], giving
//!   the message back; nothing is dropped without an error.
//!
//! **Messaging.** Mailboxes are bounded (1024 messages by default, actix's channel allows one
//! more per sender handle); [`ActorRef::tell`] never waits and returns the message in
//! [`TellError::Full`] when the mailbox is full; no cadre API bypasses the bound. Messages from
//! one sender to one instance arrive in order. [`ActorRef::ask`] always has a timeout, and an
//! ask pending on an instance that dies fails at once with [`AskError::ActorDied`]. Messages
//! still queued when an instance ends are dropped with it, as in Erlang.
//!
//! **Batch lane.** Beside its mailbox, each actor can take whole batches of messages in one
//! queue operation ([`ActorRef::tell_batch`], [`ActorRef::tell_iter`]) and requests whose
//! reply goes to a callback instead of a waiting task ([`ActorRef::ask_then`]). Batches are
//! handled in order, message by message, by the actor's own handlers, between mailbox
//! messages; the lane is bounded like the mailbox and dropped with the instance like it. There
//! is no order between the lane and the mailbox. The network transport delivers through it. A
//! request can name where it came from ([`ActorRef::ask_then_fed`], a [`Feed`]): while its
//! lane is empty, the actor reads that source from its own task, so that the next request is
//! read and handled in one poll.

#![deny(missing_docs)]

mod actor_ref;
mod error;
mod events;
mod exit;
mod instance;
mod lane;
mod registry;
mod runtime;
pub mod stats;
pub mod supervisor;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use actor_ref::{spawn, ActorRef};
pub use error::{AskError, TellError};
pub use events::{EventKind, SupervisionEvent};
pub use exit::{panic_message, ExitReason};
pub use instance::{defer_start, ContextExt, StartGate};
pub use lane::{AskOutcome, Feed};
pub use registry::{NameTaken, Registry};
pub use runtime::{Runtime, EVENT_BUFFER};
pub use supervisor::spec::{DEFAULT_MAILBOX, DEFAULT_SHUTDOWN_TIMEOUT};
pub use supervisor::{
    Backoff, Child, ChildContext, ChildInfo, ChildSpec, Intensity, PoolRef, PoolSpec, Restart,
    Shutdown, Strategy, SupervisorError, SupervisorRef, SupervisorSpec,
};

/// Runs a supervision tree as a program: starts an actix system, builds the root with `make`,
/// starts it, and returns when the root ends.
///
/// # Errors
/// The root's start failed, or it ended abnormally (an escalation reached it). A binary
/// returns a non-zero exit code for it.
pub fn run_root(make: impl FnOnce(&Runtime) -> SupervisorSpec) -> Result<(), ExitReason> {
    actix::System::new().block_on(async move {
        let runtime = Runtime::default();
        let root = make(&runtime).start(&runtime).await?;
        let reason = root.terminated().await;
        if reason.is_normal() {
            Ok(())
        } else {
            Err(reason)
        }
    })
}
