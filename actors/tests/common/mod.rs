//! Helpers for the in-process tests: temporary directories and waiting for a condition.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

pub const T: Duration = Duration::from_secs(20);

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cadre-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits (at most `T`) until `check` holds, re-checking every 20 ms.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, T, check).await
}

/// Waits (at most `limit`) until `check` holds, re-checking every 20 ms.
pub async fn eventually_within<F, Fut>(what: &str, limit: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node of an in-process test cluster called `cluster`: [`NodeConfig::local`] with its data
/// under `dir`, two shards, and a status reported every 200 ms under a 1 s lease.
///
/// [`NodeConfig::local`]: cadre_actors::node::NodeConfig::local
pub fn node_config(
    cluster: &str,
    name: &str,
    dir: &TempDir,
    roles: &[&str],
    seeds: Vec<std::net::SocketAddr>,
) -> cadre_actors::node::NodeConfig {
    cadre_actors::node::NodeConfig {
        cluster: cluster.into(),
        seeds,
        roles: roles.iter().map(|r| r.to_string()).collect(),
        data_dir: Some(dir.0.join(name)),
        store_shards: 2,
        status_period_ms: 200,
        status_ttl_ms: 1_000,
        ..cadre_actors::node::NodeConfig::local(name)
    }
}
