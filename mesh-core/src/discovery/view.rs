//! The membership view: every known node, kept up to date from what the backend reports and
//! what the transport sees. Sans-IO: changes in, events out.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;

use super::event::{LeaveReason, MeshEvent};
use crate::node::{NodeId, NodeRecord, NodeStatus};
use crate::rudp::hash::FastMap;

/// Every known node. The local node's own record is kept by the mesh, never by the backend.
#[derive(Debug)]
pub(crate) struct View {
    local: NodeId,
    nodes: FastMap<NodeId, NodeRecord>,
    by_addr: FastMap<SocketAddr, NodeId>,
    /// Members the transport found unreachable (members only: an address outside the view
    /// is not remembered, and a member's entry goes when it leaves).
    unreachable: HashSet<SocketAddr>,
    /// Per address, the newest record that lost to the listed one there (it claims an
    /// earlier start, say a process restarted on a host whose clock stepped back). When the
    /// listed one leaves, this one takes its place instead of staying invisible. At most one
    /// per listed address.
    shadowed: FastMap<SocketAddr, NodeRecord>,
}

impl View {
    pub(crate) fn new(local: NodeId) -> View {
        View {
            local,
            nodes: FastMap::default(),
            by_addr: FastMap::default(),
            unreachable: HashSet::new(),
            shadowed: FastMap::default(),
        }
    }

    /// Sets the local node's record (not for guests): changes to it are not events.
    pub(crate) fn set_local(&mut self, record: NodeRecord) {
        self.by_addr.insert(record.id.addr, record.id);
        self.nodes.insert(record.id, record);
    }

    /// Adds or updates a node reported by the backend.
    pub(crate) fn upsert(&mut self, record: NodeRecord, out: &mut Vec<MeshEvent>) {
        if record.id == self.local || record.id.addr == self.local.addr {
            // Our own record (or a stale one of a previous run of this address): ours wins.
            return;
        }
        if let Some(old) = self.nodes.get_mut(&record.id) {
            if *old != record {
                let before = std::mem::replace(old, record.clone());
                out.push(MeshEvent::Updated {
                    old: before,
                    new: record,
                });
            }
            return;
        }
        let addr = record.id.addr;
        if let Some(other) = self.by_addr.get(&addr).copied() {
            let Some(prev) = self.nodes.get(&other) else {
                self.by_addr.remove(&addr);
                return self.upsert(record, out);
            };
            if !record.supersedes(prev) {
                // An older run at that address, or a newer one whose clock is behind: kept
                // aside until the listed one leaves.
                let keep = self
                    .shadowed
                    .get(&addr)
                    .is_none_or(|s| s.id == record.id || record.supersedes(s));
                if keep {
                    self.shadowed.insert(addr, record);
                }
                return;
            }
            if self.shadowed.get(&addr).is_some_and(|s| s.id == record.id) {
                self.shadowed.remove(&addr);
            }
            let prev = self.nodes.remove(&other);
            self.nodes.insert(record.id, record.clone());
            self.by_addr.insert(addr, record.id);
            if let Some(old) = prev {
                out.push(MeshEvent::Restarted { old, new: record });
            }
            return;
        }
        self.by_addr.insert(addr, record.id);
        self.nodes.insert(record.id, record.clone());
        out.push(MeshEvent::Joined(record));
    }

    /// Removes a node. Unknown ids are ignored.
    pub(crate) fn remove(&mut self, id: NodeId, reason: LeaveReason, out: &mut Vec<MeshEvent>) {
        if id == self.local {
            return;
        }
        if self.shadowed.get(&id.addr).is_some_and(|s| s.id == id) {
            self.shadowed.remove(&id.addr);
            return;
        }
        if let Some(node) = self.nodes.remove(&id) {
            if self.by_addr.get(&id.addr) == Some(&id) {
                self.by_addr.remove(&id.addr);
                self.unreachable.remove(&id.addr);
            }
            out.push(MeshEvent::Left { node, reason });
            if let Some(next) = self.shadowed.remove(&id.addr) {
                self.upsert(next, out);
            }
        }
    }

    /// Replaces everything the backend knows with `records`: nodes missing from it leave with
    /// `reason`, the others are upserted.
    pub(crate) fn replace_all(
        &mut self,
        records: Vec<NodeRecord>,
        reason: LeaveReason,
        out: &mut Vec<MeshEvent>,
    ) {
        let present: HashSet<NodeId> = records.iter().map(|r| r.id).collect();
        self.shadowed.retain(|_, s| present.contains(&s.id));
        let gone: Vec<NodeId> = self
            .nodes
            .keys()
            .filter(|id| **id != self.local && !present.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.remove(id, reason, out);
        }
        for r in records {
            self.upsert(r, out);
        }
    }

