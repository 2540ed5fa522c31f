//! Helpers shared by the integration tests: nodes on one in-process registry, and bounded
//! waits on what their views show.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod proxy;

use std::time::Duration;

use mesh_core::{Discovery, LocalRegistry, Mesh};
use tokio::time::timeout;

/// How long any wait of a test may take.
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

/// A started node of `node_type` discovering through `registry`.
pub(crate) async fn node(registry: &LocalRegistry, node_type: &str) -> Mesh {
    Mesh::builder()
        .node_type(node_type)
        .discovery(Discovery::local_registry(registry))
        .start()
        .await
        .unwrap()
}

/// Waits until `mesh` sees `n` nodes of `node_type` serving `command`.
pub(crate) async fn wait_serving(mesh: &Mesh, node_type: &str, command: u16, n: usize) {
    timeout(LIMIT, async {
        while mesh.nodes_serving(node_type, command).len() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the view lists the served commands");
}
