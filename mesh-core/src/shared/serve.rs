//! The owner's side of the runtime: creating objects, ordering writes (held by the backup
//! before they are acknowledged), reads, removal, the backup's side, takeover and fencing.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::backup::rendezvous;
use super::error::Refusal;
use super::id::ObjectId;
use super::owner::{Committed, Gone, Planned, Written};
use super::runtime::{Runtime, lock};
use super::wire::{
    Ack, BackupChoice, BackupMsg, BackupReply, CMD_BACKUP, CreateReq, Push, ReadReq, Snapshot,
    WriteReq,
};
use crate::node::NodeId;
use crate::rpc::CallError;

/// Tries of one write while its backup changes under it.
const MAX_PLANS: usize = 3;

impl Runtime {
    /// Chooses the backup of `id` by `choice`, never one of `exclude` (nor this node).
    pub(crate) fn choose_backup(
        &self,
        id: ObjectId,
        choice: &BackupChoice,
        exclude: &[NodeId],
    ) -> Result<Option<NodeId>, Refusal> {
        match choice {
            BackupChoice::None => Ok(None),
            BackupChoice::Node(n) => {
                if *n == self.me || exclude.contains(n) || !self.is_member(*n) {
                    return Err(Refusal::NoBackup {
                        detail: format!("{n} is not a live member other than the owner"),
                    });
                }
                Ok(Some(*n))
            }
            BackupChoice::Auto { node_type } => {
                let wanted = match node_type {
                    Some(t) => t.clone(),
                    None => self.rpc.membership.local_record().node_type,
                };
                let view = self.rpc.membership.view();
                let candidates: Vec<NodeId> = view
                    .iter()
                    .filter(|r| r.node_type == wanted && r.id != self.me)
                    .filter(|r| !exclude.contains(&r.id) && view.available(r))
                    .map(|r| r.id)
                    .collect();
                drop(view);
                match rendezvous(id, candidates) {
                    Some(n) => Ok(Some(n)),
                    None => Err(Refusal::NoBackup {
                        detail: format!("no other live node of type `{wanted}` to hold it"),
                    }),
                }
            }
        }
    }

    async fn send_backup(
        &self,
        to: NodeId,
        msg: &BackupMsg,
    ) -> Result<BackupReply, CallError<Refusal>> {
        self.client(to)
            .call_fallible::<_, BackupReply, Refusal>(CMD_BACKUP, msg)
            .await
    }

    /// A new object; with a backup, answered once the backup holds it.
    pub(crate) async fn create(
        &self,
        from: SocketAddr,
        req: CreateReq,
    ) -> Result<Snapshot, Refusal> {
        let ttl = req.ttl_ms.map(Duration::from_millis);
        let sub = req.subscribe.then_some(from);
        let choice = req.backup;
        let mut snap = lock(&self.owner).create(
            req.schema,
            req.fields,
            ttl,
            sub,
            None,
            choice.clone(),
            Instant::now(),
        )?;
        let id = snap.id;
        let undo = |rt: &Runtime| {
            let _ = lock(&rt.owner).remove(id);
        };
        let backup = match self.choose_backup(id, &choice, &[]) {
            Ok(b) => b,
            Err(e) => {
                undo(self);
                return Err(e);
            }
        };
        if let Some(b) = backup {
            lock(&self.owner).set_backup(id, Some(b));
            let full = lock(&self.owner).full(id);
            let Some((_, msg)) = full else {
                return Err(Refusal::NotFound);
            };
            match self.send_backup(b, &msg).await {
                Ok(BackupReply::Held) => lock(&self.owner).backup_synced(id, true),
                Ok(BackupReply::NeedFull) => {
                    undo(self);
                    return Err(Refusal::NoBackup {
                        detail: format!("{b} did not take the object"),
                    });
                }
                Err(e) => {
                    undo(self);
                    return Err(Refusal::NoBackup {
                        detail: format!("{b} did not hold it: {e}"),
                    });
                }
            }
            snap.backup = Some(b);
        }
        if ttl.is_some() {
            self.wake.notify_one();
        }
        tracing::debug!(%id, backup = ?backup, "shared object created");
        Ok(snap)
    }

