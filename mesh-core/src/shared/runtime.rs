//! The shared-object layer of one node, wired to messaging: the owner's handlers, the
//! pushes to subscribers, the routing of pushes to replicas, TTL expiry and owner loss.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::SharedLimits;
use super::SharedObject;
use super::backup::StandbyTable;
use super::error::{Refusal, RemoveReason};
use super::id::ObjectId;
use super::owner::OwnerTable;
use super::replica::{Replica, Sink};
use super::wire::{
    BackupMsg, CMD_BACKUP, CMD_CREATE, CMD_INSPECT, CMD_LIST, CMD_PUSH, CMD_READ, CMD_REMOVE,
    CMD_UNSUBSCRIBE, CMD_WRITE, CreateReq, ObjectInfo, Push, ReadReq, Snapshot, Unsubscribe,
    WriteReq,
};
use crate::discovery::MeshEvent;
use crate::node::NodeId;
use crate::rpc::{self, CallContext, Method, Rpc};

/// Pushes held for an object being subscribed to, until its snapshot arrives.
const MAX_PENDING_PUSHES: usize = 1024;
/// Objects being subscribed to at once on one node.
const MAX_PENDING_OBJECTS: usize = 4096;
/// Subscriber/object pairs waiting for a resync notice at most.
const MAX_LAGGED: usize = 65_536;
/// How long a replica may sit ahead of a gap before it reads a snapshot (a delta sent on
/// the bulk channel can be overtaken by later small ones).
const GAP_GRACE: Duration = Duration::from_millis(50);
/// Snapshot reads one resync task makes in a row at most.
const MAX_RESYNC_ROUNDS: u32 = 16;

/// The pause between a replica's attempts to reach the backup taking its object over.
const FOLLOW_PAUSE: Duration = Duration::from_millis(50);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of the shared-object layer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) forged_pushes: AtomicU64,
    pub(crate) takeovers: AtomicU64,
    pub(crate) fenced: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) lagged: AtomicU64,
    pub(crate) dropped_pushes: AtomicU64,
}

/// What the shared-object layer of a node dropped or repaired since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SharedStats {
    /// Objects this node owns now.
    pub owned: usize,
    /// Replicas this node holds now.
    pub replicas: usize,
    /// Pushes refused because they did not come from the object's owner.
    pub forged_pushes: u64,
    /// Snapshots read to repair a replica (after a gap or a lag).
    pub resyncs: u64,
    /// Deltas not sent to a subscriber whose send queue was full (it resyncs instead).
    pub lagged: u64,
    /// Pushes for objects this node holds no replica of (late, after unsubscribing), or
    /// from a backup taking over before the replica followed it.
    pub dropped_pushes: u64,
    /// Objects this node backs for their owners now.
    pub backing: usize,
    /// Objects this node took over as their backup.
    pub takeovers: u64,
    /// Objects this node stopped ordering because a newer owner fenced it.
    pub fenced: u64,
}

/// One replica, as the runtime routes to it (untyped) and hands it out again (typed).
struct Slot {
    sink: Weak<dyn Sink>,
    any: Weak<dyn Any + Send + Sync>,
}

/// The shared-object state of one node.
pub(crate) struct Runtime {
    pub(crate) rpc: Arc<Rpc>,
    pub(crate) me: NodeId,
    pub(crate) owner: Mutex<OwnerTable>,
    /// The objects this node backs for their owners.
    pub(crate) standby: Mutex<StandbyTable>,
    replicas: Mutex<HashMap<ObjectId, Slot>>,
    /// Objects being subscribed to: pushes (with their sender) that arrive before the
    /// snapshot.
    pending: Mutex<HashMap<ObjectId, Vec<(SocketAddr, Push)>>>,
    /// Subscribers whose deltas were dropped (full queue): they get a resync notice.
    lagged: Mutex<BTreeSet<(SocketAddr, ObjectId)>>,
    /// Wakes the housekeeping task (new TTL, lagged subscribers).
    pub(crate) wake: Notify,
    pub(crate) counters: Counters,
    weak: Weak<Runtime>,
}

