//! `cargo run --example quickstart` works, with the in-process registry and with Redis: the
//! example binary (built by `cargo test` with the package's examples) is run and must print
//! every step and exit 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use mesh_tests::redis::RedisServer;

/// `target/<profile>/examples/quickstart`, next to this test's own `deps` folder.
fn quickstart() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = profile_dir.join("examples").join("quickstart");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test` (which builds the examples)",
        bin.display()
    );
    bin
}

/// Runs the quickstart (killed after 60 s) and returns what it printed.
fn run(redis_url: Option<&str>) -> String {
    let mut cmd = Command::new(quickstart());
    cmd.env_remove("REDIS_URL");
    if let Some(url) = redis_url {
        cmd.env("REDIS_URL", url);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the quickstart did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn check_steps(out: &str) {
    for step in [
        "1. plain call:  hello, bob",
        "2. remote error: DivByZero",
        "3. balanced:",
        "4. broadcast:",
        "5. one-way:",
        "done",
    ] {
        assert!(out.contains(step), "no {step:?} in:\n{out}");
    }
    assert_eq!(out.matches("4. broadcast:").count(), 2, "{out}");
    assert_eq!(out.matches("5. one-way:").count(), 2, "{out}");
}

#[test]
fn quickstart_runs_with_the_in_process_registry() {
    let out = run(None);
    assert!(out.contains("in-process registry"), "{out}");
    check_steps(&out);
}

#[test]
fn quickstart_runs_with_redis() {
    let redis = RedisServer::start().unwrap();
    let out = run(Some(&redis.url()));
    assert!(out.contains("discovery: Redis at"), "{out}");
    check_steps(&out);
}
