//! `cargo run --example quickstart` works, with the in-process registry and with Redis: the
//! example binary (built by `cargo test` with the package's examples) is run and must print
//! every step and exit 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mesh_tests::redis::RedisServer;

mod common;

/// Runs the quickstart (killed after 60 s) and returns what it printed.
fn run(redis_url: Option<&str>) -> String {
    let mut cmd = common::example("quickstart");
    cmd.env_remove("REDIS_URL");
    if let Some(url) = redis_url {
        cmd.env("REDIS_URL", url);
    }
    common::run_to_end(cmd)
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
