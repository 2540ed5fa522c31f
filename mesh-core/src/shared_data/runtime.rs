//! The shared data of one node, wired to messaging: writers routing to a key's owner, the
//! owner ordering through the backup, pushes to every member, and the join read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::store::{Entry, Hold, Store, owners};
use super::{DataError, DataEvent, DataRefusal, DataStats, SharedDataLimits};
use crate::node::NodeId;
use crate::rpc::{self, CallContext, CallError, Method, Rpc};

/// Orders a write at the key's owner: [`WriteReq`] -> [`Entry`].
const CMD_WRITE: u16 = 65120;
/// Asks the key's backup to hold an entry: `(key, Entry)` -> [`HoldReply`].
const CMD_HOLD: u16 = 65121;
/// An ordered entry, to every member (one-way): `(key, Entry)`.
const CMD_PUSH: u16 = 65122;
/// A page of the whole map for a joining node: `Option<String>` (after) -> entries.
const CMD_DUMP: u16 = 65123;

/// Entries per page of the join read.
const PAGE: usize = 256;
/// Tries of one write while views settle or the backup changes.
const MAX_TRIES: usize = 5;
/// The pause before asking again when views disagree on the owner.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Events a slow reader may fall behind by.
const EVENT_CAPACITY: usize = 1024;
/// Keys whose writes wait for their turn at once, at most (more are refused as busy).
const MAX_TURNS: usize = 65_536;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WriteReq {
    key: String,
    value: Option<Bytes>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum HoldReply {
    Held,
    Behind(Entry),
}

/// The shared data of one node.
pub(crate) struct Runtime {
    rpc: Arc<Rpc>,
    pub(crate) me: NodeId,
    guest: bool,
    store: Mutex<Store>,
    pub(crate) events: broadcast::Sender<DataEvent>,
    /// Writes to one key take turns at its owner (each waits for the backup).
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    forged: AtomicU64,
    ordered: AtomicU64,
}

impl Runtime {
    pub(crate) fn start(
        rpc: Arc<Rpc>,
        limits: SharedDataLimits,
        guest: bool,
    ) -> Result<Arc<Runtime>, rpc::RegisterError> {
        let me = rpc.membership.local_id();
        let rt = Arc::new(Runtime {
            rpc: rpc.clone(),
            me,
            guest,
            store: Mutex::new(Store::new(limits)),
            events: broadcast::channel(EVENT_CAPACITY).0,
            turns: Mutex::new(HashMap::new()),
            forged: AtomicU64::new(0),
            ordered: AtomicU64::new(0),
        });
        rpc.register("mesh.shared_data", methods(Arc::downgrade(&rt)), true)?;
        Ok(rt)
    }

    /// The members a key's owner is chosen among: every listed node (guests are not).
    fn members(&self) -> Vec<NodeId> {
        let view = self.rpc.membership.view();
        let mut m: Vec<NodeId> = view.iter().map(|r| r.id).collect();
        drop(view);
        if !self.guest && !m.contains(&self.me) {
            m.push(self.me);
        }
        m
    }

    fn is_member(&self, node: NodeId) -> bool {
        node == self.me || self.rpc.membership.view().get(&node).is_some()
    }

    fn client(&self, to: NodeId) -> rpc::Client {
        rpc::Client::through(self.rpc.clone(), crate::Target::Node(to))
    }

    /// Applies an entry and tells readers, if it is newer than what is held.
    fn apply(&self, key: &str, entry: Entry) {
        if self.guest {
            return;
        }
        let (version, value, by) = (entry.version, entry.value.is_some(), entry.by);
        if lock(&self.store).apply(key, entry) {
            let e = if value {
                DataEvent::Updated {
                    key: key.to_string(),
                    version,
                    by,
                }
            } else {
                DataEvent::Removed {
                    key: key.to_string(),
                    version,
                }
            };
            let _ = self.events.send(e);
        }
    }

    pub(crate) fn value(&self, key: &str) -> Option<Bytes> {
        lock(&self.store).get(key).and_then(|e| e.value.clone())
    }

    pub(crate) fn version(&self, key: &str) -> u64 {
        lock(&self.store).get(key).map_or(0, |e| e.version)
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        lock(&self.store).keys()
    }

    pub(crate) fn stats(&self) -> DataStats {
        DataStats {
            keys: lock(&self.store).len(),
            forged_pushes: self.forged.load(Ordering::Relaxed),
            ordered: self.ordered.load(Ordering::Relaxed),
        }
    }

    /// A write from this node: to the key's owner (asking again while views settle).
    pub(crate) async fn write(&self, key: &str, value: Option<Bytes>) -> Result<u64, DataError> {
        let refused = |refusal| DataError::Refused {
            key: key.to_string(),
            refusal,
        };
        lock(&self.store)
            .check(key, value.as_ref())
            .map_err(refused)?;
        let by = (!self.guest).then_some(self.me);
        let mut last = None;
        for _ in 0..MAX_TRIES {
            let Some(owner) = owners(key, &self.members()).0 else {
                return Err(DataError::NoOwner {
                    key: key.to_string(),
                });
            };
            let r: Result<Entry, CallError<DataRefusal>> = if owner == self.me {
                self.order(by, key.to_string(), value.clone())
                    .await
                    .map_err(CallError::Remote)
            } else {
                let req = WriteReq {
                    key: key.to_string(),
                    value: value.clone(),
                };
                self.client(owner)
                    .call_fallible::<_, Entry, DataRefusal>(CMD_WRITE, &req)
                    .await
            };
            match r {
                Ok(entry) => {
                    let v = entry.version;
                    self.apply(key, entry);
                    return Ok(v);
                }
                Err(CallError::Remote(DataRefusal::NotOwner { owner })) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    last = Some(DataRefusal::NotOwner { owner });
                }
                Err(CallError::Remote(r)) => return Err(refused(r)),
                // The owner may be gone (views settle: ask the next one) or not (the write
                // may or may not have been applied).
                Err(e) if self.is_member(owner) => return Err(DataError::from_call(key, e)),
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        }
        Err(refused(
            last.unwrap_or(DataRefusal::NotOwner { owner: None }),
        ))
    }

    fn turn(&self, key: &str) -> Result<Arc<tokio::sync::Mutex<()>>, DataRefusal> {
        let mut turns = lock(&self.turns);
        if turns.len() >= MAX_TURNS {
            turns.retain(|_, t| Arc::strong_count(t) > 1);
            if turns.len() >= MAX_TURNS {
                return Err(DataRefusal::NoBackup {
                    detail: "too many keys being written at once; write again".to_string(),
                });
            }
        }
        Ok(turns.entry(key.to_string()).or_default().clone())
    }

    fn end_turn(&self, key: &str) {
        let mut turns = lock(&self.turns);
        if turns.get(key).is_some_and(|t| Arc::strong_count(t) == 1) {
            turns.remove(key);
        }
    }

    /// As the key's owner: orders the write, has the backup hold it, applies it here and
    /// pushes it to every member.
    async fn order(
        &self,
        by: Option<NodeId>,
        key: String,
        value: Option<Bytes>,
    ) -> Result<Entry, DataRefusal> {
        let turn = self.turn(&key)?;
        let r = {
            let _turn = turn.lock().await;
            self.order_in_turn(by, &key, value).await
        };
        drop(turn);
        self.end_turn(&key);
        r
    }

    async fn order_in_turn(
        &self,
        by: Option<NodeId>,
        key: &str,
        value: Option<Bytes>,
    ) -> Result<Entry, DataRefusal> {
        for _ in 0..MAX_TRIES {
            let members = self.members();
            let (owner, backup) = owners(key, &members);
            if owner != Some(self.me) || self.guest {
                return Err(DataRefusal::NotOwner { owner });
            }
            let entry = lock(&self.store).order(key, value.clone(), self.me, by)?;
            if let Some(b) = backup {
                let r = self
                    .client(b)
                    .call_fallible::<_, HoldReply, DataRefusal>(
                        CMD_HOLD,
                        &(key.to_string(), entry.clone()),
                    )
                    .await;
                match r {
                    Ok(HoldReply::Held) => {}
                    Ok(HoldReply::Behind(newer)) => {
                        // This node ordered from a stale copy: order after the backup's.
                        self.apply(key, newer);
                        continue;
                    }
                    Err(CallError::Remote(r @ DataRefusal::Fenced { .. })) => return Err(r),
                    Err(e) => {
                        if self.is_member(b) {
                            return Err(DataRefusal::NoBackup {
                                detail: format!("{b} did not hold it: {e}"),
                            });
                        }
                        continue;
                    }
                }
            }
            self.ordered.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                key,
                version = entry.version,
                epoch = entry.epoch,
                "shared data ordered"
            );
            self.apply(key, entry.clone());
            self.push(key, &entry, &members, backup);
            return Ok(entry);
        }
        Err(DataRefusal::NoBackup {
            detail: "the key's backup kept changing".to_string(),
        })
    }

    /// Sends an ordered entry to every member but this node and the backup.
    fn push(&self, key: &str, entry: &Entry, members: &[NodeId], backup: Option<NodeId>) {
        let Ok(payload) = crate::codec::encode(&(key, entry)) else {
            return;
        };
        let msg = rpc::wire::oneway(CMD_PUSH, 0, &payload);
        let ch = rpc::channel_for(msg.len());
        for m in members {
            if *m == self.me || Some(*m) == backup {
                continue;
            }
            // A full queue drops it for that member: the next write of the key, or a
            // later join read, brings it (the store keeps the newest).
            let _ = self
                .rpc
                .transport
                .try_queue_detached(m.addr, ch, msg.clone());
        }
    }

    /// As the key's backup.
    fn hold(
        &self,
        from: Option<NodeId>,
        key: String,
        entry: Entry,
    ) -> Result<HoldReply, DataRefusal> {
        if from.is_none() || self.guest {
            // Not from a member: never held; but one cut off is told it is fenced.
            let held = lock(&self.store).get(&key).map(|e| (e.owner, e.epoch));
            return Err(match held {
                Some((owner, epoch)) if epoch > entry.epoch => DataRefusal::Fenced { owner, epoch },
                _ => DataRefusal::NotOwner { owner: None },
            });
        }
        let r = lock(&self.store).hold(&key, entry.clone())?;
        match r {
            Hold::Held => {
                let e = if entry.value.is_some() {
                    DataEvent::Updated {
                        key,
                        version: entry.version,
                        by: entry.by,
                    }
                } else {
                    DataEvent::Removed {
                        key,
                        version: entry.version,
                    }
                };
                let _ = self.events.send(e);
                Ok(HoldReply::Held)
            }
            Hold::Behind(newer) => Ok(HoldReply::Behind(newer)),
        }
    }

    fn on_push(&self, from: SocketAddr, key: String, entry: Entry) {
        let member = self.rpc.membership.view().by_addr(from).is_some();
        if !member || entry.owner.addr != from {
            self.forged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.apply(&key, entry);
    }

    fn page(&self, after: Option<String>) -> Vec<(String, Entry)> {
        lock(&self.store).page(after.as_deref(), PAGE)
    }

    /// Reads the whole map from a member (the first that answers), bounded by `bound`.
    pub(crate) async fn join(&self, bound: Duration) {
        if self.guest {
            return;
        }
        let peers: Vec<NodeId> = self
            .members()
            .into_iter()
            .filter(|m| *m != self.me)
            .take(3)
            .collect();
        if peers.is_empty() {
            return;
        }
        let read = async {
            for peer in &peers {
                let mut after: Option<String> = None;
                let mut n = 0usize;
                let ok = loop {
                    let r = self
                        .client(*peer)
                        .call::<_, Vec<(String, Entry)>>(CMD_DUMP, &after)
                        .await;
                    let Ok(page) = r else { break false };
                    let last = page.last().map(|(k, _)| k.clone());
                    let full = page.len() >= PAGE;
                    for (k, e) in page {
                        self.apply(&k, e);
                        n += 1;
                    }
                    match (full, last) {
                        (true, Some(l)) => after = Some(l),
                        _ => break true,
                    }
                };
                if ok {
                    tracing::debug!(from = %peer, entries = n, "shared data read at join");
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(bound, read).await {
            Ok(true) => {}
            _ => tracing::warn!("shared data: no member answered the join read"),
        }
    }
}

fn methods(rt: Weak<Runtime>) -> Vec<Method> {
    let method = Method::unchecked;
    let gone = || DataRefusal::NotOwner { owner: None };
    let r = rt.clone();
    let write = rpc::fallible_handler(move |ctx: CallContext, req: WriteReq| {
        let r = r.upgrade();
        async move {
            let r = r.ok_or_else(gone)?;
            let store_check = lock(&r.store).check(&req.key, req.value.as_ref());
            store_check?;
            r.order(ctx.sender_id(), req.key, req.value).await
        }
    });
    let r = rt.clone();
    let hold = rpc::fallible_handler(move |ctx: CallContext, (key, entry): (String, Entry)| {
        let r = r.upgrade();
        async move { r.ok_or_else(gone)?.hold(ctx.sender_id(), key, entry) }
    });
    let r = rt.clone();
    let push = rpc::handler(move |ctx: CallContext, (key, entry): (String, Entry)| {
        if let Some(r) = r.upgrade() {
            r.on_push(ctx.sender_addr(), key, entry);
        }
        async {}
    });
    let r = rt;
    let dump = rpc::handler(move |_ctx: CallContext, after: Option<String>| {
        let page = r.upgrade().map(|r| r.page(after)).unwrap_or_default();
        async move { page }
    });
    vec![
        method(CMD_WRITE, "write", write),
        method(CMD_HOLD, "hold", hold),
        method(CMD_PUSH, "push", push),
        method(CMD_DUMP, "dump", dump),
    ]
}
