//! Counters the runtime keeps as it works, for a node's status and metrics: messages sent to
//! local actors, remote messages in and out, remote ask round trips, instances alive.
//!
//! # Cost
//! Each thread counts in counters of its own, written by that thread alone with a plain
//! load and store (no atomic read-modify-write, no shared cache line); a reader sums every
//! thread's counters. A count is a thread-local access and two instructions on the path it
//! counts.
//!
//! # Scope
//! The counters are the process's: an in-process cluster of several nodes (a test) shares
//! them. A [`Snapshot`] is taken at any time; the difference of two ([`Snapshot::since`]) gives
//! rates and ask latency quantiles over the time between them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Messages accepted into local actors' mailboxes or batch lanes (tells and asks).
    LocalSent = 0,
    /// Remote messages received (tells and asks).
    RemoteIn = 1,
    /// Remote messages sent (tells and asks).
    RemoteOut = 2,
    /// Actor instances running (started and not yet ended).
    Alive = 3,
}

const METRICS: usize = 4;

/// Buckets of the ask latency histogram: four per power of two of microseconds.
pub const BUCKETS: usize = 252;

struct Local {
    /// Unique among the threads of the process (an address can be reused).
    #[cfg(test)]
    id: u64,
    counts: [AtomicU64; METRICS],
    asks: [AtomicU64; BUCKETS],
}

#[cfg(test)]
static IDS: AtomicU64 = AtomicU64::new(0);

impl Local {
    fn new() -> Self {
        Local {
            #[cfg(test)]
            id: IDS.fetch_add(1, Relaxed),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            asks: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The counters of the threads running now.
static ALL: Mutex<Vec<Arc<Local>>> = Mutex::new(Vec::new());

/// The counts of the threads that ended, folded together (so that threads that come and go,
/// as a blocking pool's do, leave nothing behind but these sums).
static RETIRED: Mutex<Retired> = Mutex::new(Retired {
    counts: [0; METRICS],
    asks: [0; BUCKETS],
});

struct Retired {
    counts: [u64; METRICS],
    asks: [u64; BUCKETS],
}

/// A thread's counters, registered while the thread lives.
struct Handle(Arc<Local>);

impl Drop for Handle {
    fn drop(&mut self) {
        ALL.lock().retain(|l| !Arc::ptr_eq(l, &self.0));
        let mut retired = RETIRED.lock();
        for (sum, c) in retired.counts.iter_mut().zip(&self.0.counts) {
            *sum = sum.wrapping_add(c.load(Relaxed));
        }
        for (sum, c) in retired.asks.iter_mut().zip(&self.0.asks) {
            *sum = sum.wrapping_add(c.load(Relaxed));
        }
    }
}

thread_local! {
    static LOCAL: Handle = {
        let local = Arc::new(Local::new());
        ALL.lock().push(local.clone());
        Handle(local)
    };
}

/// Adds `n` to `metric` (wrapping: subtract with `n.wrapping_neg()`).
#[inline]
pub fn add(metric: Metric, n: u64) {
    let _ = LOCAL.try_with(|l| {
        // Only this thread writes its counters: a load and a store, no atomic add.
        let c = &l.0.counts[metric as usize];
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    });
}

/// The bucket of a round trip of `us` microseconds.
fn bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize; // ≥ 2
    let sub = ((us >> (e - 2)) & 3) as usize;
    (4 * (e - 1) + sub).min(BUCKETS - 1)
}

/// The largest round trip (µs) that falls in bucket `i`.
fn bucket_top(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let e = i / 4 + 1;
    let sub = (i % 4) as u128;
    (((4 + sub + 1) << (e - 2)) - 1).min(u128::from(u64::MAX)) as u64
}

/// Records one remote ask round trip.
#[inline]
pub fn record_ask(round_trip: Duration) {
    let us = round_trip.as_micros().min(u128::from(u64::MAX)) as u64;
    let _ = LOCAL.try_with(|l| {
        let c = &l.0.asks[bucket(us)];
        c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
    });
}

/// The counters of every thread, summed, at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    counts: [u64; METRICS],
    asks: Vec<u64>,
}

/// Sums every thread's counters now.
pub fn snapshot() -> Snapshot {
    // Retired first, then the live threads: a thread that retires in between may be missed by
    // this one snapshot (its Handle leaves ALL before it adds to RETIRED), never counted twice.
    let (counts, asks) = {
        let r = RETIRED.lock();
        (r.counts, r.asks.to_vec())
    };
    let all = ALL.lock();
    let mut s = Snapshot { counts, asks };
    for l in all.iter() {
        for (sum, c) in s.counts.iter_mut().zip(&l.counts) {
            *sum = sum.wrapping_add(c.load(Relaxed));
        }
        for (sum, c) in s.asks.iter_mut().zip(&l.asks) {
            *sum = sum.wrapping_add(c.load(Relaxed));
        }
    }
    s
}

/// What happened between two snapshots.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Messages per second into local actors.
    pub local_per_sec: f64,
    /// Remote messages received per second.
    pub remote_in_per_sec: f64,
    /// Remote messages sent per second.
    pub remote_out_per_sec: f64,
    /// Remote asks answered in the window.
    pub asks: u64,
    /// Median ask round trip, in µs (an upper bound within 25 %); none without asks.
    pub ask_p50_us: Option<u64>,
    /// 99th percentile ask round trip, in µs (an upper bound within 25 %).
    pub ask_p99_us: Option<u64>,
}

