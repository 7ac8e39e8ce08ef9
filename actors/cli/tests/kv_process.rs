//! The status store as processes: three `cadre node --roles store` processes on 127.0.0.1 and
//! `cadre kv` / `cadre lease` round trips through different nodes, with a watch that sees a
//! put made by another client; and a store process that lost its data directory rejoining as a
//! new member.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{cadre, ok, temp_home, Guard, NodeProc, T};

#[test]
fn three_store_processes_serve_kv_round_trips_and_watches() {
    let home = temp_home();
    let data = home.join("data");
    let dirs = store_dirs(&data);
    let mut first = NodeProc::start(&store_args("s0", &dirs[0], None), &home);
    let seed = first.listening_addr();
    let mut procs = vec![];
    let mut addrs = vec![seed.clone()];
    for (name, dir) in ["s1", "s2"].iter().zip(&dirs[1..]) {
        let mut p = NodeProc::start(&store_args(name, dir, Some(&seed)), &home);
        addrs.push(p.listening_addr());
        procs.push(p);
    }
    first.expect_line(&["store groups formed"]);

    // A watch through s2, started before the put, sees the put made through s1.
    let mut watch = Guard(
        Command::new(env!("CARGO_BIN_EXE_cadre"))
            .args([
                "kv", "--node", &addrs[2], "watch", "apps/", "--count", "1", "--json",
            ])
            .env("CADRE_SECRET", "process-test-secret")
            .env("HOME", &home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = watch.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = rx.recv_timeout(T).expect("the watch starts");
    assert!(started.contains("watching"), "{started}");

    let put = ok(
        &[
            "kv",
            "--node",
            &addrs[1],
            "put",
            "apps/n1/status",
            "up",
            "--json",
        ],
        &home,
    );
    let rev: serde_json::Value = serde_json::from_str(&put).unwrap();
    assert_eq!(
        ok(&["kv", "--node", &addrs[0], "get", "apps/n1/status"], &home),
        "up\n"
    );

    let deadline = Instant::now() + T;
    let out = loop {
        if let Some(status) = watch.0.try_wait().unwrap() {
            assert!(status.success());
            let mut s = String::new();
            std::io::Read::read_to_string(watch.0.stdout.as_mut().unwrap(), &mut s).unwrap();
            break s;
        }
        assert!(Instant::now() < deadline, "the watch saw nothing");
        std::thread::sleep(Duration::from_millis(20));
    };
    let event: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(event["kind"], "PUT");
    assert_eq!(event["key"], "apps/n1/status");
    assert_eq!(event["value"], "up");
    assert_eq!(event["revision"], rev["revision"]);

    // A transaction, a lease with a key, a revoke that deletes it.
    let txn = ok(
        &[
            "kv",
            "--node",
            &addrs[2],
            "txn",
            "--cmp",
            "apps/n1/status:value=up",
            "--put",
            "apps/n1/status=busy",
            "--json",
        ],
        &home,
    );
    assert!(txn.contains("\"succeeded\":true"), "{txn}");
    let lease: serde_json::Value = serde_json::from_str(&ok(
        &[
            "lease", "--node", &addrs[0], "grant", "60000", "--group", "apps/n1", "--json",
        ],
        &home,
    ))
    .unwrap();
    let id = lease["id"].as_u64().unwrap().to_string();
    ok(
        &[
            "kv",
            "--node",
            &addrs[1],
            "put",
            "apps/n1/addr",
            "x",
            "--lease",
            &id,
        ],
        &home,
    );
    let ttl = ok(&["lease", "--node", &addrs[2], "ttl", &id, "--json"], &home);
    assert!(ttl.contains("\"ttl_ms\":60000"), "{ttl}");
    ok(&["lease", "--node", &addrs[2], "revoke", &id], &home);
    let gone = cadre(&["kv", "--node", &addrs[0], "get", "apps/n1/addr"], &home);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not found"));

    // Compaction: a watch from before it is refused with the reason.
    let now: serde_json::Value = serde_json::from_str(&ok(
        &["kv", "--node", &addrs[0], "get", "apps/n1/status", "--json"],
        &home,
    ))
    .unwrap();
    let rev = now["revision"].as_u64().unwrap().to_string();
    ok(
        &[
            "kv",
            "--node",
            &addrs[1],
            "compact",
            &rev,
            "--key",
            "apps/n1/status",
        ],
        &home,
    );
    let old = cadre(
        &["kv", "--node", &addrs[2], "watch", "apps/n1/", "--rev", "1"],
        &home,
    );
    assert!(!old.status.success());
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("compacted"),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );

    // Bad input: a clear error, and the nodes keep serving.
    let bad = cadre(
        &["kv", "--node", &addrs[0], "del", "--prefix", "apps/"],
        &home,
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("within one group"));
    let bad = cadre(
        &[
            "kv",
            "--node",
            &addrs[0],
            "txn",
            "--cmp",
            "apps/n1/status:size=1",
        ],
        &home,
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not one of"));
    assert_eq!(
        ok(&["kv", "--node", &addrs[1], "get", "apps/n1/status"], &home),
        "busy\n"
    );
    drop(procs);
    let _ = std::fs::remove_dir_all(&home);
}

/// The data directories of s0, s1 and s2 under `data`.
fn store_dirs(data: &std::path::Path) -> Vec<String> {
    ["s0", "s1", "s2"]
        .iter()
        .map(|n| data.join(n).to_str().unwrap().to_string())
        .collect()
}

/// `cadre node` arguments for store node `name` with data in `dir`, joining through `seed`.
fn store_args<'a>(name: &'a str, dir: &'a str, seed: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--name",
        name,
        "--roles",
        "store",
        "--profile",
        "local_test",
        "--data-dir",
        dir,
    ];
    if let Some(seed) = seed {
        args.extend(["--seed", seed]);
    }
    args
}

#[test]
fn a_store_process_that_lost_its_data_directory_rejoins_as_a_new_member() {
    let home = temp_home();
    let data = home.join("data");
    let dirs = store_dirs(&data);
    let mut s0 = NodeProc::start(&store_args("s0", &dirs[0], None), &home);
    let seed = s0.listening_addr();
    let mut s1 = NodeProc::start(&store_args("s1", &dirs[1], Some(&seed)), &home);
    let a1 = s1.listening_addr();
    let mut s2 = NodeProc::start(&store_args("s2", &dirs[2], Some(&seed)), &home);
    s2.listening_addr();
    s0.expect_line(&["store groups formed"]);
    for i in 0..8 {
        let key = format!("apps/n{i}/status");
        ok(&["kv", "--node", &a1, "put", &key, &format!("v{i}")], &home);
    }

    // s2 is killed, its data directory is lost, and it starts again under its name.
    drop(s2);
    std::fs::remove_dir_all(&dirs[2]).unwrap();
    let mut s2 = NodeProc::start(&store_args("s2", &dirs[2], Some(&seed)), &home);
    let a2 = s2.listening_addr();

    // The shards' leaders (on s0 and s1 now) replace its old members with its new ones.
    let deadline = Instant::now() + T;
    let words = ["came back with a new store file", "node=s2"];
    while !(s0.saw_line(&words, Duration::from_millis(100))
        || s1.saw_line(&words, Duration::from_millis(100)))
    {
        assert!(
            Instant::now() < deadline,
            "no leader replaced s2's old member"
        );
    }
    for i in 0..8 {
        let key = format!("apps/n{i}/status");
        assert_eq!(
            ok(&["kv", "--node", &a2, "get", &key], &home),
            format!("v{i}\n")
        );
    }
}
