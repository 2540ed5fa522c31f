//! `cargo run --example cluster -- --nodes 5` works: the example binary (built by `cargo test`
//! with the package's examples) starts its own redis-server and five node processes, every
//! node sees and calls every other one, and everything stops: after `--for`, on Ctrl-C
//! (SIGINT), and even when the parent is killed with SIGKILL (the children and redis-server
//! die with it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mesh_tests::redis::RedisServer;

mod common;

const LIMIT: Duration = Duration::from_secs(30);

fn check_table(out: &str, n: usize) {
    let ones = vec![n.to_string(); n].join(" ");
    for step in [
        format!("every node sees all the others: {ones} "),
        format!(
            "{} of {} calls across {n} processes answered",
            n * (n - 1) * 10,
            n * (n - 1) * 10
        ),
        "median round trip in us, caller (row) -> callee (column):".to_owned(),
        format!("stopped {n} of {n} nodes cleanly"),
    ] {
        assert!(out.contains(&step), "no {step:?} in:\n{out}");
    }
    for i in 0..n {
        let row = format!("n{i:<4} 127.0.0.1:");
        assert!(out.contains(&row), "no row {row:?} in:\n{out}");
    }
    assert_eq!(
        out.matches(&format!("{}/{}", (n - 1) * 10, (n - 1) * 10))
            .count(),
        n,
        "{out}"
    );
}

#[test]
fn five_nodes_on_their_own_redis_then_stopped_after_for() {
    let mut cmd = common::example("cluster");
    cmd.args(["--nodes", "5", "--for", "0"]);
    let out = common::run_to_end(cmd);
    assert!(
        out.contains("redis: started redis-server on 127.0.0.1:"),
        "{out}"
    );
    check_table(&out, 5);
    assert!(out.contains("redis-server stopped"), "{out}");
}

#[test]
fn three_nodes_on_a_given_redis_which_keeps_running() {
    let mut redis = RedisServer::start().unwrap();
    let mut cmd = common::example("cluster");
    cmd.args(["--nodes", "3", "--for", "0", "--redis", &redis.url()]);
    let out = common::run_to_end(cmd);
    assert!(out.contains("(given)"), "{out}");
    check_table(&out, 3);
    assert!(!out.contains("redis-server stopped"), "{out}");
    assert!(redis.is_running());
}

/// A running cluster: the parent, what it printed up to "running until Ctrl-C", and the rest
/// of its output as it comes.
struct Running {
    parent: Child,
    head: String,
    lines: mpsc::Receiver<String>,
}

fn start_until_running(n: usize) -> Running {
    let mut cmd = common::example("cluster");
    let mut parent = cmd
        .args(["--nodes", &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = parent.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut head = String::new();
    loop {
        match lines.recv_timeout(LIMIT) {
            Ok(line) => {
                head.push_str(&line);
                head.push('\n');
                if line == "running until Ctrl-C" {
                    break;
                }
            }
            Err(e) => {
                let _ = parent.kill();
                panic!("no 'running' line ({e}); printed so far:\n{head}");
            }
        }
    }
    check_table_head(&head, n);
    Running {
        parent,
        head,
        lines,
    }
}

fn check_table_head(head: &str, n: usize) {
    let ones = vec![n.to_string(); n].join(" ");
    assert!(
        head.contains(&format!("every node sees all the others: {ones} ")),
        "{head}"
    );
}

/// The pids of the node processes and the redis-server port the parent printed.
fn pids_and_port(head: &str) -> (Vec<u32>, u16) {
    let pids = head
        .lines()
        .filter_map(|l| {
            l.strip_prefix("started node ")?
                .split(" as pid ")
                .nth(1)?
                .parse()
                .ok()
        })
        .collect();
    let port = head
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("redis: started redis-server on 127.0.0.1:")?;
            rest.split(' ').next()?.parse().ok()
        })
        .unwrap();
    (pids, port)
}

/// Whether a process runs (a zombie waiting for its reaper does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Waits (bounded; there is no event to await for a process that is not our child) until
/// `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "{what} after {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_stops_every_node_and_redis_cleanly() {
    let mut run = start_until_running(4);
    let (pids, port) = pids_and_port(&run.head);
    assert_eq!(pids.len(), 4);
    let status = Command::new("kill")
        .args(["-INT", &run.parent.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut tail = String::new();
    while let Ok(line) = run.lines.recv_timeout(LIMIT) {
        tail.push_str(&line);
        tail.push('\n');
    }
    let status = run.parent.wait().unwrap();
    assert!(status.success(), "{status}\n{}{tail}", run.head);
    for step in [
        "Ctrl-C",
        "stopped 4 of 4 nodes cleanly",
        "redis-server stopped",
        "done in",
    ] {
        assert!(tail.contains(step), "no {step:?} in:\n{tail}");
    }
    // The parent waited for its children: nothing is left.
    assert!(pids.iter().all(|&p| !alive(p)), "{pids:?}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn children_and_redis_die_with_a_killed_parent() {
    let mut run = start_until_running(3);
    let (pids, port) = pids_and_port(&run.head);
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&p| alive(p)));
    run.parent.kill().unwrap(); // SIGKILL: no destructor runs in the parent
    run.parent.wait().unwrap();
    wait_until("node processes still running", || {
        pids.iter().all(|&p| !alive(p))
    });
    wait_until("redis-server still answering", || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });
}