impl Runtime {
    /// Starts the layer: registers its handlers and spawns its housekeeping.
    pub(crate) fn start(
        rpc: Arc<Rpc>,
        limits: SharedLimits,
        stop: CancellationToken,
    ) -> Result<(Arc<Runtime>, Vec<tokio::task::JoinHandle<()>>), rpc::RegisterError> {
        let me = rpc.membership.local_id();
        let rt = Arc::new_cyclic(|weak| Runtime {
            rpc: rpc.clone(),
            me,
            owner: Mutex::new(OwnerTable::new(me, limits)),
            standby: Mutex::new(StandbyTable::new(limits)),
            replicas: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            lagged: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
            counters: Counters::default(),
            weak: weak.clone(),
        });
        rpc.register("mesh.shared", methods(Arc::downgrade(&rt)), true)?;
        let tasks = vec![
            tokio::spawn(housekeeping(Arc::downgrade(&rt), stop.clone())),
            tokio::spawn(watch_members(Arc::downgrade(&rt), stop)),
        ];
        Ok((rt, tasks))
    }

    pub(crate) fn stats(&self) -> SharedStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SharedStats {
            owned: lock(&self.owner).list().len(),
            replicas: lock(&self.replicas).len(),
            forged_pushes: get(&self.counters.forged_pushes),
            resyncs: get(&self.counters.resyncs),
            lagged: get(&self.counters.lagged),
            dropped_pushes: get(&self.counters.dropped_pushes),
            backing: lock(&self.standby).len(),
            takeovers: get(&self.counters.takeovers),
            fenced: get(&self.counters.fenced),
        }
    }

    pub(crate) fn owned(&self) -> Vec<ObjectInfo> {
        lock(&self.owner).list()
    }

    pub(crate) fn schema(&self, id: ObjectId) -> Option<Arc<super::Schema>> {
        lock(&self.owner).schema(id)
    }

    /// Sends `push` to every subscriber without waiting; this node's own replica gets it at
    /// once.
    pub(crate) fn push_all(&self, to: &[SocketAddr], push: &Push) {
        if to.is_empty() {
            return;
        }
        let Ok(payload) = crate::codec::encode(push) else {
            return;
        };
        let msg = rpc::wire::oneway(CMD_PUSH, 0, &payload);
        for &addr in to {
            if addr == self.me.addr {
                self.on_push(self.me.addr, push.clone());
                continue;
            }
            let ch = rpc::channel_for(msg.len());
            if self
                .rpc
                .transport
                .try_queue_detached(addr, ch, msg.clone())
                .is_err()
            {
                // A full queue (or a gone peer): this subscriber resyncs instead.
                self.counters.lagged.fetch_add(1, Ordering::Relaxed);
                let mut lagged = lock(&self.lagged);
                if lagged.len() < MAX_LAGGED {
                    lagged.insert((addr, push.id()));
                }
                drop(lagged);
                self.wake.notify_one();
            }
        }
    }

    /// Tells lagged subscribers to resync, as their queues drain.
    async fn notify_lagged(&self) {
        let todo: Vec<(SocketAddr, ObjectId)> = std::mem::take(&mut *lock(&self.lagged))
            .into_iter()
            .collect();
        for (addr, id) in todo {
            let Ok(payload) = crate::codec::encode(&Push::Resync { id }) else {
                continue;
            };
            let msg = rpc::wire::oneway(CMD_PUSH, 0, &payload);
            // Waits for room: the notice must get through (or the peer fail).
            let _ = self.rpc.transport.queue(addr, rpc::CH_SMALL, msg).await;
        }
    }

    // ---- the replicas' side ----

    /// A push from `from` (this node's own address for its own objects).
    pub(crate) fn on_push(&self, from: SocketAddr, push: Push) {
        let id = push.id();
        let sink = lock(&self.replicas).get(&id).and_then(|s| s.sink.upgrade());
        let Some(sink) = sink else {
            let mut pending = lock(&self.pending);
            match pending.get_mut(&id) {
                Some(held) if held.len() < MAX_PENDING_PUSHES => held.push((from, push)),
                Some(_) => {}
                None => {
                    self.counters.dropped_pushes.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        };
        self.feed(&sink, id, from, push);
    }

    /// Feeds a push to a replica, if it comes from the owner the replica follows.
    fn feed(&self, sink: &Arc<dyn Sink>, id: ObjectId, from: SocketAddr, push: Push) {
        if from != sink.owner().addr {
            // Only the owner speaks for its objects; a backup taking over may speak before
            // the replica followed it (the replica's snapshot covers that).
            let counter = if sink.backup().is_some_and(|b| b.addr == from) {
                &self.counters.dropped_pushes
            } else {
                &self.counters.forged_pushes
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match push {
            Push::Delta {
                epoch,
                version,
                by,
                effects,
                ..
            } => {
                if sink.delta(epoch, version, by, effects) == super::replica::Flow::Gap {
                    self.resync_later(sink.clone(), id);
                }
            }
            Push::Removed { reason, .. } => sink.removed(reason),
            Push::Resync { .. } => self.resync_now(sink.clone(), id),
            Push::Placement {
                owner,
                backup,
                epoch,
                ..
            } => {
                if owner == sink.owner() {
                    sink.set_backup(backup, epoch);
                } else {
                    self.follow_to(sink.clone(), id, owner);
                }
            }
        }
    }

    /// Reads a snapshot if the replica is still ahead of a gap after the grace period.
    pub(crate) fn resync_later(&self, sink: Arc<dyn Sink>, id: ObjectId) {
        self.spawn_resync(sink, id, false);
    }

    pub(crate) fn resync_now(&self, sink: Arc<dyn Sink>, id: ObjectId) {
        self.spawn_resync(sink, id, true);
    }

    /// One resync task per replica at a time, going on while the replica is still ahead
    /// of a gap: a snapshot read while later deltas were dropped (`MAX_AHEAD`) or reported
    /// gaps that found this task busy (and so scheduled nothing) can leave a gap that no
    /// later delta fills. At most [`MAX_RESYNC_ROUNDS`] reads in a row: a replica still
    /// gapped after them (its owner gone, say) waits for the next delta to report the gap.
    fn spawn_resync(&self, sink: Arc<dyn Sink>, id: ObjectId, now: bool) {
        if !sink.begin_resync() {
            return;
        }
        let me = self.self_weak();
        tokio::spawn(async move {
            let mut force = now;
            if !force {
                tokio::time::sleep(GAP_GRACE).await;
            }
            let mut rounds = 0;
            loop {
                let Some(rt) = me.upgrade() else { break };
                if rounds < MAX_RESYNC_ROUNDS && (force || sink.gapped()) {
                    rounds += 1;
                    force = false;
                    rt.resync(&sink, id).await;
                    drop(rt);
                    if sink.gapped() {
                        tokio::time::sleep(GAP_GRACE).await;
                    }
                    continue;
                }
                sink.end_resync();
                // A gap reported after the last look found this task busy: look once more.
                if !(sink.gapped() && sink.begin_resync()) {
                    return;
                }
            }
            sink.end_resync();
        });
    }

    async fn resync(&self, sink: &Arc<dyn Sink>, id: ObjectId) {
        self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%id, version = sink.version(), "shared object resync");
        // The fingerprint was checked when the replica subscribed; 0 skips the check.
        match self.read_at(sink.owner(), id, None, false).await {
            Ok(snap) => {
                if let Err(e) = sink.snapshot(&snap) {
                    tracing::warn!(%id, error = %e, "shared object snapshot does not decode");
                }
            }
            Err(super::SharedError::Refused {
                refusal: Refusal::NotFound,
                ..
            }) => sink.removed(RemoveReason::Removed),
            Err(e) => tracing::debug!(%id, error = %e, "shared object resync failed"),
        }
    }

    /// Reads the object at `owner`; with `check`, refuses another type.
    pub(crate) async fn read_at(
        &self,
        owner: NodeId,
        id: ObjectId,
        check: Option<(u32, &str)>,
        subscribe: bool,
    ) -> Result<Snapshot, super::SharedError> {
        let (fingerprint, type_name) = check.unwrap_or((0, ""));
        let req = ReadReq {
            id,
            fingerprint,
            type_name: type_name.to_string(),
            subscribe,
        };
        self.client(owner)
            .call_fallible::<_, Snapshot, Refusal>(CMD_READ, &req)
            .await
            .map_err(|e| super::SharedError::from_call(id, e))
    }

    pub(crate) fn client(&self, owner: impl Into<crate::Target>) -> rpc::Client {
        rpc::Client::through(self.rpc.clone(), owner.into())
    }

    /// Announces a subscription about to be made, so pushes that beat its snapshot are held.
    pub(crate) fn expect(&self, id: ObjectId) -> bool {
        let mut pending = lock(&self.pending);
        if pending.len() >= MAX_PENDING_OBJECTS {
            return false;
        }
        pending.entry(id).or_default();
        true
    }

    /// The typed replica of `id` this node holds, if any: `Err` if it is of another type.
    pub(crate) fn typed<T: SharedObject>(
        &self,
        id: ObjectId,
    ) -> Result<Option<Arc<Replica<T>>>, ()> {
        let any = lock(&self.replicas).get(&id).and_then(|s| s.any.upgrade());
        match any {
            None => Ok(None),
            Some(a) => a.downcast::<Replica<T>>().map(Some).map_err(|_| ()),
        }
    }

    /// Installs a replica (or returns the one another task installed first) and feeds it
    /// the pushes that arrived while it subscribed.
    pub(crate) fn install<T: SharedObject>(&self, replica: Arc<Replica<T>>) -> Arc<Replica<T>> {
        let id = replica.id;
        let mut replicas = lock(&self.replicas);
        let existing = replicas
            .get(&id)
            .and_then(|s| s.any.upgrade())
            .and_then(|a| a.downcast::<Replica<T>>().ok());
        let replica = match existing {
            Some(e) => e,
            None => {
                let sink: Arc<dyn Sink> = replica.clone();
                let any: Arc<dyn Any + Send + Sync> = replica.clone();
                replicas.insert(
                    id,
                    Slot {
                        sink: Arc::downgrade(&sink),
                        any: Arc::downgrade(&any),
                    },
                );
                replica
            }
        };
        drop(replicas);
        let held = lock(&self.pending).remove(&id).unwrap_or_default();
        let sink: Arc<dyn Sink> = replica.clone();
        for (from, push) in held {
            self.feed(&sink, id, from, push);
        }
        replica
    }

    /// The owner this node's replica of `id` follows, if it holds one.
    pub(crate) fn current_owner(&self, id: ObjectId) -> Option<NodeId> {
        let sink = lock(&self.replicas).get(&id).and_then(|s| s.sink.upgrade());
        sink.map(|s| s.owner())
    }

    /// The node that orders `id` now, as best this node can tell: itself, the owner its
    /// replica follows, the id's node while it is a member, or else whichever member
    /// answers for it (asked all at once, at most 256 of them).
    pub(crate) async fn locate(&self, id: ObjectId) -> NodeId {
        if self.owns(id) {
            return self.me;
        }
        if let Some(o) = self.current_owner(id) {
            return o;
        }
        if self.is_member(id.owner) {
            return id.owner;
        }
        let members: Vec<NodeId> = {
            let view = self.rpc.membership.view();
            view.iter()
                .map(|r| r.id)
                .filter(|n| *n != self.me)
                .take(256)
                .collect()
        };
        let asks = members.into_iter().map(|n| {
            let client = self.client(n);
            Box::pin(async move {
                client
                    .call_fallible::<_, super::Inspection, Refusal>(super::wire::CMD_INSPECT, &id)
                    .await
                    .map(|_| n)
                    .map_err(|_| ())
            })
        });
        match futures::future::select_ok(asks).await {
            Ok((n, _)) => n,
            Err(()) => id.owner,
        }
    }

    /// Whether this node orders `id` now.
    pub(crate) fn owns(&self, id: ObjectId) -> bool {
        lock(&self.owner).epoch_of(id).is_some()
    }

    /// Whether `node` (that incarnation) is in this node's view.
    pub(crate) fn is_member(&self, node: NodeId) -> bool {
        node == self.me || self.rpc.membership.view().get(&node).is_some()
    }

    /// How long a replica tries to reach the backup taking its object over.
    pub(crate) fn follow_bound(&self) -> Duration {
        let expiry = self.rpc.membership.settings().expiry;
        (expiry * 2).clamp(Duration::from_secs(2), Duration::from_secs(60))
    }

    /// The replica's owner is gone: follow its backup (or lose the object without one).
    pub(crate) fn follow(&self, sink: Arc<dyn Sink>, id: ObjectId) {
        match sink.backup() {
            Some(b) if b != sink.owner() => self.follow_to(sink, id, b),
            _ => sink.removed(RemoveReason::OwnerLost),
        }
    }

    /// Subscribes the replica at `to`, the object's new owner (or the backup about to
    /// take it over), trying for [`follow_bound`](Self::follow_bound); the object is lost
    /// to the replica if it cannot.
    pub(crate) fn follow_to(&self, sink: Arc<dyn Sink>, id: ObjectId, to: NodeId) {
        if !sink.begin_follow() {
            return;
        }
        let me = self.self_weak();
        let bound = self.follow_bound();
        let task = async move {
            let deadline = tokio::time::Instant::now() + bound;
            let mut to = to;
            let mut hops = 0;
            loop {
                let Some(rt) = me.upgrade() else { break };
                if sink.is_removed() {
                    break;
                }
                match rt.read_at(to, id, None, true).await {
                    Ok(snap) if snap.owner == to => {
                        if let Err(e) = sink.snapshot(&snap) {
                            tracing::warn!(%id, error = %e, "shared object snapshot does not decode");
                            sink.removed(RemoveReason::OwnerLost);
                        }
                        break;
                    }
                    Ok(snap) => to = snap.owner,
                    Err(super::SharedError::Refused {
                        refusal: Refusal::Moved { owner, .. } | Refusal::Fenced { owner, .. },
                        ..
                    }) => {
                        hops += 1;
                        to = owner;
                    }
                    Err(super::SharedError::Refused {
                        refusal: Refusal::Standby,
                        ..
                    })
                    | Err(super::SharedError::Call { .. }) => {
                        drop(rt);
                        tokio::time::sleep(FOLLOW_PAUSE).await;
                    }
                    Err(e) => {
                        tracing::info!(%id, error = %e, "shared object not taken over");
                        sink.removed(RemoveReason::OwnerLost);
                        break;
                    }
                }
                if hops > 8 || tokio::time::Instant::now() >= deadline {
                    tracing::info!(%id, "shared object: no owner took it over in time");
                    sink.removed(RemoveReason::OwnerLost);
                    break;
                }
            }
            sink.end_follow();
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(task);
        }
    }

    /// Gives up a subscription that failed.
    pub(crate) fn unexpect(&self, id: ObjectId) {
        lock(&self.pending).remove(&id);
    }

    /// The last handle of a replica (which followed `owner`) is gone: stop its deltas.
    pub(crate) fn replica_dropped(&self, id: ObjectId, owner: NodeId) {
        let mut replicas = lock(&self.replicas);
        if replicas
            .get(&id)
            .is_some_and(|s| s.sink.strong_count() == 0)
        {
            replicas.remove(&id);
        } else {
            return;
        }
        drop(replicas);
        // Never here under the owner's lock (a push may drop the last handle while it is
        // held): the unsubscription runs on a task of its own, local or not.
        if !self.rpc.is_running() {
            return;
        }
        let client = self.client(owner);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.send(CMD_UNSUBSCRIBE, &Unsubscribe { id }).await;
            });
        }
    }

    /// A member left (or restarted): this node takes over what it backed for it, finds
    /// new backups for what it backed here, and its replicas of that node's objects follow
    /// their backups (or are lost without one).
    fn member_gone(&self, node: NodeId) {
        self.take_over_from(node);
        self.backup_gone(node);
        let lost: Vec<(ObjectId, Arc<dyn Sink>)> = lock(&self.replicas)
            .iter()
            .filter_map(|(id, s)| s.sink.upgrade().map(|s| (*id, s)))
            .filter(|(_, s)| s.owner() == node)
            .collect();
        if !lost.is_empty() {
            tracing::info!(owner = %node, replicas = lost.len(), "owner of shared objects lost");
        }
        for (id, s) in lost {
            self.follow(s, id);
        }
        lock(&self.owner).forget_node(node.addr);
    }

    pub(crate) fn self_weak(&self) -> Weak<Runtime> {
        self.weak.clone()
    }
}

