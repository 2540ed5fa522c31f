//! The shared membership state: the local record, the view, events, health and sync hooks.
//!
//! The mesh reads it to answer queries; a discovery backend writes it through the methods
//! documented "for backends".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::DiscoveryError;
use super::event::{Health, LeaveReason, MeshEvent};
use super::view::View;
use crate::node::{NodeId, NodeRecord};

/// A hook run around each sync with the backend.
pub type SyncHook = Arc<dyn Fn() + Send + Sync>;

/// Membership settings a backend needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MembershipSettings {
    /// How often the node heartbeats and syncs (default 1 s).
    pub update_interval: Duration,
    /// How long after its last heartbeat a silent node is removed (default 2 update
    /// intervals; at least 1.5).
    pub expiry: Duration,
    /// Namespace of this cluster in a shared backend (Redis key prefix).
    pub prefix: String,
    /// Guest nodes see the others and can call them, but are not listed.
    pub guest: bool,
    /// Number of backups per node type.
    pub backups: HashMap<String, usize>,
}

impl Default for MembershipSettings {
    fn default() -> Self {
        MembershipSettings {
            update_interval: Duration::from_secs(1),
            expiry: Duration::from_secs(2),
            prefix: "mesh".to_string(),
            guest: false,
            backups: HashMap::new(),
        }
    }
}

#[derive(Default)]
struct Hooks {
    before: Vec<SyncHook>,
    after: Vec<SyncHook>,
}

struct Inner {
    settings: MembershipSettings,
    local: Mutex<NodeRecord>,
    local_version: watch::Sender<u64>,
    view: RwLock<View>,
    events: broadcast::Sender<MeshEvent>,
    health: watch::Sender<Health>,
    synced: watch::Sender<u64>,
    started: AtomicU64,
    sync_request: Notify,
    hooks: RwLock<Hooks>,
    ready: Mutex<Option<oneshot::Sender<Result<(), DiscoveryError>>>>,
    stop: CancellationToken,
}

