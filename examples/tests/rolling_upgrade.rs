//! `cargo run --example rolling_upgrade` works: the fleet moves from v1 to v2 with no failed
//! call, the new method reaches only upgraded nodes, and the breaking version is refused by
//! the compatibility check and at run time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[test]
fn rolling_upgrade_loses_no_call_and_refuses_the_breaking_version() {
    let out = common::run_to_end(common::example("rolling_upgrade"));
    for step in [
        "1. fleet: 3 nodes on v1",
        "2. upgraded node 2: fleet [\"v2\", \"v2\", \"v2\"]",
        "3. reserve on a v1 node directly: NoHandler",
        "4. mesh-build, v1 -> v2.rs: accepted: added `Inventory::reserve` at id 3001",
        "4. mesh-build, v1 -> v2_bad.rs: refused: id 3000 (`Inventory::count`): signature \
         `Inventory::count(String)->u32` is now `Inventory::count(u64)->u32`",
        "4. v1 caller -> breaking node: Incompatible",
        "done",
    ] {
        assert!(out.contains(step), "no {step:?} in:\n{out}");
    }
    assert_eq!(
        out.matches("3. reserve (balanced): answered by an upgraded node")
            .count(),
        2,
        "{out}"
    );
    let summary = out
        .lines()
        .find(|l| l.starts_with("2. upgrade done"))
        .unwrap();
    assert!(summary.ends_with(", 0 failed"), "{summary}");
}