/// The layer's command handlers (reserved ids).
fn methods(rt: Weak<Runtime>) -> Vec<Method> {
    let method = Method::unchecked;
    let gone = || Refusal::NotFound;
    let r = rt.clone();
    let create = rpc::fallible_handler(move |ctx: CallContext, req: CreateReq| {
        let r = r.upgrade();
        async move { r.ok_or_else(gone)?.create(ctx.sender_addr(), req).await }
    });
    let r = rt.clone();
    let write = rpc::fallible_handler(move |ctx: CallContext, req: WriteReq| {
        let r = r.upgrade();
        async move {
            let by = ctx.sender_id();
            r.ok_or_else(gone)?.write(ctx.sender_addr(), by, req).await
        }
    });
    let r = rt.clone();
    let backup = rpc::fallible_handler(move |ctx: CallContext, msg: BackupMsg| {
        let r = r.upgrade();
        async move { r.ok_or_else(gone)?.backup(ctx.sender_id(), msg) }
    });
    let r = rt.clone();
    let read = rpc::fallible_handler(move |ctx: CallContext, req: ReadReq| {
        let r = r.upgrade();
        async move { r.ok_or_else(gone)?.read(ctx.sender_addr(), req) }
    });
    let r = rt.clone();
    let unsubscribe = rpc::handler(move |ctx: CallContext, req: Unsubscribe| {
        if let Some(r) = r.upgrade() {
            lock(&r.owner).unsubscribe(req.id, ctx.sender_addr());
        }
        async {}
    });
    let r = rt.clone();
    let remove = rpc::fallible_handler(move |_ctx: CallContext, id: ObjectId| {
        let r = r.upgrade();
        async move { r.ok_or_else(gone)?.remove(id) }
    });
    let r = rt.clone();
    let push = rpc::handler(move |ctx: CallContext, push: Push| {
        if let Some(r) = r.upgrade() {
            // Checked against the owner the replica follows.
            r.on_push(ctx.sender_addr(), push);
        }
        async {}
    });
    let r = rt.clone();
    let inspect = rpc::fallible_handler(move |_ctx: CallContext, id: ObjectId| {
        let r = r.upgrade();
        async move { lock(&r.ok_or_else(gone)?.owner).inspect(id) }
    });
    let r = rt;
    let list = rpc::handler(move |_ctx: CallContext, (): ()| {
        let list = r.upgrade().map(|r| r.owned()).unwrap_or_default();
        async move { list }
    });
    vec![
        method(CMD_CREATE, "create", create),
        method(CMD_WRITE, "write", write),
        method(CMD_READ, "read", read),
        method(CMD_UNSUBSCRIBE, "unsubscribe", unsubscribe),
        method(CMD_REMOVE, "remove", remove),
        method(CMD_PUSH, "push", push),
        method(CMD_LIST, "list", list),
        method(CMD_BACKUP, "backup", backup),
        method(CMD_INSPECT, "inspect", inspect),
    ]
}

