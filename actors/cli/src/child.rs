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
