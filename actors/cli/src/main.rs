//! The `cadre` command.

#[allow(unsafe_code)] // a global allocator is an unsafe trait; see the module's proof
mod alloc;
mod bench_agent;
mod bench_gossip;
mod bench_kv;
mod bench_remote;
mod bench_tasks;
mod bench_topics;
mod child;
mod demo;
mod kv_cmd;
mod members_cmd;
mod node_cmd;
mod status_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc, see [`alloc`].
#[global_allocator]
static ALLOC: alloc::Allocator = alloc::Allocator;

/// cadre: distributed real-time applications on supervised actors.
#[derive(Parser)]
#[command(name = "cadre", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster (this process and worker processes on 127.0.0.1), count primes
    /// across it, kill a worker halfway, and show every result arriving exactly once.
    Demo(demo::Options),
    /// A worker process of `demo` and `bench tasks` (started by them).
    #[command(hide = true)]
    DemoWorker(demo::WorkerOptions),
    /// Run a node: listen, join through seeds, serve until SIGTERM or Ctrl-C.
    Node(node_cmd::Options),
    /// Show a running node's view of the cluster's members.
    Members(members_cmd::Options),
    /// The status store: put, get, del, txn, watch (through a running node).
    Kv(kv_cmd::KvOptions),
    /// The status store's leases: grant, keepalive, revoke, ttl.
    Lease(kv_cmd::LeaseOptions),
    /// Every node's status as its agent reports it: roles, state, CPU, memory, messages per
    /// second into its actors and remote ask latency (`-` where not measured), task workers
    /// busy of all, and the age of its last report.
    ///
    /// Example: `cadre status --node 127.0.0.1:7370 --watch`
    Status(status_cmd::StatusOptions),
    /// Run a management command on a node (or `all`) through the store; prints its result.
    ///
    /// Example: `cadre cmd --node 127.0.0.1:7370 n1 restart-actor node/view`
    Cmd(status_cmd::CmdOptions),
    /// Drain a node (`cadre cmd NODE drain`): not available in this version yet.
    Drain(status_cmd::DrainOptions),
    /// Resize a node's task-worker pool (`cadre cmd NODE scale-workers N`).
    ///
    /// Example: `cadre scale --node 127.0.0.1:7370 w1 4`
    Scale(status_cmd::ScaleOptions),
    /// Change a node's log filter live (`cadre cmd NODE log-level FILTER`).
    ///
    /// Example: `cadre log-level --node 127.0.0.1:7370 w1 debug`
    LogLevel(status_cmd::LogLevelOptions),
    /// Measure cadre against baselines taken in the same run.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Remote messaging between two OS processes on 127.0.0.1, beside raw TCP with the same
    /// framing and batching.
    Remote(bench_remote::Options),
    /// The serving side of `bench remote` (started by it).
    #[command(hide = true)]
    RemoteServe,
    /// Topic delivery latency between two nodes, beside a plain remote tell.
    Topics(bench_topics::Options),
    /// Crash detection time with N gossip nodes over UDP.
    Gossip(bench_gossip::Options),
    /// No-op task throughput and single-task round trip, master to two worker processes.
    Tasks(bench_tasks::Options),
    /// Status-store puts (1 and 64 clients) and watch latency, three store processes.
    Kv(bench_kv::Options),
    /// The node agent's CPU cost: five idle node processes with agents off, then on.
    Agent(bench_agent::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(opts) => demo::run(opts),
        Command::DemoWorker(opts) => demo::worker(opts),
        Command::Node(opts) => node_cmd::run(opts),
        Command::Members(opts) => members_cmd::run(opts),
        Command::Kv(opts) => kv_cmd::run_kv(opts),
        Command::Lease(opts) => kv_cmd::run_lease(opts),
        Command::Status(opts) => status_cmd::status(opts),
        Command::Cmd(opts) => status_cmd::cmd(opts),
        Command::Drain(opts) => status_cmd::drain(opts),
        Command::Scale(opts) => status_cmd::scale(opts),
        Command::LogLevel(opts) => status_cmd::log_level(opts),
        Command::Bench { what } => match what {
            Bench::Remote(opts) => bench_remote::run(opts),
            Bench::RemoteServe => bench_remote::serve(),
            Bench::Topics(opts) => bench_topics::run(opts),
            Bench::Gossip(opts) => bench_gossip::run(opts),
            Bench::Tasks(opts) => bench_tasks::run(opts),
            Bench::Kv(opts) => bench_kv::run(opts),
            Bench::Agent(opts) => bench_agent::run(opts),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: a cause whose text its parent's
/// message already holds (an error that prints its source in its own message) is left out.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:1: {0}")]
    struct Bind(#[source] std::io::Error);

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let e = anyhow::Error::new(Bind(io)).context("the node did not start");
        assert_eq!(
            describe(&e),
            "the node did not start: cannot listen on 127.0.0.1:1: Address already in use"
        );
    }
}
