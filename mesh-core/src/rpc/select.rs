//! Choosing the node of a balanced or random call, and the nodes of a broadcast by type.

use rand::seq::IndexedRandom;

use super::{CallError, Rpc, lock};
use crate::node::{NodeId, NodeRecord};

impl Rpc {
    /// Nodes of `node_type` that may take new work (online, reachable) and serve `command`,
    /// sorted by id.
    pub(crate) fn nodes_serving(&self, node_type: &str, command: u16) -> Vec<NodeRecord> {
        let view = self.membership.view();
        let mut v: Vec<NodeRecord> = view
            .iter()
            .filter(|r| r.node_type == node_type && r.serves(command) && view.available(r))
            .cloned()
            .collect();
        v.sort_by_key(|r| r.id);
        v
    }

    /// The next node of a round-robin over [`nodes_serving`](Self::nodes_serving).
    pub(crate) fn select_balanced(
        &self,
        node_type: &str,
        command: u16,
    ) -> Result<NodeId, CallError> {
        let nodes = self.nodes_serving(node_type, command);
        if nodes.is_empty() {
            return Err(no_node(node_type, command));
        }
        let mut b = lock(&self.balance);
        let slot = b.entry((node_type.to_string(), command)).or_insert(0);
        let pick = nodes[*slot % nodes.len()].id;
        *slot = slot.wrapping_add(1);
        Ok(pick)
    }

    /// A random node of [`nodes_serving`](Self::nodes_serving).
    pub(crate) fn select_random(&self, node_type: &str, command: u16) -> Result<NodeId, CallError> {
        self.nodes_serving(node_type, command)
            .choose(&mut rand::rng())
            .map(|r| r.id)
            .ok_or_else(|| no_node(node_type, command))
    }
}

fn no_node(node_type: &str, command: u16) -> CallError {
    CallError::NoNode {
        node_type: node_type.to_string(),
        command,
    }
}
