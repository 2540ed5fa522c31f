//! One node's copy of an object: applies the owner's deltas in version order, ignores
//! duplicates, holds early ones until the gap fills (or a snapshot replaces them), and tells
//! its readers what changed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use tokio::sync::{Notify, broadcast};

use super::error::RemoveReason;
use super::id::ObjectId;
use super::runtime::Runtime;
use super::state::Effect;
use super::wire::Snapshot;
use super::{SharedEvent, SharedObject};
use crate::codec::CodecError;
use crate::node::NodeId;

/// Deltas held ahead of a gap at most; past that the replica resyncs from a snapshot.
pub(crate) const MAX_AHEAD: usize = 1024;
/// Events a slow reader may fall behind by before it is told it lagged.
const EVENT_CAPACITY: usize = 256;

/// What a replica did with a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Applied (with any held deltas it unblocked), or a duplicate ignored.
    Done,
    /// It is ahead of a gap (held), or did not apply: a snapshot may be needed.
    Gap,
}

/// What a replica holds, as waiters watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) version: u64,
    pub(crate) gone: bool,
    pub(crate) owner: NodeId,
}

/// Type-erased replica, as the runtime routes pushes to it.
pub(crate) trait Sink: Send + Sync {
    fn delta(&self, epoch: u32, version: u64, by: Option<NodeId>, effects: Vec<Effect>) -> Flow;
    fn snapshot(&self, snap: &Snapshot) -> Result<(), CodecError>;
    fn removed(&self, reason: RemoveReason);
    fn version(&self) -> u64;
    fn is_removed(&self) -> bool;
    /// The node that orders the object, as this replica knows.
    fn owner(&self) -> NodeId;
    /// The node holding its backup, as this replica knows.
    fn backup(&self) -> Option<NodeId>;
    /// The owner names a new backup (same owner, same or later epoch).
    fn set_backup(&self, backup: Option<NodeId>, epoch: u32);
    /// Marks a move to another owner as started; false if one already is.
    fn begin_follow(&self) -> bool;
    fn end_follow(&self);
    /// Still ahead of a gap (the grace period passed without it filling).
    fn gapped(&self) -> bool;
    /// Marks a resync as started; false if one already is.
    fn begin_resync(&self) -> bool;
    fn end_resync(&self);
}

pub(crate) struct State<T> {
    pub(crate) value: T,
    pub(crate) epoch: u32,
    pub(crate) version: u64,
    pub(crate) removed: Option<RemoveReason>,
    /// Who orders the object and who backs it, when that is not simply the id's node
    /// with no backup (boxed: most replicas never need it).
    placement: Option<Box<(NodeId, Option<NodeId>)>>,
    ahead: BTreeMap<u64, (Option<NodeId>, Vec<Effect>)>,
}

impl<T> State<T> {
    /// The node that orders object `id`, as this replica knows.
    pub(crate) fn owner(&self, id: ObjectId) -> NodeId {
        self.placement.as_ref().map_or(id.owner, |p| p.0)
    }
}

fn placement(snap: &Snapshot) -> Option<Box<(NodeId, Option<NodeId>)>> {
    (snap.owner != snap.id.owner || snap.backup.is_some())
        .then(|| Box::new((snap.owner, snap.backup)))
}

/// A typed replica.
pub(crate) struct Replica<T: SharedObject> {
    pub(crate) id: ObjectId,
    state: RwLock<State<T>>,
    /// Made when a reader first asks (a replica nobody listens to holds no event buffer).
    events: std::sync::OnceLock<broadcast::Sender<SharedEvent>>,
    /// What `wait_version` and writers waiting for a new owner wait on.
    changed: Notify,
    resyncing: AtomicBool,
    following: AtomicBool,
    pub(crate) runtime: Weak<Runtime>,
}

impl<T: SharedObject> Replica<T> {
    pub(crate) fn new(snap: &Snapshot, runtime: Weak<Runtime>) -> Result<Replica<T>, CodecError> {
        let value = T::from_fields(&snap.fields)?;
        Ok(Replica {
            id: snap.id,
            state: RwLock::new(State {
                value,
                epoch: snap.epoch,
                version: snap.version,
                removed: None,
                placement: placement(snap),
                ahead: BTreeMap::new(),
            }),
            events: std::sync::OnceLock::new(),
            changed: Notify::new(),
            resyncing: AtomicBool::new(false),
            following: AtomicBool::new(false),
            runtime,
        })
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State<T>> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State<T>> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<SharedEvent> {
        self.events
            .get_or_init(|| broadcast::channel(EVENT_CAPACITY).0)
            .subscribe()
    }

    fn emit(&self, e: SharedEvent) {
        if let Some(tx) = self.events.get() {
            let _ = tx.send(e);
        }
    }

    /// Waits until what the replica holds satisfies `f`.
    pub(crate) async fn wait_until(&self, f: impl Fn(Seen) -> bool) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if f(self.seen(&self.read())) {
                return;
            }
            changed.await;
        }
    }

    fn seen(&self, st: &State<T>) -> Seen {
        Seen {
            version: st.version,
            gone: st.removed.is_some(),
            owner: st.owner(self.id),
        }
    }

    fn names(effects: &[Effect]) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for e in effects {
            if let Some(f) = T::FIELDS.iter().find(|f| f.id == e.field())
                && !names.contains(&f.name)
            {
                names.push(f.name);
            }
        }
        names
    }

    /// Applies one delta on a copy of the value: a delta that does not decode leaves the
    /// replica as it was (and asks for a snapshot).
    fn apply(st: &mut State<T>, effects: &[Effect]) -> Result<(), CodecError> {
        if let [one] = effects {
            return st.value.apply_effect(one);
        }
        let mut next = st.value.clone();
        for e in effects {
            next.apply_effect(e)?;
        }
        st.value = next;
        Ok(())
    }
}

