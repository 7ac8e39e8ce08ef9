//! [`NodeConfig`]: what a `cadre node` process runs with, from a TOML file, `CADRE_*`
//! environment variables and command-line flags (a flag beats the environment, which beats the
//! file, which beats the default), validated with errors that name the field and its source.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::transport::{TransportConfig, DEFAULT_QUEUE_BYTES};

/// The default TCP port of a node.
pub const DEFAULT_PORT: u16 = 7370;

/// A node's configuration.
///
/// | field | TOML key | environment | flag | default |
/// |---|---|---|---|---|
/// | [`name`](Self::name) | `name` | `CADRE_NAME` | `--name` | `node-<port>` |
/// | [`cluster`](Self::cluster) | `cluster` | `CADRE_CLUSTER` | `--cluster` | `cadre` |
/// | [`listen`](Self::listen) | `listen` | `CADRE_LISTEN` | `--listen` | `127.0.0.1:7370` |
/// | [`seeds`](Self::seeds) | `seeds` | `CADRE_SEEDS` (comma-separated) | `--seed` (repeated) | none |
/// | [`roles`](Self::roles) | `roles` | `CADRE_ROLES` (comma-separated) | `--roles a,b` | none |
/// | [`secret_file`](Self::secret_file) | `secret_file` | `CADRE_SECRET_FILE` | `--secret-file` | per-user file |
/// | [`max_frame`](Self::max_frame) | `max_frame` | `CADRE_MAX_FRAME` | — | 4 MiB |
/// | [`queue_bytes`](Self::queue_bytes) | `queue_bytes` | `CADRE_QUEUE_BYTES` | — | 256 KiB |
/// | [`handshake_timeout_ms`](Self::handshake_timeout_ms) | `handshake_timeout_ms` | `CADRE_HANDSHAKE_TIMEOUT_MS` | — | 5 000 |
/// | [`profile`](Self::profile) | `profile` | `CADRE_PROFILE` | `--profile` | `lan` |
/// | [`data_dir`](Self::data_dir) | `data_dir` | `CADRE_DATA_DIR` | `--data-dir` | `./cadre-data/<name>` |
/// | [`store_shards`](Self::store_shards) | `store_shards` | `CADRE_STORE_SHARDS` | — | 4 |
/// | [`bootstrap_expect`](Self::bootstrap_expect) | `bootstrap_expect` | `CADRE_BOOTSTRAP_EXPECT` | `--bootstrap-expect` | 3 |
/// | [`store_dead_after_ms`](Self::store_dead_after_ms) | `store_dead_after_ms` | `CADRE_STORE_DEAD_AFTER_MS` | — | 60 000 |
/// | [`store_keep_revisions`](Self::store_keep_revisions) | `store_keep_revisions` | `CADRE_STORE_KEEP_REVISIONS` | — | 10 000 |
/// | [`status_period_ms`](Self::status_period_ms) | `status_period_ms` | `CADRE_STATUS_PERIOD_MS` | — | 1 000 |
/// | [`status_ttl_ms`](Self::status_ttl_ms) | `status_ttl_ms` | `CADRE_STATUS_TTL_MS` | — | 5 000 |
/// | [`agent`](Self::agent) | `agent` | `CADRE_AGENT` (`true`/`false`) | — | `true` |
///
/// The secret itself is never a flag (`ps` would show it): see [`crate::node::secret`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The node's id, unique in the cluster: letters, digits, `.`, `_`, `-` and `@`, at most 64.
    pub name: Option<String>,
    /// The cluster's name; peers of another cluster are refused.
    pub cluster: String,
    /// The TCP address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Addresses of nodes to join through.
    pub seeds: Vec<SocketAddr>,
    /// What this node does (`store`, `worker`, …): lowercase letters, digits, `_` and `-`.
    pub roles: Vec<String>,
    /// A file holding the cluster secret (mode 0600).
    pub secret_file: Option<PathBuf>,
    /// The largest frame body sent or accepted, in bytes (1 KiB to 1 GiB).
    pub max_frame: u32,
    /// Unwritten bytes buffered per connection before senders wait (at least 1; one frame
    /// always fits, however large).
    pub queue_bytes: usize,
    /// How long a connection's handshake may take, in milliseconds (1 to 600 000).
    pub handshake_timeout_ms: u64,
    /// The gossip timing profile: `lan` (the default) or `local_test` (fast timers for nodes on
    /// one machine).
    pub profile: cadre_cluster::membership::Profile,
    /// Where a `store` node keeps its data (`store.redb`).
    pub data_dir: Option<PathBuf>,
    /// The status store's shards (1 to 256); the same on every node of a cluster.
    pub store_shards: u16,
    /// How many `store` nodes must be up before the store's Raft groups are formed (1 to 9;
    /// 1 for a one-node development cluster). Start exactly this many store nodes to bootstrap.
    pub bootstrap_expect: usize,
    /// How long a store node must be down before the shards it holds are given to another
    /// store node, in milliseconds (0 to 86 400 000). Long enough to ride out a restart; a node
    /// that leaves gracefully is down from the moment it leaves.
    pub store_dead_after_ms: u64,
    /// How many revisions of change history each shard keeps for watches (0: keep all until
    /// compacted by hand). Each shard's leader compacts the rest away through the log about
    /// once a second; a watch from an older revision gets `Compacted`.
    pub store_keep_revisions: u64,
    /// How often the node's agent writes its status record to the store, in milliseconds (100
    /// to 60 000).
    pub status_period_ms: u64,
    /// The TTL of the lease the status record is bound to, in milliseconds (at least twice
    /// the period, at most 600 000): a node killed without a goodbye disappears from `cadre
    /// status` this long after its last report.
    pub status_ttl_ms: u64,
    /// Whether the node runs its agent (status, commands, the event handler chain). A node
    /// without one is not in `cadre status` and takes no commands; turn it off only to measure
    /// what the agent costs.
    pub agent: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: None,
            cluster: "cadre".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            seeds: Vec::new(),
            roles: Vec::new(),
            secret_file: None,
            max_frame: cadre_cluster::wire::DEFAULT_MAX_FRAME,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            handshake_timeout_ms: 5_000,
            profile: cadre_cluster::membership::Profile::Lan,
            data_dir: None,
            store_shards: 4,
            bootstrap_expect: 3,
            store_dead_after_ms: 60_000,
            store_keep_revisions: crate::store::DEFAULT_KEEP_REVISIONS,
            status_period_ms: 1_000,
            status_ttl_ms: 5_000,
            agent: true,
        }
    }
}

