use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::*;

const MS: Duration = Duration::from_millis(1);

fn policy() -> TaskPolicy {
    TaskPolicy {
        lease: 1000 * MS,
        ..TaskPolicy::default()
    }
}

fn task(kind: &str, n: u8) -> Task {
    Task {
        kind: kind.into(),
        input: vec![n],
        policy: policy(),
    }
}

fn sched(batch_max: usize) -> Scheduler {
    Scheduler::new(
        SchedulerConfig {
            batch_max,
            no_worker_timeout: 5000 * MS,
        },
        7,
    )
}

fn ok(id: TaskId, attempt: u32) -> Report {
    Report {
        id,
        attempt,
        outcome: Outcome::Ok(vec![id as u8]),
    }
}

/// The dispatches in `effects`, as (node, [(id, attempt)]).
fn dispatches(effects: &[Effect]) -> Vec<(String, Vec<(TaskId, u32)>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Dispatch {
                node, assignments, ..
            } => Some((
                node.clone(),
                assignments.iter().map(|a| (a.id, a.attempt)).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn dones(effects: &[Effect]) -> Vec<(TaskId, Final)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Done { id, outcome, .. } => Some((*id, outcome.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_kind_no_node_runs_is_refused_at_submit() {
    let mut s = sched(8);
    assert_eq!(
        s.submit(1, task("primes", 1)),
        Err(SubmitError::NoWorker("primes".into()))
    );
    s.node_up("a", vec!["words".into()], 4);
    assert_eq!(
        s.submit(1, task("primes", 1)),
        Err(SubmitError::NoWorker("primes".into()))
    );
    s.submit(1, task("words", 1)).unwrap();
    assert_eq!(
        s.submit(1, task("words", 1)),
        Err(SubmitError::Duplicate(1))
    );
}

#[test]
fn each_task_gets_one_outcome_and_late_duplicates_are_dropped() {
    let mut s = sched(8);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 4);
    s.submit(1, task("k", 1)).unwrap();
    s.pump(t0, true);
    assert_eq!(
        dispatches(&s.take_effects()),
        vec![("a".into(), vec![(1, 1)])]
    );
    s.reports("a", 4, vec![ok(1, 1)], t0);
    assert_eq!(dones(&s.take_effects()), vec![(1, Final::Ok(vec![1]))]);
    s.reports("a", 4, vec![ok(1, 1)], t0);
    assert!(s.take_effects().is_empty());
    let p = s.progress();
    assert_eq!((p.total, p.done, p.stale_reports, p.running), (1, 1, 1, 0));
}

#[test]
fn no_node_is_sent_more_than_its_capacity() {
    let mut s = sched(8);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 2);
    for id in 1..=5 {
        s.submit(id, task("k", id as u8)).unwrap();
    }
    s.pump(t0, true);
    assert_eq!(
        dispatches(&s.take_effects()),
        vec![("a".into(), vec![(1, 1), (2, 1)])]
    );
    s.pump(t0, true);
    assert!(s.take_effects().is_empty(), "no credit left");
    s.reports("a", 2, vec![ok(1, 1)], t0);
    s.pump(t0, true);
    let e = s.take_effects();
    assert_eq!(dispatches(&e), vec![("a".into(), vec![(3, 1)])]);
    // The node grows: more credit at once.
    s.reports("a", 4, vec![ok(2, 1)], t0);
    s.pump(t0, true);
    assert_eq!(
        dispatches(&s.take_effects()),
        vec![("a".into(), vec![(4, 1), (5, 1)])]
    );
}

#[test]
fn an_idle_node_gets_tasks_at_once_and_a_busy_one_full_batches_or_on_flush() {
    let mut s = sched(4);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 100);
    s.submit(1, task("k", 1)).unwrap();
    s.pump(t0, false);
    assert_eq!(
        dispatches(&s.take_effects()),
        vec![("a".into(), vec![(1, 1)])]
    );
    // "a" is busy now: six more make one full batch; the other two wait for the flush.
    for id in 2..=7 {
        s.submit(id, task("k", id as u8)).unwrap();
    }
    s.pump(t0, false);
    let d = dispatches(&s.take_effects());
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].1.iter().map(|x| x.0).collect::<Vec<_>>(), [2, 3, 4, 5]);
    s.pump(t0, true);
    let d = dispatches(&s.take_effects());
    assert_eq!(d[0].1.iter().map(|x| x.0).collect::<Vec<_>>(), [6, 7]);
}

