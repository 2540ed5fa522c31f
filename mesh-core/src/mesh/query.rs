//! Membership queries, own values and status, selection of nodes for new work, events.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::seq::IndexedRandom;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use super::Mesh;
use crate::discovery::{DiscoveryError, Health, MeshEvent};
use crate::node::{NodeId, NodeRecord, NodeStatus, Target, Value};

/// Why a node value could not be published ([`Mesh::set_value`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The value does not serialize to JSON (a map with non-string keys, say).
    #[error(
        "value {name:?} cannot be published: it does not serialize to JSON ({error}); use a type with string map keys"
    )]
    Encode {
        /// The value's name.
        name: String,
        /// What serde_json said.
        error: String,
    },
}

impl Mesh {
    fn find(&self, target: &Target) -> Option<NodeRecord> {
        let view = self.inner.membership.view();
        match target {
            Target::Node(id) => view.get(id).cloned(),
            other => other.addr().and_then(|a| view.by_addr(a).cloned()),
        }
    }

    /// This node's current record.
    pub fn record(&self) -> NodeRecord {
        self.inner.membership.local_record()
    }

    /// Every listed node, this one included (unless it is a guest), sorted by id.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        let mut v: Vec<NodeRecord> = self.inner.membership.view().iter().cloned().collect();
        v.sort_by_key(|r| r.id);
        v
    }

    /// The record of one node.
    pub fn node(&self, target: impl Into<Target>) -> Option<NodeRecord> {
        self.find(&target.into())
    }

    /// Nodes of one type, sorted by id.
    pub fn nodes_by_type(&self, node_type: &str) -> Vec<NodeRecord> {
        let mut v: Vec<NodeRecord> = self
            .inner
            .membership
            .view()
            .iter()
            .filter(|r| r.node_type == node_type)
            .cloned()
            .collect();
        v.sort_by_key(|r| r.id);
        v
    }

    /// Nodes of one role, sorted by id.
    pub fn nodes_by_role(&self, role: &str) -> Vec<NodeRecord> {
        let mut v: Vec<NodeRecord> = self
            .inner
            .membership
            .view()
            .iter()
            .filter(|r| r.role == role)
            .cloned()
            .collect();
        v.sort_by_key(|r| r.id);
        v
    }

    /// Every node type present.
    pub fn node_types(&self) -> Vec<String> {
        self.inner
            .membership
            .view()
            .node_types()
            .into_iter()
            .collect()
    }

    /// Whether a node is listed.
    pub fn exists(&self, target: impl Into<Target>) -> bool {
        self.find(&target.into()).is_some()
    }

    /// Whether the target is this node.
    pub fn is_local(&self, target: impl Into<Target>) -> bool {
        let me = self.id();
        match target.into() {
            Target::Node(id) => id == me,
            t => t.addr().is_some_and(|a| self.inner.rpc.is_local(a)),
        }
    }

    /// Whether the transport currently reaches the node (false once it was declared
    /// unreachable, until it answers again).
    pub fn is_reachable(&self, target: impl Into<Target>) -> bool {
        match target.into().addr() {
            Some(a) => self.inner.membership.view().is_reachable(a),
            None => false,
        }
    }

    /// Every value a node publishes.
    pub fn node_values(&self, target: impl Into<Target>) -> Option<BTreeMap<String, Value>> {
        self.find(&target.into()).map(|r| r.values)
    }

    /// One value of a node, decoded (`None` when missing or of another shape).
    pub fn node_value<T: DeserializeOwned>(
        &self,
        target: impl Into<Target>,
        name: &str,
    ) -> Option<T> {
        let r = self.find(&target.into())?;
        serde_json::from_value(r.values.get(name)?.clone()).ok()
    }

    /// One of this node's own values.
    pub fn value<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let r = self.inner.membership.local_record();
        serde_json::from_value(r.values.get(name)?.clone()).ok()
    }

    /// Publishes a value (others see it within one update interval). Values that do not
    /// serialize to JSON are refused, naming the value.
    pub fn set_value<T: Serialize>(
        &self,
        name: impl Into<String>,
        value: T,
    ) -> Result<(), ValueError> {
        let name = name.into();
        let v = serde_json::to_value(value).map_err(|e| ValueError::Encode {
            name: name.clone(),
            error: e.to_string(),
        })?;
        self.inner.membership.update_local(|r| {
            r.values.insert(name, v);
        });
        Ok(())
    }

    /// Removes a value.
    pub fn remove_value(&self, name: &str) {
        self.inner.membership.update_local(|r| {
            r.values.remove(name);
        });
    }

    /// Sets this node's status (`Taken` keeps current work but takes no new work).
    pub fn set_status(&self, status: NodeStatus) {
        self.inner.membership.update_local(|r| r.status = status);
    }

    /// This node's status.
    pub fn status(&self) -> NodeStatus {
        self.inner.membership.local_record().status
    }

    /// Another node's status, if listed.
    pub fn node_status(&self, target: impl Into<Target>) -> Option<NodeStatus> {
        self.find(&target.into()).map(|r| r.status)
    }

    /// The backups of a node: as many as `backups` configures for its type, the same on every
    /// node (successors in the ring of its type). Without a target, this node's.
    pub fn backups(&self, target: impl Into<Target>) -> Vec<NodeRecord> {
        let target = target.into();
        let (id, ty) = match self.find(&target) {
            Some(r) => (r.id, r.node_type),
            None => match &target {
                Target::Node(id) => (*id, String::new()),
                _ => return Vec::new(),
            },
        };
        let count = self
            .inner
            .membership
            .settings()
            .backups
            .get(&ty)
            .copied()
            .unwrap_or(0);
        self.inner.membership.view().backups(id, &ty, count)
    }

    /// The backups of a node of a known type (works after it left the view).
    pub fn backups_of_type(&self, id: NodeId, node_type: &str) -> Vec<NodeRecord> {
        let count = self
            .inner
            .membership
            .settings()
            .backups
            .get(node_type)
            .copied()
            .unwrap_or(0);
        self.inner.membership.view().backups(id, node_type, count)
    }

    /// The nodes to send to for `node_type`: each listed, available node as is; each dead
    /// or unavailable one replaced by its first available backup (mesh-link `prepareNodes`).
    /// Duplicates are removed.
    pub fn prepare_nodes<I, T>(&self, node_type: &str, nodes: I) -> Vec<NodeRecord>
    where
        I: IntoIterator<Item = T>,
        T: Into<Target>,
    {
        let mut out: Vec<NodeRecord> = Vec::new();
        for t in nodes {
            let t: Target = t.into();
            let pick = match self.find(&t) {
                Some(r) if r.node_type == node_type && self.available(&r) => Some(r),
                found => {
                    let id = found.map(|r| r.id).or(match &t {
                        Target::Node(id) => Some(*id),
                        _ => None,
                    });
                    id.and_then(|id| {
                        self.backups_of_type(id, node_type)
                            .into_iter()
                            .find(|b| self.available(b))
                    })
                }
            };
            if let Some(r) = pick
                && !out.iter().any(|o| o.id == r.id)
            {
                out.push(r);
            }
        }
        out
    }

    fn available(&self, r: &NodeRecord) -> bool {
        self.inner.membership.view().available(r)
    }

    /// Nodes of `node_type` that may take new work (online, reachable) and serve `command`,
    /// sorted by id (what balanced calls and broadcasts by type choose from).
    pub fn nodes_serving(&self, node_type: &str, command: u16) -> Vec<NodeRecord> {
        self.rpc().nodes_serving(node_type, command)
    }

    /// A random online, reachable node of a type (any services).
    pub fn random_node(&self, node_type: &str) -> Option<NodeRecord> {
        let view = self.inner.membership.view();
        let v: Vec<&NodeRecord> = view
            .iter()
            .filter(|r| r.node_type == node_type && view.available(r))
            .collect();
        v.choose(&mut rand::rng()).map(|r| (*r).clone())
    }

    /// A random online, reachable node of this node's type other than this one.
    pub fn sibling(&self) -> Option<NodeRecord> {
        let me = self.id();
        let ty = &self.inner.config.node_type;
        let view = self.inner.membership.view();
        let v: Vec<&NodeRecord> = view
            .iter()
            .filter(|r| &r.node_type == ty && r.id != me && view.available(r))
            .collect();
        v.choose(&mut rand::rng()).map(|r| (*r).clone())
    }

    /// Subscribes to membership events: joined, left, updated, restarted, unreachable,
    /// reachable, discovery health.
    pub fn events(&self) -> broadcast::Receiver<MeshEvent> {
        self.inner.membership.events()
    }

    /// Discovery's health (degraded while the backend is unreachable; the view is then
    /// frozen, never emptied).
    pub fn health(&self) -> Health {
        self.inner.membership.health()
    }

    /// Runs `hook` before each sync with the backend (the seeds' OnUpdate): the place to
    /// refresh values to publish.
    pub fn on_before_sync(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.inner
            .membership
            .on_before_sync(std::sync::Arc::new(hook));
    }

    /// Runs `hook` after each sync (the seeds' OnUpdated).
    pub fn on_after_sync(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.inner
            .membership
            .on_after_sync(std::sync::Arc::new(hook));
    }

    /// Waits until a full sync with the backend that started after this call has completed
    /// (the seeds' WaitForLatestNodeData), at most 3 update intervals.
    pub async fn wait_for_latest_view(&self) -> Result<(), DiscoveryError> {
        let bound = self.inner.config.update_interval * 3 + Duration::from_millis(500);
        match tokio::time::timeout(bound, self.inner.membership.wait_for_sync()).await {
            Ok(()) if self.is_stopped() => Err(DiscoveryError::Stopped),
            Ok(()) => Ok(()),
            Err(_) => Err(DiscoveryError::Unreachable(format!(
                "no sync completed within {bound:?}; health: {:?}",
                self.health()
            ))),
        }
    }
}
