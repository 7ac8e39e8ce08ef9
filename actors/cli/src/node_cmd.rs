//! `cadre node`: run a node until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use cadre_actors::agent::LogControl;
use cadre_actors::node::{secret, NodeBuilder, NodeConfig, Overrides};
use cadre_actors::tasks::WorkerConfig;
use cadre_runtime::Runtime;

/// Options of `cadre node`.
#[derive(clap::Args, Debug)]
pub(crate) struct Options {
    /// The TCP address to listen on (default 127.0.0.1:7370; port 0 for any).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// A node to join through (repeat for several).
    #[arg(long = "seed")]
    seeds: Vec<SocketAddr>,
    /// This node's roles, comma-separated (e.g. `store,worker`): `store` holds replicas of the
    /// status store; `worker` runs task workers for the built-in task kinds
    /// (`demo.count_primes`, `demo.noop`).
    #[arg(long, value_delimiter = ',')]
    roles: Option<Vec<String>>,
    /// This node's name (default `node-<port>`).
    #[arg(long)]
    name: Option<String>,
    /// The cluster's name (default `cadre`).
    #[arg(long)]
    cluster: Option<String>,
    /// A TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A file holding the cluster secret (mode 0600). Without it: `CADRE_SECRET`, else a
    /// per-user secret file.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// The gossip timing profile: `lan` or `local_test`.
    #[arg(long, value_parser = profile)]
    profile: Option<cadre_cluster::membership::Profile>,
    /// Where a `store` node keeps its data (default `./cadre-data/<name>`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How many `store` nodes form the store's Raft groups (default 3; 1 for a one-node
    /// cluster).
    #[arg(long)]
    bootstrap_expect: Option<usize>,
}

fn profile(s: &str) -> Result<cadre_cluster::membership::Profile, String> {
    cadre_actors::node::config::parse_profile("--profile", s).map_err(|e| e.to_string())
}

/// Installs the log subscriber (filter from `CADRE_LOG`); returns how the `log-level` command
/// changes its filter at run time.
fn init_logs() -> LogControl {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CADRE_LOG")
        // openraft reports routine election races as warnings: keep its errors only.
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=error"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
    std::sync::Arc::new(move |spec: &str| {
        let filter =
            EnvFilter::try_new(spec).map_err(|e| format!("`{spec}` is not a log filter: {e}"))?;
        handle
            .reload(filter)
            .map_err(|e| format!("the log filter could not be changed: {e}"))
    })
}

/// SIGTERM and Ctrl-C (SIGINT), listened for from the moment this is made: one that comes
/// while the node is still starting is kept and acted on once it has started.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn listen() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
        })
    }

    /// Waits for either; says which.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "Ctrl-C",
        }
    }
}

pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    let log_control = init_logs();
    let env = |k: &str| std::env::var(k).ok();
    let flags = Overrides {
        name: opts.name,
        cluster: opts.cluster,
        listen: opts.listen,
        seeds: opts.seeds,
        roles: opts.roles,
        secret_file: opts.secret_file,
        profile: opts.profile,
        data_dir: opts.data_dir,
        bootstrap_expect: opts.bootstrap_expect,
    };
    let config = NodeConfig::load(opts.config.as_deref(), env, &flags)?;
    let (secret, source) = secret::resolve(config.secret_file.as_deref(), env)?;
    match &source {
        secret::SecretSource::UserFile {
            path,
            created: true,
        } => tracing::info!(path = %path.display(), "created a per-user cluster secret"),
        other => tracing::debug!(source = ?other, "cluster secret"),
    }
    actix::System::new().block_on(async move {
        let mut signals = ShutdownSignals::listen()?;
        tracing::debug!("listening for SIGTERM and Ctrl-C");
        let runtime = Runtime::new(config.node_name(config.listen));
        let mut builder = NodeBuilder::new(config.clone(), secret).log_control(log_control);
        if config.roles.iter().any(|r| r == "worker") {
            // A worker node hosts task workers for the built-in kinds (the demo's).
            builder = builder.workers(crate::demo::registry(), WorkerConfig::default());
        }
        let node = builder.start(&runtime).await?;
        tracing::info!(
            node = %node.name(),
            addr = %node.addr(),
            cluster = %config.cluster,
            roles = ?config.roles,
            "node listening"
        );
        tokio::select! {
            signal = signals.recv() => {
                tracing::info!(signal, "leaving the cluster");
                node.leave(Duration::from_secs(5)).await;
                tracing::info!("stopped");
                Ok(())
            }
            () = node.stop_requested() => {
                tracing::info!("asked to stop by a `stop` command; leaving the cluster");
                node.leave(Duration::from_secs(5)).await;
                tracing::info!("stopped");
                Ok(())
            }
            reason = node.terminated() => {
                // An escalation reached the node's root: report it and exit non-zero.
                tracing::error!(%reason, "the node failed");
                Err(anyhow::anyhow!("the node failed: {reason}"))
            }
        }
    })
}
