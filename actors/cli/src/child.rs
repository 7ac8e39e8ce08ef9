//! Child processes of benches and the demo: killed however the parent ends, and ending by
//! themselves when the parent does.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::time::Duration;

use anyhow::{bail, Context as _};

/// A child process, killed (SIGKILL) and reaped when dropped.
pub(crate) struct ChildGuard(pub(crate) Child);

impl ChildGuard {
    /// Waits at most `timeout` for the child's first line on stdout, which must start with
    /// `READY`; returns it. `what` names the child in errors.
    pub(crate) fn ready_line(&mut self, timeout: Duration, what: &str) -> anyhow::Result<String> {
        let stdout = self.0.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(timeout)
            .with_context(|| format!("{what} did not report ready within {timeout:?}"))?;
        if !line.starts_with("READY") {
            bail!("unexpected line from {what}: {line:?}");
        }
        Ok(line)
    }

    /// Closes its stdin, which a child that waits on [`until_stdin_closes`] takes as the sign to
    /// end, and gives it `grace` to exit by itself (so that it ends cleanly, and a profiler it
    /// runs under writes its data); kills it if it has not.
    pub(crate) fn close_and_wait(&mut self, grace: Duration) {
        drop(self.0.stdin.take());
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            match self.0.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Ok(Some(_)) | Err(_) => return,
            }
        }
        self.kill();
    }

    /// Kills and reaps it now.
    pub(crate) fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// In a child: returns once the parent closes our stdin (or dies).
pub(crate) async fn until_stdin_closes() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin()
            .read_line(&mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            line.clear();
        }
    })
    .await?;
    Ok(())
}

/// A `cadre node` process started by a bench, its stderr lines on a channel; killed on drop.
pub(crate) struct NodeChild {
    pub(crate) proc: ChildGuard,
    lines: std::sync::mpsc::Receiver<String>,
    /// Its address, from its "node listening" line.
    pub(crate) addr: String,
}

impl NodeChild {
    /// Starts `cadre node ARGS` (this binary) with `env` and waits for it to listen.
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<NodeChild> {
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe()?)
            .arg("node")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("could not start a node")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = NodeChild {
            proc: ChildGuard(child),
            lines,
            addr: String::new(),
        };
        node.addr = node
            .wait_line("node listening")?
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .map(|a| a.trim_matches('"').to_string())
            .context("no address in the node's log")?;
        Ok(node)
    }

    /// Waits (at most 60 s) for a line of its log containing `what`; returns it.
    pub(crate) fn wait_line(&mut self, what: &str) -> anyhow::Result<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .map_err(|_| anyhow::anyhow!("no `{what}` from a node within 60 s"))?;
            if line.contains(what) {
                return Ok(line);
            }
        }
    }
}
