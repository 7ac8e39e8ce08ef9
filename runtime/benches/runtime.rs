//! cadre-runtime against raw actix, measured in the same run.
//!
//! Run: `cargo bench -p cadre-runtime --bench runtime`
//!
//! - tell throughput to a supervised actor vs a plain actix actor (same mailbox capacity, same
//!   send loop: non-blocking send, yield when the mailbox is full);
//! - spawn cost: a supervision tree of N children started (its `start` returns once all ran
//!   `started`) vs N × `Actor::start` until all ran `started`;
//! - restart latency after a panic (panic in a handler → the new instance's `started`), p50 and
//!   p99, beside actix's floor: `Actor::start` → `started` of a fresh actor;
//! - memory per idle actor: supervised (in a pool) vs `Actor::start`, live heap bytes per actor;
//! - stop cost per child for trees of 1 000 and 20 000 children (stopping is linear).
//!
//! Criterion reports each side; then a summary measures actix and cadre in alternating pairs
//! (medians of 15 rounds, so drift of a shared machine hits both sides alike) and prints each
//! figure with its baseline and the ratio.

use std::alloc::System as SystemAlloc;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cadre_runtime::{ActorRef, ChildSpec, Intensity, PoolSpec, Runtime, SupervisorSpec, TellError};
use criterion::{Criterion, Throughput};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::sync::oneshot;

#[global_allocator]
static GLOBAL: &StatsAlloc<SystemAlloc> = &INSTRUMENTED_SYSTEM;

const MAILBOX: usize = 1024;

// ---------------------------------------------------------------- actors

