//! The supervisor's decisions as a pure state machine: inputs (a child started, exited, a timer
//! fired, shut down, add, remove) and the current time go in; actions (start this child, stop
//! that one, arm a timer, forget a child, exit) come out. No actix, no clock, no randomness of
//! its own (the jitter source is seeded), so every rule is tested step by step below.
//!
//! The supervisor works through a *plan*, one step at a time, as Erlang's supervisor does
//! synchronously: it starts a child and waits for its acknowledgement before the next, stops a
//! child and waits for its exit before the next. Exits that arrive in the middle of a plan are
//! absorbed when the plan stops that child anyway, and otherwise handled once the plan is done.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::events::EventKind;
use crate::exit::ExitReason;
use crate::supervisor::keyed::KeyedVec;
use crate::supervisor::spec::{ChildMeta, Intensity, Restart, Strategy};

/// A child's key: its position among its siblings (keys only grow; a pool's new child gets the
/// next one), so key order is start order.
pub(crate) type ChildKey = u64;

/// How the core restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Static(Strategy),
    Pool,
}

/// What happened.
#[derive(Debug)]
pub(crate) enum Input {
    /// Start the children, left to right.
    Start,
    /// A child's start finished.
    Started {
        key: ChildKey,
        generation: u64,
        result: Result<(), ExitReason>,
    },
    /// A started child ended.
    Exited {
        key: ChildKey,
        generation: u64,
        reason: ExitReason,
    },
    /// A child's restart backoff ran out.
    RestartDue { key: ChildKey, generation: u64 },
    /// A group restart's backoff ran out.
    Resume { token: u64 },
    /// Stop every child right to left, then exit with `Shutdown`.
    Shutdown,
    /// A new child (pools), started when the plan reaches it.
    Add { key: ChildKey, meta: ChildMeta },
    /// Stop and remove a child.
    Remove { key: ChildKey },
}

/// What to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    /// Start generation `generation` of the child, then report `Input::Started`.
    Start { key: ChildKey, generation: u64 },
    /// Stop the child by its shutdown policy, then report `Input::Exited`.
    Stop { key: ChildKey, generation: u64 },
    /// Report `Input::RestartDue` after `delay`.
    RestartAfter {
        key: ChildKey,
        generation: u64,
        delay: Duration,
    },
    /// Report `Input::Resume` after `delay`.
    ResumeAfter { token: u64, delay: Duration },
    /// The child ended for good.
    Forget { key: ChildKey, reason: ExitReason },
    /// A start attempt finished (answers a pool's `add`).
    StartResult {
        key: ChildKey,
        result: Result<(), ExitReason>,
    },
    /// A removal finished.
    Removed { key: ChildKey },
    /// Something observable happened to a child.
    Event { child: Arc<str>, kind: EventKind },
    /// The initial start finished: every child runs.
    Ready,
    /// The supervisor is done: all children are stopped.
    Exit(ExitReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Not running; will be started when a plan reaches it.
    Idle,
    Starting,
    Running,
    /// Waiting out its restart backoff.
    Backoff,
    /// Ended for good.
    Done,
}

