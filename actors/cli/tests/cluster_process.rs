//! Five `cadre node` processes on 127.0.0.1 join through one seed; `cadre members` shows them
//! up; a node killed with SIGKILL is reported down, one stopped with SIGTERM is reported left.
//! Bounded in time; every process is killed by a guard, also when an assertion fails.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Polls `cadre members` on `addr` (at most `T`) until `pred` holds for the member list.
fn until_members(
    addr: &str,
    home: &std::path::Path,
    what: &str,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + T;
    loop {
        let v = members(addr, home);
        let list = v.as_array().expect("a list").clone();
        if pred(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "never {what}; last view: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn state_of<'a>(list: &'a [serde_json::Value], id: &str) -> Option<&'a str> {
    list.iter()
        .find(|m| m["id"] == id)
        .and_then(|m| m["state"].as_str())
}

#[test]
fn five_nodes_join_and_report_crashes_and_leaves() {
    let home = temp_home();
    let mut seed = NodeProc::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--name",
            "n0",
            "--profile",
            "local_test",
        ],
        &home,
    );
    let seed_addr = seed.listening_addr();
    let mut nodes = Vec::new();
    for i in 1..5 {
        let name = format!("n{i}");
        let mut n = NodeProc::start(
            &[
                "--listen",
                "127.0.0.1:0",
                "--name",
                &name,
                "--seed",
                &seed_addr,
                "--profile",
                "local_test",
                "--roles",
                "worker",
            ],
            &home,
        );
        n.listening_addr();
        nodes.push(n);
    }
    let all_up = until_members(&seed_addr, &home, "all five up", |l| {
        l.len() == 5 && l.iter().all(|m| m["state"] == "up")
    });
    for m in &all_up {
        assert!(m["addr"].is_string() && m["roles"].is_array(), "{m}");
    }

    // kill -9 n4: reported down.
    let _ = nodes[3].child.kill();
    let _ = nodes[3].child.wait();
    until_members(&seed_addr, &home, "n4 down", |l| {
        state_of(l, "n4") == Some("down")
    });

    // SIGTERM n3: reported left, promptly.
    let t0 = Instant::now();
    nodes[2].terminate();
    nodes[2].expect_exit(0);
    until_members(&seed_addr, &home, "n3 left", |l| {
        state_of(l, "n3") == Some("left")
    });
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );

    seed.terminate();
    seed.expect_exit(0);
    let _ = std::fs::remove_dir_all(&home);
}
