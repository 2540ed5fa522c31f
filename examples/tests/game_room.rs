//! `cargo run --example game_room` works: the example binary (built by `cargo test` with the
//! package's examples) is run and must print every step and exit 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[test]
fn the_game_room_example_runs() {
    let stdout = common::run_to_end(common::example("game_room"));
    assert_eq!(stdout.matches("seated in").count(), 2, "{stdout}");
    assert!(stdout.contains("joins: 44 turned away"), "{stdout}");
    for step in [
        "owner changed to",
        "arena: 8 players, 8 members",
        "garden: 8 players, 8 members",
        "the watcher saw the arena close: removed",
        "done: every replica agrees",
    ] {
        assert!(stdout.contains(step), "no {step:?} in:\n{stdout}");
    }
}