#[derive(Debug)]
struct ChildState {
    meta: ChildMeta,
    generation: u64,
    status: Status,
    /// Consecutive restarts, for the backoff.
    failures: u32,
    started_at: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Start(ChildKey),
    Stop(ChildKey),
    /// Stop the rightmost running child with a key `>= from` and `< below` (other than
    /// `except`), repeatedly. `below` moves left as children stop, so stopping n children scans
    /// each once: nothing starts while a plan stops.
    StopAll {
        from: ChildKey,
        except: Option<ChildKey>,
        below: ChildKey,
    },
    Wait(Duration),
    Remove(ChildKey),
    Ready,
    Exit(ExitReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    Nothing,
    Start { key: ChildKey, generation: u64 },
    Stop { key: ChildKey, generation: u64 },
    Resume { token: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    Starting,
    Running,
    Stopping,
    Done,
}

/// A child as the supervisor sees it (for introspection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// The child's id.
    pub id: Arc<str>,
    /// Its current or last generation (0: never started).
    pub generation: u64,
    /// Whether it runs.
    pub running: bool,
}

/// The supervisor's state machine.
pub(crate) struct Core {
    kind: Kind,
    intensity: Intensity,
    restarts: VecDeque<Instant>,
    children: KeyedVec<ChildState>,
    plan: VecDeque<Step>,
    waiting: Waiting,
    deferred: VecDeque<(ChildKey, u64, ExitReason)>,
    phase: Phase,
    rng: fastrand::Rng,
    next_token: u64,
    out: Vec<Action>,
}

impl Core {
    pub(crate) fn new(kind: Kind, intensity: Intensity, seed: u64) -> Self {
        Core {
            kind,
            intensity,
            restarts: VecDeque::new(),
            children: KeyedVec::default(),
            plan: VecDeque::new(),
            waiting: Waiting::Nothing,
            deferred: VecDeque::new(),
            phase: Phase::Idle,
            rng: fastrand::Rng::with_seed(seed),
            next_token: 0,
            out: Vec::new(),
        }
    }

    /// Makes room for `n` more children.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.children.reserve(n);
    }

    /// Adds a child before the start (static children, in order); its generations continue
    /// from `last_generation`.
    pub(crate) fn add_initial(&mut self, key: ChildKey, meta: ChildMeta, last_generation: u64) {
        let mut child = ChildState::new(meta);
        child.generation = last_generation;
        self.children.insert(key, child);
    }

    /// Whether the core still tracks `key`.
    pub(crate) fn contains(&self, key: ChildKey) -> bool {
        self.children.contains_key(&key)
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    pub(crate) fn children(&self) -> Vec<ChildInfo> {
        self.children
            .values()
            .map(|c| ChildInfo {
                id: c.meta.id.clone(),
                generation: c.generation,
                running: c.status == Status::Running,
            })
            .collect()
    }

    /// Feeds one input at time `now`; returns the actions to carry out, in order.
    #[cfg(test)]
    pub(crate) fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.handle_into(input, now, &mut out);
        out
    }

    /// Feeds one input at time `now`; appends the actions to carry out, in order, to `out`.
    pub(crate) fn handle_into(&mut self, input: Input, now: Instant, out: &mut Vec<Action>) {
        std::mem::swap(&mut self.out, out);
        self.step(input, now);
        std::mem::swap(&mut self.out, out);
    }

    fn step(&mut self, input: Input, now: Instant) {
        match input {
            Input::Start => self.on_start(),
            Input::Started {
                key,
                generation,
                result,
            } => self.on_started(key, generation, result, now),
            Input::Exited {
                key,
                generation,
                reason,
            } => self.on_exited(key, generation, reason),
            Input::RestartDue { key, generation } => {
                let due = self
                    .children
                    .get(&key)
                    .is_some_and(|c| c.generation == generation && c.status == Status::Backoff);
                if due && self.phase == Phase::Running {
                    self.plan.push_back(Step::Start(key));
                }
            }
            Input::Resume { token } => {
                if self.waiting == (Waiting::Resume { token }) {
                    self.waiting = Waiting::Nothing;
                }
            }
            Input::Shutdown => self.shutdown(ExitReason::Shutdown),
            Input::Add { key, meta } => {
                self.children.insert(key, ChildState::new(meta));
                if matches!(self.phase, Phase::Stopping | Phase::Done) {
                    self.children.remove(&key);
                    self.out.push(Action::StartResult {
                        key,
                        result: Err(ExitReason::Shutdown),
                    });
                } else {
                    self.plan.push_back(Step::Start(key));
                }
            }
            Input::Remove { key } => {
                if self.children.contains_key(&key) && self.phase != Phase::Done {
                    self.plan.push_back(Step::Stop(key));
                    self.plan.push_back(Step::Remove(key));
                } else {
                    self.out.push(Action::Removed { key });
                }
            }
        }
        self.advance(now);
    }

