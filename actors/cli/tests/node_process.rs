//! `cadre node` processes on 127.0.0.1: they join through a seed (gossip), stop gracefully on SIGTERM
//! with exit code 0, and refuse bad configuration naming the field. Every process is killed by
//! a guard, also when an assertion fails.

mod common;

use common::*;

#[test]
fn nodes_join_through_a_seed_and_stop_gracefully_on_sigterm() {
    let home = temp_home();
    let mut a = NodeProc::start(&["--listen", "127.0.0.1:0", "--name", "a"], &home);
    let addr = a.listening_addr();
    let mut b = NodeProc::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--name",
            "b",
            "--seed",
            &addr,
            "--roles",
            "worker",
        ],
        &home,
    );
    b.expect_line(&["joined the cluster"]);
    a.expect_line(&["member up"]);
    for node in [&mut a, &mut b] {
        node.terminate();
        node.expect_exit(0);
        node.expect_line(&["stopped"]);
    }
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn a_sigterm_while_the_node_starts_is_a_graceful_stop_once_it_has_started() {
    let home = temp_home();
    let mut n = NodeProc::start_logging(
        &["--listen", "127.0.0.1:0", "--name", "early"],
        &home,
        "info,cadre::node_cmd=debug",
    );
    // The first moment the node listens for signals: it has not started yet.
    n.expect_line(&["listening for SIGTERM"]);
    n.terminate();
    n.expect_exit(0);
    n.expect_line(&["leaving the cluster"]);
    n.expect_line(&["stopped"]);
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn bad_configuration_exits_non_zero_naming_the_field() {
    let home = temp_home();
    let mut n = NodeProc::start(&["--listen", "127.0.0.1:0", "--roles", "Store"], &home);
    let line = n.expect_line(&["`roles`"]);
    assert!(line.contains("invalid configuration"), "{line}");
    n.expect_exit(1);
    let _ = std::fs::remove_dir_all(&home);
}
