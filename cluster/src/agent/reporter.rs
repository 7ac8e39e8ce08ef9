//! [`Reporter`]: when a node's agent writes its status record, keeps its lease, and says that
//! the store is (un)reachable.
//!
//! ```text
//!  Tick ──▶ no lease? Grant ──▶ Granted ──▶ Report(lease) ──▶ Reported ──▶ Schedule(period)
//!                 │                              └──▶ Failed ──▶ Schedule(backoff), lease dropped
//!                 └── Failed ──▶ Schedule(backoff)              if the keep-alive failed
//!  State(s) ──▶ Report now (or right after the one in flight)
//!  Stop ──▶ Farewell(lease): write `stopping`, then revoke the lease
//! ```
//!
//! # Guarantees
//! - One grant or report in flight at a time, and at most one timer pending: a report made
//!   early (for a change of state) does not start a second cycle of reports.
//! - A report keeps the lease alive, then writes the record under it. A keep-alive that fails
//!   drops the lease (it may have expired): the next attempt grants a new one, and the record
//!   moves to it.
//! - With the store unreachable the reporter keeps its state and retries with a backoff that
//!   doubles from the period up to `max_backoff`; it emits [`Effect::Reachability`] once per
//!   change of reachability, never once per attempt.
//! - A change of run state is reported at once, not a period later.
//!
//! Pure: the agent feeds it timer fires and the store's answers and carries out the
//! [`Effect`]s it returns.

use std::time::Duration;

use super::RunState;
use crate::store::LeaseId;

/// The reporter's timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReporterConfig {
    /// How often the status is written (the agent's `status_period`).
    pub period: Duration,
    /// The lease's TTL: the status is gone this long after the node stops reporting.
    pub ttl: Duration,
    /// The longest wait between attempts while the store is unreachable.
    pub max_backoff: Duration,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The timer fired (and once at start).
    Tick,
    /// A lease was granted.
    Granted(LeaseId),
    /// A report (keep-alive, then the record) was written.
    Reported,
    /// A grant or report failed.
    Failed {
        /// Why, for the log.
        reason: String,
        /// The keep-alive failed: the lease may be gone.
        lease_lost: bool,
    },
    /// The node's run state changed.
    State(RunState),
    /// The node stops: say goodbye.
    Stop,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Grant a lease of this TTL in the node's shard; feed back [`Input::Granted`] or
    /// [`Input::Failed`].
    Grant {
        /// The TTL.
        ttl: Duration,
    },
    /// Keep `lease` alive, then write the status record (with `state`) under it; feed back
    /// [`Input::Reported`] or [`Input::Failed`].
    Report {
        /// The lease.
        lease: LeaseId,
        /// The run state to write.
        state: RunState,
    },
    /// Feed [`Input::Tick`] after this long.
    Schedule(Duration),
    /// The store became reachable (`None`) or unreachable (`Some(why)`): log it once.
    Reachability(Option<String>),
    /// Write the record with state `stopping`, then revoke `lease` (its keys go at once).
    /// `None`: no lease was ever granted; nothing to write.
    Farewell {
        /// The lease.
        lease: Option<LeaseId>,
    },
}

/// The status reporter's rules.
#[derive(Debug)]
pub struct Reporter {
    config: ReporterConfig,
    lease: Option<LeaseId>,
    state: RunState,
    in_flight: bool,
    /// The state changed while a report was in flight: report again when it ends.
    dirty: bool,
    reachable: Option<bool>,
    failures: u32,
    stopped: bool,
    /// A [`Effect::Schedule`] is pending (its `Tick` has not come yet).
    timer: bool,
}

impl Reporter {
    /// A reporter with no lease yet, in state `starting`.
    pub fn new(config: ReporterConfig) -> Reporter {
        Reporter {
            config,
            lease: None,
            state: RunState::Starting,
            in_flight: false,
            dirty: false,
            reachable: None,
            failures: 0,
            stopped: false,
            timer: false,
        }
    }

