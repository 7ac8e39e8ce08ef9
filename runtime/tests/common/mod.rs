//! Test actors shared by the runtime's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use cadre_runtime::{
    Child, ChildContext, ChildSpec, ContextExt, Runtime, SupervisorRef, SupervisorSpec,
};
use parking_lot::Mutex;

/// A shared, ordered record of lifecycle events ("start a", "stop a").
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, s: impl Into<String>) {
        self.0.lock().push(s.into());
    }
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock())
    }
    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().clone()
    }
}

pub const T: Duration = Duration::from_secs(5);

/// Starts a root supervisor named "root" over the single `child`.
pub async fn start_root(rt: &Runtime, child: impl Into<Child>) -> SupervisorRef {
    SupervisorSpec::new("root")
        .child(child)
        .start(rt)
        .await
        .expect("the root supervisor starts")
}

/// A worker that logs its lifecycle, counts pings, and fails on request.
pub struct Worker {
    pub name: String,
    pub generation: u64,
    pub log: Log,
    pub count: u64,
    /// Refuses to stop when asked (its `stopping` returns `Continue`).
    pub stubborn: bool,
}

impl Worker {
    /// A worker called `name`, generation 1, logging into `log`.
    pub fn new(name: &str, log: &Log) -> Self {
        Worker {
            name: name.into(),
            generation: 1,
            log: log.clone(),
            count: 0,
            stubborn: false,
        }
    }

    /// The same worker, refusing to stop when asked.
    pub fn stubborn(mut self) -> Self {
        self.stubborn = true;
        self
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.log.push(format!("start {}", self.name));
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        if self.stubborn {
            Running::Continue
        } else {
            Running::Stop
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.log.push(format!("stop {}", self.name));
    }
}

/// Returns (generation, pings so far including this one).
#[derive(Message)]
#[rtype(result = "(u64, u64)")]
pub struct Ping;

impl Handler<Ping> for Worker {
    type Result = MessageResult<Ping>;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        self.count += 1;
        MessageResult((self.generation, self.count))
    }
}

/// Panics in the handler.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Panic;

impl Handler<Panic> for Worker {
    type Result = ();
    fn handle(&mut self, _: Panic, _: &mut Context<Self>) {
        panic!("boom in {}", self.name);
    }
}

/// Stops with an error.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fail(pub &'static str);

impl Handler<Fail> for Worker {
    type Result = ();
    fn handle(&mut self, m: Fail, ctx: &mut Context<Self>) {
        ctx.fail(m.0);
    }
}

/// Stops normally.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Quit;

impl Handler<Quit> for Worker {
    type Result = ();
    fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Replies after `0`, on the actor's own timer.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct SlowPing(pub Duration);

impl Handler<SlowPing> for Worker {
    type Result = ResponseActFuture<Self, u64>;
    fn handle(&mut self, m: SlowPing, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            actix::fut::wrap_future::<_, Self>(tokio::time::sleep(m.0)).map(|_, act, _| {
                act.count += 1;
                act.count
            }),
        )
    }
}

/// A worker spec named `name` that logs into `log`.
pub fn worker(name: &str, log: &Log) -> ChildSpec<Worker> {
    let log = log.clone();
    let n = name.to_string();
    ChildSpec::with_context(name, move |cx: &ChildContext<Worker>| Worker {
        name: n.clone(),
        generation: cx.generation,
        log: log.clone(),
        count: 0,
        stubborn: false,
    })
}