    /// Records the transport's view of an address; returns the event if it changed.
    pub(crate) fn set_reachable(&mut self, addr: SocketAddr, reachable: bool) -> Option<MeshEvent> {
        let id = *self.by_addr.get(&addr)?;
        let changed = if reachable {
            self.unreachable.remove(&addr)
        } else {
            self.unreachable.insert(addr)
        };
        match (changed, reachable) {
            (true, true) => Some(MeshEvent::Reachable(id)),
            (true, false) => Some(MeshEvent::Unreachable(id)),
            _ => None,
        }
    }

    /// Members currently marked unreachable.
    pub(crate) fn unreachable(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.unreachable.iter().copied()
    }

    pub(crate) fn is_reachable(&self, addr: SocketAddr) -> bool {
        !self.unreachable.contains(&addr)
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&NodeRecord> {
        self.nodes.get(id)
    }

    pub(crate) fn by_addr(&self, addr: SocketAddr) -> Option<&NodeRecord> {
        self.by_addr.get(&addr).and_then(|id| self.nodes.get(id))
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    /// Nodes that may take new work: online and reachable.
    pub(crate) fn available(&self, rec: &NodeRecord) -> bool {
        rec.status == NodeStatus::Online && self.is_reachable(rec.id.addr)
    }

    /// Every node type, sorted.
    pub(crate) fn node_types(&self) -> BTreeSet<String> {
        self.nodes.values().map(|r| r.node_type.clone()).collect()
    }

    /// The `count` backups of `of` among nodes of `node_type`: its successors in the ring of
    /// that type ordered by id, the same on every node. `of` itself need not be in the view
    /// (its place in the ring is where it would be).
    pub(crate) fn backups(&self, of: NodeId, node_type: &str, count: usize) -> Vec<NodeRecord> {
        let mut ring: Vec<&NodeRecord> = self
            .nodes
            .values()
            .filter(|r| r.node_type == node_type && r.id != of)
            .collect();
        ring.sort_by_key(|r| r.id);
        let start = ring.partition_point(|r| r.id < of);
        (0..ring.len().min(count))
            .map(|i| ring[(start + i) % ring.len()].clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(port: u16, inc: u64, ty: &str) -> NodeRecord {
        let mut r = NodeRecord::new(
            NodeId::new(SocketAddr::from(([127, 0, 0, 1], port)), inc),
            ty,
        );
        r.started_at_ms = inc;
        r
    }

    #[test]
    fn join_update_restart_leave() {
        let me = rec(1, 1, "a");
        let mut v = View::new(me.id);
        v.set_local(me.clone());
        let mut ev = Vec::new();
        v.upsert(rec(2, 5, "a"), &mut ev);
        assert!(matches!(&ev[..], [MeshEvent::Joined(r)] if r.id.incarnation == 5));
        ev.clear();
        v.upsert(rec(2, 5, "a"), &mut ev);
        assert!(ev.is_empty(), "same record, no event");
        let mut changed = rec(2, 5, "a");
        changed.status = NodeStatus::Taken;
        v.upsert(changed, &mut ev);
        assert!(
            matches!(&ev[..], [MeshEvent::Updated { new, .. }] if new.status == NodeStatus::Taken)
        );
        ev.clear();
        v.upsert(rec(2, 9, "a"), &mut ev);
        assert!(
            matches!(&ev[..], [MeshEvent::Restarted { old, new }] if old.id.incarnation == 5 && new.id.incarnation == 9)
        );
        ev.clear();
        v.upsert(rec(2, 5, "a"), &mut ev);
        assert!(ev.is_empty(), "a stale older run is ignored");
        v.remove(
            NodeId::new(SocketAddr::from(([127, 0, 0, 1], 2)), 5),
            LeaveReason::Expired,
            &mut ev,
        );
        assert!(
            ev.is_empty(),
            "removing the old incarnation does not touch the new one"
        );
        v.remove(
            NodeId::new(SocketAddr::from(([127, 0, 0, 1], 2)), 9),
            LeaveReason::Graceful,
            &mut ev,
        );
        assert!(matches!(
            &ev[..],
            [MeshEvent::Left {
                reason: LeaveReason::Graceful,
                ..
            }]
        ));
        assert_eq!(v.len(), 1);
        ev.clear();
        v.remove(me.id, LeaveReason::Expired, &mut ev);
        v.upsert(rec(1, 1, "zzz"), &mut ev);
        assert!(
            ev.is_empty(),
            "the backend never removes or rewrites the local node"
        );
    }

    #[test]
    fn replace_all_and_reachability() {
        let me = rec(1, 1, "a");
        let mut v = View::new(me.id);
        v.set_local(me);
        let mut ev = Vec::new();
        v.replace_all(
            vec![rec(2, 2, "a"), rec(3, 3, "b")],
            LeaveReason::Expired,
            &mut ev,
        );
        assert_eq!(ev.len(), 2);
        ev.clear();
        v.replace_all(vec![rec(3, 3, "b")], LeaveReason::Expired, &mut ev);
        assert!(matches!(&ev[..], [MeshEvent::Left { node, .. }] if node.id.addr.port() == 2));
        assert_eq!(v.len(), 2);
        let a3 = SocketAddr::from(([127, 0, 0, 1], 3));
        assert!(matches!(
            v.set_reachable(a3, false),
            Some(MeshEvent::Unreachable(_))
        ));
        assert!(v.set_reachable(a3, false).is_none());
        assert!(!v.available(v.by_addr(a3).unwrap_or_else(|| unreachable!())));
        assert!(matches!(
            v.set_reachable(a3, true),
            Some(MeshEvent::Reachable(_))
        ));
    }

    /// Security finding 14: the unreachable set holds members only and forgets a member
    /// that leaves (before, any address the transport gave up on stayed in it for ever).
    #[test]
    fn the_unreachable_set_holds_members_only() {
        let me = rec(1, 1, "a");
        let mut v = View::new(me.id);
        v.set_local(me);
        let mut ev = Vec::new();
        for port in 1000..11_000u16 {
            assert!(
                v.set_reachable(SocketAddr::from(([127, 0, 0, 9], port)), false)
                    .is_none()
            );
        }
        assert_eq!(v.unreachable().count(), 0);
        v.upsert(rec(2, 2, "b"), &mut ev);
        let a2 = SocketAddr::from(([127, 0, 0, 1], 2));
        assert!(v.set_reachable(a2, false).is_some());
        assert_eq!(v.unreachable().collect::<Vec<_>>(), vec![a2]);
        let id2 = v
            .by_addr(a2)
            .map(|r| r.id)
            .unwrap_or_else(|| unreachable!());
        v.remove(id2, LeaveReason::Expired, &mut ev);
        assert_eq!(v.unreachable().count(), 0);
        // A new process at that address starts reachable.
        v.upsert(rec(2, 3, "b"), &mut ev);
        assert!(v.is_reachable(a2));
    }

    /// Security finding 9: a process restarted at an address with an earlier wall clock
    /// than its predecessor's loses to the old record while it lasts; it used to stay
    /// invisible after the old one expired. Now it takes the address over then.
    #[test]
    fn a_restart_with_an_earlier_clock_is_listed_once_the_old_record_goes() {
        let me = rec(1, 1, "a");
        let mut v = View::new(me.id);
        v.set_local(me);
        let mut ev = Vec::new();
        let old = rec(2, 50, "g");
        let mut new = rec(2, 60, "g");
        new.started_at_ms = 10;
        let mut newer_still = rec(2, 70, "g");
        newer_still.started_at_ms = 20;
        v.upsert(old.clone(), &mut ev);
        ev.clear();
        v.upsert(new.clone(), &mut ev);
        v.upsert(newer_still.clone(), &mut ev);
        v.upsert(new.clone(), &mut ev);
        assert!(ev.is_empty(), "the listed record wins while it lasts");
        v.remove(old.id, LeaveReason::Expired, &mut ev);
        assert!(
            matches!(&ev[..], [MeshEvent::Left { .. }, MeshEvent::Joined(r)] if r.id == newer_still.id)
        );
        assert!(v.get(&newer_still.id).is_some());
        // A shadowed record that leaves first is simply forgotten.
        ev.clear();
        let mut late = rec(2, 80, "g");
        late.started_at_ms = 1;
        v.upsert(late.clone(), &mut ev);
        v.remove(late.id, LeaveReason::Expired, &mut ev);
        v.remove(newer_still.id, LeaveReason::Graceful, &mut ev);
        assert!(matches!(&ev[..], [MeshEvent::Left { .. }]), "{ev:?}");
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn backups_are_ring_successors_even_for_a_dead_node() {
        let me = rec(1, 1, "a");
        let mut v = View::new(me.id);
        v.set_local(me);
        let mut ev = Vec::new();
        for p in [2, 3, 4] {
            v.upsert(rec(p, 1, "g"), &mut ev);
        }
        let id3 = NodeId::new(SocketAddr::from(([127, 0, 0, 1], 3)), 1);
        let ports = |b: Vec<NodeRecord>| b.iter().map(|r| r.id.addr.port()).collect::<Vec<_>>();
        assert_eq!(ports(v.backups(id3, "g", 1)), vec![4]);
        assert_eq!(ports(v.backups(id3, "g", 5)), vec![4, 2]);
        v.remove(id3, LeaveReason::Expired, &mut ev);
        assert_eq!(
            ports(v.backups(id3, "g", 1)),
            vec![4],
            "same answer after it died"
        );
    }
}
