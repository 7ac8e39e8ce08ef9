//! [`CommandBook`]: which commands a node's agent runs, so that none runs twice and none is
//! missed.
//!
//! ```text
//!  listed results ──▶ Recorded ─┐        (a `running` one of an earlier agent: Interrupted)
//!  listed / watched ─▶ Seen ────┼─▶ Claim (create-only write of the result key)
//!                               │     ├─ lost ──▶ done (a result was there: not run again)
//!                               │     └─ won ───▶ Run ──▶ Finished ──▶ Record ──▶ done
//!                               └─▶ malformed or past its deadline: Claim with a final result
//! ```
//!
//! # Guarantees
//! - **At most once.** A command runs only after its claim — a `running` result written only if
//!   no result exists — was acknowledged by the store; the claim outlives the agent, so a
//!   restarted agent (or a replayed watch) never runs it again. One whose claim it finds
//!   still `running` (the agent died while running it) is recorded `interrupted`, not rerun.
//! - **None missed.** The driver lists the node's results, then the commands, then watches from
//!   the revision after the listing: every command written before or after is seen at least
//!   once, and seeing one twice changes nothing.
//! - **Deadlines.** A command seen at or after its deadline is recorded `expired`, not run.
//! - **Bad input.** A command that does not decode, or whose id is not its key's, is recorded
//!   `failed` with the reason; the book goes on.
//! - A write that failed (store unreachable) is retried on the next [`Input::Tick`].
//!
//! Pure: the agent feeds it what it lists, watches and writes, with the wall clock in
//! milliseconds, and carries out the [`Effect`]s it returns.

use std::collections::HashMap;

use super::{decode, id_of_command_key, Command, CommandResult, ResultState, RECORD_VERSION};

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A result already in the store for this node (listed before the commands).
    Recorded {
        /// The command id.
        id: String,
        /// Its state.
        state: ResultState,
        /// The result's command name (kept in an `interrupted` record).
        command: String,
        /// The result's mod revision (an `interrupted` record replaces exactly it).
        revision: u64,
    },
    /// A command key seen, listed or watched: the key and its value.
    Seen {
        /// The key (`nodes/{node}/commands/{id}` or `commands/all/{id}`).
        key: Vec<u8>,
        /// The value (a [`Command`], if well formed).
        value: Vec<u8>,
    },
    /// The claim of `id` was written (`won`), or found a result there already (`!won`, with
    /// that result and its mod revision when it could be read).
    Claimed {
        /// The command id.
        id: String,
        /// Whether this agent's claim was written.
        won: bool,
        /// The result found instead, and its mod revision.
        found: Option<(CommandResult, u64)>,
    },
    /// The command ran.
    Finished {
        /// The command id.
        id: String,
        /// Whether it succeeded.
        ok: bool,
        /// What it did, or why it failed.
        message: String,
    },
    /// The final result of `id` was written.
    Written {
        /// The command id.
        id: String,
    },
    /// A claim or result write failed (the store did not answer): retried at the next tick.
    WriteFailed {
        /// The command id.
        id: String,
    },
    /// Time passed: retry the writes that failed.
    Tick,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Write `result` at the node's result key of its id, only if no result is there; feed
    /// back [`Input::Claimed`] (or [`Input::WriteFailed`]).
    Claim {
        /// The result to write (state `running`, or a final state for a command not run).
        result: CommandResult,
    },
    /// Run the command; feed back [`Input::Finished`].
    Run {
        /// The command.
        command: Command,
    },
    /// Overwrite the result with the final one and, in the same transaction, delete the
    /// command's key when it is the node's own (`delete`); only if the result's mod revision is
    /// still `only_if`, when given (an `interrupted` record replaces exactly the claim it saw).
    /// Feed back [`Input::Written`] (or [`Input::WriteFailed`]; a failed comparison is written
    /// too: the result moved on).
    Record {
        /// The final result.
        result: CommandResult,
        /// The node's own command key, deleted with it.
        delete: Option<Vec<u8>>,
        /// The mod revision the result must still have.
        only_if: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// The claim is being written.
    Claiming,
    /// Claimed and running.
    Running,
    /// The final result is being written.
    Recording,
    /// Over.
    Done,
}

