//! `cargo run --example game_room` works: the example binary (built by `cargo test` with the
//! package's examples) is run and must print every step and exit 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_game_room_example_runs() {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = profile_dir.join("examples").join("game_room");
    assert!(
        bin.exists(),
        "{} is missing: run with `cargo test`",
        bin.display()
    );
    let mut child = Command::new(bin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the game room example did not finish within 60 s");
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
