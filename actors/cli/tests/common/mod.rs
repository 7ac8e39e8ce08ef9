//! `cadre` processes for tests: stderr lines on a channel, killed on drop.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const T: Duration = Duration::from_secs(20);

/// A `cadre node` process whose stderr lines arrive on a channel; killed on drop.
pub struct NodeProc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl NodeProc {
    pub fn start(args: &[&str], home: &std::path::Path) -> NodeProc {
        Self::start_logging(args, home, "info")
    }

    /// As [`NodeProc::start`], with the log filter `log` (`CADRE_LOG`).
    pub fn start_logging(args: &[&str], home: &std::path::Path, log: &str) -> NodeProc {
        Self::start_with_env(args, home, log, &[])
    }

    /// As [`NodeProc::start_logging`], with more environment variables.
    pub fn start_with_env(
        args: &[&str],
        home: &std::path::Path,
        log: &str,
        env: &[(&str, &str)],
    ) -> NodeProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cadre"))
            .arg("node")
            .args(args)
            .envs(env.iter().copied())
            .env("CADRE_SECRET", "process-test-secret")
            .env("HOME", home)
            .env_remove("XDG_CONFIG_HOME")
            .env("CADRE_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cadre starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        NodeProc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most `T`) for a log line containing all of `words`; returns it.
    pub fn expect_line(&mut self, words: &[&str]) -> String {
        self.next_line_with(words, T).unwrap_or_else(|| {
            panic!(
                "no line with {words:?} within {T:?}; saw:\n{}",
                self.seen.join("\n")
            )
        })
    }

    /// The next log line containing all of `words`, if one comes within `wait`.
    fn next_line_with(&mut self, words: &[&str], wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if words.iter().all(|w| line.contains(w)) {
                return Some(line);
            }
        }
    }

    /// Whether a log line containing all of `words` has come (waiting at most `wait`).
    pub fn saw_line(&mut self, words: &[&str], wait: Duration) -> bool {
        self.seen
            .iter()
            .any(|l| words.iter().all(|w| l.contains(w)))
            || self.next_line_with(words, wait).is_some()
    }

    /// The address from the "node listening" line.
    pub fn listening_addr(&mut self) -> String {
        let line = self.expect_line(&["node listening"]);
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .expect("an addr field")
            .to_string()
    }

    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits (at most `T`) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + T;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the node did not exit within {T:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `T`) for the process to exit with `code`; otherwise fails with what it
    /// logged.
    pub fn expect_exit(&mut self, code: i32) {
        let got = self.wait_exit();
        if got != Some(code) {
            // It has exited: what it wrote is all in the channel, or on its way.
            while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
                self.seen.push(line);
            }
            panic!(
                "the node exited with {got:?}, not {code}; it logged:\n{}",
                self.seen.join("\n")
            );
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn temp_home() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "cadre-home-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Runs `cadre members --node ADDR --json` and returns its output, parsed.
pub fn members(addr: &str, home: &std::path::Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_cadre"))
        .args(["members", "--node", addr, "--json"])
        .env("CADRE_SECRET", "process-test-secret")
        .env("HOME", home)
        .output()
        .expect("cadre members runs");
    assert!(
        out.status.success(),
        "cadre members failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// A child process, killed on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cadre ARGS` (with the tests' secret and `home`) and returns what it did.
pub fn cadre(args: &[&str], home: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cadre"))
        .args(args)
        .env("CADRE_SECRET", "process-test-secret")
        .env("HOME", home)
        .output()
        .expect("cadre runs")
}

/// Runs `cadre ARGS`, which must succeed; returns its standard output.
pub fn ok(args: &[&str], home: &std::path::Path) -> String {
    let out = cadre(args, home);
    assert!(
        out.status.success(),
        "cadre {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