impl Snapshot {
    /// The count of `metric` (wrapping).
    pub fn get(&self, metric: Metric) -> u64 {
        self.counts[metric as usize]
    }

    /// The value of a gauge such as [`Metric::Alive`], counted up and down, possibly on
    /// different threads: a sum read while one thread's decrement is seen and another's
    /// increment not yet reads as zero, not as a wrapped huge number.
    pub fn gauge(&self, metric: Metric) -> u64 {
        (self.get(metric) as i64).max(0) as u64
    }

    /// Rates and quantiles between `earlier` and this snapshot, `elapsed` apart.
    pub fn since(&self, earlier: &Snapshot, elapsed: Duration) -> Window {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let rate = |m: Metric| self.get(m).wrapping_sub(earlier.get(m)) as f64 / secs;
        let deltas: Vec<u64> = self
            .asks
            .iter()
            .zip(&earlier.asks)
            .map(|(a, b)| a.wrapping_sub(*b))
            .collect();
        let asks: u64 = deltas.iter().sum();
        let quantile = |q: f64| {
            if asks == 0 {
                return None;
            }
            let rank = ((asks as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            deltas.iter().enumerate().find_map(|(i, n)| {
                seen += n;
                (seen >= rank).then(|| bucket_top(i))
            })
        };
        Window {
            local_per_sec: rate(Metric::LocalSent),
            remote_in_per_sec: rate(Metric::RemoteIn),
            remote_out_per_sec: rate(Metric::RemoteOut),
            asks,
            ask_p50_us: quantile(0.50),
            ask_p99_us: quantile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_within_a_quarter() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            3,
            4,
            5,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            123_456,
            u64::MAX / 2,
        ] {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            let top = bucket_top(b);
            assert!(top >= us, "{us} ≤ {top}");
            assert!(top as f64 <= us as f64 * 1.25 + 1.0, "{us}: {top}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn a_window_gives_rates_and_ask_quantiles_from_the_counts_of_every_thread() {
        let before = snapshot();
        add(Metric::RemoteOut, 100);
        std::thread::spawn(|| {
            add(Metric::RemoteOut, 50);
            for _ in 0..98 {
                record_ask(Duration::from_micros(100));
            }
            record_ask(Duration::from_micros(5_000));
            record_ask(Duration::from_micros(9_000));
        })
        .join()
        .unwrap();
        let w = snapshot().since(&before, Duration::from_secs(2));
        // Other tests of this binary may count meanwhile: at least ours.
        assert!(w.remote_out_per_sec >= 75.0, "{w:?}");
        assert!(w.asks >= 100);
        let p50 = w.ask_p50_us.unwrap();
        assert!((100..=125).contains(&p50), "{p50}");
        let p99 = w.ask_p99_us.unwrap();
        assert!((5_000..=6_250).contains(&p99), "{p99}");
        let none = snapshot();
        assert_eq!(none.since(&none, Duration::from_secs(1)).ask_p50_us, None);
    }

    #[test]
    fn the_counts_of_a_thread_that_ended_stay_and_its_counters_go() {
        let before = snapshot();
        let gone = std::thread::spawn(|| {
            add(Metric::LocalSent, 1_000);
            LOCAL.with(|h| h.0.id)
        })
        .join()
        .unwrap();
        let after = snapshot();
        let counted = after
            .get(Metric::LocalSent)
            .wrapping_sub(before.get(Metric::LocalSent));
        assert!(counted >= 1_000, "{counted}");
        assert!(
            !ALL.lock().iter().any(|l| l.id == gone),
            "the ended thread's counters are gone from the list"
        );
        // A gauge read while an instance's start and end are counted on different threads.
        let g = Snapshot {
            counts: [0, 0, 0, 1u64.wrapping_neg()],
            asks: vec![0; BUCKETS],
        };
        assert_eq!(g.gauge(Metric::Alive), 0);
    }
}