impl NodeConfig {
    /// A node called `name` for a cluster on this machine: it listens on any free port of
    /// 127.0.0.1, with the gossip's fast `local_test` timers, its data (for the `store` role)
    /// under the system's temporary directory, and the store formed by the first store node
    /// (`bootstrap_expect` 1). Set `seeds` to join others, and `roles` as needed.
    pub fn local(name: &str) -> NodeConfig {
        NodeConfig {
            name: Some(name.into()),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            profile: cadre_cluster::membership::Profile::LocalTest,
            data_dir: Some(
                std::env::temp_dir().join(format!("cadre-{}-{name}", std::process::id())),
            ),
            bootstrap_expect: 1,
            ..NodeConfig::default()
        }
    }
}

/// A configuration value that is wrong, naming where it came from and which field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration ({source_name}): `{field}` {problem}")]
pub struct NodeConfigError {
    /// The file, the environment variable or the flag.
    pub source_name: String,
    /// The field.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

fn error(source: &str, field: &str, problem: impl Into<String>) -> NodeConfigError {
    NodeConfigError {
        source_name: source.into(),
        field: field.into(),
        problem: problem.into(),
    }
}

/// Values given as command-line flags: each overrides the environment and the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--name`.
    pub name: Option<String>,
    /// `--cluster`.
    pub cluster: Option<String>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--seed`, repeated (replaces the seeds of the file and the environment when given).
    pub seeds: Vec<SocketAddr>,
    /// `--roles a,b`.
    pub roles: Option<Vec<String>>,
    /// `--secret-file`.
    pub secret_file: Option<PathBuf>,
    /// `--profile`.
    pub profile: Option<cadre_cluster::membership::Profile>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--bootstrap-expect`.
    pub bootstrap_expect: Option<usize>,
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

fn parse<T: std::str::FromStr>(var: &str, field: &str, value: &str) -> Result<T, NodeConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| error(var, field, format!("cannot be `{value}`: {e}")))
}