#[test]
fn work_is_spread_over_nodes_by_free_credit() {
    let mut s = sched(100);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 4);
    s.node_up("b", vec!["k".into()], 4);
    for id in 1..=6 {
        s.submit(id, task("k", id as u8)).unwrap();
    }
    s.pump(t0, true);
    let d: BTreeMap<String, usize> = dispatches(&s.take_effects())
        .into_iter()
        .map(|(n, t)| (n, t.len()))
        .collect();
    assert_eq!(d, BTreeMap::from([("a".into(), 3), ("b".into(), 3)]));
}

#[test]
fn a_down_nodes_tasks_run_elsewhere_and_its_late_results_are_dropped() {
    let mut s = sched(100);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 2);
    s.submit(1, task("k", 1)).unwrap();
    s.submit(2, task("k", 2)).unwrap();
    s.pump(t0, true);
    s.take_effects();
    s.node_up("b", vec!["k".into()], 2);
    s.node_down("a");
    s.pump(t0, true);
    assert_eq!(
        dispatches(&s.take_effects()),
        vec![("b".into(), vec![(1, 2), (2, 2)])]
    );
    // "a" was not dead after all: its reports come late and count for nothing.
    s.reports("a", 2, vec![ok(1, 1)], t0);
    assert!(dones(&s.take_effects()).is_empty());
    s.reports("b", 2, vec![ok(1, 2), ok(2, 2)], t0);
    assert_eq!(dones(&s.take_effects()).len(), 2);
    assert_eq!(s.node_stats()["a"].lost, 2);
    assert_eq!(s.node_stats()["b"].completed, 2);
    assert!(!s.node_stats()["a"].up);
    assert_eq!(s.progress().retries, 2);
}

#[test]
fn a_task_that_kills_its_workers_stops_at_the_cutoff() {
    let mut s = sched(100);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 2);
    s.submit(1, task("k", 1)).unwrap();
    for attempt in 1..=3 {
        s.pump(t0, true);
        assert_eq!(
            dispatches(&s.take_effects()),
            vec![("a".into(), vec![(1, attempt)])]
        );
        s.reports(
            "a",
            2,
            vec![Report {
                id: 1,
                attempt,
                outcome: Outcome::Crashed("boom".into()),
            }],
            t0,
        );
    }
    let d = dones(&s.take_effects());
    assert!(
        matches!(&d[..], [(1, Final::Poison { kills: 3, last })] if last.contains("boom")),
        "{d:?}"
    );
}

#[test]
fn errors_are_retried_only_when_the_policy_allows_after_a_backoff() {
    let mut s = sched(100);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 2);
    let fail = |id, attempt| Report {
        id,
        attempt,
        outcome: Outcome::Failed("no".into()),
    };
    s.submit(1, task("k", 1)).unwrap();
    let mut retried = task("k", 2);
    retried.policy.max_retries = 1;
    s.submit(2, retried).unwrap();
    s.pump(t0, true);
    s.take_effects();
    s.reports("a", 2, vec![fail(1, 1), fail(2, 1)], t0);
    assert_eq!(
        dones(&s.take_effects()),
        vec![(
            1,
            Final::Failed {
                error: "no".into(),
                attempts: 1
            }
        )]
    );
    assert_eq!(s.progress().retrying, 1);
    // Not before the backoff (100 ms ± 25 %).
    s.tick(t0 + 70 * MS);
    s.pump(t0 + 70 * MS, true);
    assert!(s.take_effects().is_empty());
    s.tick(t0 + 130 * MS);
    s.pump(t0 + 130 * MS, true);
    assert_eq!(
        dispatches(&s.take_effects()),
        vec![("a".into(), vec![(2, 2)])]
    );
    s.reports("a", 2, vec![fail(2, 2)], t0 + 140 * MS);
    assert!(matches!(
        &dones(&s.take_effects())[..],
        [(2, Final::Failed { attempts: 2, .. })]
    ));
}

