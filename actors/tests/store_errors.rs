//! The store's errors tell the caller what happened and what to do: a refusal is an error (never
//! an `Ok` carrying it), a request that cannot be routed is invalid, and a cluster without store
//! nodes says so, at once, naming the role to start.

use std::time::{Duration, Instant};

use cadre_actors::node::{ClusterNode, NodeConfig};
use cadre_actors::store::KvError;
use cadre_actors::Secret;
use cadre_cluster::store::{
    routing, CmpOp, Compare, CompareTarget, Op, PutRequest, Request, TxnRequest,
};
use cadre_runtime::testkit::run;
use cadre_runtime::Runtime;
use common::TempDir;

mod common;

fn secret() -> Secret {
    Secret::new(b"store-errors".to_vec()).unwrap()
}

fn put(key: &str, lease: Option<u64>) -> Request {
    Request::Put(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        lease,
        prev_kv: false,
    })
}

#[test]
fn a_cluster_without_store_nodes_says_to_start_some_at_once() {
    run(async {
        let node = ClusterNode::start(&NodeConfig::local("lonely"), secret(), &Runtime::new("l"))
            .await
            .unwrap();
        let started = Instant::now();
        let err = node.kv().put(b"apps/a/k", b"v").await.unwrap_err();
        assert!(matches!(err, KvError::NoStore { .. }), "{err:?}");
        assert!(err.to_string().contains("--roles store"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        node.leave(Duration::from_secs(5)).await;
    });
}

#[test]
fn refusals_are_errors_and_unroutable_requests_are_invalid() {
    run(async {
        let dir = TempDir::new();
        let mut config = NodeConfig::local("store");
        config.roles = vec!["store".into()];
        config.data_dir = Some(dir.0.clone());
        let node = ClusterNode::start(&config, secret(), &Runtime::new("s"))
            .await
            .unwrap();
        node.store_ready(Duration::from_secs(30)).await.unwrap();
        let kv = node.kv();

        // A put bound to a lease that does not exist: refused, nothing written.
        let missing = routing::lease_id(routing::lease_shard(b"apps/a", 4), 12345);
        let err = kv.write(put("apps/a/k", Some(missing))).await.unwrap_err();
        match &err {
            KvError::Refused { detail, .. } => assert!(detail.contains("not found"), "{err}"),
            other => panic!("{other:?}"),
        }
        assert!(kv.get(b"apps/a/k").await.unwrap().is_none());

        // A lease id granted twice: the second grant is refused.
        let id = kv
            .grant(Duration::from_secs(10), b"apps/a", 4)
            .await
            .unwrap();
        let again = Request::LeaseGrant { id, ttl_ms: 10_000 };
        let err = kv.write(again).await.unwrap_err();
        assert!(
            matches!(&err, KvError::Refused { detail, .. } if detail.contains("already exists")),
            "{err:?}"
        );

        // A transaction over two groups in different shards cannot be routed.
        let (a, b) = (0..100)
            .map(|i| format!("apps/g{i}/k"))
            .map(|k| (routing::shard_of(k.as_bytes(), 4), k))
            .fold((None, None), |(a, b), (s, k)| match (&a, &b) {
                (None, _) => (Some((s, k)), b),
                (Some((sa, _)), None) if *sa != s => (a, Some(k)),
                _ => (a, b),
            });
        let (a, b) = (a.unwrap().1, b.unwrap());
        let txn = TxnRequest {
            compare: vec![Compare {
                key: a.clone().into_bytes(),
                op: CmpOp::Eq,
                target: CompareTarget::Version(0),
            }],
            success: vec![Op::Put(PutRequest {
                key: b.into_bytes(),
                value: b"v".to_vec(),
                lease: None,
                prev_kv: false,
            })],
            failure: vec![],
        };
        let err = kv.txn(txn).await.unwrap_err();
        assert!(
            matches!(&err, KvError::Invalid(m) if m.contains("one shard")),
            "{err:?}"
        );
        // A transaction whose comparison fails is no error: it says it did not succeed.
        kv.put(b"apps/a/x", b"1").await.unwrap();
        let txn = TxnRequest {
            compare: vec![Compare {
                key: b"apps/a/x".to_vec(),
                op: CmpOp::Eq,
                target: CompareTarget::Version(0),
            }],
            success: vec![Op::Put(PutRequest {
                key: b"apps/a/y".to_vec(),
                value: b"v".to_vec(),
                lease: None,
                prev_kv: false,
            })],
            failure: vec![],
        };
        let applied = kv.txn(txn).await.unwrap();
        assert!(matches!(
            applied.response,
            Some(cadre_cluster::store::Response::Write {
                succeeded: false,
                ..
            })
        ));
        node.leave(Duration::from_secs(5)).await;
    });
}