impl<T: SharedObject> Sink for Replica<T> {
    fn delta(&self, epoch: u32, version: u64, by: Option<NodeId>, effects: Vec<Effect>) -> Flow {
        let mut st = self.write();
        if st.removed.is_some() || epoch < st.epoch || version <= st.version {
            return Flow::Done;
        }
        if version > st.version + 1 {
            if st.ahead.len() >= MAX_AHEAD {
                st.ahead.clear();
            }
            st.ahead.insert(version, (by, effects));
            return Flow::Gap;
        }
        let mut ready = vec![(version, by, effects)];
        let mut next = version + 1;
        while let Some((b, e)) = st.ahead.remove(&next) {
            ready.push((next, b, e));
            next += 1;
        }
        for (v, by, effects) in ready {
            if Self::apply(&mut st, &effects).is_err() {
                st.ahead.clear();
                return Flow::Gap;
            }
            st.version = v;
            st.epoch = epoch;
            self.emit(SharedEvent::Updated {
                fields: Self::names(&effects),
                version: v,
                by,
            });
        }
        let gap = !st.ahead.is_empty();
        drop(st);
        self.changed.notify_waiters();
        if gap { Flow::Gap } else { Flow::Done }
    }

    fn snapshot(&self, snap: &Snapshot) -> Result<(), CodecError> {
        let mut st = self.write();
        // A newer epoch wins even at the same version (a backup took over).
        if st.removed.is_some() || (snap.epoch, snap.version) <= (st.epoch, st.version) {
            return Ok(());
        }
        let value = T::from_fields(&snap.fields)?;
        st.value = value;
        st.version = snap.version;
        st.epoch = snap.epoch;
        let was = st.owner(self.id);
        st.placement = placement(snap);
        if was != snap.owner {
            tracing::info!(id = %self.id, owner = %snap.owner, epoch = snap.epoch, "shared object owner changed");
            self.emit(SharedEvent::OwnerChanged {
                owner: snap.owner,
                epoch: snap.epoch,
            });
        }
        let stale: Vec<u64> = st.ahead.range(..=snap.version).map(|(v, _)| *v).collect();
        for v in stale {
            st.ahead.remove(&v);
        }
        let v = snap.version;
        self.emit(SharedEvent::Updated {
            fields: T::FIELDS.iter().map(|f| f.name).collect(),
            version: v,
            by: None,
        });
        // Held deltas right after the snapshot apply now.
        let next = st.ahead.first_key_value().map(|(k, _)| *k);
        drop(st);
        self.changed.notify_waiters();
        if next == Some(v + 1) {
            let held = self.write().ahead.remove(&(v + 1));
            if let Some((by, effects)) = held {
                let epoch = self.read().epoch;
                self.delta(epoch, v + 1, by, effects);
            }
        }
        Ok(())
    }

    fn removed(&self, reason: RemoveReason) {
        let mut st = self.write();
        if st.removed.is_some() {
            return;
        }
        st.removed = Some(reason);
        st.ahead.clear();
        drop(st);
        tracing::debug!(id = %self.id, %reason, "shared object gone");
        self.emit(SharedEvent::Removed { reason });
        self.changed.notify_waiters();
    }

    fn version(&self) -> u64 {
        self.read().version
    }

    fn is_removed(&self) -> bool {
        self.read().removed.is_some()
    }

    fn owner(&self) -> NodeId {
        self.read().owner(self.id)
    }

    fn backup(&self) -> Option<NodeId> {
        self.read().placement.as_ref().and_then(|p| p.1)
    }

    fn set_backup(&self, backup: Option<NodeId>, epoch: u32) {
        let mut st = self.write();
        if epoch >= st.epoch {
            let owner = st.owner(self.id);
            st.placement =
                (owner != self.id.owner || backup.is_some()).then(|| Box::new((owner, backup)));
        }
    }

    fn begin_follow(&self) -> bool {
        !self.following.swap(true, Ordering::AcqRel)
    }

    fn end_follow(&self) {
        self.following.store(false, Ordering::Release);
    }

    fn gapped(&self) -> bool {
        let st = self.read();
        st.removed.is_none()
            && st
                .ahead
                .first_key_value()
                .is_some_and(|(v, _)| *v > st.version + 1)
    }

    fn begin_resync(&self) -> bool {
        !self.resyncing.swap(true, Ordering::AcqRel)
    }

    fn end_resync(&self) {
        self.resyncing.store(false, Ordering::Release);
    }
}

impl<T: SharedObject> Drop for Replica<T> {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.upgrade() {
            let owner = self.read().owner(self.id);
            rt.replica_dropped(self.id, owner);
        }
    }
}

#[cfg(test)]
mod tests;