#[test]
fn heartbeats_keep_a_lease_and_silence_loses_it() {
    let mut s = sched(100);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 1);
    s.node_up("b", vec!["k".into()], 1);
    s.submit(1, task("k", 1)).unwrap();
    s.submit(2, task("k", 2)).unwrap();
    s.pump(t0, true);
    let d = dispatches(&s.take_effects());
    let on_a = d.iter().find(|(n, _)| n == "a").unwrap().1[0].0;
    let on_b = d.iter().find(|(n, _)| n == "b").unwrap().1[0].0;
    // "a" heartbeats its task; "b" is stuck and says nothing.
    for step in 1..=3 {
        let now = t0 + step * 600 * MS;
        s.heartbeat("a", 1, 9, 1, &[(on_a, 1)], now);
        s.tick(now);
    }
    s.node_up("c", vec!["k".into()], 1);
    s.pump(t0 + 1800 * MS, true);
    let e = s.take_effects();
    assert_eq!(dispatches(&e), vec![("c".into(), vec![(on_b, 2)])]);
    // The stuck attempt still holds b's only slot.
    s.submit(3, task("k", 3)).unwrap();
    s.pump(t0 + 1800 * MS, true);
    assert!(dispatches(&s.take_effects()).is_empty());
}

#[test]
fn a_batch_lost_on_the_way_is_found_by_the_heartbeat_and_sent_again() {
    let mut s = sched(100);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 4);
    s.submit(1, task("k", 1)).unwrap();
    s.pump(t0, true);
    s.take_effects(); // batch 1, lost
    s.submit(2, task("k", 2)).unwrap();
    s.pump(t0, true);
    s.take_effects(); // batch 2, not yet seen by the node
    s.heartbeat("a", 4, 9, 1, &[], t0 + 10 * MS);
    s.pump(t0 + 10 * MS, true);
    // Task 1 goes again (no kill counted); task 2 may still be on its way.
    assert_eq!(
        dispatches(&s.take_effects()),
        vec![("a".into(), vec![(1, 2)])]
    );
    s.reports("a", 4, vec![ok(1, 2), ok(2, 1)], t0 + 20 * MS);
    assert_eq!(dones(&s.take_effects()).len(), 2);
}

#[test]
fn a_restarted_task_actor_loses_what_it_held() {
    let mut s = sched(100);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 4);
    s.heartbeat("a", 4, 1, 0, &[], t0);
    s.submit(1, task("k", 1)).unwrap();
    s.pump(t0, true);
    s.take_effects();
    s.heartbeat("a", 4, 2, 0, &[], t0);
    s.pump(t0, true);
    assert_eq!(
        dispatches(&s.take_effects()),
        vec![("a".into(), vec![(1, 2)])]
    );
}

#[test]
fn cancel_ends_a_task_once_wherever_it_is() {
    let mut s = sched(100);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 1);
    s.submit(1, task("k", 1)).unwrap();
    s.submit(2, task("k", 2)).unwrap();
    s.pump(t0, true);
    s.take_effects();
    s.cancel(1); // running on a
    s.cancel(2); // queued
    let e = s.take_effects();
    assert!(e.contains(&Effect::Cancel {
        node: "a".into(),
        ids: vec![1]
    }));
    assert_eq!(
        dones(&e),
        vec![(1, Final::Cancelled), (2, Final::Cancelled)]
    );
    s.reports("a", 1, vec![ok(1, 1)], t0);
    s.cancel(1);
    assert!(s.take_effects().is_empty());
    assert_eq!(s.progress().failed, 2);
}

