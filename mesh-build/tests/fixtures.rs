//! mesh-build on real crates: each test writes a small Cargo workspace of fixture crates that
//! depend on mesh-core and use mesh-build in their build scripts, runs `cargo check` on it,
//! and reads what Cargo and mesh-build said.
//!
//! The fixtures share one target directory (`target/mesh-build-fixtures`), so mesh-core and
//! its dependencies are checked once for all of them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

struct Fixture {
    root: PathBuf,
}

struct Outcome {
    ok: bool,
    stderr: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Fixture {
    /// A workspace with `members`; each member is written with [`Fixture::krate`].
    fn new(name: &str) -> Fixture {
        let root = std::env::temp_dir().join(format!(
            "mesh-build-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        // The workspace's own lock: the same versions, and nothing to download.
        std::fs::copy(repo().join("Cargo.lock"), root.join("Cargo.lock")).unwrap();
        Fixture { root }
    }

    fn members(&self, members: &[&str]) {
        let list: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
        self.write(
            "Cargo.toml",
            &format!(
                "[workspace]\nresolver = \"3\"\nmembers = [{}]\n",
                list.join(", ")
            ),
        );
    }

    /// A crate `name` (a library, or a binary when `bin`), with the given path dependencies
    /// on sibling fixtures, using mesh-build with a lock file.
    fn krate(&self, name: &str, bin: bool, deps: &[&str], src: &str) {
        let repo = repo();
        let links = if bin {
            String::new()
        } else {
            format!("links = \"mesh-{name}\"\n")
        };
        let mut deps_text = format!(
            "mesh-core = {{ path = {:?} }}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n",
            repo.join("mesh-core")
        );
        for d in deps {
            deps_text.push_str(&format!("{d} = {{ path = \"../{d}\" }}\n"));
        }
        self.write(
            &format!("{name}/Cargo.toml"),
            &format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n{links}\n\
                 [dependencies]\n{deps_text}\n[build-dependencies]\nmesh-build = {{ path = {:?} }}\n",
                repo.join("mesh-build")
            ),
        );
        self.write(
            &format!("{name}/build.rs"),
            "fn main() -> Result<(), Box<dyn std::error::Error>> {\n    \
             mesh_build::configure()\n        .manifest_out(\"mesh.manifest.json\")\n        \
             .lock_file(\"mesh.lock\")\n        .compile()?;\n    Ok(())\n}\n",
        );
        let root = if bin { "src/main.rs" } else { "src/lib.rs" };
        self.write(&format!("{name}/{root}"), src);
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_default()
    }

    /// `cargo check -v` in the fixture workspace, with `env` set.
    fn check(&self, env: &[(&str, &str)]) -> Outcome {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&self.root).args([
            "check",
            "--offline",
            "--workspace",
            "-v",
            "--color",
            "never",
        ]);
        // What the outer `cargo test` set is not the fixture's business.
        for (k, _) in std::env::vars() {
            if (k.starts_with("CARGO_") && k != "CARGO_HOME")
                || k.starts_with("MESH_BUILD")
                || k.starts_with("DEP_")
                || k == "OUT_DIR"
                || k == "RUSTFLAGS"
            {
                cmd.env_remove(&k);
            }
        }
        cmd.env(
            "CARGO_TARGET_DIR",
            repo().join("target").join("mesh-build-fixtures"),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        Outcome {
            ok: out.status.success(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Whether `cargo check -v` ran the build script of package `name` this time.
fn ran_build_script(stderr: &str, name: &str) -> bool {
    stderr.lines().any(|l| {
        l.contains("Running `")
            && l.contains("build-script-build")
            && l.contains(&format!("/build/{name}-"))
    })
}

const GREETER: &str = "use mesh_core::mesh_service;\n\
#[mesh_service(id = 1000)]\n\
pub trait Greeter {\n    \
    async fn hello(&self, name: String) -> String;\n    \
    async fn bye(&self) -> u32;\n    \
    #[mesh(oneway)]\n    \
    async fn note(&self, text: String);\n\
}\n";

#[test]
fn ids_colliding_across_two_crates_fail_the_build_naming_both() {
    let f = Fixture::new("collide");
    f.members(&["fx_a", "fx_b", "fx_app"]);
    f.krate("fx_a", false, &[], GREETER);
    f.krate("fx_b", false, &[], "mod chat;\npub use chat::*;\n");
    f.write(
        "fx_b/src/chat.rs",
        "use mesh_core::mesh_service;\n\n#[mesh_service(id = 1002)]\npub trait Chat {\n    \
         async fn say(&self, text: String);\n    async fn history(&self) -> Vec<String>;\n}\n",
    );
    f.krate(
        "fx_app",
        true,
        &["fx_a", "fx_b"],
        "fn main() {\n    let _ = (fx_a::GreeterClient::HELLO, fx_b::ChatClient::SAY);\n}\n",
    );
    let out = f.check(&[]);
    assert!(!out.ok, "the build passed:\n{}", out.stderr);
    let want = "service `Greeter` (crate fx_a 0.1.0, src/lib.rs:3) and service `Chat` \
                (crate fx_b 0.1.0, src/chat.rs:4) both use command ids 1002: `Greeter` has \
                1000-1002, `Chat` has 1002-1003";
    assert!(
        out.stderr.contains(want),
        "no collision report:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("#[mesh_service(id = 1100)]"),
        "{}",
        out.stderr
    );
    // Each library alone is fine: the failure is the binary's, which sees both.
    assert!(
        !out.stderr
            .contains("failed to run custom build command for `fx_a v")
    );
    assert!(
        out.stderr
            .contains("failed to run custom build command for `fx_app v")
    );

    // Moving Chat to a free range fixes it; fx_b's own lock (written when it built alone)
    // sees the move as the wire change it is, so it is accepted on purpose.
    f.write(
        "fx_b/src/chat.rs",
        "use mesh_core::mesh_service;\n\n#[mesh_service(id = 1100)]\npub trait Chat {\n    \
         async fn say(&self, text: String);\n    async fn history(&self) -> Vec<String>;\n}\n",
    );
    let out = f.check(&[]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("`Chat::say` moved from id 1002 to id 1100"),
        "{}",
        out.stderr
    );
    let out = f.check(&[("MESH_BUILD_ACCEPT", "Chat")]);
    assert!(out.ok, "{}", out.stderr);
}

#[test]
fn lock_refuses_breaking_changes_and_takes_compatible_ones() {
    let f = Fixture::new("lock");
    f.members(&["fx_lock"]);
    f.krate("fx_lock", false, &[], GREETER);
    let out = f.check(&[]);
    assert!(out.ok, "{}", out.stderr);
    let lock = f.read("fx_lock/mesh.lock");
    assert!(
        lock.contains("\"signature\": \"Greeter::hello(String)->String\""),
        "{lock}"
    );
    assert!(lock.contains("\"kind\": \"oneway\""), "{lock}");

    // A compatible change: a method at the end, a new id. The lock grows quietly.
    let added = GREETER.replace(
        "    async fn note(&self, text: String);\n",
        "    async fn note(&self, text: String);\n    async fn count(&self) -> u64;\n",
    );
    f.write("fx_lock/src/lib.rs", &added);
    let out = f.check(&[]);
    assert!(out.ok, "{}", out.stderr);
    assert!(!out.stderr.contains("warning: fx_lock"), "{}", out.stderr);
    assert!(
        f.read("fx_lock/mesh.lock")
            .contains("Greeter::count()->u64")
    );

    // A breaking one: the argument of hello changes type.
    let broken = added.replace("hello(&self, name: String)", "hello(&self, name: u32)");
    f.write("fx_lock/src/lib.rs", &broken);
    let out = f.check(&[]);
    assert!(!out.ok, "a breaking change passed:\n{}", out.stderr);
    for part in [
        "wire-incompatible changes against",
        "id 1000 (`Greeter::hello`): signature `Greeter::hello(String)->String` is now \
         `Greeter::hello(u32)->String`",
        "MESH_BUILD_ACCEPT=Greeter::hello cargo build",
    ] {
        assert!(out.stderr.contains(part), "{part} missing:\n{}", out.stderr);
    }
    assert!(
        f.read("fx_lock/mesh.lock")
            .contains("Greeter::hello(String)->String")
    );

    // Removing a method, or moving one, breaks too.
    let moved = added.replace(
        "    async fn bye(&self) -> u32;\n",
        "    #[mesh(id = 1050)]\n    async fn bye(&self) -> u32;\n",
    );
    f.write("fx_lock/src/lib.rs", &moved);
    let out = f.check(&[]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("`Greeter::bye` moved from id 1001 to id 1050"),
        "{}",
        out.stderr
    );

    // In CI mode even a compatible change to the lock is refused.
    let more = added.replace(
        "    async fn count(&self) -> u64;\n",
        "    async fn count(&self) -> u64;\n    async fn more(&self) -> u64;\n",
    );
    f.write("fx_lock/src/lib.rs", &more);
    let out = f.check(&[("MESH_BUILD_LOCKED", "1")]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("is out of date and MESH_BUILD_LOCKED is set"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("added `Greeter::more` at id 1004"),
        "{}",
        out.stderr
    );

    // Accepting the breaking change on purpose rewrites the lock, with a warning.
    f.write("fx_lock/src/lib.rs", &broken);
    let out = f.check(&[("MESH_BUILD_ACCEPT", "Greeter::hello")]);
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr.contains("accepted a wire-incompatible change"),
        "{}",
        out.stderr
    );
    let lock = f.read("fx_lock/mesh.lock");
    assert!(lock.contains("Greeter::hello(u32)->String") && !lock.contains("hello(String)"));
    // And the next build, with nothing set, passes on the new lock.
    assert!(f.check(&[]).ok);
}

#[test]
fn shared_object_fields_renumbered_break_the_lock() {
    let f = Fixture::new("shared");
    f.members(&["fx_room"]);
    let room = "use mesh_core::SharedObject;\nuse serde::{Serialize, Deserialize};\n\
                #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, SharedObject)]\n\
                pub struct Room {\n    pub title: String,\n    #[shared(min = 0, max = 8)]\n    \
                pub players: u32,\n}\n";
    f.krate("fx_room", false, &[], room);
    let out = f.check(&[]);
    assert!(out.ok, "{}", out.stderr);
    let manifest = std::fs::read_dir(repo().join("target/mesh-build-fixtures/debug/build"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("out/mesh.manifest.json"))
        .filter(|p| p.exists())
        .map(|p| std::fs::read_to_string(p).unwrap())
        .find(|t| t.contains("\"package\": \"fx_room\""))
        .expect("the manifest of fx_room");
    let v: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let fields = &v["shared_objects"][0]["fields"];
    assert_eq!(fields[1]["name"], "players");
    assert_eq!(fields[1]["kind"], "counter");
    assert_eq!(fields[1]["bounds"], serde_json::json!([0, 8]));

    let renumbered = room.replace(
        "    pub title: String,\n",
        "    #[shared(id = 5)]\n    pub title: String,\n",
    );
    f.write("fx_room/src/lib.rs", &renumbered);
    let out = f.check(&[]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("field `Room.title` was renumbered from id 0 to id 5"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("MESH_BUILD_ACCEPT=Room.title"),
        "{}",
        out.stderr
    );
}

#[test]
fn only_the_files_read_rerun_the_check() {
    let f = Fixture::new("rerun");
    f.members(&["fx_rerun"]);
    f.krate(
        "fx_rerun",
        false,
        &[],
        "mod greeter;\npub use greeter::*;\n",
    );
    f.write("fx_rerun/src/greeter.rs", GREETER);
    // Not in the module tree: the compiler never reads it, and neither does mesh-build.
    f.write("fx_rerun/src/notes.rs", "// scratch\n");
    let out = f.check(&[]);
    assert!(out.ok, "{}", out.stderr);
    assert!(ran_build_script(&out.stderr, "fx_rerun"), "{}", out.stderr);

    f.write("fx_rerun/src/notes.rs", "// scratch, edited\n");
    let out = f.check(&[]);
    assert!(out.ok);
    assert!(
        !ran_build_script(&out.stderr, "fx_rerun"),
        "an unread file reran it:\n{}",
        out.stderr
    );

    f.write(
        "fx_rerun/src/greeter.rs",
        &GREETER.replace("async fn bye", "/// Bye.\n    async fn bye"),
    );
    let out = f.check(&[]);
    assert!(out.ok, "{}", out.stderr);
    assert!(
        ran_build_script(&out.stderr, "fx_rerun"),
        "a read file did not rerun it:\n{}",
        out.stderr
    );

    // MESH_BUILD_ACCEPT is watched too.
    let out = f.check(&[("MESH_BUILD_ACCEPT", "all")]);
    assert!(ran_build_script(&out.stderr, "fx_rerun"), "{}", out.stderr);
}

#[test]
fn a_syntax_error_is_reported_with_its_path_and_line() {
    let f = Fixture::new("syntax");
    f.members(&["fx_syntax"]);
    f.krate("fx_syntax", false, &[], "mod greeter;\n");
    f.write(
        "fx_syntax/src/greeter.rs",
        "use mesh_core::mesh_service;\n\n#[mesh_service(id = 1000)]\npub trait Greeter {\n    \
         async fn hello(&self, name: String) -> String\n}\n",
    );
    let out = f.check(&[]);
    assert!(!out.ok);
    let at = out
        .stderr
        .lines()
        .find(|l| l.contains("syntax error"))
        .unwrap_or_else(|| panic!("no syntax error:\n{}", out.stderr));
    assert!(
        at.contains("fx_syntax/src/greeter.rs:6:1: syntax error: ") && at.contains("`;`"),
        "{at}"
    );

    // A declaration the macro refuses is reported by the build with its place, too.
    f.write(
        "fx_syntax/src/greeter.rs",
        "use mesh_core::mesh_service;\n\n#[mesh_service(id = 1000)]\npub trait Greeter {\n    \
         fn hello(&self, name: &str) -> String;\n}\n",
    );
    let out = f.check(&[]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("src/greeter.rs:5:5: mesh service methods must be `async fn`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("src/greeter.rs:5:"), "{}", out.stderr);
}
