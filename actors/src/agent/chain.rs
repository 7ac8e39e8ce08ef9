//! The agent's event handler chain (chain of responsibility): every event a node sees goes
//! through one ordered list of handlers, one per function.
//!
//! ```text
//! event ──▶ audit ──▶ fault ──▶ status ──▶ user handlers (in registration order) ──▶ commands
//!             each: Pass (handled or not, the next one sees it) or Stop (the chain ends here)
//! ```
//!
//! # Guarantees
//! - **Order.** Handlers see each event in the order above, and events in the order the agent
//!   received them. A user handler sits after the built-in observers (audit log, fault
//!   reporter, status) and before the command executor, so it can take a command of its own
//!   ([`CommandKind::Custom`](cadre_cluster::agent::CommandKind::Custom)) or override a built-in one by answering it and returning
//!   [`Flow::Stop`].
//! - **Panic isolation.** A handler that panics is replaced by a fresh one from its factory;
//!   the event still goes on to the rest of the chain. More than
//!   [`MAX_RESTARTS`] panics of one handler within [`RESTART_WINDOW`] escalate: the chain
//!   reports [`Escalated`] and the agent fails, so its supervisor (the node's root) restarts it.
//! - A command is answered once: the first handler that calls [`ChainCx::reply`] or
//!   [`ChainCx::reply_later`] answers it; a command nobody answers gets an error result saying
//!   no handler on the node knows it.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::time::{Duration, Instant};

use cadre_cluster::agent::{Command, CommandResult, RunState};
use cadre_runtime::SupervisionEvent;

use crate::node::view::ClusterEvent;

/// At most this many panics of one handler within [`RESTART_WINDOW`]; one more escalates.
pub const MAX_RESTARTS: usize = 3;

/// The window of [`MAX_RESTARTS`].
pub const RESTART_WINDOW: Duration = Duration::from_secs(5);

/// Something a node saw, as its chain's handlers get it.
#[derive(Clone, Debug)]
pub enum AgentEvent {
    /// A membership or service change (up, suspect, down, left; service added, removed).
    Cluster(ClusterEvent),
    /// A local supervision event (start, exit, restart, escalation).
    Supervision(SupervisionEvent),
    /// A management command, about to be carried out: answer it with [`ChainCx::reply`].
    Command(Command),
    /// A command's result was written to the store.
    CommandDone(CommandResult),
    /// The store became reachable (`None`) or unreachable (`Some(why)`) from this node.
    StoreReachability(Option<String>),
    /// The node's run state changed.
    StateChanged(RunState),
}

/// What a handler says after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// The next handler sees the event too (whether this one handled it or not).
    Pass,
    /// The chain ends here for this event.
    Stop,
}

/// A command's answer that takes time: its future runs on the agent's arbiter.
pub type Pending = Pin<Box<dyn Future<Output = Result<String, String>>>>;

/// How a command was answered.
pub enum Reply {
    /// At once: `Ok(what it did)` or `Err(why not)`.
    Now(Result<String, String>),
    /// Later, when the future completes.
    Later(Pending),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Now(r) => f.debug_tuple("Now").field(r).finish(),
            Reply::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// What a handler can do besides passing or stopping an event.
#[derive(Debug, Default)]
pub struct ChainCx {
    reply: Option<Reply>,
    state: Option<RunState>,
}

impl ChainCx {
    /// Answers the command being handled (the first answer counts).
    pub fn reply(&mut self, result: Result<String, String>) {
        if self.reply.is_none() {
            self.reply = Some(Reply::Now(result));
        }
    }

    /// Answers the command being handled when `future` completes (the first answer counts).
    pub fn reply_later(&mut self, future: impl Future<Output = Result<String, String>> + 'static) {
        if self.reply.is_none() {
            self.reply = Some(Reply::Later(Box::pin(future)));
        }
    }

    /// Whether the command was answered by a handler before this one.
    pub fn answered(&self) -> bool {
        self.reply.is_some()
    }

    /// Asks the agent to report this run state (the fault reporter sets `faulty`).
    pub fn set_state(&mut self, state: RunState) {
        self.state = Some(state);
    }

    /// The answer given to the command, if any.
    pub fn take_reply(&mut self) -> Option<Reply> {
        self.reply.take()
    }

