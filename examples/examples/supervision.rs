//! Supervision in action: restarts with fresh state, backoff, strategies, a dynamic pool, and
//! an escalation that climbs the tree — every step printed as the supervisors report it.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release -p cadre-examples --example supervision
//! ```
//!
//! The tree:
//!
//! ```text
//! root (one-for-one, at most 5 restarts in 10 s)
//! ├── ledger      a counter, registered as "ledger"
//! ├── services    (rest-for-one, at most 2 restarts in 5 s)
//! │   ├── db      transient, restarted with an exponential backoff
//! │   └── api     permanent; depends on db, so it restarts after db
//! └── jobs        a dynamic pool of identical workers
//! ```

use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use cadre_runtime::{
    Backoff, ChildSpec, ContextExt, EventKind, Intensity, PoolSpec, Restart, Runtime, Strategy,
    SupervisionEvent, SupervisorSpec,
};
use tokio::sync::broadcast;

const T: Duration = Duration::from_secs(5);

/// A counter whose state is lost when it crashes: restarts build it afresh.
#[derive(Default)]
struct Counter {
    count: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "u64")]
struct Incr;

impl Handler<Incr> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Incr, _: &mut Context<Self>) -> u64 {
        self.count += 1;
        self.count
    }
}

/// Something goes wrong inside an actor.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
enum Trouble {
    Panic,
    Error,
}

impl Handler<Trouble> for Counter {
    type Result = ();
    fn handle(&mut self, t: Trouble, ctx: &mut Context<Self>) {
        match t {
            Trouble::Panic => panic!("index out of bounds after {} requests", self.count),
            Trouble::Error => ctx.fail("connection reset by peer"),
        }
    }
}

fn describe(e: &SupervisionEvent) -> String {
    let who = e.path();
    match &e.kind {
        EventKind::Started { generation } => format!("  ✓ {who} started (generation {generation})"),
        EventKind::StartFailed { generation, reason } => {
            format!("  ✗ {who} failed to start (generation {generation}): {reason}")
        }
        EventKind::Exited { generation, reason } => {
            format!("  ↓ {who} exited (generation {generation}): {reason}")
        }
        EventKind::Restarting { delay } if delay.is_zero() => format!("  ↻ {who} restarting now"),
        EventKind::Restarting { delay } => format!("  ↻ {who} restarting in {delay:?}"),
        EventKind::NotRestarted { reason } => format!("  · {who} not restarted ({reason})"),
        EventKind::Escalated { reason } => {
            format!("  ⚠ {} gives up and escalates: {reason}", e.supervisor)
        }
    }
}

fn step(title: &str) {
    println!("\n── {title}");
}

/// Prints every supervision event until one matches `done` (at most 10 s).
async fn until(
    events: &mut broadcast::Receiver<SupervisionEvent>,
    done: impl Fn(&SupervisionEvent) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| anyhow::anyhow!("the expected event did not come within 10 s"))??;
        println!("{}", describe(&e));
        if done(&e) {
            return Ok(());
        }
    }
}

fn is_started(e: &SupervisionEvent, path: &str, generation: u64) -> bool {
    e.path() == path && e.kind == EventKind::Started { generation }
}

async fn scenario(rt: Runtime) -> anyhow::Result<()> {
    let mut events = rt.subscribe();

    let ledger = ChildSpec::new("ledger", Counter::default).register("ledger");
    let db = ChildSpec::new("db", Counter::default)
        .restart(Restart::Transient)
        .backoff(Backoff::exponential(
            Duration::from_millis(50),
            Duration::from_secs(1),
        ));
    let api = ChildSpec::new("api", Counter::default);
    let (db_ref, api_ref) = (db.actor_ref(), api.actor_ref());
    let services = SupervisorSpec::new("services")
        .strategy(Strategy::RestForOne)
        .intensity(Intensity::new(2, Duration::from_secs(5)))
        .child(db)
        .child(api);
    let jobs = PoolSpec::new("jobs", ChildSpec::new("worker", Counter::default)).size(2);
    let pool = jobs.pool_ref();

    step("starting the tree: children start left to right, each before the next");
    let root = SupervisorSpec::new("root")
        .intensity(Intensity::new(5, Duration::from_secs(10)))
        .child(ledger)
        .child(services)
        .child(jobs)
        .start(&rt)
        .await
        .map_err(|e| anyhow::anyhow!("the tree did not start: {e}"))?;
    until(&mut events, |e| {
        e.path() == "root/jobs" && matches!(e.kind, EventKind::Started { .. })
    })
    .await?;

    step("the ledger counts three requests, then panics");
    let ledger = rt
        .registry()
        .lookup::<Counter>("ledger")
        .ok_or_else(|| anyhow::anyhow!("ledger is not registered"))?;
    for _ in 0..3 {
        ledger.ask(Incr, T).await?;
    }
    ledger.tell(Trouble::Panic)?;
    until(&mut events, |e| is_started(e, "root/ledger", 2)).await?;
    let after = ledger.ask(Incr, T).await?;
    println!("  the same handle reaches the new ledger, whose count started over: {after}");

    step("api panics: rest-for-one restarts api alone (no child is right of it)");
    api_ref.tell(Trouble::Panic)?;
    until(&mut events, |e| is_started(e, "root/services/api", 2)).await?;

    step("db fails with an error: rest-for-one restarts db and then api, after a backoff");
    db_ref.tell(Trouble::Error)?;
    until(&mut events, |e| is_started(e, "root/services/api", 3)).await?;

    step("a pool worker panics: only that worker restarts; then the pool grows by one");
    pool.members()[0].tell(Trouble::Panic)?;
    until(&mut events, |e| is_started(e, "root/jobs/worker-1", 2)).await?;
    let extra = pool.add(T).await?;
    until(&mut events, |e| is_started(e, "root/jobs/worker-3", 1)).await?;
    println!("  added {} at run time", extra.path());

    step("db fails again: `services` exceeds 2 restarts in 5 s and escalates to root");
    db_ref.tell(Trouble::Error)?;
    until(&mut events, |e| is_started(e, "root/services", 2)).await?;
    println!(
        "  root restarted `services` from scratch: db is at generation {:?}, api at {:?}",
        db_ref.generation(),
        api_ref.generation()
    );

    step("shutting down: children stop right to left");
    let reason = root.stop(Duration::from_secs(10)).await?;
    until(&mut events, |e| {
        e.path() == "root" && matches!(e.kind, EventKind::Exited { .. })
    })
    .await?;
    println!("\nroot ended: {reason}");
    Ok(())
}

fn main() -> ExitCode {
    // Panics are reported as supervision events below; keep them to one line each.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        println!("  ! panic: {msg}");
    }));
    let rt = Runtime::new("example");
    let result = actix::System::new().block_on(scenario(rt));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