    /// Orders a write; with a backup, acknowledged once the backup holds it. The writer
    /// (`from`) gets the effects in the answer, not in a push as well: its replica applies
    /// them from there (and resyncs if the answer is lost).
    pub(crate) async fn write(
        &self,
        from: SocketAddr,
        by: Option<NodeId>,
        req: WriteReq,
    ) -> Result<Ack, Refusal> {
        let id = req.id;
        for _ in 0..MAX_PLANS {
            let gate = lock(&self.owner).gate(id)?;
            let _turn = match &gate {
                Some(g) => Some(g.lock().await),
                None => None,
            };
            let planned = {
                let mut owner = lock(&self.owner);
                match owner.write(id, &req.ops, Instant::now())? {
                    Written::Committed(c) => return Ok(self.publish(id, from, by, c)),
                    // A backup was named since the gate was looked up: take turns.
                    Written::Planned(_) if gate.is_none() => continue,
                    Written::Planned(p) => p,
                }
            };
            let backup = planned.backup;
            match self.hold_at_backup(&planned).await {
                Ok(()) => {
                    let mut owner = lock(&self.owner);
                    let c = owner.commit(planned, Instant::now())?;
                    let ack = self.publish(id, from, by, c);
                    drop(owner);
                    return Ok(ack);
                }
                Err(r @ Refusal::Fenced { .. }) => return Err(r),
                Err(r) => {
                    if self.is_member(backup) {
                        return Err(r);
                    }
                    // The backup is gone: choose another (or go on without one) and plan
                    // the write again.
                    self.replace_backup(id, backup);
                }
            }
        }
        Err(Refusal::NoBackup {
            detail: "the object's backup kept changing".to_string(),
        })
    }

    /// Pushes a committed write to its subscribers and makes the writer's answer. Called
    /// under the owner's lock: every subscriber's deltas leave in version order.
    fn publish(&self, id: ObjectId, from: SocketAddr, by: Option<NodeId>, c: Committed) -> Ack {
        let push = Push::Delta {
            id,
            epoch: c.epoch,
            version: c.version,
            by,
            effects: c.effects.clone(),
        };
        self.push_all_but(from, &c.subscribers, &push);
        Ack {
            epoch: c.epoch,
            version: c.version,
            effects: c.effects,
        }
    }

    fn push_all_but(&self, writer: SocketAddr, to: &[SocketAddr], push: &Push) {
        if to.contains(&writer) {
            let rest: Vec<SocketAddr> = to.iter().copied().filter(|a| *a != writer).collect();
            self.push_all(&rest, push);
        } else {
            self.push_all(to, push);
        }
    }

    /// Sends a planned write to the backup until it holds it (the whole object if it asks).
    async fn hold_at_backup(&self, p: &Planned) -> Result<(), Refusal> {
        let mut msg = p.msg.clone();
        for round in 0..2 {
            match self.send_backup(p.backup, &msg).await {
                Ok(BackupReply::Held) => return Ok(()),
                Ok(BackupReply::NeedFull) if round == 0 => {
                    let owner = lock(&self.owner);
                    msg = p.full(&owner).ok_or(Refusal::NotFound)?;
                }
                Ok(BackupReply::NeedFull) => break,
                Err(CallError::Remote(Refusal::Fenced { owner, epoch })) => {
                    self.fence(p.id, owner, epoch);
                    return Err(Refusal::Fenced { owner, epoch });
                }
                Err(e) => {
                    lock(&self.owner).backup_synced(p.id, false);
                    tracing::debug!(id = %p.id, backup = %p.backup, error = %e, "backup did not hold a write");
                    return Err(Refusal::NoBackup {
                        detail: format!("{} did not hold the write: {e}", p.backup),
                    });
                }
            }
        }
        lock(&self.owner).backup_synced(p.id, false);
        Err(Refusal::NoBackup {
            detail: format!("{} did not take the object", p.backup),
        })
    }

    /// `lost`, the backup of `id`, is gone: an `Auto` choice picks another (synced at
    /// once), a named node leaves the object without one. Subscribers are told.
    pub(crate) fn replace_backup(&self, id: ObjectId, lost: NodeId) {
        let choice = lock(&self.owner).choice(id);
        let Some(choice) = choice else { return };
        let next = match choice {
            BackupChoice::Auto { .. } => self.choose_backup(id, &choice, &[lost]).ok().flatten(),
            _ => None,
        };
        let told = lock(&self.owner).set_backup_if(id, lost, next);
        let Some((epoch, subscribers)) = told else {
            return;
        };
        match next {
            Some(b) => {
                tracing::info!(%id, lost = %lost, backup = %b, "shared object has a new backup")
            }
            None => {
                tracing::warn!(%id, lost = %lost, "shared object lost its backup and has none now")
            }
        }
        let push = Push::Placement {
            id,
            owner: self.me,
            backup: next,
            epoch,
        };
        self.push_all(&subscribers, &push);
        if next.is_some() {
            self.sync_backup(id);
        }
    }