#[derive(Clone, Debug)]
struct Entry {
    phase: Phase,
    /// The result being written (the claim, then the final one).
    result: CommandResult,
    /// The command (when it decoded and is to run).
    command: Option<Command>,
    /// The command's key, when it is the node's own (deleted with the final result).
    own_key: Option<Vec<u8>>,
    /// A write failed: redo it at the next tick.
    retry: bool,
    /// The mod revision the final record must replace (an `interrupted` one).
    only_if: Option<u64>,
}

/// The commands one node's agent has seen, and where each stands.
#[derive(Debug)]
pub struct CommandBook {
    node: String,
    claimer: String,
    own_prefix: Vec<u8>,
    entries: HashMap<String, Entry>,
}

impl CommandBook {
    /// The book of node `node`'s agent instance `claimer` (a token unique to the instance).
    pub fn new(node: &str, claimer: &str) -> CommandBook {
        CommandBook {
            node: node.into(),
            claimer: claimer.into(),
            own_prefix: super::commands_prefix(node).into_bytes(),
            entries: HashMap::new(),
        }
    }

    /// Records `id` as interrupted (a claim of an earlier agent, `revision`), replacing exactly
    /// that claim and deleting the node's own command key.
    fn interrupt(&mut self, id: String, command: &str, revision: u64, now_ms: u64) -> Vec<Effect> {
        let result = self.result(
            &id,
            command,
            ResultState::Interrupted,
            "the node's agent restarted while it ran: not run again, its effect is unknown".into(),
            now_ms,
        );
        let delete = Some(super::command_key(&self.node, &id).into_bytes());
        self.entries.insert(
            id,
            Entry {
                phase: Phase::Recording,
                result: result.clone(),
                command: None,
                own_key: delete.clone(),
                retry: false,
                only_if: Some(revision),
            },
        );
        vec![Effect::Record {
            result,
            delete,
            only_if: Some(revision),
        }]
    }