/// Parses a profile name (`lan`, `local_test`).
pub fn parse_profile(
    source: &str,
    value: &str,
) -> Result<cadre_cluster::membership::Profile, NodeConfigError> {
    match value.trim() {
        "lan" => Ok(cadre_cluster::membership::Profile::Lan),
        "local_test" => Ok(cadre_cluster::membership::Profile::LocalTest),
        other => Err(error(
            source,
            "profile",
            format!("cannot be `{other}`: use `lan` or `local_test`"),
        )),
    }
}

impl NodeConfig {
    /// Builds the configuration: defaults, then the TOML `file` (if any), then the environment
    /// (read through `env`, so tests need not touch the process's), then `flags`; then
    /// validates it.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, a value that does not parse, or a value out of
    /// range: [`NodeConfigError`] names the source and the field.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> Result<NodeConfig, NodeConfigError> {
        let mut config = match file {
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| error(&name, "(file)", format!("cannot be read: {e}")))?;
                toml::from_str::<NodeConfig>(&text).map_err(|e| {
                    let msg = e.message().to_string();
                    let field = msg.split('`').nth(1).unwrap_or("(file)").to_string();
                    error(&name, &field, msg)
                })?
            }
            None => NodeConfig::default(),
        };
        config.apply_env(env)?;
        config.apply_flags(flags);
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), NodeConfigError> {
        let get = |var: &str| env(var).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("CADRE_NAME") {
            self.name = Some(v.trim().into());
        }
        if let Some(v) = get("CADRE_CLUSTER") {
            self.cluster = v.trim().into();
        }
        if let Some(v) = get("CADRE_LISTEN") {
            self.listen = parse("CADRE_LISTEN", "listen", &v)?;
        }
        if let Some(v) = get("CADRE_SEEDS") {
            self.seeds = list(&v)
                .iter()
                .map(|s| parse("CADRE_SEEDS", "seeds", s))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("CADRE_ROLES") {
            self.roles = list(&v);
        }
        if let Some(v) = get("CADRE_SECRET_FILE") {
            self.secret_file = Some(PathBuf::from(v.trim()));
        }
        if let Some(v) = get("CADRE_MAX_FRAME") {
            self.max_frame = parse("CADRE_MAX_FRAME", "max_frame", &v)?;
        }
        if let Some(v) = get("CADRE_QUEUE_BYTES") {
            self.queue_bytes = parse("CADRE_QUEUE_BYTES", "queue_bytes", &v)?;
        }
        if let Some(v) = get("CADRE_PROFILE") {
            self.profile = parse_profile("CADRE_PROFILE", &v)?;
        }
        if let Some(v) = get("CADRE_DATA_DIR") {
            self.data_dir = Some(PathBuf::from(v.trim()));
        }
        if let Some(v) = get("CADRE_STORE_SHARDS") {
            self.store_shards = parse("CADRE_STORE_SHARDS", "store_shards", &v)?;
        }
        if let Some(v) = get("CADRE_BOOTSTRAP_EXPECT") {
            self.bootstrap_expect = parse("CADRE_BOOTSTRAP_EXPECT", "bootstrap_expect", &v)?;
        }
        if let Some(v) = get("CADRE_STORE_DEAD_AFTER_MS") {
            self.store_dead_after_ms =
                parse("CADRE_STORE_DEAD_AFTER_MS", "store_dead_after_ms", &v)?;
        }
        if let Some(v) = get("CADRE_STORE_KEEP_REVISIONS") {
            self.store_keep_revisions =
                parse("CADRE_STORE_KEEP_REVISIONS", "store_keep_revisions", &v)?;
        }
        if let Some(v) = get("CADRE_STATUS_PERIOD_MS") {
            self.status_period_ms = parse("CADRE_STATUS_PERIOD_MS", "status_period_ms", &v)?;
        }
        if let Some(v) = get("CADRE_AGENT") {
            self.agent = parse("CADRE_AGENT", "agent", &v)?;
        }
        if let Some(v) = get("CADRE_STATUS_TTL_MS") {
            self.status_ttl_ms = parse("CADRE_STATUS_TTL_MS", "status_ttl_ms", &v)?;
        }
        if let Some(v) = get("CADRE_HANDSHAKE_TIMEOUT_MS") {
            self.handshake_timeout_ms =
                parse("CADRE_HANDSHAKE_TIMEOUT_MS", "handshake_timeout_ms", &v)?;
        }
        Ok(())
    }

    fn apply_flags(&mut self, flags: &Overrides) {
        if let Some(v) = &flags.name {
            self.name = Some(v.clone());
        }
        if let Some(v) = &flags.cluster {
            self.cluster = v.clone();
        }
        if let Some(v) = flags.listen {
            self.listen = v;
        }
        if !flags.seeds.is_empty() {
            self.seeds = flags.seeds.clone();
        }
        if let Some(v) = &flags.roles {
            self.roles = v.clone();
        }
        if let Some(v) = &flags.secret_file {
            self.secret_file = Some(v.clone());
        }
        if let Some(v) = flags.profile {
            self.profile = v;
        }
        if let Some(v) = &flags.data_dir {
            self.data_dir = Some(v.clone());
        }
        if let Some(v) = flags.bootstrap_expect {
            self.bootstrap_expect = v;
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), NodeConfigError> {
        let bad = |field: &str, problem: &str| Err(error("configuration", field, problem));
        if let Some(name) = &self.name {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_@".contains(c));
            if !ok {
                return bad(
                    "name",
                    "must be 1 to 64 letters, digits, `.`, `_`, `-` or `@`",
                );
            }
        }
        if self.cluster.is_empty() || self.cluster.len() > 64 {
            return bad("cluster", "must be 1 to 64 characters");
        }
        for role in &self.roles {
            let ok = !role.is_empty()
                && role
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
            if !ok {
                return bad(
                    "roles",
                    "each role must be lowercase letters, digits, `_` or `-`",
                );
            }
        }
        if !(1024..=1 << 30).contains(&self.max_frame) {
            return bad("max_frame", "must be between 1024 and 1073741824 bytes");
        }
        if self.queue_bytes == 0 {
            return bad("queue_bytes", "must be at least 1");
        }
        if !(1..=600_000).contains(&self.handshake_timeout_ms) {
            return bad("handshake_timeout_ms", "must be between 1 and 600000");
        }
        if !(1..=256).contains(&self.store_shards) {
            return bad("store_shards", "must be between 1 and 256");
        }
        if !(1..=9).contains(&self.bootstrap_expect) {
            return bad("bootstrap_expect", "must be between 1 and 9");
        }
        if self.store_dead_after_ms > 86_400_000 {
            return bad("store_dead_after_ms", "must be between 0 and 86400000");
        }
        if !(100..=60_000).contains(&self.status_period_ms) {
            return bad("status_period_ms", "must be between 100 and 60000");
        }
        if self.status_ttl_ms < 2 * self.status_period_ms || self.status_ttl_ms > 600_000 {
            let problem = format!(
                "must be between twice status_period_ms ({}) and 600000",
                2 * self.status_period_ms
            );
            return bad("status_ttl_ms", &problem);
        }
        Ok(())
    }

    /// The node's id: its name, or `node-<port>` when none was given.
    pub fn node_name(&self, bound: SocketAddr) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("node-{}", bound.port()))
    }

    /// Where a node called `name` keeps its data.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("cadre-data").join(name))
    }

    /// The transport's configuration for a node called `name` with `secret`.
    pub fn transport(&self, name: &str, secret: cadre_cluster::wire::Secret) -> TransportConfig {
        let mut t = TransportConfig::new(&self.cluster, name, self.listen, secret);
        t.max_frame = self.max_frame;
        t.queue_bytes = self.queue_bytes;
        t.handshake_timeout = Duration::from_millis(self.handshake_timeout_ms);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn file(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    /// A file that removes itself.
    mod tempfile_path {
        pub(super) struct TempPath(pub(super) std::path::PathBuf);
        impl TempPath {
            pub(super) fn with(text: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "cadre-config-{}-{}.toml",
                    std::process::id(),
                    fastrand::u64(..)
                ));
                std::fs::write(&path, text).unwrap();
                TempPath(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn flags_beat_environment_beats_file_beats_defaults() {
        let f = file(
            "name = \"from-file\"\ncluster = \"file-cluster\"\nroles = [\"store\"]\nmax_frame = 65536\n",
        );
        let e = env(&[
            ("CADRE_CLUSTER", "env-cluster"),
            ("CADRE_LISTEN", "127.0.0.1:9000"),
        ]);
        let flags = Overrides {
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..Overrides::default()
        };
        let c = NodeConfig::load(Some(&f.0), e, &flags).unwrap();
        assert_eq!(c.name.as_deref(), Some("from-file")); // file only
        assert_eq!(c.cluster, "env-cluster"); // env beats file
        assert_eq!(c.listen, "127.0.0.1:9100".parse().unwrap()); // flag beats env
        assert_eq!(c.roles, ["store"]);
        assert_eq!(c.max_frame, 65536);
        assert_eq!(c.handshake_timeout_ms, 5_000); // default
        assert_eq!(c.store_keep_revisions, crate::store::DEFAULT_KEEP_REVISIONS);

        let f = file("store_keep_revisions = 500\n");
        let c = NodeConfig::load(Some(&f.0), env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.store_keep_revisions, 500);
        let e = env(&[("CADRE_STORE_KEEP_REVISIONS", "0")]);
        let c = NodeConfig::load(Some(&f.0), e, &Overrides::default()).unwrap();
        assert_eq!(c.store_keep_revisions, 0); // env beats file; 0 keeps all
    }

    #[test]
    fn lists_come_comma_separated_from_the_environment() {
        let e = env(&[
            ("CADRE_SEEDS", "127.0.0.1:1, 127.0.0.1:2"),
            ("CADRE_ROLES", "store,worker"),
        ]);
        let c = NodeConfig::load(None, e, &Overrides::default()).unwrap();
        assert_eq!(c.seeds.len(), 2);
        assert_eq!(c.roles, ["store", "worker"]);
    }

    #[test]
    fn errors_name_the_source_and_the_field() {
        let err = NodeConfig::load(
            None,
            env(&[("CADRE_LISTEN", "nowhere")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            (err.source_name.as_str(), err.field.as_str()),
            ("CADRE_LISTEN", "listen")
        );
        assert!(err.to_string().contains("`nowhere`"), "{err}");

        let err = NodeConfig::load(
            None,
            env(&[("CADRE_STORE_KEEP_REVISIONS", "-5")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.field, "store_keep_revisions");

        let f = file("max_frame = 10\n");
        let err = NodeConfig::load(Some(&f.0), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(err.field, "max_frame");

        let f = file("colour = \"blue\"\n");
        let err = NodeConfig::load(Some(&f.0), env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        assert_eq!(err.source_name, f.0.display().to_string());

        let flags = Overrides {
            roles: Some(vec!["Store".into()]),
            ..Overrides::default()
        };
        let err = NodeConfig::load(None, env(&[]), &flags).unwrap_err();
        assert_eq!(err.field, "roles");

        let missing = Path::new("/nonexistent/cadre.toml");
        let err = NodeConfig::load(Some(missing), env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("cannot be read"), "{err}");
    }
}