    /// Sends the whole object to its backup (a new one), taking turns with writes.
    pub(crate) fn sync_backup(&self, id: ObjectId) {
        let me = self.self_weak();
        let task = async move {
            let Some(rt) = me.upgrade() else { return };
            let gate = lock(&rt.owner).gate_always(id);
            let Some(gate) = gate else { return };
            let _turn = gate.lock().await;
            let full = lock(&rt.owner).full(id);
            let Some((to, msg)) = full else { return };
            match rt.send_backup(to, &msg).await {
                Ok(BackupReply::Held) => lock(&rt.owner).backup_synced(id, true),
                Err(CallError::Remote(Refusal::Fenced { owner, epoch })) => {
                    rt.fence(id, owner, epoch);
                }
                Ok(BackupReply::NeedFull) | Err(_) => {
                    // The next write sends it again.
                    lock(&rt.owner).backup_synced(id, false);
                }
            }
        };
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(task);
        }
    }

    /// A newer owner (`owner`, at `epoch`) orders `id`: this node stops, and its
    /// subscribers (its own replica too) follow the new owner.
    pub(crate) fn fence(&self, id: ObjectId, owner: NodeId, epoch: u32) {
        let subscribers = lock(&self.owner).fence(id, owner, epoch);
        self.counters.fenced.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%id, new_owner = %owner, epoch, "fenced: a newer owner took the shared object over");
        let push = Push::Placement {
            id,
            owner,
            backup: None,
            epoch,
        };
        self.push_all(&subscribers, &push);
    }

    /// A backup message from `from` (a member, or `None`).
    pub(crate) fn backup(
        &self,
        from: Option<NodeId>,
        msg: BackupMsg,
    ) -> Result<BackupReply, Refusal> {
        let id = msg.id();
        let mine = lock(&self.owner).epoch_of(id);
        if let Some(mine) = mine {
            if mine >= msg.epoch() {
                // This node took the object over: the sender's epoch is fenced.
                return Err(Refusal::Fenced {
                    owner: self.me,
                    epoch: mine,
                });
            }
            if let Some(newer) = from {
                // A newer owner names this node its backup: this node was fenced.
                self.fence(id, newer, msg.epoch());
            }
        }
        let Some(from) = from else {
            return Err(Refusal::Malformed {
                detail: "backup messages are taken only from members".to_string(),
            });
        };
        lock(&self.standby).receive(from, msg)
    }

    /// A read (and maybe a subscription). A node that backs the object for an owner that
    /// is gone from its view takes it over at once; one whose owner lives says so.
    pub(crate) fn read(&self, from: SocketAddr, req: ReadReq) -> Result<Snapshot, Refusal> {
        let sub = req.subscribe.then_some(from);
        let r = lock(&self.owner).read(req.id, req.fingerprint, &req.type_name, sub);
        match r {
            Err(Refusal::NotFound) => {
                let backed_for = lock(&self.standby).owner_of(req.id);
                match backed_for {
                    Some(o) if self.is_member(o) => Err(Refusal::Standby),
                    Some(_) => {
                        self.take_over(req.id);
                        lock(&self.owner).read(req.id, req.fingerprint, &req.type_name, sub)
                    }
                    None => Err(Refusal::NotFound),
                }
            }
            r => r,
        }
    }

    /// Takes over every object this node backs for `owner`, which is gone.
    pub(crate) fn take_over_from(&self, owner: NodeId) {
        let ids = lock(&self.standby).of_owner(owner);
        for id in ids {
            self.take_over(id);
        }
    }

    /// Takes over `id` (epoch + 1); an `Auto` choice finds the object a new backup.
    fn take_over(&self, id: ObjectId) {
        let Some(s) = lock(&self.standby).take(id) else {
            return;
        };
        let old = s.owner;
        let choice = s.choice.clone();
        let snap = match lock(&self.owner).adopt(id, s, Instant::now()) {
            Ok(snap) => snap,
            Err(e) => {
                tracing::warn!(%id, error = %e, "could not take a shared object over");
                return;
            }
        };
        self.counters.takeovers.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%id, from = %old, epoch = snap.epoch, version = snap.version, "took a shared object over");
        self.wake.notify_one();
        if let BackupChoice::Auto { .. } = choice
            && let Ok(Some(b)) = self.choose_backup(id, &choice, &[old])
        {
            lock(&self.owner).set_backup(id, Some(b));
            self.sync_backup(id);
        }
    }

    /// Objects whose backup was `node`, which is gone, get another (or none).
    pub(crate) fn backup_gone(&self, node: NodeId) {
        let ids = lock(&self.owner).backed_by(node);
        for id in ids {
            self.replace_backup(id, node);
        }
    }

    /// Removes an object; its backup forgets it.
    pub(crate) fn remove(&self, id: ObjectId) -> Result<(), Refusal> {
        let mut owner = lock(&self.owner);
        let gone = owner.remove(id)?;
        self.push_gone(&gone);
        drop(owner);
        tracing::debug!(%id, "shared object removed");
        Ok(())
    }

    /// Tells an object's subscribers (and its backup) that it is gone.
    pub(crate) fn push_gone(&self, gone: &Gone) {
        let push = Push::Removed {
            id: gone.id,
            reason: gone.reason,
        };
        self.push_all(&gone.subscribers, &push);
        if let Some((backup, epoch)) = gone.backup {
            let client = self.client(backup);
            let msg = BackupMsg::Drop { id: gone.id, epoch };
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = client
                        .call_fallible::<_, BackupReply, Refusal>(CMD_BACKUP, &msg)
                        .await;
                });
            }
        }
    }
}
