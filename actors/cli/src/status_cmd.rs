//! `cadre status` (every node's status from the store) and `cadre cmd` with its shortcuts
//! (`drain`, `scale`, `log-level`): management commands through the store.

use std::time::Duration;

use anyhow::{anyhow, bail};
use cadre_actors::agent::{self, now_ms, Target};
use cadre_cluster::agent::{CommandKind, CommandResult, ResultState, StatusRecord};

use crate::kv_cmd::{with_kv, Conn};

/// Options of `cadre status`.
#[derive(clap::Args, Debug)]
pub(crate) struct StatusOptions {
    #[command(flatten)]
    conn: Conn,
    /// Refresh every second until interrupted.
    #[arg(long)]
    watch: bool,
}

/// Options of `cadre cmd`.
#[derive(clap::Args, Debug)]
pub(crate) struct CmdOptions {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    timing: Timing,
    /// The node to run it on, or `all` for every node.
    target: String,
    /// The command: ping, log-level FILTER, scale-workers N, restart-actor PATH, stop, drain
    /// (not available yet), or a command of the node's own chain handlers.
    command: String,
    /// The command's arguments.
    args: Vec<String>,
}

/// How long to wait.
#[derive(clap::Args, Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How long to wait for the result, in seconds.
    #[arg(long, default_value_t = 15.0)]
    timeout: f64,
    /// The command is not run after this many seconds from now (its result is then `expired`).
    #[arg(long, default_value_t = 60.0)]
    deadline: f64,
}

/// Options of `cadre scale`.
#[derive(clap::Args, Debug)]
pub(crate) struct ScaleOptions {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    timing: Timing,
    /// The node (or `all`).
    target: String,
    /// The number of task workers the node should run.
    workers: usize,
}

/// Options of `cadre log-level`.
#[derive(clap::Args, Debug)]
pub(crate) struct LogLevelOptions {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    timing: Timing,
    /// The node (or `all`).
    target: String,
    /// A tracing filter, as `RUST_LOG` takes it: `debug`, `info,cadre_actors::store=debug`.
    filter: String,
}

/// Options of `cadre drain`.
#[derive(clap::Args, Debug)]
pub(crate) struct DrainOptions {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    timing: Timing,
    /// The node.
    target: String,
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The status table, one node a line.
pub(crate) fn table(records: &[StatusRecord], now_ms: u64) -> String {
    let mut rows = vec![[
        "NODE", "ROLES", "STATE", "CPU", "MEMORY", "MSGS/S", "ASK P99", "WORKERS", "AGE",
    ]
    .map(String::from)];
    for r in records {
        let l = &r.load;
        // Messages into the node's actors, those that came over the network included (they
        // are delivered into local mailboxes too): adding the remote rates would count twice.
        let msgs = l
            .local_msgs_per_sec
            .map_or("-".to_string(), |m| format!("{m:.0}"));
        let workers = if l.workers_busy + l.workers_idle == 0 {
            "-".to_string()
        } else {
            format!("{}/{}", l.workers_busy, l.workers_busy + l.workers_idle)
        };
        let stale = r.is_stale(now_ms);
        rows.push([
            r.node.clone(),
            if r.roles.is_empty() {
                "-".into()
            } else {
                r.roles.join(",")
            },
            if stale {
                format!("{} (stale)", r.state.as_str())
            } else {
                r.state.as_str().into()
            },
            format!("{:.1}%", l.process_cpu_percent),
            mib(l.rss_bytes),
            msgs,
            l.ask_p99_us.map_or("-".into(), |us| format!("{us} µs")),
            workers,
            format!(
                "{:.1}s",
                now_ms.saturating_sub(r.reported_ms) as f64 / 1000.0
            ),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn status(opts: StatusOptions) -> anyhow::Result<()> {
    let (json, watch) = (opts.conn.json, opts.watch);
    with_kv(&opts.conn, async move |kv| loop {
        let records = agent::statuses(&kv).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&records)?);
        } else {
            if watch && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                print!("\x1b[2J\x1b[H");
            }
            if records.is_empty() {
                println!("no node reports its status (are nodes running? the store needs nodes with `--roles store`)");
            } else {
                print!("{}", table(&records, now_ms()));
            }
        }
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    })
}

/// Runs `kind` on `target` and prints the result(s): each `ok` one on stdout; a failed one is
/// the command's error (on stderr, with a non-zero exit).
fn run_command(conn: &Conn, timing: Timing, target: &str, kind: CommandKind) -> anyhow::Result<()> {
    let json = conn.json;
    let target = match target {
        "all" => Target::All,
        node => Target::Node(node.to_string()),
    };
    let timeout = Duration::from_secs_f64(timing.timeout.max(0.1));
    let deadline = Duration::from_secs_f64(timing.deadline.max(0.1));
    let results: Vec<CommandResult> = with_kv(conn, async move |kv| {
        let known: Vec<String> = agent::statuses(&kv)
            .await?
            .into_iter()
            .map(|r| r.node)
            .collect();
        let nodes =
            match &target {
                Target::Node(n) if !known.contains(n) => bail!(
                "no node `{n}` reports its status (nodes that do: {}); `cadre status` lists them",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ),
                Target::Node(n) => vec![n.clone()],
                Target::All if known.is_empty() => {
                    bail!("no node reports its status: nothing to send a command to")
                }
                Target::All => known,
            };
        let issuer = format!("cadre-cli@{}", std::process::id());
        let command = agent::issue(&kv, &target, kind, deadline, &issuer).await?;
        // Every node's result at once, each within the timeout; one that does not come is an
        // error of its own, not the loss of the others.
        let waits = nodes
            .iter()
            .map(|node| agent::wait_result(&kv, node, &command.id, timeout));
        let outcomes = futures_util::future::join_all(waits).await;
        let mut results = Vec::new();
        for (node, outcome) in nodes.into_iter().zip(outcomes) {
            results.push(outcome.unwrap_or_else(|e| CommandResult {
                version: 0,
                id: command.id.clone(),
                node,
                command: command.kind.name().to_string(),
                state: ResultState::Failed,
                message: e.to_string(),
                received_ms: 0,
                finished_ms: 0,
                claimer: String::new(),
            }));
        }
        Ok(results)
    })?;
    let failed: Vec<&CommandResult> = results
        .iter()
        .filter(|r| r.state != ResultState::Ok)
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            if r.state == ResultState::Ok {
                println!("{}: ok {}", r.node, r.message);
            } else if results.len() > 1 {
                println!("{}: {} {}", r.node, r.state.as_str(), r.message);
            }
        }
    }
    match failed.as_slice() {
        [] => Ok(()),
        [one] if results.len() == 1 => Err(anyhow!(
            "`{}` on {}: {}: {}",
            one.command,
            one.node,
            one.state.as_str(),
            one.message
        )),
        many => Err(anyhow!(
            "the command did not succeed on {} of {} nodes",
            many.len(),
            results.len()
        )),
    }
}

