//! [`LeaseClock`]: a shard leader's deadlines for its leases.
//!
//! Lease expiry is decided by the leader alone, from its own clock, and enters the log as a
//! revoke. A leader that takes over knows the leases (they are in the state machine) but not
//! how long ago their holders kept them alive, so it gives every lease a full TTL from the
//! moment it took over: a TTL is a minimum, never cut short by a change of leader.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{LeaseId, StateMachine};

#[derive(Debug, Clone, Copy)]
struct Deadline {
    ttl: Duration,
    at: Instant,
    /// A revoke was proposed at this time; not proposed again before it is applied or a
    /// retry interval has passed.
    proposed: Option<Instant>,
}

/// The leader's lease deadlines.
#[derive(Debug, Default)]
pub struct LeaseClock {
    deadlines: BTreeMap<LeaseId, Deadline>,
}

impl LeaseClock {
    /// No leases.
    pub fn new() -> Self {
        LeaseClock::default()
    }

    /// This replica became leader at `now`: every lease of `sm` gets a full TTL.
    pub fn took_over(&mut self, sm: &StateMachine, now: Instant) {
        self.deadlines = sm
            .leases()
            .iter()
            .map(|(id, l)| {
                let ttl = Duration::from_millis(l.ttl_ms);
                (
                    *id,
                    Deadline {
                        ttl,
                        at: now + ttl,
                        proposed: None,
                    },
                )
            })
            .collect();
    }

    /// Takes in the grants and revokes applied since the last call: a lease new to the clock
    /// runs a full TTL from `now`; a lease gone from the state machine is forgotten.
    pub fn sync(&mut self, sm: &StateMachine, now: Instant) {
        self.deadlines.retain(|id, _| sm.leases().contains_key(id));
        for (id, lease) in sm.leases() {
            if !self.deadlines.contains_key(id) {
                self.granted(*id, Duration::from_millis(lease.ttl_ms), now);
            }
        }
    }

    /// Takes in lease `id` alone, as [`LeaseClock::sync`] would: for a request about one lease,
    /// without going over all of them.
    pub fn sync_one(&mut self, id: LeaseId, sm: &StateMachine, now: Instant) {
        match sm.leases().get(&id) {
            None => {
                self.deadlines.remove(&id);
            }
            Some(lease) if !self.deadlines.contains_key(&id) => {
                self.granted(id, Duration::from_millis(lease.ttl_ms), now);
            }
            Some(_) => {}
        }
    }

    /// A grant was applied.
    pub fn granted(&mut self, id: LeaseId, ttl: Duration, now: Instant) {
        self.deadlines.insert(
            id,
            Deadline {
                ttl,
                at: now + ttl,
                proposed: None,
            },
        );
    }

    /// A revoke was applied.
    pub fn revoked(&mut self, id: LeaseId) {
        self.deadlines.remove(&id);
    }

    /// A keep-alive: the lease runs a full TTL from `now`. Returns the TTL, or `None` for an
    /// unknown lease (or one whose revoke is under way).
    pub fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Option<Duration> {
        let d = self.deadlines.get_mut(&id)?;
        if d.proposed.is_some() {
            return None;
        }
        d.at = now + d.ttl;
        Some(d.ttl)
    }

    /// How long the lease has left, and its TTL.
    pub fn time_to_live(&self, id: LeaseId, now: Instant) -> Option<(Duration, Duration)> {
        let d = self.deadlines.get(&id)?;
        Some((d.at.saturating_duration_since(now), d.ttl))
    }

    /// The leases whose time ran out, to revoke through the log; each is returned again after
    /// `retry` if its revoke has not been applied by then.
    pub fn expired(&mut self, now: Instant, retry: Duration) -> Vec<LeaseId> {
        let mut out = Vec::new();
        for (id, d) in &mut self.deadlines {
            let due = d.at <= now && d.proposed.is_none_or(|p| now.duration_since(p) >= retry);
            if due {
                d.proposed = Some(now);
                out.push(*id);
            }
        }
        out
    }

    /// The earliest deadline, to arm a timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines
            .values()
            .filter(|d| d.proposed.is_none())
            .map(|d| d.at)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Request;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn leases_expire_after_their_ttl_unless_kept_alive() {
        let t0 = Instant::now();
        let mut c = LeaseClock::new();
        c.granted(1, 100 * MS, t0);
        c.granted(2, 100 * MS, t0);
        assert_eq!(c.next_deadline(), Some(t0 + 100 * MS));
        assert_eq!(c.keep_alive(2, t0 + 80 * MS), Some(100 * MS));
        assert!(c.expired(t0 + 99 * MS, 50 * MS).is_empty());
        assert_eq!(c.expired(t0 + 100 * MS, 50 * MS), vec![1]);
        // Proposed: not again until the retry interval, and no keep-alive revives it.
        assert!(c.expired(t0 + 120 * MS, 50 * MS).is_empty());
        assert_eq!(c.keep_alive(1, t0 + 120 * MS), None);
        assert_eq!(c.expired(t0 + 150 * MS, 50 * MS), vec![1]);
        c.revoked(1);
        assert_eq!(c.time_to_live(2, t0 + 130 * MS), Some((50 * MS, 100 * MS)));
        assert_eq!(c.expired(t0 + 180 * MS, 50 * MS), vec![2]);
        assert_eq!(c.keep_alive(9, t0), None);
    }

    #[test]
    fn sync_takes_in_grants_and_revokes() {
        let mut sm = StateMachine::new();
        let t = Instant::now();
        let mut c = LeaseClock::new();
        sm.apply(Request::LeaseGrant { id: 1, ttl_ms: 100 });
        c.sync(&sm, t);
        assert_eq!(c.time_to_live(1, t), Some((100 * MS, 100 * MS)));
        c.sync(&sm, t + 50 * MS);
        assert_eq!(
            c.time_to_live(1, t + 50 * MS),
            Some((50 * MS, 100 * MS)),
            "kept, not reset"
        );
        sm.apply(Request::LeaseRevoke { id: 1 });
        c.sync(&sm, t + 60 * MS);
        assert_eq!(c.time_to_live(1, t + 60 * MS), None);
        // One lease at a time: the same outcome.
        sm.apply(Request::LeaseGrant { id: 2, ttl_ms: 100 });
        c.sync_one(2, &sm, t);
        assert_eq!(c.time_to_live(2, t), Some((100 * MS, 100 * MS)));
        sm.apply(Request::LeaseRevoke { id: 2 });
        c.sync_one(2, &sm, t);
        assert_eq!(c.time_to_live(2, t), None);
    }

    #[test]
    fn a_new_leader_gives_every_lease_a_full_ttl() {
        let mut sm = StateMachine::new();
        sm.apply(Request::LeaseGrant { id: 1, ttl_ms: 100 });
        sm.apply(Request::LeaseGrant { id: 2, ttl_ms: 300 });
        let t = Instant::now() + 10_000 * MS;
        let mut c = LeaseClock::new();
        c.took_over(&sm, t);
        assert_eq!(c.time_to_live(1, t), Some((100 * MS, 100 * MS)));
        assert_eq!(c.time_to_live(2, t), Some((300 * MS, 300 * MS)));
        assert!(c.expired(t + 99 * MS, 10 * MS).is_empty());
        assert_eq!(c.expired(t + 100 * MS, 10 * MS), vec![1]);
    }
}