    fn on_start(&mut self) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Starting;
        let keys: Vec<_> = self.children.keys().copied().collect();
        self.plan.extend(keys.into_iter().map(Step::Start));
        self.plan.push_back(Step::Ready);
    }

    fn on_started(
        &mut self,
        key: ChildKey,
        generation: u64,
        result: Result<(), ExitReason>,
        now: Instant,
    ) {
        if self.waiting == (Waiting::Stop { key, generation }) {
            // Asked to stop while starting: a failed start is its exit.
            match result {
                Ok(()) => {
                    if let Some(child) = self.children.get_mut(&key) {
                        child.status = Status::Running;
                    }
                }
                Err(reason) => self.on_exited(key, generation, reason),
            }
            return;
        }
        if self.waiting != (Waiting::Start { key, generation }) {
            return; // stale
        }
        self.waiting = Waiting::Nothing;
        let Some(child) = self.children.get_mut(&key) else {
            return;
        };
        let id = child.meta.id.clone();
        match result {
            Ok(()) => {
                child.status = Status::Running;
                child.started_at = Some(now);
                self.event(id, EventKind::Started { generation });
                self.out.push(Action::StartResult {
                    key,
                    result: Ok(()),
                });
            }
            Err(reason) => {
                child.status = Status::Idle;
                self.event(
                    id.clone(),
                    EventKind::StartFailed {
                        generation,
                        reason: reason.clone(),
                    },
                );
                self.out.push(Action::StartResult {
                    key,
                    result: Err(reason.clone()),
                });
                match self.phase {
                    Phase::Starting => {
                        self.phase = Phase::Stopping;
                        self.plan.clear();
                        self.plan.push_back(Step::StopAll {
                            from: 0,
                            except: None,
                            below: ChildKey::MAX,
                        });
                        self.plan.push_back(Step::Exit(ExitReason::StartFailed {
                            child: id,
                            cause: Box::new(reason),
                        }));
                    }
                    Phase::Running if generation == 1 && self.kind == Kind::Pool => {
                        // A pool child that never started is not kept: its `add` failed.
                        self.forget(key, reason);
                    }
                    Phase::Running => {
                        if matches!(self.kind, Kind::Static(s) if s != Strategy::OneForOne) {
                            self.plan.clear();
                        }
                        self.decide(key, reason, now);
                    }
                    _ => {}
                }
            }
        }
    }

    fn on_exited(&mut self, key: ChildKey, generation: u64, reason: ExitReason) {
        let Some(child) = self.children.get_mut(&key) else {
            return;
        };
        if child.generation != generation
            || !matches!(child.status, Status::Running | Status::Starting)
        {
            return; // stale
        }
        child.status = Status::Idle;
        let id = child.meta.id.clone();
        let temporary = child.meta.policy.restart == Restart::Temporary;
        self.event(
            id,
            EventKind::Exited {
                generation,
                reason: reason.clone(),
            },
        );
        if self.waiting == (Waiting::Stop { key, generation }) {
            self.waiting = Waiting::Nothing;
            if self.phase == Phase::Stopping || temporary {
                self.forget(key, reason);
            }
        } else if self.phase == Phase::Stopping {
            self.forget(key, reason);
        } else if self.plan_stops(key) {
            // A group restart in progress stops it anyway: nothing more to decide.
            if temporary {
                self.forget(key, reason);
            }
        } else {
            // Decided once the current plan is done (at once when there is none).
            self.deferred.push_back((key, generation, reason));
        }
    }

    /// Whether a step still in the plan will stop `key`.
    fn plan_stops(&self, key: ChildKey) -> bool {
        self.plan.iter().any(|s| match s {
            Step::Stop(k) => *k == key,
            Step::StopAll {
                from,
                except,
                below,
            } => key >= *from && key < *below && *except != Some(key),
            _ => false,
        })
    }

    /// Decides what a child's exit leads to: nothing, a restart, or escalation.
    fn decide(&mut self, key: ChildKey, reason: ExitReason, now: Instant) {
        let Some(child) = self.children.get(&key) else {
            return;
        };
        let restart = match child.meta.policy.restart {
            Restart::Permanent => true,
            Restart::Transient => reason.is_abnormal(),
            Restart::Temporary => false,
        };
        let id = child.meta.id.clone();
        if !restart {
            self.event(
                id,
                EventKind::NotRestarted {
                    reason: reason.clone(),
                },
            );
            self.forget(key, reason);
            return;
        }

        // Restart intensity: more than `max_restarts` within `within` escalates.
        self.restarts.push_back(now);
        while let Some(&t) = self.restarts.front() {
            if now.saturating_duration_since(t) >= self.intensity.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() > self.intensity.max_restarts as usize {
            let exit = ExitReason::Escalated {
                child: id.clone(),
                max_restarts: self.intensity.max_restarts,
                within: self.intensity.within,
                cause: Box::new(reason),
            };
            self.event(
                id,
                EventKind::Escalated {
                    reason: exit.clone(),
                },
            );
            self.phase = Phase::Stopping;
            self.plan.clear();
            self.deferred.clear();
            self.plan.push_back(Step::StopAll {
                from: 0,
                except: None,
                below: ChildKey::MAX,
            });
            self.plan.push_back(Step::Exit(exit));
            return;
        }

        let delay = self.backoff_delay(key, now);
        self.event(id, EventKind::Restarting { delay });
        match self.kind {
            Kind::Static(Strategy::OneForOne) | Kind::Pool => {
                let child = self.children.get_mut(&key).expect("checked above");
                if delay.is_zero() {
                    self.plan.push_back(Step::Start(key));
                } else {
                    child.status = Status::Backoff;
                    self.out.push(Action::RestartAfter {
                        key,
                        generation: child.generation,
                        delay,
                    });
                }
            }
            Kind::Static(strategy) => {
                let from = if strategy == Strategy::OneForAll {
                    0
                } else {
                    key
                };
                self.plan.push_back(Step::StopAll {
                    from,
                    except: Some(key),
                    below: ChildKey::MAX,
                });
                if !delay.is_zero() {
                    self.plan.push_back(Step::Wait(delay));
                }
                let keys: Vec<_> = self.children.range(from..).map(|(k, _)| *k).collect();
                self.plan.extend(keys.into_iter().map(Step::Start));
            }
        }
    }

    fn backoff_delay(&mut self, key: ChildKey, now: Instant) -> Duration {
        let unit = self.rng.f64();
        let child = self.children.get_mut(&key).expect("caller checked");
        let Some(backoff) = child.meta.policy.backoff else {
            return Duration::ZERO;
        };
        let stayed_up = child
            .started_at
            .is_some_and(|t| now.saturating_duration_since(t) >= backoff.max);
        if stayed_up {
            child.failures = 0;
        }
        child.failures = child.failures.saturating_add(1);
        backoff.delay(child.failures, unit)
    }

    fn shutdown(&mut self, reason: ExitReason) {
        if matches!(self.phase, Phase::Stopping | Phase::Done) {
            return;
        }
        self.phase = Phase::Stopping;
        self.plan.clear();
        self.deferred.clear();
        if matches!(self.waiting, Waiting::Resume { .. }) {
            self.waiting = Waiting::Nothing;
        }
        self.plan.push_back(Step::StopAll {
            from: 0,
            except: None,
            below: ChildKey::MAX,
        });
        self.plan.push_back(Step::Exit(reason));
    }

    fn forget(&mut self, key: ChildKey, reason: ExitReason) {
        let Some(child) = self.children.get_mut(&key) else {
            return;
        };
        let remove = self.kind == Kind::Pool || child.meta.policy.restart == Restart::Temporary;
        child.status = Status::Done;
        if remove {
            self.children.remove(&key);
        }
        self.out.push(Action::Forget { key, reason });
    }

    fn event(&mut self, child: Arc<str>, kind: EventKind) {
        self.out.push(Action::Event { child, kind });
    }

    /// Runs plan steps until one has to wait.
    fn advance(&mut self, now: Instant) {
        while self.waiting == Waiting::Nothing && self.phase != Phase::Done {
            let Some(step) = self.plan.pop_front() else {
                if self.phase != Phase::Running {
                    return;
                }
                let Some((key, generation, reason)) = self.deferred.pop_front() else {
                    return;
                };
                let current = self
                    .children
                    .get(&key)
                    .is_some_and(|c| c.generation == generation && c.status == Status::Idle);
                if current {
                    self.decide(key, reason, now);
                }
                continue;
            };
            match step {
                Step::Start(key) => {
                    let Some(child) = self.children.get_mut(&key) else {
                        continue;
                    };
                    if !matches!(child.status, Status::Idle | Status::Backoff) {
                        continue;
                    }
                    child.generation += 1;
                    child.status = Status::Starting;
                    let generation = child.generation;
                    self.waiting = Waiting::Start { key, generation };
                    self.out.push(Action::Start { key, generation });
                }
                Step::Stop(key) => self.stop(key),
                Step::StopAll {
                    from,
                    except,
                    below,
                } => {
                    let next = self
                        .children
                        .range(from..below)
                        .rev()
                        .find(|(k, c)| {
                            Some(**k) != except
                                && matches!(c.status, Status::Running | Status::Starting)
                        })
                        .map(|(k, _)| *k);
                    if let Some(key) = next {
                        self.plan.push_front(Step::StopAll {
                            from,
                            except,
                            below: key,
                        });
                        self.stop(key);
                    }
                }
                Step::Wait(delay) => {
                    let token = self.next_token;
                    self.next_token += 1;
                    self.waiting = Waiting::Resume { token };
                    self.out.push(Action::ResumeAfter { token, delay });
                }
                Step::Remove(key) => {
                    if self.children.contains_key(&key) {
                        self.forget(key, ExitReason::Shutdown);
                        self.children.remove(&key);
                    }
                    self.out.push(Action::Removed { key });
                }
                Step::Ready => {
                    self.phase = Phase::Running;
                    self.out.push(Action::Ready);
                }
                Step::Exit(reason) => {
                    // Children waiting out a backoff end for good with the supervisor.
                    let waiting: Vec<_> = self
                        .children
                        .iter()
                        .filter(|(_, c)| matches!(c.status, Status::Backoff | Status::Idle))
                        .map(|(k, _)| *k)
                        .collect();
                    for key in waiting {
                        self.forget(key, ExitReason::Shutdown);
                    }
                    self.phase = Phase::Done;
                    self.out.push(Action::Exit(reason));
                }
            }
        }
    }

    fn stop(&mut self, key: ChildKey) {
        let Some(child) = self.children.get_mut(&key) else {
            return;
        };
        match child.status {
            Status::Running | Status::Starting => {
                let generation = child.generation;
                self.waiting = Waiting::Stop { key, generation };
                self.out.push(Action::Stop { key, generation });
            }
            Status::Backoff => child.status = Status::Idle,
            Status::Idle | Status::Done => {}
        }
    }
}

