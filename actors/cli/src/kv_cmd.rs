//! `cadre kv` and `cadre lease`: the status store from the command line, through a running
//! node's gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use cadre_actors::node::{secret, DEFAULT_PORT};
use cadre_actors::store::{Kv, KvError};
use cadre_actors::{Node, TransportConfig};
use cadre_cluster::store::{
    CmpOp, Compare, CompareTarget, DeleteRequest, EventKind, KeyValue, Op, PutRequest,
    RangeRequest, Request, Response, TxnRequest, WatchUpdate,
};
use cadre_runtime::Runtime;
use serde::Serialize;

/// Where the node is and how to talk to it.
#[derive(clap::Args, Debug)]
pub(crate) struct Conn {
    /// The node to go through (its TCP address).
    #[arg(long, global = true, default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    pub(crate) node: SocketAddr,
    /// The cluster's name.
    #[arg(long, global = true, default_value = "cadre")]
    cluster: String,
    /// A file holding the cluster secret (else `CADRE_SECRET`, else the per-user file).
    #[arg(long, global = true)]
    secret_file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// `cadre kv`.
#[derive(clap::Args, Debug)]
pub(crate) struct KvOptions {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(clap::Subcommand, Debug)]
enum KvCommand {
    /// Put a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Bind it to this lease.
        #[arg(long)]
        lease: Option<u64>,
    },
    /// Print a key's value (or, with --prefix, every key under it).
    Get {
        /// The key or prefix.
        key: String,
        /// Treat the key as a prefix.
        #[arg(long)]
        prefix: bool,
        /// At most this many keys.
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Keys only.
        #[arg(long)]
        keys_only: bool,
        /// A replica's state, maybe stale, instead of a linearizable read.
        #[arg(long)]
        serializable: bool,
    },
    /// Delete a key (or, with --prefix, the keys under it, within one group).
    Del {
        /// The key or prefix.
        key: String,
        /// Treat the key as a prefix.
        #[arg(long)]
        prefix: bool,
    },
    /// A transaction: if every --cmp holds, the --put/--del operations, else the --else-* ones.
    Txn {
        /// A comparison: KEY:version=N, KEY:value=V, KEY:mod=N or KEY:create=N (also !=, <, >).
        #[arg(long = "cmp")]
        compare: Vec<String>,
        /// Put KEY=VALUE if the comparisons hold.
        #[arg(long = "put")]
        puts: Vec<String>,
        /// Delete KEY if the comparisons hold.
        #[arg(long = "del")]
        dels: Vec<String>,
        /// Put KEY=VALUE otherwise.
        #[arg(long = "else-put")]
        else_puts: Vec<String>,
        /// Delete KEY otherwise.
        #[arg(long = "else-del")]
        else_dels: Vec<String>,
    },
    /// Forget the history before a revision of the shard holding a key's group.
    Compact {
        /// The first revision kept.
        revision: u64,
        /// A key of the shard (its first two `/` segments decide the shard).
        #[arg(long)]
        key: String,
    },
    /// Print the changes under a prefix as they happen.
    Watch {
        /// The prefix.
        prefix: String,
        /// From this revision (per shard; default: the next change).
        #[arg(long, default_value_t = 0)]
        rev: u64,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<usize>,
    },
}

/// `cadre lease`.
#[derive(clap::Args, Debug)]
pub(crate) struct LeaseOptions {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: LeaseCommand,
}

