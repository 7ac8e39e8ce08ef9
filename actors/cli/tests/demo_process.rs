//! `cadre demo` as processes: a master process and two worker processes on 127.0.0.1; one
//! worker is killed with SIGKILL mid-run, and every result still arrives exactly once.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Guard;

mod common;

#[test]
fn a_worker_process_killed_mid_run_loses_no_result_and_duplicates_none() {
    // Killed on drop; its worker processes end when their stdin closes.
    let mut child = Guard(
        Command::new(env!("CARGO_BIN_EXE_cadre"))
            .args([
                "demo",
                "--workers",
                "2",
                "--tasks",
                "300",
                "--range",
                "4000",
            ])
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cadre demo starts"),
    );
    let mut stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("cadre demo finishes within 120 s");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "cadre demo failed: {out}");
    let summary: serde_json::Value = serde_json::from_str(&out).expect("a JSON summary");
    assert_eq!(summary["tasks"], 300);
    assert_eq!(summary["results_received"], 300, "{summary}");
    assert_eq!(summary["distinct_tasks"], 300, "{summary}");
    assert_eq!(summary["duplicates_received"], 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["primes_counted"], summary["primes_expected"]);
    assert_eq!(summary["killed"], "worker-1");
    let nodes = summary["nodes"].as_object().unwrap();
    assert_eq!(nodes["worker-1"]["up"], false, "{summary}");
    assert_eq!(nodes["worker-2"]["up"], true, "{summary}");
    let took_over = nodes["worker-2"]["completed"].as_u64().unwrap();
    assert!(
        took_over >= 150,
        "worker-2 finished the second half: {summary}"
    );
}
