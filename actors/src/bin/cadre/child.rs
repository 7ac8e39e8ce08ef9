//! Child processes of benches and the demo: killed however the parent ends, and ending by
//! themselves when the parent does.

use std::process::Child;

/// A child process, killed (SIGKILL) and reaped when dropped.
pub(crate) struct ChildGuard(pub(crate) Child);

impl ChildGuard {
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