pub(crate) fn cmd(opts: CmdOptions) -> anyhow::Result<()> {
    let kind = CommandKind::parse(&opts.command, &opts.args)?;
    run_command(&opts.conn, opts.timing, &opts.target, kind)
}

pub(crate) fn scale(opts: ScaleOptions) -> anyhow::Result<()> {
    let kind = CommandKind::ScaleWorkers {
        workers: opts.workers,
    };
    run_command(&opts.conn, opts.timing, &opts.target, kind)
}

pub(crate) fn log_level(opts: LogLevelOptions) -> anyhow::Result<()> {
    let kind = CommandKind::LogLevel {
        filter: opts.filter,
    };
    run_command(&opts.conn, opts.timing, &opts.target, kind)
}

pub(crate) fn drain(opts: DrainOptions) -> anyhow::Result<()> {
    run_command(&opts.conn, opts.timing, &opts.target, CommandKind::Drain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_is_aligned_and_shows_what_is_not_measured_as_a_dash() {
        let mut a = StatusRecord {
            node: "s0".into(),
            roles: vec!["store".into()],
            reported_ms: 9_000,
            ..StatusRecord::default()
        };
        a.load.process_cpu_percent = 2.25;
        a.load.rss_bytes = 30 * 1024 * 1024;
        let mut b = StatusRecord {
            node: "worker-long-name".into(),
            state: cadre_cluster::agent::RunState::Normal,
            reported_ms: 9_500,
            period_ms: 1_000,
            ..StatusRecord::default()
        };
        let c = StatusRecord {
            node: "gone".into(),
            state: cadre_cluster::agent::RunState::Normal,
            reported_ms: 5_000,
            period_ms: 1_000,
            ..StatusRecord::default()
        };
        b.load.workers_busy = 1;
        b.load.workers_idle = 3;
        b.load.ask_p99_us = Some(120);
        let out = table(&[a, b, c], 10_000);
        let expected = "\
NODE              ROLES  STATE           CPU   MEMORY  MSGS/S  ASK P99  WORKERS  AGE
s0                store  starting        2.2%  30 MiB  -       -        -        1.0s
worker-long-name  -      normal          0.0%  0 MiB   -       120 µs   1/4      0.5s
gone              -      normal (stale)  0.0%  0 MiB   -       -        -        5.0s
";
        assert_eq!(out, expected);
    }
}