#[test]
fn tasks_left_without_any_node_fail_after_the_timeout() {
    let mut s = sched(100);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 0);
    s.submit(1, task("k", 1)).unwrap();
    s.node_down("a");
    s.tick(t0);
    s.tick(t0 + 4000 * MS);
    assert!(s.take_effects().is_empty());
    s.tick(t0 + 5000 * MS);
    assert_eq!(
        dones(&s.take_effects()),
        vec![(1, Final::NoWorker("k".into()))]
    );
}

#[test]
fn a_refused_or_unknown_attempt_goes_elsewhere_without_a_kill() {
    let mut s = sched(100);
    let t0 = Instant::now();
    s.node_up("a", vec!["k".into()], 1);
    s.submit(1, task("k", 1)).unwrap();
    s.pump(t0, true);
    s.take_effects();
    s.node_up("b", vec!["k".into()], 1);
    let unknown = Report {
        id: 1,
        attempt: 1,
        outcome: Outcome::UnknownKind,
    };
    s.reports("a", 1, vec![unknown], t0);
    s.pump(t0, true);
    assert_eq!(
        dispatches(&s.take_effects()),
        vec![("b".into(), vec![(1, 2)])]
    );
    assert_eq!(s.nodes_for("k"), 1, "a no longer counts for k");
}

/// Random submits, node failures, crashes, errors, lost batches and ticks: every task ends
/// exactly once, and no node ever holds more than its capacity.
#[test]
fn random_schedules_give_every_task_one_outcome() {
    for seed in 0..40u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut s = sched(1 + rng.usize(..8));
        let mut now = Instant::now();
        let nodes = ["a", "b", "c"];
        let caps: HashMap<&str, u32> = nodes.iter().map(|n| (*n, 1 + rng.u32(..6))).collect();
        let mut up: HashMap<&str, bool> = HashMap::new();
        let mut incarnation: HashMap<&str, u64> = HashMap::new();
        for n in nodes {
            s.node_up(n, vec!["k".into()], caps[n]);
            up.insert(n, true);
            incarnation.insert(n, 1);
        }
        // What each node holds (delivered, not yet reported), and the last batch it saw.
        let mut holding: HashMap<&str, Vec<(TaskId, u32)>> = HashMap::new();
        let mut seen: HashMap<&str, u64> = HashMap::new();
        let mut ended: HashMap<TaskId, u32> = HashMap::new();
        let mut next = 1u64;
        let total = 60u64;
        for _step in 0..3000 {
            if next <= total && rng.bool() {
                let mut t = task("k", next as u8);
                t.policy.max_retries = rng.u32(..3);
                if s.submit(next, t).is_ok() {
                    next += 1;
                }
            }
            s.pump(now, rng.bool());
            for e in s.take_effects() {
                match e {
                    Effect::Dispatch {
                        node,
                        seq,
                        assignments,
                    } => {
                        let n = nodes.iter().find(|x| **x == node).unwrap();
                        assert!(up[n], "sent to a node that is down");
                        if rng.u8(..20) != 0 {
                            let h = holding.entry(n).or_default();
                            h.extend(assignments.iter().map(|a| (a.id, a.attempt)));
                            assert!(h.len() <= caps[n] as usize, "over capacity");
                        }
                        seen.insert(n, seq);
                    }
                    Effect::Done { id, .. } => *ended.entry(id).or_default() += 1,
                    Effect::Cancel { .. } => {}
                }
            }
            let n = nodes[rng.usize(..nodes.len())];
            match rng.u8(..10) {
                0..=4 if up[n] => {
                    let h = holding.entry(n).or_default();
                    if !h.is_empty() {
                        let (id, attempt) = h.remove(rng.usize(..h.len()));
                        let outcome = match rng.u8(..10) {
                            0 => Outcome::Crashed("x".into()),
                            1 => Outcome::Failed("x".into()),
                            _ => Outcome::Ok(vec![]),
                        };
                        s.reports(
                            n,
                            caps[n],
                            vec![Report {
                                id,
                                attempt,
                                outcome,
                            }],
                            now,
                        );
                    }
                }
                5 if up[n] => {
                    let h = holding.entry(n).or_default().clone();
                    s.heartbeat(
                        n,
                        caps[n],
                        incarnation[n],
                        seen.get(n).copied().unwrap_or(0),
                        &h,
                        now,
                    );
                }
                6 if rng.u8(..4) == 0 => {
                    if up[n] {
                        s.node_down(n);
                        holding.remove(n);
                        seen.remove(n);
                        up.insert(n, false);
                    } else {
                        s.node_up(n, vec!["k".into()], caps[n]);
                        *incarnation.get_mut(n).unwrap() += 1;
                        up.insert(n, true);
                    }
                }
                7 if rng.u8(..10) == 0 && next > 1 => s.cancel(1 + rng.u64(..next - 1)),
                _ => {
                    now += Duration::from_millis(rng.u64(..300));
                    s.tick(now);
                }
            }
        }
        // Bring every node up and let everything finish.
        for n in nodes {
            if !up[n] {
                s.node_up(n, vec!["k".into()], caps[n]);
                up.insert(n, true);
            }
            let held: Vec<Report> = holding
                .remove(n)
                .unwrap_or_default()
                .into_iter()
                .map(|(id, attempt)| ok(id, attempt))
                .collect();
            s.reports(n, caps[n], held, now);
            let seq = seen.get(n).copied().unwrap_or(0);
            s.heartbeat(n, caps[n], incarnation[n], seq, &[], now);
        }
        for _ in 0..10_000 {
            s.pump(now, true);
            for e in s.take_effects() {
                match e {
                    Effect::Dispatch {
                        node, assignments, ..
                    } => {
                        let n = nodes.iter().find(|x| **x == node).unwrap();
                        let reports = assignments.iter().map(|a| ok(a.id, a.attempt)).collect();
                        s.reports(n, caps[n], reports, now);
                    }
                    Effect::Done { id, .. } => *ended.entry(id).or_default() += 1,
                    Effect::Cancel { .. } => {}
                }
            }
            now += Duration::from_millis(100);
            s.tick(now);
            if s.progress().done + s.progress().failed == next - 1 {
                break;
            }
        }
        let p = s.progress();
        assert_eq!(p.done + p.failed, next - 1, "seed {seed}: {p:?}");
        assert_eq!(ended.len() as u64, next - 1, "seed {seed}");
        assert!(
            ended.values().all(|&n| n == 1),
            "seed {seed}: a task ended twice"
        );
        assert_eq!((p.running, p.queued, p.retrying), (0, 0, 0), "seed {seed}");
    }
}