    /// After an answer: the next attempt at once if the state changed meanwhile, else a timer
    /// unless one is pending already.
    fn next(&mut self, delay: Duration, effects: &mut Vec<Effect>) {
        if self.dirty {
            effects.push(self.attempt());
        } else if !self.timer {
            self.timer = true;
            effects.push(Effect::Schedule(delay));
        }
    }

    /// The run state it reports.
    pub fn state(&self) -> RunState {
        self.state
    }

    /// The lease it holds, if any.
    pub fn lease(&self) -> Option<LeaseId> {
        self.lease
    }

    fn attempt(&mut self) -> Effect {
        self.in_flight = true;
        self.dirty = false;
        match self.lease {
            None => Effect::Grant {
                ttl: self.config.ttl,
            },
            Some(lease) => Effect::Report {
                lease,
                state: self.state,
            },
        }
    }

    fn backoff(&self) -> Duration {
        let factor = 1u32 << self.failures.min(16);
        (self.config.period * factor).min(self.config.max_backoff)
    }

    /// Feeds one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Effect> {
        if self.stopped {
            return Vec::new();
        }
        match input {
            Input::Tick => {
                self.timer = false;
                if self.in_flight {
                    return Vec::new();
                }
                vec![self.attempt()]
            }
            Input::Granted(lease) => {
                self.lease = Some(lease);
                vec![Effect::Report {
                    lease,
                    state: self.state,
                }]
            }
            Input::Reported => {
                self.in_flight = false;
                self.failures = 0;
                let mut effects = Vec::new();
                if self.reachable != Some(true) {
                    self.reachable = Some(true);
                    effects.push(Effect::Reachability(None));
                }
                self.next(self.config.period, &mut effects);
                effects
            }
            Input::Failed { reason, lease_lost } => {
                self.in_flight = false;
                if lease_lost {
                    self.lease = None;
                }
                let mut effects = Vec::new();
                if self.reachable != Some(false) {
                    self.reachable = Some(false);
                    effects.push(Effect::Reachability(Some(reason)));
                }
                self.failures = self.failures.saturating_add(1);
                let backoff = self.backoff();
                self.next(backoff, &mut effects);
                effects
            }
            Input::State(state) => {
                if state == self.state {
                    return Vec::new();
                }
                self.state = state;
                if self.in_flight {
                    self.dirty = true;
                    return Vec::new();
                }
                vec![self.attempt()]
            }
            Input::Stop => {
                self.stopped = true;
                self.state = RunState::Stopping;
                vec![Effect::Farewell { lease: self.lease }]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(1);

    fn reporter() -> Reporter {
        Reporter::new(ReporterConfig {
            period: PERIOD,
            ttl: Duration::from_secs(5),
            max_backoff: Duration::from_secs(10),
        })
    }

    #[test]
    fn the_first_tick_grants_a_lease_then_reports_under_it_every_period() {
        let mut r = reporter();
        assert_eq!(
            r.handle(Input::Tick),
            vec![Effect::Grant {
                ttl: Duration::from_secs(5)
            }]
        );
        assert!(
            r.handle(Input::Tick).is_empty(),
            "one attempt in flight at a time"
        );
        assert_eq!(
            r.handle(Input::Granted(7)),
            vec![Effect::Report {
                lease: 7,
                state: RunState::Starting
            }]
        );
        assert_eq!(
            r.handle(Input::Reported),
            vec![Effect::Reachability(None), Effect::Schedule(PERIOD)]
        );
        assert_eq!(
            r.handle(Input::Tick),
            vec![Effect::Report {
                lease: 7,
                state: RunState::Starting
            }]
        );
        assert_eq!(
            r.handle(Input::Reported),
            vec![Effect::Schedule(PERIOD)],
            "logged once"
        );
    }

    #[test]
    fn an_unreachable_store_is_logged_once_and_retried_with_a_growing_capped_backoff() {
        let mut r = reporter();
        r.handle(Input::Tick);
        let fail = || Input::Failed {
            reason: "no store node".into(),
            lease_lost: false,
        };
        assert_eq!(
            r.handle(fail()),
            vec![
                Effect::Reachability(Some("no store node".into())),
                Effect::Schedule(PERIOD * 2)
            ]
        );
        let mut waits = Vec::new();
        for _ in 0..5 {
            assert_eq!(
                r.handle(Input::Tick),
                vec![Effect::Grant {
                    ttl: Duration::from_secs(5)
                }]
            );
            let effects = r.handle(fail());
            let [Effect::Schedule(wait)] = effects.as_slice() else {
                panic!("only a schedule, no second log line: {effects:?}");
            };
            waits.push(wait.as_secs());
        }
        assert_eq!(waits, vec![4, 8, 10, 10, 10]);
        // Back: logged once, and the period again.
        r.handle(Input::Tick);
        r.handle(Input::Granted(3));
        assert_eq!(
            r.handle(Input::Reported),
            vec![Effect::Reachability(None), Effect::Schedule(PERIOD)]
        );
    }

    #[test]
    fn a_failed_keep_alive_drops_the_lease_and_the_next_attempt_grants_a_new_one() {
        let mut r = reporter();
        r.handle(Input::Tick);
        r.handle(Input::Granted(7));
        r.handle(Input::Reported);
        r.handle(Input::Tick);
        r.handle(Input::Failed {
            reason: "lease 7 not found".into(),
            lease_lost: true,
        });
        assert_eq!(r.lease(), None);
        assert_eq!(
            r.handle(Input::Tick),
            vec![Effect::Grant {
                ttl: Duration::from_secs(5)
            }]
        );
    }

    #[test]
    fn a_state_change_is_reported_at_once_or_right_after_the_report_in_flight() {
        let mut r = reporter();
        r.handle(Input::Tick);
        r.handle(Input::Granted(7));
        // A report is in flight: the change waits for it, then goes at once.
        assert!(r.handle(Input::State(RunState::Normal)).is_empty());
        assert_eq!(
            r.handle(Input::Reported),
            vec![
                Effect::Reachability(None),
                Effect::Report {
                    lease: 7,
                    state: RunState::Normal
                }
            ]
        );
        r.handle(Input::Reported);
        // Idle: at once. The same state again: nothing.
        assert_eq!(
            r.handle(Input::State(RunState::Draining)),
            vec![Effect::Report {
                lease: 7,
                state: RunState::Draining
            }]
        );
        r.handle(Input::Reported);
        assert!(r.handle(Input::State(RunState::Draining)).is_empty());
    }

    #[test]
    fn stop_says_goodbye_under_the_lease_and_then_nothing_more() {
        let mut r = reporter();
        r.handle(Input::Tick);
        r.handle(Input::Granted(7));
        r.handle(Input::Reported);
        assert_eq!(
            r.handle(Input::Stop),
            vec![Effect::Farewell { lease: Some(7) }]
        );
        assert_eq!(r.state(), RunState::Stopping);
        assert!(r.handle(Input::Tick).is_empty());
        assert!(r.handle(Input::Reported).is_empty());
    }

    #[test]
    fn a_state_change_reported_early_does_not_start_a_second_cycle_of_timers() {
        let mut r = reporter();
        r.handle(Input::Tick);
        r.handle(Input::Granted(7));
        assert_eq!(
            r.handle(Input::Reported),
            vec![Effect::Reachability(None), Effect::Schedule(PERIOD)]
        );
        // The timer is pending; a change of state reports at once, and its answer arms no
        // second timer.
        assert_eq!(
            r.handle(Input::State(RunState::Normal)),
            vec![Effect::Report {
                lease: 7,
                state: RunState::Normal
            }]
        );
        assert!(r.handle(Input::Reported).is_empty());
        // The pending timer fires: one report, one timer again.
        assert_eq!(
            r.handle(Input::Tick),
            vec![Effect::Report {
                lease: 7,
                state: RunState::Normal
            }]
        );
        assert_eq!(r.handle(Input::Reported), vec![Effect::Schedule(PERIOD)]);
        // A tick that finds a report in flight leaves the next timer to its answer.
        r.handle(Input::Tick);
        r.handle(Input::State(RunState::Draining));
        r.handle(Input::Reported);
        assert!(r.handle(Input::Tick).is_empty(), "in flight");
        assert_eq!(r.handle(Input::Reported), vec![Effect::Schedule(PERIOD)]);
    }
}
