//! `cargo run --example sentinel` works: the example binary (built by `cargo test` with the
//! package's examples) starts a master, a replica and three sentinels, discovers through
//! them, survives a failover (SIGKILL of the master) and exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[test]
fn the_sentinel_example_survives_a_failover() {
    let out = common::run_to_end(common::example("sentinel"));
    for step in [
        "discovery through Sentinel: 3 nodes see each other",
        "killed the master",
        "a call from a to b while the master is down: answered by b",
        "failover: +switch-master mymaster 127.0.0.1 ",
        "now reports role:master",
        "after the failover a new node d joined: all 4 nodes see 4",
        "nodes that left any view during the failover: 0",
        "all 4 nodes healthy",
        "every node called d: ok",
        "done in",
    ] {
        assert!(out.contains(step), "no {step:?} in:\n{out}");
    }
    // The replica that was promoted is the one the sentinels switched to.
    let replica = out
        .lines()
        .find_map(|l| l.split(", replica ").nth(1)?.split(',').next())
        .unwrap();
    let (ip, port) = replica.split_once(':').unwrap();
    let switched = format!("{ip} {port} after ");
    assert!(out.contains(&switched), "no {switched:?} in:\n{out}");
}
