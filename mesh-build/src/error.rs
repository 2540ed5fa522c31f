//! What can stop a build, each saying what happened and what to do.

use std::path::PathBuf;

/// Why [`Builder::compile`](crate::Builder::compile) refused the build.
///
/// `Debug` prints the same text as `Display`, so `fn main() -> Result<(), Box<dyn Error>>`
/// in `build.rs` shows a readable message.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An environment variable Cargo sets for build scripts is missing.
    #[error("{0} is not set: mesh-build runs from a build script (build.rs), under Cargo")]
    NotInBuildScript(&'static str),
    /// A source file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A source file does not parse.
    #[error("{}:{line}:{column}: syntax error: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A `mod name;` whose file is in none of the places the compiler looks.
    #[error(
        "{}:{line}: `mod {module};` has no file (looked for {}); add the file or a #[path] attribute",
        path.display(),
        looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    MissingModule {
        /// The module.
        module: String,
        /// The file declaring it.
        path: PathBuf,
        /// The line of the declaration.
        line: usize,
        /// Where it was looked for.
        looked: Vec<PathBuf>,
    },
    /// More source files than any real crate has (a `#[path]` cycle?).
    #[error("more than {limit} source files: check the #[path] attributes for a cycle")]
    TooManyFiles {
        /// The limit.
        limit: usize,
    },
    /// A service or shared object fails the macros' checks.
    #[error("mesh declarations with errors (the same the compiler will report):\n{}", problems.join("\n"))]
    Invalid {
        /// `file:line:column: message` each.
        problems: Vec<String>,
    },
    /// Two services in this build use the same command ids.
    #[error("command ids collide in this build:\n{}", .0.join("\n"))]
    Collision(Vec<String>),
    /// A change breaks nodes that run the locked version.
    #[error(
        "wire-incompatible changes against {}:\n{}\n\nNodes still running the locked version would \
         misread these commands. Keep the old method and add the new one at a new command id \
         (#[mesh(id = N)] or a new method at the end), or, if no node runs the old version, accept \
         the change on purpose: MESH_BUILD_ACCEPT={} cargo build (or MESH_BUILD_ACCEPT=all)",
        lock.display(),
        changes.iter().map(|c| format!("  - {c}")).collect::<Vec<_>>().join("\n"),
        accept
    )]
    Breaking {
        /// The lock file.
        lock: PathBuf,
        /// One line per breaking difference.
        changes: Vec<String>,
        /// The `MESH_BUILD_ACCEPT` value that accepts them all.
        accept: String,
    },
    /// `MESH_BUILD_LOCKED` is set and the lock file would change.
    #[error(
        "{} is out of date and MESH_BUILD_LOCKED is set:\n{}\nrun the build without \
         MESH_BUILD_LOCKED and commit the lock file",
        lock.display(),
        changes.iter().map(|c| format!("  - {c}")).collect::<Vec<_>>().join("\n")
    )]
    LockOutOfDate {
        /// The lock file.
        lock: PathBuf,
        /// What would change.
        changes: Vec<String>,
    },
    /// A lock file or a dependency's manifest is not what mesh-build writes.
    #[error("{} is not a mesh-build {what}: {reason}; {fix}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// `lock file` or `manifest`.
        what: &'static str,
        /// What is wrong.
        reason: String,
        /// What to do.
        fix: &'static str,
    },
    /// A library crate that uses mesh-build has no `links` key.
    #[error(
        "package `{package}` has a library but no `links` key, so crates that depend on it cannot \
         check their command ids against its own: add `links = \"mesh-{package}\"` under \
         [package] in its Cargo.toml (or call .publish(false) in build.rs to opt out)"
    )]
    NoLinks {
        /// The package.
        package: String,
    },
    /// Writing the manifest or the lock failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl std::fmt::Debug for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