    /// How many commands are claimed or running.
    pub fn in_progress(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.phase != Phase::Done)
            .count()
    }

    fn result(
        &self,
        id: &str,
        command: &str,
        state: ResultState,
        message: String,
        now_ms: u64,
    ) -> CommandResult {
        CommandResult {
            version: RECORD_VERSION,
            id: id.into(),
            node: self.node.clone(),
            command: command.into(),
            state,
            message,
            received_ms: now_ms,
            finished_ms: if state.is_final() { now_ms } else { 0 },
            claimer: self.claimer.clone(),
        }
    }

    /// Feeds one input; returns what to do, in order.
    pub fn handle(&mut self, input: Input, now_ms: u64) -> Vec<Effect> {
        match input {
            Input::Recorded {
                id,
                state,
                command,
                revision,
            } => {
                if self.entries.contains_key(&id) {
                    return Vec::new();
                }
                if state.is_final() {
                    self.entries
                        .insert(id.clone(), self.done(&id, &command, state));
                    return Vec::new();
                }
                // An earlier agent claimed it and did not finish: record that, never rerun.
                self.interrupt(id, &command, revision, now_ms)
            }
            Input::Seen { key, value } => self.seen(key, &value, now_ms),
            Input::Claimed { id, won, found } => {
                let claimer = self.claimer.clone();
                let Some(entry) = self.entries.get_mut(&id) else {
                    return Vec::new();
                };
                if entry.phase != Phase::Claiming {
                    return Vec::new();
                }
                // A claim retried after its answer was lost finds itself: it was won.
                let mine = found
                    .as_ref()
                    .is_some_and(|(r, _)| r.claimer == claimer && r.state == entry.result.state);
                if !won && !mine {
                    match found {
                        // An earlier agent's claim, still running: it died running it.
                        Some((r, revision)) if r.state == ResultState::Running => {
                            let command = r.command.clone();
                            return self.interrupt(id, &command, revision, now_ms);
                        }
                        // A result was there already: this command was handled before.
                        _ => {
                            entry.phase = Phase::Done;
                            return Vec::new();
                        }
                    }
                }
                match (&entry.command, entry.result.state) {
                    (Some(command), ResultState::Running) => {
                        entry.phase = Phase::Running;
                        vec![Effect::Run {
                            command: command.clone(),
                        }]
                    }
                    _ => {
                        // A final result written as the claim: delete the node's own command.
                        match entry.own_key.clone() {
                            Some(key) => {
                                entry.phase = Phase::Recording;
                                vec![Effect::Record {
                                    result: entry.result.clone(),
                                    delete: Some(key),
                                    only_if: None,
                                }]
                            }
                            None => {
                                entry.phase = Phase::Done;
                                Vec::new()
                            }
                        }
                    }
                }
            }
            Input::Finished { id, ok, message } => {
                let Some(entry) = self.entries.get_mut(&id) else {
                    return Vec::new();
                };
                if entry.phase != Phase::Running {
                    return Vec::new();
                }
                entry.phase = Phase::Recording;
                entry.result.state = if ok {
                    ResultState::Ok
                } else {
                    ResultState::Failed
                };
                entry.result.message = message;
                entry.result.finished_ms = now_ms;
                vec![Effect::Record {
                    result: entry.result.clone(),
                    delete: entry.own_key.clone(),
                    only_if: None,
                }]
            }
            Input::Written { id } => {
                if let Some(entry) = self.entries.get_mut(&id) {
                    if entry.phase == Phase::Recording {
                        entry.phase = Phase::Done;
                        entry.command = None;
                    }
                }
                Vec::new()
            }
            Input::WriteFailed { id } => {
                if let Some(entry) = self.entries.get_mut(&id) {
                    if matches!(entry.phase, Phase::Claiming | Phase::Recording) {
                        entry.retry = true;
                    }
                }
                Vec::new()
            }
            Input::Tick => {
                let mut ids: Vec<&String> = self
                    .entries
                    .iter()
                    .filter(|(_, e)| e.retry)
                    .map(|(id, _)| id)
                    .collect();
                ids.sort();
                let ids: Vec<String> = ids.into_iter().cloned().collect();
                let mut effects = Vec::new();
                for id in ids {
                    let entry = self.entries.get_mut(&id).expect("listed above");
                    entry.retry = false;
                    effects.push(match entry.phase {
                        Phase::Claiming => Effect::Claim {
                            result: entry.result.clone(),
                        },
                        _ => Effect::Record {
                            result: entry.result.clone(),
                            delete: entry.own_key.clone(),
                            only_if: entry.only_if,
                        },
                    });
                }
                effects
            }
        }
    }

    fn done(&self, id: &str, command: &str, state: ResultState) -> Entry {
        Entry {
            phase: Phase::Done,
            result: self.result(id, command, state, String::new(), 0),
            command: None,
            own_key: None,
            retry: false,
            only_if: None,
        }
    }

    fn seen(&mut self, key: Vec<u8>, value: &[u8], now_ms: u64) -> Vec<Effect> {
        let Some(id) = id_of_command_key(&key).map(str::to_owned) else {
            return Vec::new();
        };
        if self.entries.contains_key(&id) {
            return Vec::new();
        }
        let own_key = key.starts_with(&self.own_prefix).then(|| key.clone());
        let (command, state, message) = match decode::<Command>(value) {
            Err(e) => (None, ResultState::Failed, format!("malformed command: {e}")),
            Ok(c) if c.id != id => {
                let message = format!(
                    "malformed command: its id `{}` is not its key's `{id}`",
                    c.id
                );
                (None, ResultState::Failed, message)
            }
            Ok(c) if c.deadline_ms <= now_ms => {
                let message = format!(
                    "its deadline passed {} ms before the node saw it: not run",
                    now_ms - c.deadline_ms
                );
                let name = c.kind.name().to_owned();
                return self.claim(
                    id,
                    own_key,
                    None,
                    &name,
                    ResultState::Expired,
                    message,
                    now_ms,
                );
            }
            Ok(c) => {
                let name = c.kind.name().to_owned();
                return self.claim(
                    id,
                    own_key,
                    Some(c),
                    &name,
                    ResultState::Running,
                    String::new(),
                    now_ms,
                );
            }
        };
        self.claim(id, own_key, command, "", state, message, now_ms)
    }

    #[allow(clippy::too_many_arguments)]
    fn claim(
        &mut self,
        id: String,
        own_key: Option<Vec<u8>>,
        command: Option<Command>,
        name: &str,
        state: ResultState,
        message: String,
        now_ms: u64,
    ) -> Vec<Effect> {
        let result = self.result(&id, name, state, message, now_ms);
        self.entries.insert(
            id,
            Entry {
                phase: Phase::Claiming,
                result: result.clone(),
                command,
                own_key,
                retry: false,
                only_if: None,
            },
        );
        vec![Effect::Claim { result }]
    }
}