    /// The run state asked for, if any.
    pub fn take_state(&mut self) -> Option<RunState> {
        self.state.take()
    }
}

/// One function of the chain. Handlers run on the agent's arbiter, one event at a time; keep
/// them quick (answer a slow command with [`ChainCx::reply_later`]).
pub trait ChainHandler: 'static {
    /// The handler's name, for logs.
    fn name(&self) -> &str;
    /// Handles (or not) one event.
    fn handle(&mut self, event: &AgentEvent, cx: &mut ChainCx) -> Flow;
}

/// Builds a fresh handler: at the agent's start and after a panic.
pub type HandlerFactory = std::sync::Arc<dyn Fn() -> Box<dyn ChainHandler> + Send + Sync>;

/// A handler panicked more than [`MAX_RESTARTS`] times within [`RESTART_WINDOW`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("chain handler `{handler}` panicked {panics} times within {window:?}; last: {message}")]
pub struct Escalated {
    /// The handler's name.
    pub handler: String,
    /// Its panics within the window.
    pub panics: usize,
    /// The window.
    pub window: Duration,
    /// The last panic's message.
    pub message: String,
}

struct Slot {
    factory: HandlerFactory,
    handler: Box<dyn ChainHandler>,
    name: String,
    panics: Vec<Instant>,
}

/// The ordered handlers.
pub struct Chain {
    slots: Vec<Slot>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.slots.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Chain").field("handlers", &names).finish()
    }
}

impl Chain {
    /// A chain of handlers built by `factories`, in order.
    pub fn new(factories: &[HandlerFactory]) -> Chain {
        let slots = factories
            .iter()
            .map(|f| {
                let handler = f();
                Slot {
                    name: handler.name().to_owned(),
                    factory: f.clone(),
                    handler,
                    panics: Vec::new(),
                }
            })
            .collect();
        Chain { slots }
    }

