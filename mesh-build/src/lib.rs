//! # mesh-build
//!
//! A build-script helper for crates that declare mesh services: it reads the crate's
//! sources with the same checks the `#[mesh_service]` and `#[derive(SharedObject)]` macros
//! run (through `mesh-syntax`), and
//!
//! * writes a **manifest** into `OUT_DIR`: every service, method, command id, argument and
//!   return type as written, delivery kind, signature fingerprint, and every shared object's
//!   fields with their ids and kinds;
//! * fails the build when **command ids collide** anywhere in it: between two services of
//!   the crate, or between this crate and any crate below it that uses mesh-build (each
//!   publishes its manifests to dependents through Cargo's `links` metadata), naming both
//!   services, both crates and the overlapping ids;
//! * keeps a **wire-compatibility lock** (`mesh.lock`): a change that would break nodes still
//!   running the locked version (a method removed or moved, an id reused with another
//!   signature or delivery, a shared-object field renumbered or retyped) fails the build
//!   with the exact difference; a compatible change (a new method at a new id, a new field)
//!   updates the lock quietly.
//!
//! ## Use
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "rooms"
//! links = "mesh-rooms"   # publishes the manifest to crates that depend on this one
//! build = "build.rs"
//!
//! [build-dependencies]
//! mesh-build = "0.1"
//! ```
//!
//! `build.rs`:
//!
//! ```no_run
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     mesh_build::configure()
//!         .manifest_out("mesh.manifest.json")
//!         .lock_file("mesh.lock")
//!         .compile()?;
//!     Ok(())
//! }
//! ```
//!
//! What the lock check sees, on two versions of a service read from text (the build reads
//! files the same way):
//!
//! ```
//! let v1 = "#[mesh_service(id = 1000)] pub trait Greeter {
//!     async fn hello(&self, name: String) -> String;
//! }";
//! let v2 = "#[mesh_service(id = 1000)] pub trait Greeter {
//!     async fn hello(&self, name: String) -> String;
//!     async fn bye(&self) -> u32;
//! }";
//! let read = |text| mesh_build::manifest_from_source("greeter", "lib.rs", text);
//! let (old, new) = (read(v1)?, read(v2)?);
//! assert_eq!(new.services[0].methods[1].id, 1001);
//! let changes = mesh_build::diff(&mesh_build::Lock::of(&old), &mesh_build::Lock::of(&new));
//! assert_eq!(changes.len(), 1);
//! assert!(!changes[0].breaking, "a new method at a new id is compatible");
//! assert_eq!(changes[0].text, "added `Greeter::bye` at id 1001");
//! # Ok::<(), mesh_build::BuildError>(())
//! ```
//!
//! The manifest's path is also given to the crate as `env!("MESH_MANIFEST")`, so a node can
//! serve or print it (`include_str!(env!("MESH_MANIFEST"))`).
//!
//! ## Why `links` metadata and not a link-time symbol
//!
//! A symbol per command id would make the linker refuse a duplicate, but the message would
//! name a mangled symbol, not two services; rlib members that nothing references are not
//! even loaded, so some duplicates would pass; and the check would come last, after the
//! whole build. Through `links`, each crate's build script sees the manifests of every crate
//! below it (each republishes what it received), checks before anything compiles, and
//! reports in words. The check runs in every crate that uses mesh-build, so the binary's
//! crate (or the top library) sees the whole build: give it a `build.rs` too.
//!
//! ## Changing a locked service
//!
//! * Add a method: put it at the end (or pin a new id); the lock grows by itself.
//! * Change a method's arguments or return type: add a new method at a new id and keep the
//!   old one until no node runs the old version.
//! * When no node runs the old version any more, accept the change on purpose:
//!   `MESH_BUILD_ACCEPT=Greeter::hello cargo build` (a method), `=Greeter` (a service or a
//!   shared object), `=Room.title` (a field) or `=all`, comma-separated; the lock is
//!   rewritten and a warning lists what was accepted.
//! * In CI, `MESH_BUILD_LOCKED=1` refuses any change to the lock (as `cargo --locked`).
//!
//! Modules under `#[cfg(test)]` are skipped: they are never linked into a node.

mod collide;
mod error;
mod lock;
mod manifest;
mod scan;

use std::path::{Path, PathBuf};

pub use collide::collisions;
pub use error::BuildError;
pub use lock::{Change, LOCK_FORMAT, Lock, LockedField, LockedMethod, diff};
pub use manifest::{
    Arg, FORMAT, FieldEntry, Location, Manifest, MethodEntry, ServiceEntry, SharedObjectEntry,
};

/// The metadata key under which manifests are published (`DEP_<LINKS>_MESH_MANIFESTS`).
const METADATA_KEY: &str = "mesh_manifests";

/// Starts a configuration with the defaults: crate roots `src/lib.rs` and `src/main.rs`
/// (those that exist), manifest `mesh.manifest.json` in `OUT_DIR`, no lock file, publishing on.
pub fn configure() -> Builder {
    Builder {
        roots: Vec::new(),
        manifest_out: PathBuf::from("mesh.manifest.json"),
        lock_file: None,
        publish: true,
        check_dependencies: true,
    }
}

