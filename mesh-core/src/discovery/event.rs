//! Membership events and discovery health.

use std::fmt;

use crate::node::{NodeId, NodeRecord};

/// Why a node left the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It stopped and deregistered.
    Graceful,
    /// Its heartbeats stopped (crash, kill, partition) and its entry expired.
    Expired,
    /// A new process took its address (see [`MeshEvent::Restarted`]).
    Replaced,
}

impl fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaveReason::Graceful => "graceful stop",
            LeaveReason::Expired => "heartbeats expired",
            LeaveReason::Replaced => "replaced by a new process at its address",
        })
    }
}

/// Whether discovery is working.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Health {
    /// Registered and in sync.
    #[default]
    Healthy,
    /// The backend cannot be reached: the view is frozen (never emptied) and the node keeps
    /// working with it; discovery reconnects with backoff.
    Degraded {
        /// What failed.
        reason: String,
    },
}

impl Health {
    /// Whether the backend is reachable.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// A change in the membership view or in discovery's health.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MeshEvent {
    /// A node joined.
    Joined(NodeRecord),
    /// A node left.
    Left {
        /// Its last known record.
        node: NodeRecord,
        /// Why.
        reason: LeaveReason,
    },
    /// A node's values, status, role or services changed.
    Updated {
        /// Before.
        old: NodeRecord,
        /// After.
        new: NodeRecord,
    },
    /// A new process (new incarnation) runs at a known node's address.
    Restarted {
        /// The previous incarnation's record.
        old: NodeRecord,
        /// The new one.
        new: NodeRecord,
    },
    /// The transport cannot reach the node (it stays in the view; selection skips it).
    Unreachable(NodeId),
    /// The transport reaches the node again.
    Reachable(NodeId),
    /// Discovery's health changed.
    Health(Health),
}

impl MeshEvent {
    /// The node the event is about, if any.
    pub fn node_id(&self) -> Option<NodeId> {
        match self {
            MeshEvent::Joined(r) => Some(r.id),
            MeshEvent::Left { node, .. } => Some(node.id),
            MeshEvent::Updated { new, .. } | MeshEvent::Restarted { new, .. } => Some(new.id),
            MeshEvent::Unreachable(id) | MeshEvent::Reachable(id) => Some(*id),
            MeshEvent::Health(_) => None,
        }
    }
}
