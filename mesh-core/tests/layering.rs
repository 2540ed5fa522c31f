//! Every import inside mesh-core points down the layer list (shared/DESIGN.md): data flows
//! down on send and up on receive, so a layer never names one above it. And the sans-IO
//! protocol core (`rudp`) touches no sockets, clocks or runtime.
//!
//! The check reads the sources: `crate::<module>` paths outside comments and string
//! literals, mapped to the layer of the file's top-level module.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may use its own layer and those below.
const LAYERS: &[&[&str]] = &[
    &["codec"],
    &["rudp"],
    &["transport"],
    &["node"],
    &["discovery"],
    &["rpc"],
    &["shared", "shared_data"],
    &[
        "mesh",
        "config",
        "fuzzing",
        "telemetry",
        "metrics",
        "dashboard",
    ],
];

/// Upward imports still to be removed, each named with its reason. Keep this list empty
/// where possible: an entry here is a known defect, not a permission.
const KNOWN: &[(&str, &str, &str)] = &[];

/// What the sans-IO protocol core must not use.
const RUDP_FORBIDDEN: &[&str] = &[
    "tokio::",
    "std::net::UdpSocket",
    "socket2",
    "Instant::now",
    "SystemTime::now",
    "std::thread",
    "rand::rng()",
    "rand::random",
    "thread_rng",
    "OsRng",
];

/// Uses in `rudp` that are not the protocol's own, each with its reason: the keyed hasher's
/// `Default` draws per-process keys for the maps of the layers above (the endpoint itself
/// is keyed from the seed its caller gives).
const RUDP_KNOWN: &[(&str, &str)] = &[("rudp/hash.rs", "rand::random")];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file with comments and string/char literals blanked out (line breaks
/// kept, so line numbers stay right).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let keep_newlines = |s: &[u8], out: &mut Vec<u8>| {
        out.extend(s.iter().map(|c| if *c == b'\n' { b'\n' } else { b' ' }));
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|c| *c == b'\n').unwrap_or(rest.len());
            keep_newlines(&rest[..end], &mut out);
            i += end;
        } else if rest.starts_with(b"/*") {
            let end = rest
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(rest.len(), |p| p + 2);
            keep_newlines(&rest[..end], &mut out);
            i += end;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            keep_newlines(&rest[..end], &mut out);
            i += end;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(line, module)` of every `crate::<module>` path in `code`.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut at = 0;
        while let Some(p) = line[at..].find("crate::") {
            let start = at + p;
            let before = line[..start].chars().last();
            at = start + "crate::".len();
            // `mesh_core::` or `some_crate::` are not this crate's paths.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &line[at..];
            let m: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !m.is_empty() {
                out.push((n + 1, m));
            }
            // `use crate::{a, b::c}`: every name in the group.
            if let Some(inner) = rest.strip_prefix('{') {
                let group = inner.split('}').next().unwrap_or("");
                for item in group.split(',') {
                    let m: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !m.is_empty() {
                        out.push((n + 1, m));
                    }
                }
            }
        }
    }
    out
}

fn sources() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    (src, files)
}

fn rel(src: &Path, f: &Path) -> String {
    f.strip_prefix(src)
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

/// The upward imports of the sources, as `file:line: layer -> higher layer` lines.
fn upward_imports() -> Vec<String> {
    let (src, files) = sources();
    let mut found = Vec::new();
    for f in &files {
        let name = rel(&src, f);
        let top = name.split('/').next().unwrap_or("").trim_end_matches(".rs");
        let Some(own) = layer_of(top) else {
            assert_eq!(top, "lib", "{name}: a top-level module missing from LAYERS");
            continue;
        };
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        for (line, module) in crate_paths(&code) {
            let Some(theirs) = layer_of(&module) else {
                continue;
            };
            if theirs > own && !KNOWN.iter().any(|(k, m, _)| *k == name && *m == module) {
                found.push(format!(
                    "{name}:{line}: {top} imports {module}, a higher layer"
                ));
            }
        }
    }
    found
}

#[test]
fn every_import_points_down_the_layer_list() {
    let found = upward_imports();
    assert!(
        found.is_empty(),
        "upward imports (move the code down, or pass what is needed through a trait the \
         upper layer implements):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_known_exceptions_still_exist() {
    // An exception that no longer applies must be removed from KNOWN.
    let (src, _) = sources();
    for (file, module, why) in KNOWN {
        let code = code_only(&std::fs::read_to_string(src.join(file)).unwrap());
        assert!(
            crate_paths(&code).iter().any(|(_, m)| m == module),
            "{file} no longer imports {module} ({why}): remove it from KNOWN"
        );
    }
}

#[test]
fn rudp_is_sans_io() {
    let (src, files) = sources();
    let mut found = Vec::new();
    // The test-only files (the seeded simulator and the tests it drives) are exempt: the
    // simulator picks its start instant, as any caller of the core does.
    let test_only = [
        "rudp/sim.rs",
        "rudp/tests.rs",
        "rudp/attack_tests.rs",
        "rudp/auth_tests.rs",
        "rudp/wire/tests.rs",
    ];
    for f in files.iter().filter(|f| {
        rel(&src, f).starts_with("rudp/") && !test_only.contains(&rel(&src, f).as_str())
    }) {
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        // Unit tests may use a runtime and the clock to drive the core.
        let code = code.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            for bad in RUDP_FORBIDDEN {
                if line.contains(bad) && !RUDP_KNOWN.contains(&(rel(&src, f).as_str(), *bad)) {
                    found.push(format!("{}:{}: uses {bad}", rel(&src, f), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "rudp must stay free of sockets, clocks, threads and OS randomness (take them as \
         inputs):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scanner_sees_real_imports_and_ignores_comments_and_strings() {
    let code = code_only(
        "use crate::{codec, mesh::Mesh};\n// crate::mesh in a comment\nlet s = \"crate::mesh\";\n/* crate::mesh */ let x = crate::rpc::wire::ping();\nuse mesh_core::mesh;\n",
    );
    let got = crate_paths(&code);
    assert_eq!(
        got,
        vec![
            (1, "codec".to_string()),
            (1, "mesh".to_string()),
            (4, "rpc".to_string())
        ]
    );
}