#[derive(clap::Subcommand, Debug)]
enum LeaseCommand {
    /// Grant a lease of TTL milliseconds; prints its id.
    Grant {
        /// The TTL in milliseconds.
        ttl_ms: u64,
        /// The group of keys it will carry (its first two `/` segments decide its shard).
        #[arg(long, default_value = "leases/default")]
        group: String,
        /// The cluster's store shards.
        #[arg(long, default_value_t = 4)]
        shards: u16,
    },
    /// Keep a lease alive (every third of its TTL until interrupted, or once).
    Keepalive {
        /// The lease.
        id: u64,
        /// Once, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Revoke a lease: its keys are deleted.
    Revoke {
        /// The lease.
        id: u64,
    },
    /// Print how long a lease has left.
    Ttl {
        /// The lease.
        id: u64,
    },
}

#[derive(Serialize)]
struct KvJson {
    key: String,
    value: String,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    lease: Option<u64>,
}

impl From<&KeyValue> for KvJson {
    fn from(kv: &KeyValue) -> Self {
        KvJson {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            value: String::from_utf8_lossy(&kv.value).into_owned(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// Connects to the node and runs `f` with the store through it.
pub(crate) fn with_kv<T>(
    conn: &Conn,
    f: impl AsyncFnOnce(Kv) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let env = |k: &str| std::env::var(k).ok();
    let (secret, _) = secret::resolve(conn.secret_file.as_deref(), env)?;
    let (cluster, addr) = (conn.cluster.clone(), conn.node);
    actix::System::new().block_on(async move {
        let rt = Runtime::new("cli");
        let me = format!("cli-{}-{:x}", std::process::id(), fastrand::u32(..));
        let config =
            TransportConfig::new(&cluster, &me, SocketAddr::from(([127, 0, 0, 1], 0)), secret);
        let node = Node::start(config, &rt).await?;
        let peer = node
            .connect(addr, Duration::from_secs(5))
            .await
            .map_err(|e| match e {
                cadre_actors::TransportError::Connect { reason, .. } => anyhow!(
                    "no node answers at {addr} ({reason}): is `cadre node` running there? \
                     (--node ADDR names the node to go through)"
                ),
                other => anyhow!(other),
            })?;
        let out = f(Kv::through(node.clone(), &peer)).await;
        node.shutdown(Duration::from_secs(2)).await.ok();
        out
    })
}

fn store_err(e: KvError) -> anyhow::Error {
    anyhow!(e)
}

fn pair(s: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("`{s}`: expected KEY=VALUE"))?;
    Ok((k.as_bytes().to_vec(), v.as_bytes().to_vec()))
}

fn compare(s: &str) -> anyhow::Result<Compare> {
    let (key, rest) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("`{s}`: expected KEY:what=X"))?;
    let (what, op, value) = ["!=", "=", "<", ">"]
        .iter()
        .find_map(|op| rest.split_once(op).map(|(w, v)| (w, *op, v)))
        .ok_or_else(|| anyhow!("`{s}`: expected one of = != < >"))?;
    let op = match op {
        "=" => CmpOp::Eq,
        "!=" => CmpOp::NotEq,
        "<" => CmpOp::Less,
        _ => CmpOp::Greater,
    };
    let num = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| anyhow!("`{s}`: `{v}` is not a number"))
    };
    let target = match what {
        "value" => CompareTarget::Value(value.as_bytes().to_vec()),
        "version" => CompareTarget::Version(num(value)?),
        "mod" => CompareTarget::ModRevision(num(value)?),
        "create" => CompareTarget::CreateRevision(num(value)?),
        other => bail!("`{s}`: `{other}` is not one of value, version, mod, create"),
    };
    Ok(Compare {
        key: key.as_bytes().to_vec(),
        op,
        target,
    })
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// Runs `cadre kv`.
pub(crate) fn run_kv(opts: KvOptions) -> anyhow::Result<()> {
    let json = opts.conn.json;
    with_kv(&opts.conn, async move |kv| match opts.command {
        KvCommand::Put { key, value, lease } => {
            let put = PutRequest {
                key: key.into_bytes(),
                value: value.into_bytes(),
                lease,
                prev_kv: false,
            };
            let applied = kv.write(Request::Put(put)).await.map_err(store_err)?;
            if let Some(Response::Error(e)) = &applied.response {
                bail!("{e}");
            }
            if json {
                print_json(&serde_json::json!({ "revision": applied.revision }))
            } else {
                println!("OK (revision {})", applied.revision);
                Ok(())
            }
        }
        KvCommand::Get {
            key,
            prefix,
            limit,
            keys_only,
            serializable,
        } => {
            let range = RangeRequest {
                key: key.clone().into_bytes(),
                prefix,
                limit,
                keys_only,
            };
            let r = kv.range(range, serializable).await.map_err(store_err)?;
            if json {
                let kvs: Vec<KvJson> = r.kvs.iter().map(KvJson::from).collect();
                return print_json(&serde_json::json!({
                    "kvs": kvs, "count": r.count, "more": r.more, "revision": r.revision,
                }));
            }
            if !prefix {
                match r.kvs.first() {
                    Some(kv) => println!("{}", String::from_utf8_lossy(&kv.value)),
                    None => bail!("key `{key}` not found"),
                }
                return Ok(());
            }
            for kv in &r.kvs {
                if keys_only {
                    println!("{}", String::from_utf8_lossy(&kv.key));
                } else {
                    println!(
                        "{}\t{}",
                        String::from_utf8_lossy(&kv.key),
                        String::from_utf8_lossy(&kv.value)
                    );
                }
            }
            Ok(())
        }
        KvCommand::Del { key, prefix } => {
            let deleted = kv.delete(key.as_bytes(), prefix).await.map_err(store_err)?;
            if json {
                print_json(&serde_json::json!({ "deleted": deleted }))
            } else {
                println!("{deleted}");
                Ok(())
            }
        }
        KvCommand::Txn {
            compare: cmps,
            puts,
            dels,
            else_puts,
            else_dels,
        } => {
            let ops = |puts: &[String], dels: &[String]| -> anyhow::Result<Vec<Op>> {
                let mut ops = Vec::new();
                for p in puts {
                    let (key, value) = pair(p)?;
                    ops.push(Op::Put(PutRequest {
                        key,
                        value,
                        lease: None,
                        prev_kv: false,
                    }));
                }
                for d in dels {
                    ops.push(Op::Delete(DeleteRequest {
                        key: d.as_bytes().to_vec(),
                        prefix: false,
                        prev_kv: false,
                    }));
                }
                Ok(ops)
            };
            let txn = TxnRequest {
                compare: cmps
                    .iter()
                    .map(|c| compare(c))
                    .collect::<anyhow::Result<_>>()?,
                success: ops(&puts, &dels)?,
                failure: ops(&else_puts, &else_dels)?,
            };
            let applied = kv.txn(txn).await.map_err(store_err)?;
            match applied.response {
                Some(Response::Write {
                    succeeded,
                    revision,
                    ..
                }) => {
                    if json {
                        print_json(
                            &serde_json::json!({ "succeeded": succeeded, "revision": revision }),
                        )
                    } else {
                        println!(
                            "{} (revision {revision})",
                            if succeeded { "SUCCESS" } else { "FAILURE" }
                        );
                        Ok(())
                    }
                }
                Some(Response::Error(e)) => bail!("{e}"),
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        KvCommand::Compact { revision, key } => {
            kv.compact(key.as_bytes(), revision)
                .await
                .map_err(store_err)?;
            if json {
                print_json(&serde_json::json!({ "compacted": revision }))
            } else {
                println!("compacted before revision {revision}");
                Ok(())
            }
        }
        KvCommand::Watch { prefix, rev, count } => {
            let mut watch = kv.watch(prefix.as_bytes(), rev).await.map_err(store_err)?;
            // On stderr, also with --json: scripts may wait for it before changing keys.
            eprintln!("watching `{prefix}`");
            let mut seen = 0;
            while count.is_none_or(|c| seen < c) {
                let Some(u) = watch.next().await else {
                    bail!("the node stopped sending");
                };
                let WatchUpdate::Changes { revision, events } = u.update else {
                    continue;
                };
                for e in events {
                    seen += 1;
                    let kind = match e.kind {
                        EventKind::Put => "PUT",
                        EventKind::Delete => "DELETE",
                    };
                    if json {
                        print_json(&serde_json::json!({
                            "shard": u.shard, "revision": revision, "kind": kind,
                            "key": String::from_utf8_lossy(&e.kv.key),
                            "value": String::from_utf8_lossy(&e.kv.value),
                        }))?;
                    } else {
                        println!(
                            "{kind} {} {} (shard {}, revision {revision})",
                            String::from_utf8_lossy(&e.kv.key),
                            String::from_utf8_lossy(&e.kv.value),
                            u.shard
                        );
                    }
                    use std::io::Write as _;
                    std::io::stdout().flush()?;
                }
            }
            Ok(())
        }
    })
}

/// Runs `cadre lease`.
pub(crate) fn run_lease(opts: LeaseOptions) -> anyhow::Result<()> {
    let json = opts.conn.json;
    with_kv(&opts.conn, async move |kv| match opts.command {
        LeaseCommand::Grant {
            ttl_ms,
            group,
            shards,
        } => {
            if ttl_ms == 0 {
                bail!("the TTL must be above zero");
            }
            let id = kv
                .grant(Duration::from_millis(ttl_ms), group.as_bytes(), shards)
                .await
                .map_err(store_err)?;
            if json {
                print_json(&serde_json::json!({ "id": id, "ttl_ms": ttl_ms }))
            } else {
                println!("{id}");
                Ok(())
            }
        }
        LeaseCommand::Keepalive { id, once } => loop {
            let ttl = kv.keep_alive(id).await.map_err(store_err)?;
            if json {
                print_json(&serde_json::json!({ "id": id, "ttl_ms": ttl.as_millis() as u64 }))?;
            } else {
                println!("lease {id} kept alive for {} ms", ttl.as_millis());
            }
            if once {
                return Ok(());
            }
            tokio::time::sleep(ttl / 3).await;
        },
        LeaseCommand::Revoke { id } => {
            let applied = kv.revoke(id).await.map_err(store_err)?;
            match applied.response {
                Some(Response::LeaseRevoked { deleted, revision }) => {
                    if json {
                        print_json(&serde_json::json!({ "deleted": deleted, "revision": revision }))
                    } else {
                        println!("revoked; {deleted} keys deleted");
                        Ok(())
                    }
                }
                Some(Response::Error(e)) => bail!("{e}"),
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        LeaseCommand::Ttl { id } => {
            let (left, ttl) = kv.time_to_live(id).await.map_err(store_err)?;
            if json {
                print_json(&serde_json::json!({
                    "id": id, "remaining_ms": left.as_millis() as u64, "ttl_ms": ttl.as_millis() as u64,
                }))
            } else {
                println!("{} ms left of {} ms", left.as_millis(), ttl.as_millis());
                Ok(())
            }
        }
    })
}
