//! The in-process registry: nodes of one process that share a [`LocalRegistry`] see each other
//! at once. The default backend for tests, examples and single-process use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::{BackendContext, BoxFuture, DiscoveryBackend, LeaveReason, Membership};
use crate::node::{NodeId, NodeRecord};

#[derive(Debug, Clone)]
enum Change {
    Upsert(NodeRecord),
    Remove(NodeId, LeaveReason),
}

#[derive(Debug, Default)]
struct State {
    /// prefix -> nodes
    nodes: HashMap<String, HashMap<NodeId, NodeRecord>>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    changes: broadcast::Sender<(String, Change)>,
}

/// An in-process registry of nodes. Clones share the registry; [`LocalRegistry::new`] makes an
/// isolated one, [`LocalRegistry::global`] is the process-wide one.
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    inner: Arc<Inner>,
}

impl Default for LocalRegistry {
    fn default() -> Self {
        LocalRegistry::new()
    }
}

impl LocalRegistry {
    /// A new, empty registry.
    pub fn new() -> LocalRegistry {
        LocalRegistry {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changes: broadcast::Sender::new(4096),
            }),
        }
    }

    /// The process-wide registry.
    pub fn global() -> LocalRegistry {
        static GLOBAL: OnceLock<LocalRegistry> = OnceLock::new();
        GLOBAL.get_or_init(LocalRegistry::new).clone()
    }

    /// How many nodes are registered under `prefix`.
    pub fn len(&self, prefix: &str) -> usize {
        self.lock().nodes.get(prefix).map_or(0, HashMap::len)
    }

    /// Whether no node is registered under `prefix`.
    pub fn is_empty(&self, prefix: &str) -> bool {
        self.len(prefix) == 0
    }

    /// Takes `node` out of the registry as if its registration had expired, while the node
    /// itself keeps running: the other nodes see it leave (a test's stand-in for a node
    /// cut off by a partition). It comes back when its record next changes.
    pub fn evict(&self, node: NodeId) {
        let prefixes: Vec<String> = self.lock().nodes.keys().cloned().collect();
        for p in prefixes {
            self.take(&p, node, LeaveReason::Expired);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, prefix: &str, record: NodeRecord) {
        let mut st = self.lock();
        st.nodes
            .entry(prefix.to_string())
            .or_default()
            .insert(record.id, record.clone());
        let _ = self
            .inner
            .changes
            .send((prefix.to_string(), Change::Upsert(record)));
    }

    fn take(&self, prefix: &str, id: NodeId, reason: LeaveReason) {
        let mut st = self.lock();
        let removed = st
            .nodes
            .get_mut(prefix)
            .and_then(|m| m.remove(&id))
            .is_some();
        if removed {
            let _ = self
                .inner
                .changes
                .send((prefix.to_string(), Change::Remove(id, reason)));
        }
    }

    fn snapshot(&self, prefix: &str) -> Vec<NodeRecord> {
        self.lock()
            .nodes
            .get(prefix)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn backend(&self) -> LocalBackend {
        LocalBackend {
            registry: self.clone(),
        }
    }
}

/// The backend over a [`LocalRegistry`].
#[derive(Debug)]
pub(crate) struct LocalBackend {
    registry: LocalRegistry,
}

/// Removes the entry if the backend's task is dropped without a graceful stop.
struct Registration {
    registry: LocalRegistry,
    prefix: String,
    id: Option<NodeId>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.registry.take(&self.prefix, id, LeaveReason::Expired);
        }
    }
}

impl DiscoveryBackend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn run(self: Box<Self>, ctx: BackendContext) -> BoxFuture<'static, ()> {
        Box::pin(run(self.registry, ctx.membership))
    }
}

async fn run(registry: LocalRegistry, m: Membership) {
    let prefix = m.settings().prefix.clone();
    let guest = m.settings().guest;
    let mut changes = registry.inner.changes.subscribe();
    let mut local_rx = m.watch_local();
    let mut reg = Registration {
        registry: registry.clone(),
        prefix: prefix.clone(),
        id: None,
    };
    m.begin_sync();
    if !guest {
        let me = m.local_record();
        reg.id = Some(me.id);
        registry.put(&prefix, me);
    }
    local_rx.borrow_and_update();
    m.replace_all(registry.snapshot(&prefix), LeaveReason::Expired);
    m.end_sync();
    m.ready(Ok(()));
    let mut tick = tokio::time::interval(m.settings().update_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = m.stopping() => break,
            c = changes.recv() => match c {
                Ok((p, change)) if p == prefix => match change {
                    Change::Upsert(r) => m.upsert(r),
                    Change::Remove(id, reason) => m.remove(id, reason),
                },
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "local registry: fell behind, resyncing");
                    m.replace_all(registry.snapshot(&prefix), LeaveReason::Expired);
                }
                Err(RecvError::Closed) => break,
            },
            r = local_rx.changed() => {
                if r.is_err() {
                    break;
                }
                if !guest {
                    registry.put(&prefix, m.local_record());
                }
            }
            _ = tick.tick() => {
                m.begin_sync();
                if !guest && local_rx.has_changed().unwrap_or(false) {
                    local_rx.borrow_and_update();
                    registry.put(&prefix, m.local_record());
                }
                m.end_sync();
            }
            _ = m.sync_requested() => {
                m.begin_sync();
                m.end_sync();
            }
        }
    }
    if let Some(id) = reg.id.take() {
        registry.take(&prefix, id, LeaveReason::Graceful);
    }
}
