//! How the rpc layer's clients reach this node ([`Via`]), and what the node's layers
//! counted.

use super::Mesh;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::rpc::{CommandStats, Messaging, Rpc, RpcStats, Via};
use crate::rudp::Counters;
use crate::transport::Transport;

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
    /// What each registered command served (requests run, errors), by command id.
    pub commands: Vec<CommandStats>,
    /// Each peer this node has a session with: RTT, losses, bytes.
    pub peers: Vec<PeerStats>,
    /// Calls of this node waiting for their response now.
    pub in_flight: u64,
}

/// The session of a node with one peer ([`MeshStats::peers`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PeerStats {
    /// The peer's address.
    pub addr: String,
    /// The peer as the view knows it (`ADDR#INCARNATION`), if it is in the view.
    pub node: Option<String>,
    /// Smoothed round-trip time, in microseconds.
    pub srtt_us: u64,
    /// The 99th percentile of the last 128 round trips, in microseconds (0 before the first).
    pub rtt_p99_us: u64,
    /// Data packets sent to the peer.
    pub packets_out: u64,
    /// Of those, packets declared lost, whose frames were sent again.
    pub retransmits: u64,
    /// Bytes received from the peer (authenticated data packets).
    pub bytes_in: u64,
    /// Bytes sent to the peer.
    pub bytes_out: u64,
}

impl Mesh {
    /// What this node's messaging layer and transport counted (and dropped, by reason)
    /// since it started.
    pub fn stats(&self) -> MeshStats {
        collect(self.rpc(), &self.inner.transport, &self.inner.shared)
    }
}

/// Copies a node's figures into the metrics recorder every
/// [`SAMPLE_INTERVAL`](crate::metrics::SAMPLE_INTERVAL) until `stop`.
pub(super) async fn sample_metrics(
    rpc: Arc<Rpc>,
    shared: Arc<crate::shared::Runtime>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(crate::metrics::SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let stats = collect(&rpc, &rpc.transport, &shared);
        let mut nodes = std::collections::BTreeMap::<String, usize>::new();
        for r in rpc.membership.view().iter() {
            *nodes.entry(r.node_type.clone()).or_default() += 1;
        }
        crate::metrics::record(&stats, &rpc.membership.health(), &nodes);
    }
}

/// What a node's layers counted, read from them.
fn collect(rpc: &Rpc, transport: &Transport, shared: &crate::shared::Runtime) -> MeshStats {
    {
        let view = rpc.membership.view();
        let us = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut peers: Vec<PeerStats> = transport
            .peers()
            .into_iter()
            .map(|p| PeerStats {
                addr: p.addr.to_string(),
                node: view.by_addr(p.addr).map(|r| r.id.to_string()),
                srtt_us: us(p.srtt),
                rtt_p99_us: p.rtt_p99.map_or(0, us),
                packets_out: p.packets_out,
                retransmits: p.packets_lost,
                bytes_in: p.bytes_in,
                bytes_out: p.bytes_out,
            })
            .collect();
        peers.sort_unstable_by(|a, b| a.addr.cmp(&b.addr));
        MeshStats {
            rpc: rpc.counters.snapshot(),
            transport: transport.counters(),
            shared: shared.stats(),
            commands: rpc.command_stats(),
            peers,
            in_flight: rpc.in_flight() as u64,
        }
    }
}
