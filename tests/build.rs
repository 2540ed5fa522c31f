//! Checks the command ids of the services the integration tests declare and keeps their
//! wire lock (mesh-build). Integration tests are crates of their own: each is a root.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mesh_build::configure()
        .root("src/lib.rs")
        .root("src/bin/mesh-node.rs")
        .root("tests/rpc_redis.rs")
        .manifest_out("mesh.manifest.json")
        .lock_file("mesh.lock")
        .compile()?;
    Ok(())
}