/// Counts messages; fires `done` when it has seen `target`.
#[derive(Default)]
struct Sink {
    count: u64,
    target: u64,
    done: Option<oneshot::Sender<()>>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Msg(#[allow(dead_code)] u64);

impl Handler<Msg> for Sink {
    type Result = ();
    fn handle(&mut self, _: Msg, _: &mut Context<Self>) {
        self.count += 1;
        if self.count == self.target {
            if let Some(d) = self.done.take() {
                let _ = d.send(());
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Arm(u64, oneshot::Sender<()>);

impl Handler<Arm> for Sink {
    type Result = ();
    fn handle(&mut self, m: Arm, _: &mut Context<Self>) {
        self.count = 0;
        self.target = m.0;
        self.done = Some(m.1);
    }
}

/// Does nothing; counts its starts in a shared cell.
struct Idle(Rc<Cell<u64>>);

impl Actor for Idle {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        self.0.set(self.0.get() + 1);
    }
}

thread_local! {
    static PANICKED_AT: Cell<Option<Instant>> = const { Cell::new(None) };
    static RESTARTS: RefCell<Vec<Duration>> = const { RefCell::new(Vec::new()) };
}

/// Panics on request; its `started` records how long after the last panic it came up.
struct Crasher;

impl Actor for Crasher {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        if let Some(t) = PANICKED_AT.with(|p| p.take()) {
            let d = t.elapsed();
            RESTARTS.with(|r| r.borrow_mut().push(d));
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

impl Handler<Crash> for Crasher {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        PANICKED_AT.with(|p| p.set(Some(Instant::now())));
        panic!("crash");
    }
}

// ---------------------------------------------------------------- send loops

async fn pump_cadre(to: &ActorRef<Sink>, n: u64) {
    for i in 0..n {
        let mut m = Msg(i);
        loop {
            match to.tell(m) {
                Ok(()) => break,
                Err(TellError::Full(back)) => {
                    m = back;
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("send failed: {e}"),
            }
        }
    }
}

async fn pump_actix(to: &Addr<Sink>, n: u64) {
    for i in 0..n {
        let mut m = Msg(i);
        loop {
            match to.try_send(m) {
                Ok(()) => break,
                Err(SendError::Full(back)) => {
                    m = back;
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("send failed: {e}"),
            }
        }
    }
}

fn raw_sink() -> Addr<Sink> {
    let mut ctx = Context::new();
    ctx.set_mailbox_capacity(MAILBOX);
    ctx.run(Sink::default())
}

// ---------------------------------------------------------------- criterion benches

/// Sends `n` messages to a plain actix actor; the time until it has handled them all.
fn tell_actix(n: u64) -> Duration {
    System::new().block_on(async move {
        let sink = raw_sink();
        let (tx, rx) = oneshot::channel();
        sink.send(Arm(n, tx)).await.unwrap();
        let t0 = Instant::now();
        pump_actix(&sink, n).await;
        rx.await.unwrap();
        t0.elapsed()
    })
}

/// Sends `n` messages to a supervised actor; the time until it has handled them all.
fn tell_cadre(n: u64) -> Duration {
    System::new().block_on(async move {
        let rt = Runtime::default();
        let spec = ChildSpec::new("sink", Sink::default).mailbox(MAILBOX);
        let sink = spec.actor_ref();
        let root = SupervisorSpec::new("root")
            .child(spec)
            .start(&rt)
            .await
            .unwrap();
        let (tx, rx) = oneshot::channel();
        sink.ask(Arm(n, tx), Duration::from_secs(5)).await.unwrap();
        let t0 = Instant::now();
        pump_cadre(&sink, n).await;
        rx.await.unwrap();
        let elapsed = t0.elapsed();
        root.stop(Duration::from_secs(5)).await.unwrap();
        elapsed
    })
}

/// Starts `n` plain actix actors; the time until all ran `started`.
fn spawn_actix(n: u64) -> Duration {
    System::new().block_on(async move {
        let started = Rc::new(Cell::new(0));
        let t0 = Instant::now();
        let addrs: Vec<_> = (0..n).map(|_| Idle(started.clone()).start()).collect();
        while started.get() < n {
            tokio::task::yield_now().await;
        }
        let elapsed = t0.elapsed();
        drop(addrs);
        elapsed
    })
}

/// Starts a supervision tree of `n` children; the time until its start returns (all started).
fn spawn_cadre(n: u64) -> Duration {
    System::new().block_on(async move {
        let rt = Runtime::default();
        let started = Rc::new(Cell::new(0));
        let mut spec = SupervisorSpec::new("root");
        for i in 0..n {
            // A factory is Send + Sync: it reaches the (thread-local) counter through
            // `counter()`, as actors on one arbiter share its thread.
            spec = spec.child(ChildSpec::new(format!("c{i}"), || Idle(counter())));
        }
        COUNTER.with(|c| *c.borrow_mut() = Some(started.clone()));
        let t0 = Instant::now();
        let root = spec.start(&rt).await.unwrap();
        let elapsed = t0.elapsed();
        assert_eq!(started.get(), n);
        root.stop(Duration::from_secs(600)).await.unwrap();
        elapsed
    })
}

fn tell_throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("tell");
    g.throughput(Throughput::Elements(1));
    g.bench_function("actix", |b| b.iter_custom(tell_actix));
    g.bench_function("cadre", |b| b.iter_custom(tell_cadre));
    g.finish();
}

fn spawn_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn");
    g.throughput(Throughput::Elements(1));
    g.bench_function("actix", |b| b.iter_custom(spawn_actix));
    g.bench_function("cadre", |b| b.iter_custom(spawn_cadre));
    g.finish();
}

/// Runs `base` and `ours` alternately `rounds` times (swapping which goes first) and returns
/// the median of each and the median of the per-round ratios `ours / base`: drift of a shared,
/// noisy machine hits both sides of a pair alike.
fn paired(
    rounds: usize,
    mut base: impl FnMut() -> Duration,
    mut ours: impl FnMut() -> Duration,
) -> (Duration, Duration, f64) {
    let (mut b, mut o, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        let (tb, to) = if i % 2 == 0 {
            let tb = base();
            (tb, ours())
        } else {
            let to = ours();
            (base(), to)
        };
        b.push(tb);
        o.push(to);
        r.push(to.as_secs_f64() / tb.as_secs_f64());
    }
    b.sort();
    o.sort();
    r.sort_by(f64::total_cmp);
    (b[rounds / 2], o[rounds / 2], r[rounds / 2])
}

thread_local! {
    static COUNTER: RefCell<Option<Rc<Cell<u64>>>> = const { RefCell::new(None) };
}

fn counter() -> Rc<Cell<u64>> {
    COUNTER.with(|c| c.borrow().clone().unwrap_or_default())
}

// ---------------------------------------------------------------- custom measurements

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Restart latency after a panic: p50, p99 over `n` restarts.
fn restart_latency(n: usize) -> (Duration, Duration) {
    RESTARTS.with(|r| r.borrow_mut().clear());
    System::new().block_on(async move {
        let rt = Runtime::default();
        let spec = ChildSpec::new("crasher", || Crasher);
        let h = spec.actor_ref();
        let root = SupervisorSpec::new("root")
            .intensity(Intensity::new(u32::MAX, Duration::from_secs(1)))
            .child(spec)
            .start(&rt)
            .await
            .unwrap();
        for g in 1..=n as u64 {
            h.running_generation(g).await;
            h.tell(Crash).unwrap();
        }
        h.running_generation(n as u64 + 1).await;
        root.stop(Duration::from_secs(5)).await.unwrap();
    });
    let mut v = RESTARTS.with(|r| std::mem::take(&mut *r.borrow_mut()));
    v.sort();
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

/// actix's floor: `Actor::start` of a fresh actor until its `started` runs; p50, p99.
fn actix_start_latency(n: usize) -> (Duration, Duration) {
    RESTARTS.with(|r| r.borrow_mut().clear());
    System::new().block_on(async move {
        for _ in 0..n {
            PANICKED_AT.with(|p| p.set(Some(Instant::now())));
            let addr = Crasher.start();
            while RESTARTS.with(|r| r.borrow().is_empty())
                || PANICKED_AT.with(|p| {
                    let v = p.take();
                    p.set(v);
                    v.is_some()
                })
            {
                tokio::task::yield_now().await;
            }
            drop(addr);
        }
    });
    let mut v = RESTARTS.with(|r| std::mem::take(&mut *r.borrow_mut()));
    v.sort();
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

/// Live heap bytes per idle actor: (actix, cadre).
fn memory_per_actor(n: usize) -> (f64, f64) {
    let actix = System::new().block_on(async move {
        let started = Rc::new(Cell::new(0));
        let region = Region::new(GLOBAL);
        let addrs: Vec<_> = (0..n).map(|_| Idle(started.clone()).start()).collect();
        while started.get() < n as u64 {
            tokio::task::yield_now().await;
        }
        let stats = region.change();
        let vec_bytes = n * std::mem::size_of::<Addr<Idle>>();
        drop(addrs);
        (stats.bytes_allocated as f64 - stats.bytes_deallocated as f64 - vec_bytes as f64)
            / n as f64
    });
    let cadre = System::new().block_on(async move {
        let rt = Runtime::default();
        COUNTER.with(|c| *c.borrow_mut() = Some(Rc::new(Cell::new(0))));
        let region = Region::new(GLOBAL);
        let pool = PoolSpec::new("pool", ChildSpec::new("idle", || Idle(counter())))
            .size(n)
            .start(&rt)
            .await
            .unwrap();
        let stats = region.change();
        pool.supervisor()
            .stop(Duration::from_secs(60))
            .await
            .unwrap();
        (stats.bytes_allocated as f64 - stats.bytes_deallocated as f64) / n as f64
    });
    (actix, cadre)
}

/// Live heap bytes per idle unsupervised cadre actor (`cadre_runtime::spawn`).
fn memory_per_unsupervised(n: usize) -> f64 {
    System::new().block_on(async move {
        let started = Rc::new(Cell::new(0));
        let region = Region::new(GLOBAL);
        let refs: Vec<_> = (0..n)
            .map(|_| cadre_runtime::spawn("idle", MAILBOX, Idle(started.clone())))
            .collect();
        while started.get() < n as u64 {
            tokio::task::yield_now().await;
        }
        let stats = region.change();
        let vec_bytes = n * std::mem::size_of::<ActorRef<Idle>>();
        drop(refs);
        (stats.bytes_allocated as f64 - stats.bytes_deallocated as f64 - vec_bytes as f64)
            / n as f64
    })
}

/// Time to stop a tree of `n` idle children (graceful stops, right to left), per child.
fn stop_cost_per_child(n: u64) -> Duration {
    System::new().block_on(async move {
        let rt = Runtime::default();
        let mut spec = SupervisorSpec::new("root");
        for i in 0..n {
            spec = spec.child(ChildSpec::new(format!("c{i}"), || Idle(counter())));
        }
        let root = spec.start(&rt).await.unwrap();
        let t0 = Instant::now();
        root.stop(Duration::from_secs(600)).await.unwrap();
        t0.elapsed() / n as u32
    })
}

fn criterion_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("criterion")
}

fn main() {
    // The panics of the restart benchmark are expected; keep the output readable.
    std::panic::set_hook(Box::new(|_| {}));
    let mut c = Criterion::default()
        .output_directory(&criterion_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    tell_throughput(&mut c);
    spawn_cost(&mut c);
    c.final_summary();

    println!("\n== cadre-runtime vs raw actix (same run; paired rounds, medians) ==");
    const TELLS: u64 = 500_000;
    let (a, c, r) = paired(15, || tell_actix(TELLS), || tell_cadre(TELLS));
    let rate = |d: Duration| TELLS as f64 / d.as_secs_f64() / 1e6;
    println!(
        "tell throughput:  actix {:.2} M msg/s | cadre {:.2} M msg/s | cadre/actix {:.3} (target >= 0.95)",
        rate(a),
        rate(c),
        1.0 / r
    );
    const SPAWNS: u64 = 5_000;
    let (a, c, r) = paired(15, || spawn_actix(SPAWNS), || spawn_cadre(SPAWNS));
    let per = |d: Duration| d.as_secs_f64() * 1e9 / SPAWNS as f64;
    println!(
        "spawn cost:       actix {:.0} ns | cadre {:.0} ns per actor | cadre/actix {r:.2}x (target <= 2x)",
        per(a),
        per(c)
    );
    let (ap50, ap99) = actix_start_latency(2_000);
    let (p50, p99) = restart_latency(10_000);
    println!(
        "restart latency:  cadre p50 {:.1} µs, p99 {:.1} µs (targets 20 / 200 µs) | actix start->started floor p50 {:.1} µs, p99 {:.1} µs",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        ap50.as_secs_f64() * 1e6,
        ap99.as_secs_f64() * 1e6
    );
    let small = stop_cost_per_child(1_000);
    let large = stop_cost_per_child(20_000);
    println!(
        "stop cost:        {:.2} µs per child with 1 000 children, {:.2} µs with 20 000 (linear: equal)",
        small.as_secs_f64() * 1e6,
        large.as_secs_f64() * 1e6
    );
    let (ma, mc) = memory_per_actor(10_000);
    let mu = memory_per_unsupervised(10_000);
    println!(
        "memory per idle unsupervised cadre actor (handle + instance, no supervisor): {mu:.0} B"
    );
    println!(
        "memory per idle actor: actix {ma:.0} B | cadre {mc:.0} B (supervision adds {:.0} B) | ratio {:.2}x (target <= 1 KB)",
        mc - ma,
        mc / ma
    );
}
