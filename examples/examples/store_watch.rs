//! The status store and its watches: a one-node cluster holding the store on 127.0.0.1; a
//! watch of a prefix (a `Stream`) sees puts, a compare-and-swap, and the keys of a lease deleted
//! when the lease is revoked, each change once, in revision order.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release -p cadre-examples --example store_watch
//! ```

use std::time::Duration;

use cadre_actors::prelude::*;
use cadre_cluster::store::{
    CmpOp, Compare, CompareTarget, EventKind, Op, PutRequest, Request, TxnRequest, WatchUpdate,
};
use futures_util::StreamExt;

fn main() -> anyhow::Result<()> {
    actix::System::new().block_on(async {
        let mut config = NodeConfig::local("store-example");
        config.roles = vec!["store".into()];
        let secret = Secret::new(b"store example".to_vec())?;
        let node = ClusterNode::start(&config, secret, &Runtime::new("store-example")).await?;
        // The store forms once `bootstrap_expect` (here 1) store nodes are up.
        node.store_ready(Duration::from_secs(30)).await?;
        let kv = node.kv();

        // Watch everything under `apps/orders/` from the next change on.
        let mut watch = kv.watch(b"apps/orders/", 0).await?;

        kv.put(b"apps/orders/1", b"new").await?;
        // Compare-and-swap: move order 1 to `paid` only if it is still `new`.
        let cas = TxnRequest {
            compare: vec![Compare {
                key: b"apps/orders/1".to_vec(),
                op: CmpOp::Eq,
                target: CompareTarget::Value(b"new".to_vec()),
            }],
            success: vec![Op::Put(PutRequest {
                key: b"apps/orders/1".to_vec(),
                value: b"paid".to_vec(),
                lease: None,
                prev_kv: false,
            })],
            failure: vec![],
        };
        kv.txn(cas).await?;
        // A key bound to a lease goes with it.
        let lease = kv.grant(Duration::from_secs(60), b"apps/orders", 4).await?;
        let put = PutRequest {
            key: b"apps/orders/lock".to_vec(),
            value: b"held".to_vec(),
            lease: Some(lease),
            prev_kv: false,
        };
        kv.write(Request::Put(put)).await?;
        kv.revoke(lease).await?;

        // Four changes, in revision order: two puts of order 1, the lock's put and its delete.
        let mut seen = 0;
        while seen < 4 {
            let Some(update) =
                tokio::time::timeout(Duration::from_secs(10), StreamExt::next(&mut watch)).await?
            else {
                anyhow::bail!("the watch ended");
            };
            if let WatchUpdate::Changes { revision, events } = update.update {
                for e in events {
                    let kind = if e.kind == EventKind::Put {
                        "put"
                    } else {
                        "delete"
                    };
                    println!(
                        "revision {revision}: {kind} {} = {}",
                        String::from_utf8_lossy(&e.kv.key),
                        String::from_utf8_lossy(&e.kv.value)
                    );
                    seen += 1;
                }
            }
        }
        node.leave(Duration::from_secs(5)).await;
        Ok(())
    })
}