#[test]
fn a_lookup_answer_does_not_undo_the_events_applied_while_it_was_out() {
    let mut s = sched(100);
    let t0 = Instant::now();
    let k = || vec!["k".to_string()];
    s.lookup_started();
    // While the lookup is out: "a" goes down, "c" comes up with another capacity.
    s.node_up("a", k(), 2);
    s.node_down("a");
    s.node_up("c", k(), 5);
    // The directory answered before those events: "a" up, "b" up, "c" with capacity 1.
    s.looked_up(vec![
        ("a".into(), k(), 2),
        ("b".into(), k(), 2),
        ("c".into(), k(), 1),
    ]);
    assert_eq!(s.nodes_for("k"), 2, "b and c, not a");
    assert!(!s.node_stats()["a"].up);
    assert!(s.node_stats()["b"].up);
    // c keeps the capacity its event gave: 5 tasks go to it at once, 2 to b.
    for id in 1..=7 {
        s.submit(id, task("k", id as u8)).unwrap();
    }
    s.pump(t0, true);
    let sent: BTreeMap<String, usize> = dispatches(&s.take_effects())
        .into_iter()
        .map(|(node, tasks)| (node, tasks.len()))
        .collect();
    assert_eq!(sent, BTreeMap::from([("b".into(), 2), ("c".into(), 5)]));
    // Once answered, later answers (a restarted master's lookup) apply in full again.
    s.lookup_started();
    s.looked_up(vec![("a".into(), k(), 2)]);
    assert!(s.node_stats()["a"].up);
}