/// Expires objects at their TTL and tells lagged subscribers to resync.
async fn housekeeping(rt: Weak<Runtime>, stop: CancellationToken) {
    loop {
        let Some(next) = rt.upgrade().map(|r| lock(&r.owner).next_expiry()) else {
            return;
        };
        // Holds the runtime only while it waits; `stop` ends the wait when the mesh stops.
        let Some(held) = rt.upgrade() else { return };
        let wake = held.wake.notified();
        tokio::select! {
            _ = async {
                match next {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = wake => {}
            _ = stop.cancelled() => return,
        }
        drop(held);
        let Some(r) = rt.upgrade() else { return };
        {
            let mut owner = lock(&r.owner);
            let gone = owner.expire(std::time::Instant::now());
            for g in &gone {
                tracing::debug!(id = %g.id, "shared object expired");
                r.push_gone(g);
            }
        }
        r.notify_lagged().await;
    }
}

/// Owner loss: a member that left or restarted hands its objects to their backups (or
/// takes them with it), and subscribes to nothing any more.
async fn watch_members(rt: Weak<Runtime>, stop: CancellationToken) {
    let Some(mut events) = rt.upgrade().map(|r| r.rpc.membership.events()) else {
        return;
    };
    loop {
        let e = tokio::select! {
            e = events.recv() => e,
            _ = stop.cancelled() => return,
        };
        let Some(r) = rt.upgrade() else { return };
        match e {
            Ok(MeshEvent::Left { node, .. }) => r.member_gone(node.id),
            Ok(MeshEvent::Restarted { old, .. }) => r.member_gone(old.id),
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                // Some leave may be among the missed events: check every owner we replicate.
                tracing::warn!(
                    missed = n,
                    "membership events lagged; checking shared owners"
                );
                let mut owners: BTreeSet<NodeId> = lock(&r.replicas)
                    .values()
                    .filter_map(|s| s.sink.upgrade().map(|s| s.owner()))
                    .collect();
                owners.extend(lock(&r.standby).owners());
                let lost: Vec<NodeId> = {
                    let view = r.rpc.membership.view();
                    owners
                        .into_iter()
                        .filter(|o| *o != r.me && view.get(o).is_none())
                        .collect()
                };
                for o in lost {
                    r.member_gone(o);
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}
