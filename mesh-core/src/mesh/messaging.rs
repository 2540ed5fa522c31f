//! How the rpc layer's clients reach this node ([`Via`]), and what the node's layers
//! counted.

use super::Mesh;
use crate::rpc::{Messaging, RpcStats, Via};
use crate::rudp::Counters;

impl crate::rpc::process::sealed::Sealed for Mesh {}

/// Clients go through a mesh with `.on(&mesh)`.
impl Via for Mesh {
    fn messaging(&self) -> Messaging {
        Messaging(self.rpc().clone())
    }
}

/// What a node's layers counted since it started ([`Mesh::stats`]).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MeshStats {
    /// The messaging layer: malformed envelopes, late responses, one-way messages not run,
    /// incompatible signatures.
    pub rpc: RpcStats,
    /// The transport: datagrams, bytes, retransmissions, drops by reason.
    pub transport: Counters,
    /// Shared objects: owned, replicas, resyncs, forged pushes refused.
    pub shared: crate::shared::SharedStats,
}

impl Mesh {
    /// What this node's messaging layer and transport counted (and dropped, by reason)
    /// since it started.
    pub fn stats(&self) -> MeshStats {
        MeshStats {
            rpc: self.rpc().counters.snapshot(),
            transport: self.inner.transport.counters(),
            shared: self.shared().stats(),
        }
    }
}