/// What [`configure`] starts; [`compile`](Builder::compile) runs it.
#[derive(Clone, Debug)]
#[must_use = "nothing happens until .compile()"]
pub struct Builder {
    roots: Vec<PathBuf>,
    manifest_out: PathBuf,
    lock_file: Option<PathBuf>,
    publish: bool,
    check_dependencies: bool,
}

impl Builder {
    /// Adds a crate root to read (relative to the package), e.g. `src/bin/node.rs`; the
    /// first call replaces the defaults.
    pub fn root(mut self, path: impl Into<PathBuf>) -> Builder {
        self.roots.push(path.into());
        self
    }

    /// The manifest's file name in `OUT_DIR` (an absolute path is used as it is).
    pub fn manifest_out(mut self, path: impl Into<PathBuf>) -> Builder {
        self.manifest_out = path.into();
        self
    }

    /// Keeps a wire-compatibility lock at `path` (relative to the package), created on the
    /// first build. Commit it.
    pub fn lock_file(mut self, path: impl Into<PathBuf>) -> Builder {
        self.lock_file = Some(path.into());
        self
    }

    /// Whether to publish the manifests to dependent crates (default on; it needs a `links`
    /// key in the package of a library).
    pub fn publish(mut self, publish: bool) -> Builder {
        self.publish = publish;
        self
    }

    /// Whether to check this crate's ids against the manifests dependencies published
    /// (default on).
    pub fn check_dependencies(mut self, check: bool) -> Builder {
        self.check_dependencies = check;
        self
    }

    /// Reads the sources, checks ids and the lock, writes the manifest (and the lock when it
    /// changes compatibly) and tells Cargo what to watch. Returns the manifest.
    pub fn compile(self) -> Result<Manifest, BuildError> {
        let env = |k: &'static str| std::env::var(k).map_err(|_| BuildError::NotInBuildScript(k));
        let package_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
        let out_dir = PathBuf::from(env("OUT_DIR")?);
        let package = env("CARGO_PKG_NAME")?;
        let version = env("CARGO_PKG_VERSION")?;
        let links = std::env::var("CARGO_MANIFEST_LINKS").ok();

        let roots: Vec<PathBuf> = if self.roots.is_empty() {
            ["src/lib.rs", "src/main.rs"]
                .iter()
                .map(|r| package_dir.join(r))
                .filter(|p| p.exists())
                .collect()
        } else {
            self.roots.iter().map(|r| package_dir.join(r)).collect()
        };
        let has_lib = roots.iter().any(|r| r.ends_with("lib.rs"));
        if self.publish && has_lib && links.is_none() {
            return Err(BuildError::NoLinks { package });
        }
        println!("cargo::rerun-if-env-changed=MESH_BUILD_ACCEPT");
        println!("cargo::rerun-if-env-changed=MESH_BUILD_LOCKED");
        // Watch the roots even if reading them fails, so fixing them reruns the check.
        for r in &roots {
            println!("cargo::rerun-if-changed={}", r.display());
        }
        let found = scan::scan(&package_dir, &roots)?;
        for f in &found.files {
            if !roots.contains(f) {
                println!("cargo::rerun-if-changed={}", f.display());
            }
        }
        let manifest = Manifest {
            format: FORMAT,
            package,
            version,
            services: found.services,
            shared_objects: found.shared_objects,
        };

        // Ids: this crate against itself and everything below it.
        let deps = dependency_manifests()?;
        let mut all = vec![manifest.clone()];
        if self.check_dependencies {
            for (_, m) in &deps {
                if !all
                    .iter()
                    .any(|x| x.package == m.package && x.version == m.version)
                {
                    all.push(m.clone());
                }
            }
        }
        let clashes = collisions(&all);
        if !clashes.is_empty() {
            return Err(BuildError::Collision(clashes));
        }

        if let Some(lock) = &self.lock_file {
            check_lock(&package_dir.join(lock), &manifest, &found.files)?;
        }

        let out = out_dir.join(&self.manifest_out);
        let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
        write_if_changed(&out, &text)?;
        println!("cargo::rustc-env=MESH_MANIFEST={}", out.display());
        if self.publish && links.is_some() {
            let mut paths = vec![out];
            for (p, _) in deps {
                if !paths.contains(&p) {
                    paths.push(p);
                }
            }
            if let Ok(joined) = std::env::join_paths(&paths) {
                println!(
                    "cargo::metadata={METADATA_KEY}={}",
                    joined.to_string_lossy()
                );
            }
        }
        Ok(manifest)
    }
}

