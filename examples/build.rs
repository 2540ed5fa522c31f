//! Each example is a binary of its own: mesh-build checks each one's command ids and keeps
//! its wire lock in `locks/<example>.lock`. (`rolling_upgrade` is left out on purpose: it
//! holds three versions of one service, to compare them.)

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rerun-if-changed=examples");
    let mut names: Vec<String> = std::fs::read_dir("examples")?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for name in names {
        mesh_build::configure()
            .root(Path::new("examples").join(format!("{name}.rs")))
            .manifest_out(format!("{name}.manifest.json"))
            .lock_file(Path::new("locks").join(format!("{name}.lock")))
            .publish(false)
            .compile()?;
    }
    Ok(())
}
