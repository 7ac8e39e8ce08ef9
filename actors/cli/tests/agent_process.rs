//! The node agent as processes: five `cadre node`s on 127.0.0.1 (three with the store role)
//! report their status (`cadre status`); commands given with `cadre cmd` and its shortcuts run
//! with their effect seen (a debug line after `log-level`, a restarted view, a stopped node);
//! a malformed or unknown command gets an error; a node killed with SIGKILL disappears from
//! `cadre status` within its lease's TTL. Bounded in time; every process is killed by a guard.

mod common;

use std::time::{Duration, Instant};

use common::{cadre, ok, temp_home, NodeProc, T};

const PERIOD_MS: &str = "300";
const TTL_MS: u64 = 4_000;

/// The nodes `cadre status --json` lists, with their states.
fn statuses(addr: &str, home: &std::path::Path) -> Vec<(String, String)> {
    let out = cadre(&["status", "--node", addr, "--json"], home);
    if !out.status.success() {
        return Vec::new(); // the store is not up yet
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v.as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Polls `cadre status` (at most `limit`) until `pred` holds.
fn until_status(
    addr: &str,
    home: &std::path::Path,
    limit: Duration,
    what: &str,
    pred: impl Fn(&[(String, String)]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let s = statuses(addr, home);
        if pred(&s) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "never {what}; last: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn node(
    name: &str,
    roles: Option<&str>,
    seed: Option<&str>,
    data: &std::path::Path,
    home: &std::path::Path,
) -> NodeProc {
    let dir = data.join(name);
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--name",
        name,
        "--profile",
        "local_test",
        "--data-dir",
        dir.to_str().unwrap(),
    ];
    if let Some(roles) = roles {
        args.extend(["--roles", roles]);
    }
    if let Some(seed) = seed {
        args.extend(["--seed", seed]);
    }
    let ttl = TTL_MS.to_string();
    NodeProc::start_with_env(
        &args,
        home,
        "info",
        &[
            ("CADRE_STATUS_PERIOD_MS", PERIOD_MS),
            ("CADRE_STATUS_TTL_MS", &ttl),
        ],
    )
}

#[test]
fn five_node_processes_report_status_and_carry_out_commands_through_the_store() {
    let home = temp_home();
    let data = home.join("data");
    let mut s0 = node("s0", Some("store"), None, &data, &home);
    let seed = s0.listening_addr();
    let mut procs = vec![];
    for (name, roles) in [
        ("s1", Some("store")),
        ("s2", Some("store")),
        ("n3", None),
        ("n4", Some("worker")),
    ] {
        let mut p = node(name, roles, Some(&seed), &data, &home);
        p.listening_addr();
        procs.push(p);
    }
    s0.expect_line(&["store groups formed"]);
    let names = ["n3", "n4", "s0", "s1", "s2"];
    until_status(&seed, &home, T, "every node reports normal", |s| {
        s.len() == 5 && s.iter().all(|(_, state)| state == "normal")
    });
    let table = ok(&["status", "--node", &seed], &home);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NODE") && header.contains("STATE") && header.contains("AGE"),
        "{table}"
    );
    for name in names {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(name) && l.contains("normal")),
            "{table}"
        );
    }

    // ping everywhere; log-level on n3, whose debug lines then appear.
    let out = ok(&["cmd", "--node", &seed, "all", "ping"], &home);
    assert_eq!(
        out.lines().filter(|l| l.ends_with("ok pong")).count(),
        5,
        "{out}"
    );
    let n3 = &mut procs[2];
    assert!(!n3.saw_line(&["DEBUG"], Duration::from_millis(300)));
    let out = ok(&["log-level", "--node", &seed, "n3", "debug"], &home);
    assert!(out.contains("n3: ok"), "{out}");
    n3.expect_line(&["DEBUG", "status reported"]);

    // restart-actor: n3's view restarts (its supervisor logs it) and the node serves on.
    let out = ok(
        &["cmd", "--node", &seed, "n3", "restart-actor", "node/view"],
        &home,
    );
    assert!(out.contains("generation 1 killed"), "{out}");
    n3.expect_line(&["child started", "node/view", "generation=2"]);
    until_status(&seed, &home, T, "n3 still reports", |s| {
        s.iter().any(|(n, _)| n == "n3")
    });

    // Unknown and malformed commands: an error naming why, a failing exit; the agent goes on.
    let out = cadre(&["cmd", "--node", &seed, "n3", "bogus"], &home);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown command `bogus`"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "the reason is printed once, as the error"
    );
    // A node that does not exist: said at once, nothing left in the store for it.
    let started = Instant::now();
    let out = cadre(&["cmd", "--node", &seed, "nosuch", "ping"], &home);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no node `nosuch` reports its status"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let out = cadre(&["scale", "--node", &seed, "n3", "many"], &home);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'many'"));
    ok(
        &[
            "kv",
            "--node",
            &seed,
            "put",
            "nodes/n3/commands/junk",
            "not a command",
        ],
        &home,
    );
    // Its result (a MessagePack record; its message is readable in it) says why.
    let deadline = Instant::now() + T;
    loop {
        let out = cadre(
            &["kv", "--node", &seed, "get", "nodes/n3/results/junk"],
            &home,
        );
        let value = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && value.contains("malformed command") {
            assert!(value.contains("failed"), "{value}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no result for the malformed command"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ok(&["cmd", "--node", &seed, "n3", "ping"], &home);
    assert!(out.contains("n3: ok pong"), "{out}");

    // scale: n4's pool grows to 3 workers, as its next status shows.
    let out = ok(&["scale", "--node", &seed, "n4", "3"], &home);
    assert!(out.contains("n4: ok 3 workers"), "{out}");
    let deadline = Instant::now() + T;
    loop {
        let out = ok(&["status", "--node", &seed, "--json"], &home);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let n4 = v
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == "n4")
            .cloned();
        let size = n4.map(|r| {
            r["load"]["workers_busy"].as_u64().unwrap()
                + r["load"]["workers_idle"].as_u64().unwrap()
        });
        if size == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n4 never reported 3 workers: {size:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // SIGKILL n4: its status is gone within the TTL (plus the expiry check and polling).
    let killed = Instant::now();
    let n4 = procs.remove(3);
    drop(n4);
    until_status(&seed, &home, T, "n4's status gone", |s| {
        s.iter().all(|(n, _)| n != "n4")
    });
    let waited = killed.elapsed();
    assert!(waited < Duration::from_millis(TTL_MS + 3_000), "{waited:?}");

    // stop: s2 leaves gracefully, exits 0, and its status goes at once.
    let out = ok(&["cmd", "--node", &seed, "s2", "stop"], &home);
    assert!(out.contains("s2: ok stopping"), "{out}");
    let mut s2 = procs.remove(1);
    s2.expect_exit(0);
    until_status(
        &seed,
        &home,
        Duration::from_millis(TTL_MS),
        "s2's status gone at once",
        |s| s.iter().all(|(n, _)| n != "s2"),
    );
    drop(procs);
    let _ = std::fs::remove_dir_all(&home);
}
