//! Checks the benchmark services' command ids and keeps their wire lock (mesh-build).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mesh_build::configure()
        .manifest_out("mesh.manifest.json")
        .lock_file("mesh.lock")
        .compile()?;
    Ok(())
}