/// The manifest of one source text, read as the build reads a file (`mod x;` declarations
/// are not followed): for tools, tests and examples that compare two versions of a service
/// with [`Lock::of`] and [`diff`] without a build.
///
/// ```
/// let v1 = "#[mesh_service(id = 10)] trait T { async fn a(&self, x: String) -> u32; }";
/// let v2 = "#[mesh_service(id = 10)] trait T { async fn a(&self, x: u64) -> u32; }";
/// let old = mesh_build::Lock::of(&mesh_build::manifest_from_source("demo", "v1.rs", v1)?);
/// let new = mesh_build::Lock::of(&mesh_build::manifest_from_source("demo", "v2.rs", v2)?);
/// let changes = mesh_build::diff(&old, &new);
/// assert!(changes[0].breaking);
/// assert_eq!(changes[0].key, "T::a");
/// # Ok::<(), mesh_build::BuildError>(())
/// ```
pub fn manifest_from_source(package: &str, file: &str, text: &str) -> Result<Manifest, BuildError> {
    let found = scan::scan_text(file, text)?;
    Ok(Manifest {
        format: FORMAT,
        package: package.to_string(),
        version: String::new(),
        services: found.services,
        shared_objects: found.shared_objects,
    })
}

/// The manifests dependencies published (`DEP_*_MESH_MANIFESTS`), with their paths.
fn dependency_manifests() -> Result<Vec<(PathBuf, Manifest)>, BuildError> {
    let suffix = format!("_{}", METADATA_KEY.to_uppercase());
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("DEP_") && k.ends_with(&suffix))
        .collect();
    vars.sort();
    let mut out: Vec<(PathBuf, Manifest)> = Vec::new();
    for (_, v) in vars {
        for path in std::env::split_paths(&v) {
            if out.iter().any(|(p, _)| *p == path) {
                continue;
            }
            let corrupt = |reason: String| BuildError::Corrupt {
                path: path.clone(),
                what: "manifest",
                reason,
                fix: "build every crate with the same mesh-build version (cargo update -p mesh-build)",
            };
            let text = std::fs::read_to_string(&path).map_err(|e| corrupt(e.to_string()))?;
            let m: Manifest = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
            if m.format != FORMAT {
                return Err(corrupt(format!(
                    "format {} (this mesh-build reads {FORMAT})",
                    m.format
                )));
            }
            out.push((path, m));
        }
    }
    Ok(out)
}

/// Compares the sources with the lock; updates it when that is allowed.
fn check_lock(path: &Path, manifest: &Manifest, sources: &[PathBuf]) -> Result<(), BuildError> {
    println!("cargo::rerun-if-changed={}", path.display());
    let new = Lock::of(manifest);
    let old = match std::fs::read_to_string(path) {
        Ok(text) => Some(
            serde_json::from_str::<Lock>(&text).map_err(|e| BuildError::Corrupt {
                path: path.to_path_buf(),
                what: "lock file",
                reason: e.to_string(),
                fix: "restore it from version control (or delete it to start a new lock)",
            })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(BuildError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let changes = match &old {
        Some(old) if old.format != LOCK_FORMAT => {
            return Err(BuildError::Corrupt {
                path: path.to_path_buf(),
                what: "lock file",
                reason: format!(
                    "format {} (this mesh-build reads {LOCK_FORMAT})",
                    old.format
                ),
                fix: "build with the mesh-build version that wrote it",
            });
        }
        Some(old) => diff(old, &new),
        None => vec![Change {
            breaking: false,
            key: String::new(),
            text: format!("{} does not exist yet", path.display()),
        }],
    };
    if changes.is_empty() {
        return Ok(());
    }
    let accept: Vec<String> = std::env::var("MESH_BUILD_ACCEPT")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let refused: Vec<&Change> = changes
        .iter()
        .filter(|c| c.breaking && !c.accepted_by(&accept))
        .collect();
    if !refused.is_empty() {
        let mut keys: Vec<&str> = refused.iter().map(|c| c.key.as_str()).collect();
        keys.dedup();
        return Err(BuildError::Breaking {
            lock: path.to_path_buf(),
            changes: refused.iter().map(|c| c.text.clone()).collect(),
            accept: keys.join(","),
        });
    }
    if std::env::var_os("MESH_BUILD_LOCKED").is_some_and(|v| !v.is_empty() && v != "0") {
        return Err(BuildError::LockOutOfDate {
            lock: path.to_path_buf(),
            changes: changes.iter().map(|c| c.text.clone()).collect(),
        });
    }
    for c in changes.iter().filter(|c| c.breaking) {
        println!(
            "cargo::warning=accepted a wire-incompatible change (MESH_BUILD_ACCEPT): {}",
            c.text
        );
    }
    write_if_changed(path, &new.to_text())?;
    // Cargo reruns a build script when a watched file is newer than the script's last run,
    // and the lock was just written by this run: date it as the sources it was made from, so
    // the next build does not run the check again for nothing.
    let newest = sources
        .iter()
        .filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .max();
    if let Some(t) = newest
        && let Ok(f) = std::fs::File::options().write(true).open(path)
    {
        let _ = f.set_modified(t);
    }
    Ok(())
}

fn write_if_changed(path: &Path, text: &str) -> Result<(), BuildError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BuildError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| BuildError::Write {
        path: path.to_path_buf(),
        source,
    })
}