#[cfg(test)]
mod tests {
    use super::super::{command_key, encode, CommandKind, ALL_COMMANDS_PREFIX};
    use super::*;

    const NOW: u64 = 1_000_000;

    fn command(id: &str, kind: CommandKind, deadline_ms: u64) -> Command {
        Command {
            version: RECORD_VERSION,
            id: id.into(),
            kind,
            issued_ms: NOW - 10,
            deadline_ms,
            issuer: "test".into(),
        }
    }

    fn seen(id: &str, kind: CommandKind, deadline_ms: u64) -> Input {
        Input::Seen {
            key: command_key("n1", id).into_bytes(),
            value: encode(&command(id, kind, deadline_ms)).unwrap(),
        }
    }

    /// The answer to a claim of `id`, with nothing read back.
    fn claimed(id: &str, won: bool) -> Input {
        Input::Claimed {
            id: id.into(),
            won,
            found: None,
        }
    }

    fn claim_state(effects: &[Effect]) -> Vec<(String, ResultState)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Claim { result } => Some((result.id.clone(), result.state)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_command_runs_after_its_claim_is_won_and_its_result_deletes_it() {
        let mut book = CommandBook::new("n1", "me");
        let effects = book.handle(seen("c1", CommandKind::Ping, NOW + 5000), NOW);
        assert_eq!(
            claim_state(&effects),
            vec![("c1".into(), ResultState::Running)]
        );
        // Nothing runs before the claim is acknowledged.
        assert_eq!(book.in_progress(), 1);
        let effects = book.handle(claimed("c1", true), NOW + 1);
        assert_eq!(
            effects,
            vec![Effect::Run {
                command: command("c1", CommandKind::Ping, NOW + 5000)
            }]
        );
        let effects = book.handle(
            Input::Finished {
                id: "c1".into(),
                ok: true,
                message: "pong".into(),
            },
            NOW + 2,
        );
        let [Effect::Record {
            result,
            delete,
            only_if: None,
        }] = effects.as_slice()
        else {
            panic!("one record: {effects:?}");
        };
        assert_eq!(result.state, ResultState::Ok);
        assert_eq!(result.message, "pong");
        assert_eq!(result.command, "ping");
        assert_eq!((result.received_ms, result.finished_ms), (NOW, NOW + 2));
        assert_eq!(delete.as_deref(), Some(command_key("n1", "c1").as_bytes()));
        assert!(book
            .handle(Input::Written { id: "c1".into() }, NOW + 3)
            .is_empty());
        assert_eq!(book.in_progress(), 0);
    }

    #[test]
    fn a_command_seen_again_by_a_replayed_watch_is_not_claimed_twice() {
        let mut book = CommandBook::new("n1", "me");
        assert_eq!(
            book.handle(seen("c1", CommandKind::Ping, NOW + 5000), NOW)
                .len(),
            1
        );
        assert!(book
            .handle(seen("c1", CommandKind::Ping, NOW + 5000), NOW)
            .is_empty());
        book.handle(claimed("c1", true), NOW);
        assert!(book
            .handle(seen("c1", CommandKind::Ping, NOW + 5000), NOW)
            .is_empty());
        // A second claim answer (a retried write) runs nothing more.
        assert!(book.handle(claimed("c1", true), NOW).is_empty());
    }

    #[test]
    fn a_restarted_agent_runs_nothing_that_has_a_result_and_marks_a_running_one_interrupted() {
        let mut book = CommandBook::new("n1", "me");
        let done = Input::Recorded {
            id: "c1".into(),
            state: ResultState::Ok,
            command: "ping".into(),
            revision: 5,
        };
        assert!(book.handle(done, NOW).is_empty());
        assert!(book
            .handle(seen("c1", CommandKind::Ping, NOW + 5000), NOW)
            .is_empty());
        let running = Input::Recorded {
            id: "c2".into(),
            state: ResultState::Running,
            command: "stop".into(),
            revision: 7,
        };
        let effects = book.handle(running, NOW);
        let [Effect::Record {
            result,
            delete: Some(key),
            only_if: Some(7),
        }] = effects.as_slice()
        else {
            panic!("one record replacing exactly that claim: {effects:?}");
        };
        assert_eq!(
            key,
            command_key("n1", "c2").as_bytes(),
            "its command goes too"
        );
        assert_eq!(
            (result.state, result.command.as_str()),
            (ResultState::Interrupted, "stop")
        );
        assert!(book
            .handle(seen("c2", CommandKind::Stop, NOW + 5000), NOW)
            .is_empty());
    }

    #[test]
    fn a_lost_claim_means_an_earlier_agent_handled_it_and_nothing_runs() {
        let mut book = CommandBook::new("n1", "me");
        book.handle(seen("c1", CommandKind::Ping, NOW + 5000), NOW);
        assert!(book.handle(claimed("c1", false), NOW).is_empty());
        assert_eq!(book.in_progress(), 0);
    }

    #[test]
    fn a_claim_retried_after_its_answer_was_lost_finds_itself_and_runs() {
        let mut book = CommandBook::new("n1", "me");
        let effects = book.handle(seen("c1", CommandKind::Ping, NOW + 5000), NOW);
        let [Effect::Claim { result }] = effects.as_slice() else {
            panic!("{effects:?}");
        };
        assert_eq!(result.claimer, "me");
        // The first write applied but its answer was lost; the retry finds that claim.
        let found = Some((result.clone(), 9));
        let effects = book.handle(
            Input::Claimed {
                id: "c1".into(),
                won: false,
                found,
            },
            NOW,
        );
        assert!(
            matches!(effects.as_slice(), [Effect::Run { .. }]),
            "{effects:?}"
        );
    }

    #[test]
    fn a_claim_that_finds_a_dead_agents_claim_records_it_interrupted() {
        let mut book = CommandBook::new("n1", "me");
        let effects = book.handle(seen("c1", CommandKind::Ping, NOW + 5000), NOW);
        let [Effect::Claim { result }] = effects.as_slice() else {
            panic!("{effects:?}");
        };
        let theirs = CommandResult {
            claimer: "an earlier agent".into(),
            ..result.clone()
        };
        let effects = book.handle(
            Input::Claimed {
                id: "c1".into(),
                won: false,
                found: Some((theirs, 11)),
            },
            NOW,
        );
        assert!(
            matches!(effects.as_slice(), [Effect::Record { result, only_if: Some(11), delete: Some(_) }] if result.state == ResultState::Interrupted),
            "{effects:?}"
        );
    }

    #[test]
    fn an_expired_command_is_recorded_expired_and_never_run() {
        let mut book = CommandBook::new("n1", "me");
        let effects = book.handle(seen("c1", CommandKind::Stop, NOW), NOW);
        assert_eq!(
            claim_state(&effects),
            vec![("c1".into(), ResultState::Expired)]
        );
        let effects = book.handle(claimed("c1", true), NOW);
        // Its key is deleted with the same (final) result; nothing runs.
        assert!(
            matches!(effects.as_slice(), [Effect::Record { result, delete: Some(_), .. }] if result.state == ResultState::Expired)
        );
    }

    #[test]
    fn a_malformed_command_gets_a_failed_result_naming_why_and_the_book_goes_on() {
        let mut book = CommandBook::new("n1", "me");
        let junk = Input::Seen {
            key: command_key("n1", "bad").into_bytes(),
            value: b"\xc1 not msgpack".to_vec(),
        };
        let effects = book.handle(junk, NOW);
        let [Effect::Claim { result }] = effects.as_slice() else {
            panic!("one claim: {effects:?}");
        };
        assert_eq!(result.state, ResultState::Failed);
        assert!(
            result.message.starts_with("malformed command"),
            "{}",
            result.message
        );
        // The wrong id in the value is refused too.
        let wrong = Input::Seen {
            key: command_key("n1", "c9").into_bytes(),
            value: encode(&command("c8", CommandKind::Ping, NOW + 10)).unwrap(),
        };
        let effects = book.handle(wrong, NOW);
        assert!(
            matches!(effects.as_slice(), [Effect::Claim { result }] if result.message.contains("`c8`"))
        );
        // A good one after them runs.
        assert_eq!(
            claim_state(&book.handle(seen("c2", CommandKind::Ping, NOW + 10), NOW)),
            vec![("c2".into(), ResultState::Running)]
        );
    }

    #[test]
    fn a_command_for_every_node_keeps_its_key_and_a_failed_write_is_retried_on_the_tick() {
        let mut book = CommandBook::new("n1", "me");
        let all = Input::Seen {
            key: format!("{ALL_COMMANDS_PREFIX}c1").into_bytes(),
            value: encode(&command("c1", CommandKind::Ping, NOW + 100)).unwrap(),
        };
        let claim = book.handle(all, NOW);
        assert!(book
            .handle(Input::WriteFailed { id: "c1".into() }, NOW)
            .is_empty());
        assert_eq!(
            book.handle(Input::Tick, NOW + 1),
            claim,
            "the same claim, again"
        );
        assert!(
            book.handle(Input::Tick, NOW + 2).is_empty(),
            "once per failure"
        );
        book.handle(claimed("c1", true), NOW);
        let effects = book.handle(
            Input::Finished {
                id: "c1".into(),
                ok: false,
                message: "boom".into(),
            },
            NOW + 3,
        );
        assert!(
            matches!(effects.as_slice(), [Effect::Record { result, delete: None, .. }] if result.state == ResultState::Failed)
        );
        book.handle(Input::WriteFailed { id: "c1".into() }, NOW);
        assert_eq!(book.handle(Input::Tick, NOW + 4), effects);
    }

    #[test]
    fn commands_parse_from_the_cli_words_with_usage_on_bad_arguments() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(CommandKind::parse("ping", &[]), Ok(CommandKind::Ping));
        assert_eq!(
            CommandKind::parse("scale", &args(&["4"])),
            Ok(CommandKind::ScaleWorkers { workers: 4 })
        );
        assert!(CommandKind::parse("scale-workers", &args(&["four"]))
            .unwrap_err()
            .0
            .contains("`four` is not a number"));
        assert!(CommandKind::parse("log-level", &[])
            .unwrap_err()
            .0
            .starts_with("usage: log-level"));
        assert!(CommandKind::parse("ping", &args(&["x"])).is_err());
        assert_eq!(
            CommandKind::parse("reindex", &args(&["a"])),
            Ok(CommandKind::Custom {
                name: "reindex".into(),
                args: args(&["a"])
            })
        );
    }
}