    /// The handlers' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.name.as_str()).collect()
    }

    /// Passes `event` along the chain until a handler stops it.
    ///
    /// # Errors
    /// [`Escalated`] when a handler panicked once too often; the event has still been through
    /// the rest of the chain.
    pub fn dispatch(
        &mut self,
        event: &AgentEvent,
        cx: &mut ChainCx,
        now: Instant,
    ) -> Result<(), Escalated> {
        let mut escalated = None;
        for slot in &mut self.slots {
            let handler = &mut slot.handler;
            match catch_unwind(AssertUnwindSafe(|| handler.handle(event, cx))) {
                Ok(Flow::Pass) => {}
                Ok(Flow::Stop) => break,
                Err(payload) => {
                    let message = cadre_runtime::panic_message(payload.as_ref());
                    slot.panics
                        .retain(|t| now.duration_since(*t) < RESTART_WINDOW);
                    slot.panics.push(now);
                    tracing::error!(
                        handler = %slot.name,
                        panic = %message,
                        "a chain handler panicked; restarting it"
                    );
                    slot.handler = (slot.factory)();
                    if slot.panics.len() > MAX_RESTARTS && escalated.is_none() {
                        escalated = Some(Escalated {
                            handler: slot.name.clone(),
                            panics: slot.panics.len(),
                            window: RESTART_WINDOW,
                            message,
                        });
                    }
                }
            }
        }
        escalated.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    type Log = Arc<Mutex<Vec<String>>>;

    struct Probe {
        name: &'static str,
        log: Log,
        flow: Flow,
        panic_on: Option<RunState>,
        seen: usize,
    }

    impl ChainHandler for Probe {
        fn name(&self) -> &str {
            self.name
        }
        fn handle(&mut self, event: &AgentEvent, cx: &mut ChainCx) -> Flow {
            self.seen += 1;
            if let AgentEvent::StateChanged(s) = event {
                if Some(*s) == self.panic_on {
                    panic!("{} fails on {}", self.name, s.as_str());
                }
            }
            self.log
                .lock()
                .unwrap()
                .push(format!("{}#{}", self.name, self.seen));
            if let AgentEvent::Command(_) = event {
                cx.reply(Ok(self.name.into()));
            }
            self.flow
        }
    }

    fn probe(
        name: &'static str,
        log: &Log,
        flow: Flow,
        panic_on: Option<RunState>,
    ) -> HandlerFactory {
        let log = log.clone();
        Arc::new(move || {
            Box::new(Probe {
                name,
                log: log.clone(),
                flow,
                panic_on,
                seen: 0,
            }) as Box<dyn ChainHandler>
        })
    }

    fn take(log: &Log) -> Vec<String> {
        std::mem::take(&mut *log.lock().unwrap())
    }

    const EVENT: AgentEvent = AgentEvent::StateChanged(RunState::Normal);

    #[test]
    fn handlers_see_an_event_in_order_until_one_stops_it() {
        let log = Log::default();
        let mut chain = Chain::new(&[
            probe("a", &log, Flow::Pass, None),
            probe("b", &log, Flow::Stop, None),
            probe("c", &log, Flow::Pass, None),
        ]);
        assert_eq!(chain.names(), ["a", "b", "c"]);
        chain
            .dispatch(&EVENT, &mut ChainCx::default(), Instant::now())
            .unwrap();
        assert_eq!(take(&log), ["a#1", "b#1"]);
    }

    #[test]
    fn the_first_answer_to_a_command_counts() {
        let log = Log::default();
        let mut chain = Chain::new(&[
            probe("a", &log, Flow::Pass, None),
            probe("b", &log, Flow::Pass, None),
        ]);
        let command = cadre_cluster::agent::Command {
            version: 1,
            id: "c1".into(),
            kind: cadre_cluster::agent::CommandKind::Ping,
            issued_ms: 0,
            deadline_ms: 1,
            issuer: String::new(),
        };
        let mut cx = ChainCx::default();
        chain
            .dispatch(&AgentEvent::Command(command), &mut cx, Instant::now())
            .unwrap();
        assert!(matches!(cx.take_reply(), Some(Reply::Now(Ok(s))) if s == "a"));
    }

    #[test]
    fn a_panicking_handler_is_replaced_fresh_and_the_event_still_reaches_the_rest() {
        let log = Log::default();
        let mut chain = Chain::new(&[
            probe("a", &log, Flow::Pass, None),
            probe("b", &log, Flow::Pass, Some(RunState::Faulty)),
            probe("c", &log, Flow::Pass, None),
        ]);
        let now = Instant::now();
        chain
            .dispatch(&EVENT, &mut ChainCx::default(), now)
            .unwrap();
        chain
            .dispatch(&EVENT, &mut ChainCx::default(), now)
            .unwrap();
        assert_eq!(take(&log), ["a#1", "b#1", "c#1", "a#2", "b#2", "c#2"]);
        let bad = AgentEvent::StateChanged(RunState::Faulty);
        chain.dispatch(&bad, &mut ChainCx::default(), now).unwrap();
        assert_eq!(take(&log), ["a#3", "c#3"], "c still saw it");
        chain
            .dispatch(&EVENT, &mut ChainCx::default(), now)
            .unwrap();
        assert_eq!(take(&log), ["a#4", "b#1", "c#4"], "b is a fresh instance");
    }

    #[test]
    fn a_handler_that_keeps_panicking_escalates_and_one_that_panics_rarely_does_not() {
        let log = Log::default();
        let mut chain = Chain::new(&[probe("b", &log, Flow::Pass, Some(RunState::Faulty))]);
        let bad = AgentEvent::StateChanged(RunState::Faulty);
        let start = Instant::now();
        // Spread out: never more than MAX_RESTARTS within the window.
        for i in 0..6u32 {
            let at = start + RESTART_WINDOW * i / 2;
            chain.dispatch(&bad, &mut ChainCx::default(), at).unwrap();
        }
        // Then in a burst.
        let later = start + RESTART_WINDOW * 10;
        for _ in 0..MAX_RESTARTS {
            chain
                .dispatch(&bad, &mut ChainCx::default(), later)
                .unwrap();
        }
        let err = chain
            .dispatch(&bad, &mut ChainCx::default(), later)
            .unwrap_err();
        assert_eq!(err.handler, "b");
        assert_eq!(err.panics, MAX_RESTARTS + 1);
        assert_eq!(err.message, "b fails on faulty");
    }
}
