//! `cadre members`: ask a running node for its view of the cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use cadre_actors::node::view::{ListMembers, MemberRow, ADMIN};
use cadre_actors::node::{secret, DEFAULT_PORT};
use cadre_actors::{Node, TransportConfig};
use cadre_runtime::Runtime;

/// Options of `cadre members`.
#[derive(clap::Args, Debug)]
pub(crate) struct Options {
    /// The node to ask (its TCP address).
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    node: SocketAddr,
    /// The cluster's name.
    #[arg(long, default_value = "cadre")]
    cluster: String,
    /// A file holding the cluster secret (else `CADRE_SECRET`, else the per-user file).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Print JSON (a list of members) instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    let (secret, _) = secret::resolve(opts.secret_file.as_deref(), env)?;
    let rows: Vec<MemberRow> = actix::System::new().block_on(async move {
        let rt = Runtime::new("cli");
        let me = format!("cli-{}", std::process::id());
        let config = TransportConfig::new(
            &opts.cluster,
            &me,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            secret,
        );
        let node = Node::start(config, &rt).await?;
        let peer = node
            .connect(opts.node, Duration::from_secs(5))
            .await
            .with_context(|| format!("cannot reach the node at {}", opts.node))?;
        let rows = node
            .actor(&peer, ADMIN)
            .ask(ListMembers, Duration::from_secs(5))
            .await
            .with_context(|| format!("the node at {} did not answer", opts.node))?;
        node.shutdown(Duration::from_secs(2)).await.ok();
        Ok::<_, anyhow::Error>(rows)
    })?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<22} {:<16} {:<8} VERSION",
        "ID", "ADDRESS", "ROLES", "STATE"
    );
    for r in rows {
        let state = serde_json::to_value(r.state)?;
        println!(
            "{:<20} {:<22} {:<16} {:<8} {}",
            r.id,
            r.addr,
            if r.roles.is_empty() {
                "-".into()
            } else {
                r.roles.join(",")
            },
            state.as_str().unwrap_or("?"),
            r.version.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