impl ChildState {
    fn new(meta: ChildMeta) -> Self {
        ChildState {
            meta,
            generation: 0,
            status: Status::Idle,
            failures: 0,
            started_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::spec::Shutdown;

    fn meta(id: &str, restart: Restart) -> ChildMeta {
        ChildMeta::new(id.into(), restart, Shutdown::Infinity)
    }

    fn core(strategy: Strategy, ids: &[&str]) -> Core {
        let mut c = Core::new(Kind::Static(strategy), Intensity::default(), 7);
        for (k, id) in ids.iter().enumerate() {
            c.add_initial(k as ChildKey, meta(id, Restart::Permanent), 0);
        }
        c
    }

    /// The actions without the events.
    fn work(actions: Vec<Action>) -> Vec<Action> {
        actions
            .into_iter()
            .filter(|a| !matches!(a, Action::Event { .. } | Action::StartResult { .. }))
            .collect()
    }

    fn ok(key: ChildKey, generation: u64) -> Input {
        Input::Started {
            key,
            generation,
            result: Ok(()),
        }
    }

    fn exit(key: ChildKey, generation: u64, reason: ExitReason) -> Input {
        Input::Exited {
            key,
            generation,
            reason,
        }
    }

    fn start_of(key: ChildKey, generation: u64) -> Action {
        Action::Start { key, generation }
    }

    fn stop_of(key: ChildKey, generation: u64) -> Action {
        Action::Stop { key, generation }
    }

    fn boom() -> ExitReason {
        ExitReason::Panic("boom".into())
    }

    /// Starts every child of `c` (generation 1).
    fn start_all(c: &mut Core, n: u64, now: Instant) {
        assert_eq!(work(c.handle(Input::Start, now)), [start_of(0, 1)]);
        for k in 0..n {
            let next = c.handle(ok(k, 1), now);
            let expect = if k + 1 < n {
                vec![start_of(k + 1, 1)]
            } else {
                vec![Action::Ready]
            };
            assert_eq!(work(next), expect);
        }
    }

    #[test]
    fn start_is_sequential_and_waits_for_each_ack() {
        let now = Instant::now();
        let mut c = core(Strategy::OneForOne, &["a", "b", "c"]);
        start_all(&mut c, 3, now);
        assert_eq!(c.phase(), Phase::Running);
    }

    #[test]
    fn stale_exit_report_is_ignored() {
        let now = Instant::now();
        let mut c = core(Strategy::OneForOne, &["a"]);
        start_all(&mut c, 1, now);
        assert_eq!(work(c.handle(exit(0, 1, boom()), now)), [start_of(0, 2)]);
        assert_eq!(work(c.handle(ok(0, 2), now)), []);
        // Generation 1 reports again (a late duplicate): nothing happens.
        assert_eq!(c.handle(exit(0, 1, boom()), now), []);
        assert_eq!(c.children()[0].generation, 2);
    }

    #[test]
    fn one_for_all_stops_right_to_left_then_starts_left_to_right() {
        let now = Instant::now();
        let mut c = core(Strategy::OneForAll, &["a", "b", "c"]);
        start_all(&mut c, 3, now);
        let stop = |key| Action::Stop { key, generation: 1 };
        let start = |key| Action::Start { key, generation: 2 };
        assert_eq!(work(c.handle(exit(1, 1, boom()), now)), [stop(2)]);
        assert_eq!(
            work(c.handle(exit(2, 1, ExitReason::Shutdown), now)),
            [stop(0)]
        );
        assert_eq!(
            work(c.handle(exit(0, 1, ExitReason::Shutdown), now)),
            [start(0)]
        );
        assert_eq!(work(c.handle(ok(0, 2), now)), [start(1)]);
        assert_eq!(work(c.handle(ok(1, 2), now)), [start(2)]);
        assert_eq!(work(c.handle(ok(2, 2), now)), []);
    }

    #[test]
    fn exit_of_a_child_the_group_restart_stops_anyway_is_absorbed() {
        let now = Instant::now();
        let mut c = core(Strategy::OneForAll, &["a", "b", "c"]);
        start_all(&mut c, 3, now);
        // b crashes; the supervisor stops c; meanwhile a crashes by itself.
        assert_eq!(work(c.handle(exit(1, 1, boom()), now)), [stop_of(2, 1)]);
        assert_eq!(work(c.handle(exit(0, 1, boom()), now)), []);
        // c's exit completes the stops (a is already down), and the restart begins: once.
        assert_eq!(
            work(c.handle(exit(2, 1, ExitReason::Shutdown), now)),
            [start_of(0, 2)]
        );
        assert_eq!(c.restarts.len(), 1, "one failure, one restart counted");
    }

    #[test]
    fn exit_during_a_plan_is_handled_after_it() {
        let now = Instant::now();
        let mut c = core(Strategy::OneForOne, &["a", "b"]);
        start_all(&mut c, 2, now);
        assert_eq!(work(c.handle(exit(0, 1, boom()), now)), [start_of(0, 2)]);
        // b dies while a's restart waits for its ack: deferred.
        assert_eq!(work(c.handle(exit(1, 1, boom()), now)), []);
        assert_eq!(work(c.handle(ok(0, 2), now)), [start_of(1, 2)]);
    }

    #[test]
    fn intensity_counts_restarts_within_the_window_only() {
        let t0 = Instant::now();
        let mut c = Core::new(
            Kind::Static(Strategy::OneForOne),
            Intensity::new(1, Duration::from_secs(5)),
            7,
        );
        c.add_initial(0, meta("a", Restart::Permanent), 0);
        start_all(&mut c, 1, t0);
        c.handle(exit(0, 1, boom()), t0);
        c.handle(ok(0, 2), t0);
        // 6 s later the first restart is out of the window.
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(work(c.handle(exit(0, 2, boom()), t1)), [start_of(0, 3)]);
        c.handle(ok(0, 3), t1);
        // 1 s after that: two restarts within 5 s, one allowed: escalate.
        let t2 = t1 + Duration::from_secs(1);
        let actions = c.handle(exit(0, 3, boom()), t2);
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Event {
                kind: EventKind::Escalated { .. },
                ..
            }
        )));
        assert!(matches!(
            work(actions).as_slice(),
            [
                Action::Forget { .. },
                Action::Exit(ExitReason::Escalated { .. })
            ]
        ));
        assert_eq!(c.phase(), Phase::Done);
    }

    #[test]
    fn shutdown_during_start_waits_for_the_pending_ack_then_stops_right_to_left() {
        let now = Instant::now();
        let mut c = core(Strategy::OneForOne, &["a", "b", "c"]);
        c.handle(Input::Start, now);
        c.handle(ok(0, 1), now); // b is starting
        assert_eq!(work(c.handle(Input::Shutdown, now)), []);
        assert_eq!(work(c.handle(ok(1, 1), now)), [stop_of(1, 1)]);
        assert_eq!(
            work(c.handle(exit(1, 1, ExitReason::Shutdown), now)),
            [
                Action::Forget {
                    key: 1,
                    reason: ExitReason::Shutdown
                },
                stop_of(0, 1)
            ]
        );
        let last = work(c.handle(exit(0, 1, ExitReason::Shutdown), now));
        assert_eq!(last.last(), Some(&Action::Exit(ExitReason::Shutdown)));
        // c never started; it is forgotten with the supervisor.
        assert!(last.contains(&Action::Forget {
            key: 2,
            reason: ExitReason::Shutdown
        }));
    }

    #[test]
    fn backoff_restart_is_a_timer_and_a_stale_timer_does_nothing() {
        let now = Instant::now();
        let mut c = Core::new(Kind::Pool, Intensity::new(10, Duration::from_secs(60)), 1);
        let mut m = meta("w", Restart::Permanent);
        m.policy_mut().backoff = Some(
            crate::Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1))
                .with_jitter(0.0),
        );
        c.handle(Input::Start, now);
        c.handle(Input::Add { key: 0, meta: m }, now);
        c.handle(ok(0, 1), now);
        assert_eq!(
            work(c.handle(exit(0, 1, boom()), now)),
            [Action::RestartAfter {
                key: 0,
                generation: 1,
                delay: Duration::from_millis(10)
            }]
        );
        assert_eq!(
            work(c.handle(
                Input::RestartDue {
                    key: 0,
                    generation: 1
                },
                now
            )),
            [start_of(0, 2)]
        );
        c.handle(ok(0, 2), now);
        assert_eq!(
            work(c.handle(
                Input::RestartDue {
                    key: 0,
                    generation: 1
                },
                now
            )),
            []
        );
    }

    #[test]
    fn backoff_delay_doubles_up_to_the_maximum() {
        let b = crate::Backoff::exponential(Duration::from_millis(10), Duration::from_millis(50))
            .with_jitter(0.0);
        let d: Vec<_> = (1..=5).map(|n| b.delay(n, 0.3).as_millis()).collect();
        assert_eq!(d, [10, 20, 40, 50, 50]);
        let j = b.with_jitter(1.0);
        assert_eq!(j.delay(2, 0.0).as_millis(), 10); // 20 · 0.5
        assert_eq!(j.delay(2, 1.0).as_millis(), 30); // 20 · 1.5
        assert_eq!(
            j.delay(1, 0.0),
            Duration::from_millis(10),
            "never below min"
        );
    }
}
