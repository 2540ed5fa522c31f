//! Nodes for the integration tests, started the same way in every test file (the same shape
//! as `mesh-core/tests/common`): short intervals, and a panic naming what failed to start.

use std::time::Duration;

use mesh_core::{Discovery, LocalRegistry, Mesh};

/// The discovery interval of test nodes (short, so views converge fast).
pub const TICK: Duration = Duration::from_millis(100);

/// How long any wait of a test may take.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A started node of `node_type` discovering through the in-process `registry`.
///
/// # Panics
/// If the node does not start (a test failure).
pub async fn node(registry: &LocalRegistry, node_type: &str) -> Mesh {
    started(
        Mesh::builder()
            .node_type(node_type)
            .discovery(Discovery::local_registry(registry))
            .update_interval(TICK)
            .start()
            .await,
    )
}

/// A started node of `node_type` discovering through the Redis at `url`, under `prefix`.
///
/// # Panics
/// If the node does not start (a test failure).
pub async fn redis_node(url: &str, prefix: &str, node_type: &str) -> Mesh {
    started(
        Mesh::builder()
            .node_type(node_type)
            .discovery(Discovery::redis(url))
            .prefix(prefix)
            .update_interval(TICK)
            .start()
            .await,
    )
}

#[allow(
    clippy::panic,
    reason = "a node that does not start fails the test that needs it"
)]
fn started(r: Result<Mesh, mesh_core::MeshError>) -> Mesh {
    match r {
        Ok(m) => m,
        Err(e) => panic!("a test node did not start: {e}"),
    }
}
