//! `cargo run --example fanout` works: the example binary (built by `cargo test` with the
//! package's examples) is run and must print every step and exit 0, with exactly one copy of
//! each relayed message per worker and no node sending more than the limit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

fn run(nodes: usize) -> String {
    let mut cmd = common::example("fanout");
    cmd.args(["--nodes", &nodes.to_string()]);
    common::run_to_end(cmd)
}

fn check(out: &str, n: usize) {
    let last = 4 + 200;
    for step in [
        format!(" sees {n} workers serving Fleet"),
        format!("{n} copies in all for {n} workers; no node sent more than 2;"),
        format!("limit   1: ctl sent 1, the busiest worker forwarded 1, {n} copies in all"),
        format!("limit   4: ctl sent {}, ", n.min(4)),
        format!("limit {n:>3}: ctl sent {n}, the busiest worker forwarded 0, {n} copies in all"),
        format!("200 deploys in a row reached all {n} workers"),
        format!("{n} answers, {n} workers at v{last} with every deploy in order"),
        format!("{} answers, 1 errors", n - 1),
        format!("worker-{:02} failed: ", n - 1),
        "peer unreachable".to_owned(),
        "done".to_owned(),
    ] {
        assert!(out.contains(&step), "no {step:?} in:\n{out}");
    }
    assert_eq!(out.matches("sender seen: ctl").count(), n, "{out}");
}

#[test]
fn the_fanout_example_runs_with_twelve_workers() {
    check(&run(12), 12);
}

#[test]
fn the_fanout_example_runs_with_three_workers() {
    check(&run(3), 3);
}