/// The membership state of one node, shared by the mesh and its discovery backend. Cheap to
/// clone.
#[derive(Clone)]
pub struct Membership {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("local", &self.local_id())
            .field("nodes", &self.view().len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Membership {
    /// New state for the node `local`. The returned receiver resolves when the backend calls
    /// [`ready`](Self::ready).
    pub(crate) fn new(
        local: NodeRecord,
        settings: MembershipSettings,
        stop: CancellationToken,
    ) -> (Membership, oneshot::Receiver<Result<(), DiscoveryError>>) {
        let mut view = View::new(local.id);
        if !settings.guest {
            view.set_local(local.clone());
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let m = Membership {
            inner: Arc::new(Inner {
                settings,
                local: Mutex::new(local),
                local_version: watch::Sender::new(0),
                view: RwLock::new(view),
                events: broadcast::Sender::new(4096),
                health: watch::Sender::new(Health::Healthy),
                synced: watch::Sender::new(0),
                started: AtomicU64::new(0),
                sync_request: Notify::new(),
                hooks: RwLock::new(Hooks::default()),
                ready: Mutex::new(Some(ready_tx)),
                stop,
            }),
        };
        (m, ready_rx)
    }

    pub(crate) fn view(&self) -> RwLockReadGuard<'_, View> {
        self.inner.view.read().unwrap_or_else(|p| p.into_inner())
    }

    fn view_mut(&self) -> RwLockWriteGuard<'_, View> {
        self.inner.view.write().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, events: Vec<MeshEvent>) {
        for e in events {
            match &e {
                MeshEvent::Joined(r) => {
                    tracing::info!(node = %r.id, node_type = %r.node_type, "node joined")
                }
                MeshEvent::Left { node, reason } => {
                    tracing::info!(node = %node.id, %reason, "node left")
                }
                MeshEvent::Restarted { old, new } => {
                    tracing::info!(old = %old.id, new = %new.id, "node restarted")
                }
                MeshEvent::Updated { new, .. } => tracing::debug!(node = %new.id, "node updated"),
                MeshEvent::Unreachable(id) => tracing::info!(node = %id, "node unreachable"),
                MeshEvent::Reachable(id) => tracing::info!(node = %id, "node reachable again"),
                MeshEvent::Health(h) => tracing::info!(health = ?h, "discovery health changed"),
            }
            let _ = self.inner.events.send(e);
        }
    }

    // ---- read side (used by the mesh) ----

    /// The settings.
    pub fn settings(&self) -> &MembershipSettings {
        &self.inner.settings
    }

    /// The local node's id.
    pub fn local_id(&self) -> NodeId {
        lock(&self.inner.local).id
    }

    /// A copy of the local node's current record.
    pub fn local_record(&self) -> NodeRecord {
        lock(&self.inner.local).clone()
    }

    /// Subscribes to membership events (bounded: a subscriber that falls 4096 events behind
    /// misses the oldest and gets a `Lagged` error from the receiver).
    pub fn events(&self) -> broadcast::Receiver<MeshEvent> {
        self.inner.events.subscribe()
    }

    /// Discovery's current health.
    pub fn health(&self) -> Health {
        self.inner.health.borrow().clone()
    }

    /// How many syncs with the backend have completed.
    pub fn sync_generation(&self) -> u64 {
        *self.inner.synced.borrow()
    }

    /// Waits until a sync that starts after this call has completed (or the node stops).
    pub async fn wait_for_sync(&self) {
        let mut rx = self.inner.synced.subscribe();
        // A sync running now may have read the state before this call: wait for the next.
        let target = self.inner.started.load(Ordering::Acquire) + 1;
        self.inner.sync_request.notify_one();
        let stop = self.inner.stop.clone();
        tokio::select! {
            _ = rx.wait_for(|g| *g >= target) => {}
            _ = stop.cancelled() => {}
        }
    }

    /// Adds a hook run before each sync (the place to refresh values to publish).
    pub fn on_before_sync(&self, hook: SyncHook) {
        self.inner
            .hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .before
            .push(hook);
    }

    /// Adds a hook run after each sync (the view is up to date when it runs).
    pub fn on_after_sync(&self, hook: SyncHook) {
        self.inner
            .hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .after
            .push(hook);
    }

    /// Changes the local record; the backend publishes it at its next opportunity.
    pub(crate) fn update_local(&self, f: impl FnOnce(&mut NodeRecord)) {
        let record = {
            let mut local = lock(&self.inner.local);
            let before = local.clone();
            f(&mut local);
            if *local == before {
                return;
            }
            local.clone()
        };
        if !self.inner.settings.guest {
            self.view_mut().set_local(record);
        }
        self.inner.local_version.send_modify(|v| *v += 1);
    }

    /// Records the transport's view of a peer.
    pub(crate) fn set_reachable(&self, addr: SocketAddr, reachable: bool) {
        let e = self.view_mut().set_reachable(addr, reachable);
        if let Some(e) = e {
            self.emit(vec![e]);
        }
    }

    // ---- write side (for backends) ----

    /// For backends: a receiver that changes whenever the local record changes.
    pub fn watch_local(&self) -> watch::Receiver<u64> {
        self.inner.local_version.subscribe()
    }

    /// For backends: resolves when someone asked for a sync now
    /// ([`wait_for_sync`](Self::wait_for_sync)).
    pub async fn sync_requested(&self) {
        self.inner.sync_request.notified().await
    }

    /// For backends: resolves when the node is stopping; deregister, then return from `run`.
    pub async fn stopping(&self) {
        self.inner.stop.cancelled().await
    }

    /// For backends: whether the node is stopping.
    pub fn is_stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// For backends: reports the outcome of the first registration and sync. `start()`
    /// returns when this is called (the seeds' OnReady/OnInitialSync). Later calls are
    /// ignored.
    pub fn ready(&self, result: Result<(), DiscoveryError>) {
        if let Some(tx) = lock(&self.inner.ready).take() {
            let _ = tx.send(result);
        }
    }

    /// For backends: a node joined or its record changed.
    pub fn upsert(&self, record: NodeRecord) {
        let mut out = Vec::new();
        self.view_mut().upsert(record, &mut out);
        self.emit(out);
    }

    /// For backends: a node left.
    pub fn remove(&self, id: NodeId, reason: LeaveReason) {
        let mut out = Vec::new();
        self.view_mut().remove(id, reason, &mut out);
        self.emit(out);
    }

    /// For backends: the complete set of nodes; nodes missing from it leave with `reason`.
    pub fn replace_all(&self, records: Vec<NodeRecord>, reason: LeaveReason) {
        let mut out = Vec::new();
        self.view_mut().replace_all(records, reason, &mut out);
        self.emit(out);
    }

    /// For backends: the ids of every node in the view but the local one.
    pub fn known_ids(&self) -> Vec<NodeId> {
        let local = self.local_id();
        self.view()
            .iter()
            .map(|r| r.id)
            .filter(|id| *id != local)
            .collect()
    }

    /// For backends: reports whether the backend is reachable.
    pub fn set_health(&self, health: Health) {
        let changed = self.inner.health.send_if_modified(|h| {
            if *h == health {
                false
            } else {
                *h = health.clone();
                true
            }
        });
        if changed {
            self.emit(vec![MeshEvent::Health(health)]);
        }
    }

    /// For backends: runs the before-sync hooks. Call it before reading the local record
    /// for a heartbeat.
    pub fn begin_sync(&self) {
        self.inner.started.fetch_add(1, Ordering::AcqRel);
        let hooks = self
            .inner
            .hooks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .before
            .clone();
        for h in hooks {
            h();
        }
    }

    /// For backends: a sync completed; runs the after-sync hooks and wakes
    /// [`wait_for_sync`](Self::wait_for_sync).
    pub fn end_sync(&self) {
        let hooks = self
            .inner
            .hooks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .after
            .clone();
        for h in hooks {
            h();
        }
        self.inner.synced.send_modify(|g| *g += 1);
    }
}
