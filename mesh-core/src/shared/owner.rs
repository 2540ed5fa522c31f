//! The objects a node owns: creation, ordering writes, subscribers, TTL, limits. Sans-IO:
//! the caller passes the time and sends what comes out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex as Gate;

use super::SharedLimits;
use super::backup::Standby;
use super::error::{Refusal, RemoveReason};
use super::id::ObjectId;
use super::schema::Schema;
use super::state::{Effect, FieldState, ObjectState, Op, StateLimits, to_wire};
use super::wire::{BackupChoice, BackupMsg, ObjectInfo, Snapshot};
use crate::node::NodeId;

struct Owned {
    schema: Arc<Schema>,
    fingerprint: u32,
    state: ObjectState,
    epoch: u32,
    version: u64,
    ttl: Option<Duration>,
    /// When it expires, as indexed in `OwnerTable::expiry`.
    expires: Option<Instant>,
    subscribers: BTreeSet<SocketAddr>,
    /// The node holding the backup; writes are acknowledged once it holds them.
    backup: Option<NodeId>,
    /// How the backup was chosen (chosen again when it is lost, for `Auto`).
    choice: BackupChoice,
    /// The backup may not hold the latest version (a send failed, or it is new): the next
    /// message to it is the whole object.
    backup_stale: bool,
    /// Writes to one object with a backup take turns (each waits for the backup).
    gate: Arc<Gate<()>>,
}

/// Objects that moved to another owner remembered at most (for `Refusal::Moved`).
const MAX_MOVED: usize = 4096;

/// A write planned on a copy, waiting for the backup to hold it before it commits.
#[derive(Debug)]
pub(crate) struct Planned {
    pub(crate) id: ObjectId,
    pub(crate) epoch: u32,
    pub(crate) version: u64,
    pub(crate) effects: Vec<Effect>,
    state: ObjectState,
    pub(crate) backup: NodeId,
    /// What to send the backup.
    pub(crate) msg: BackupMsg,
}

impl Planned {
    /// The whole object at the planned version, for a backup that asked for it.
    pub(crate) fn full(&self, t: &OwnerTable) -> Option<BackupMsg> {
        let o = t.objects.get(&self.id)?;
        Some(BackupMsg::Full {
            id: self.id,
            schema: (*o.schema).clone(),
            fields: self.state.fields.clone(),
            epoch: self.epoch,
            version: self.version,
            ttl_ms: ttl_ms(o.ttl),
            choice: o.choice.clone(),
        })
    }
}

fn ttl_ms(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|t| t.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// What a write came to.
#[derive(Debug)]
pub(crate) enum Written {
    /// Ordered and applied (no backup to wait for).
    Committed(Committed),
    /// Planned: send `msg` to the backup, then [`OwnerTable::commit`].
    Planned(Box<Planned>),
}

#[cfg(test)]
impl Written {
    /// The committed write (tests of objects without a backup).
    pub(crate) fn committed(self) -> Committed {
        match self {
            Written::Committed(c) => c,
            Written::Planned(p) => panic!("planned, not committed: {p:?}"),
        }
    }
}

/// A write the owner ordered, and who must hear of it.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) epoch: u32,
    pub(crate) version: u64,
    pub(crate) effects: Vec<Effect>,
    pub(crate) subscribers: Vec<SocketAddr>,
}

/// An object that is gone, and who must hear of it.
#[derive(Debug)]
pub(crate) struct Gone {
    pub(crate) id: ObjectId,
    pub(crate) reason: RemoveReason,
    pub(crate) subscribers: Vec<SocketAddr>,
    /// The backup to tell, with the epoch.
    pub(crate) backup: Option<(NodeId, u32)>,
}

/// The objects one node incarnation owns.
pub(crate) struct OwnerTable {
    me: NodeId,
    limits: SharedLimits,
    next_serial: u64,
    objects: BTreeMap<ObjectId, Owned>,
    expiry: BTreeSet<(Instant, ObjectId)>,
    /// Objects a newer owner took over: (owner, epoch), oldest first out.
    moved: BTreeMap<ObjectId, (NodeId, u32)>,
    moved_order: VecDeque<ObjectId>,
}

impl OwnerTable {
    pub(crate) fn new(me: NodeId, limits: SharedLimits) -> OwnerTable {
        OwnerTable {
            me,
            limits,
            next_serial: 1,
            objects: BTreeMap::new(),
            expiry: BTreeSet::new(),
            moved: BTreeMap::new(),
            moved_order: VecDeque::new(),
        }
    }

    fn state_limits(&self) -> StateLimits {
        StateLimits {
            max_bytes: self.limits.max_object_bytes,
            max_map_len: self.limits.max_map_len,
        }
    }

    fn get(&mut self, id: ObjectId) -> Result<&mut Owned, Refusal> {
        match self.objects.get_mut(&id) {
            Some(o) => Ok(o),
            None => Err(match self.moved.get(&id) {
                Some(&(owner, epoch)) => Refusal::Moved { owner, epoch },
                None => Refusal::NotFound,
            }),
        }
    }

    fn snapshot_of(&self, id: ObjectId, o: &Owned) -> Snapshot {
        Snapshot {
            id,
            owner: self.me,
            backup: o.backup,
            fingerprint: o.fingerprint,
            epoch: o.epoch,
            version: o.version,
            fields: o.state.fields.clone(),
        }
    }

    /// A new object at version 1; `subscriber` (the creator) gets its deltas. With a
    /// backup, the caller sends it [`full`](Self::full) before it answers (and
    /// [`remove`](Self::remove)s the object if the backup does not hold it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create(
        &mut self,
        schema: Schema,
        fields: Vec<FieldState>,
        ttl: Option<Duration>,
        subscriber: Option<SocketAddr>,
        backup: Option<NodeId>,
        choice: BackupChoice,
        now: Instant,
    ) -> Result<Snapshot, Refusal> {
        if self.objects.len() >= self.limits.max_objects {
            return Err(Refusal::TooManyObjects {
                max: self.limits.max_objects,
            });
        }
        schema
            .check(self.limits.max_fields)
            .map_err(|detail| Refusal::Malformed { detail })?;
        let state = ObjectState::new(&schema, fields, self.state_limits())?;
        let id = ObjectId {
            owner: self.me,
            serial: self.next_serial,
        };
        self.next_serial += 1;
        let expires = ttl.map(|t| now + t);
        if let Some(at) = expires {
            self.expiry.insert((at, id));
        }
        let fingerprint = schema.fingerprint();
        let owned = Owned {
            schema: Arc::new(schema),
            fingerprint,
            state,
            epoch: 1,
            version: 1,
            ttl,
            expires,
            subscribers: subscriber.into_iter().collect(),
            backup,
            choice,
            backup_stale: true,
            gate: Arc::new(Gate::new(())),
        };
        let snap = self.snapshot_of(id, &owned);
        self.objects.insert(id, owned);
        Ok(snap)
    }

    /// Takes over an object this node backed, at the next epoch: it has no subscribers
    /// (replicas subscribe again) and no backup yet (the caller may choose one).
    pub(crate) fn adopt(
        &mut self,
        id: ObjectId,
        s: Standby,
        now: Instant,
    ) -> Result<Snapshot, Refusal> {
        if self.objects.len() >= self.limits.max_objects {
            return Err(Refusal::TooManyObjects {
                max: self.limits.max_objects,
            });
        }
        // TTL counts again from the takeover: the old owner's clock is not ours.
        let expires = s.ttl.map(|t| now + t);
        if let Some(at) = expires {
            self.expiry.insert((at, id));
        }
        self.moved.remove(&id);
        let owned = Owned {
            fingerprint: s.schema.fingerprint(),
            schema: s.schema,
            state: s.state,
            epoch: s.epoch.saturating_add(1),
            version: s.version,
            ttl: s.ttl,
            expires,
            subscribers: BTreeSet::new(),
            backup: None,
            choice: s.choice,
            backup_stale: true,
            gate: Arc::new(Gate::new(())),
        };
        let snap = self.snapshot_of(id, &owned);
        self.objects.insert(id, owned);
        Ok(snap)
    }

    /// The turn-taking lock of an object's writes, when it has a backup to wait for
    /// (writes without one commit at once under the table's lock).
    pub(crate) fn gate(&mut self, id: ObjectId) -> Result<Option<Arc<Gate<()>>>, Refusal> {
        let o = self.get(id)?;
        Ok(o.backup.is_some().then(|| o.gate.clone()))
    }

    /// The turn-taking lock of an object's writes, whatever its backup.
    pub(crate) fn gate_always(&mut self, id: ObjectId) -> Option<Arc<Gate<()>>> {
        self.objects.get(&id).map(|o| o.gate.clone())
    }

    /// The object's epoch, if this node owns it.
    pub(crate) fn epoch_of(&self, id: ObjectId) -> Option<u32> {
        self.objects.get(&id).map(|o| o.epoch)
    }

    /// The whole object for its backup, if it has one.
    pub(crate) fn full(&self, id: ObjectId) -> Option<(NodeId, BackupMsg)> {
        let o = self.objects.get(&id)?;
        let backup = o.backup?;
        Some((
            backup,
            BackupMsg::Full {
                id,
                schema: (*o.schema).clone(),
                fields: o.state.fields.clone(),
                epoch: o.epoch,
                version: o.version,
                ttl_ms: ttl_ms(o.ttl),
                choice: o.choice.clone(),
            },
        ))
    }

    /// The backup of `id` holds its current version (`true`), or may not (`false`).
    pub(crate) fn backup_synced(&mut self, id: ObjectId, synced: bool) {
        if let Some(o) = self.objects.get_mut(&id) {
            o.backup_stale = !synced;
        }
    }

    /// Names a new backup (or none); returns the subscribers to tell.
    pub(crate) fn set_backup(
        &mut self,
        id: ObjectId,
        backup: Option<NodeId>,
    ) -> Option<(u32, Vec<SocketAddr>)> {
        let o = self.objects.get_mut(&id)?;
        o.backup = backup;
        o.backup_stale = true;
        Some((o.epoch, o.subscribers.iter().copied().collect()))
    }

    /// Replaces the backup of `id` with `next` if it still is `lost`; returns the
    /// subscribers to tell.
    pub(crate) fn set_backup_if(
        &mut self,
        id: ObjectId,
        lost: NodeId,
        next: Option<NodeId>,
    ) -> Option<(u32, Vec<SocketAddr>)> {
        if self.objects.get(&id)?.backup != Some(lost) {
            return None;
        }
        self.set_backup(id, next)
    }

    /// The objects whose backup is `node`.
    pub(crate) fn backed_by(&self, node: NodeId) -> Vec<ObjectId> {
        self.objects
            .iter()
            .filter(|(_, o)| o.backup == Some(node))
            .map(|(id, _)| *id)
            .collect()
    }

    /// How `id`'s backup is chosen.
    pub(crate) fn choice(&self, id: ObjectId) -> Option<BackupChoice> {
        self.objects.get(&id).map(|o| o.choice.clone())
    }

    /// A newer owner took `id` over: this node stops ordering it and answers `Moved`.
    /// Returns the subscribers to tell.
    pub(crate) fn fence(&mut self, id: ObjectId, owner: NodeId, epoch: u32) -> Vec<SocketAddr> {
        let Some(o) = self.objects.remove(&id) else {
            return Vec::new();
        };
        if let Some(at) = o.expires {
            self.expiry.remove(&(at, id));
        }
        if self.moved.insert(id, (owner, epoch)).is_none() {
            self.moved_order.push_back(id);
            while self.moved_order.len() > MAX_MOVED {
                if let Some(old) = self.moved_order.pop_front() {
                    self.moved.remove(&old);
                }
            }
        }
        o.subscribers.into_iter().collect()
    }

    /// Orders a write: all of `ops` or none. Without a backup it commits at once; with
    /// one it is planned on a copy (the caller holds the object's [`gate`](Self::gate)).
    pub(crate) fn write(
        &mut self,
        id: ObjectId,
        ops: &[Op],
        now: Instant,
    ) -> Result<Written, Refusal> {
        let limits = self.state_limits();
        let o = self.get(id)?;
        if let Some(backup) = o.backup {
            let mut state = o.state.clone();
            let effects = to_wire(&o.schema, state.apply(&o.schema, ops, limits)?);
            let (epoch, version) = (o.epoch, o.version + 1);
            let msg = if o.backup_stale {
                BackupMsg::Full {
                    id,
                    schema: (*o.schema).clone(),
                    fields: state.fields.clone(),
                    epoch,
                    version,
                    ttl_ms: ttl_ms(o.ttl),
                    choice: o.choice.clone(),
                }
            } else {
                BackupMsg::Delta {
                    id,
                    epoch,
                    version,
                    effects: effects.clone(),
                }
            };
            return Ok(Written::Planned(Box::new(Planned {
                id,
                epoch,
                version,
                effects,
                state,
                backup,
                msg,
            })));
        }
        let effects = o.state.apply(&o.schema, ops, limits)?;
        o.version += 1;
        let (epoch, version) = (o.epoch, o.version);
        let effects = to_wire(&o.schema, effects);
        let subscribers = o.subscribers.iter().copied().collect();
        self.touch(id, now);
        Ok(Written::Committed(Committed {
            epoch,
            version,
            effects,
            subscribers,
        }))
    }

    /// Commits a write the backup holds. Refused if the object changed meanwhile (it was
    /// removed, fenced, or someone wrote without the gate).
    pub(crate) fn commit(&mut self, p: Box<Planned>, now: Instant) -> Result<Committed, Refusal> {
        let o = self.get(p.id)?;
        if o.epoch != p.epoch || o.version + 1 != p.version {
            return Err(Refusal::NoBackup {
                detail: "the object changed while its backup was written".to_string(),
            });
        }
        o.state = p.state;
        o.version = p.version;
        o.backup_stale = false;
        let subscribers = o.subscribers.iter().copied().collect();
        self.touch(p.id, now);
        Ok(Committed {
            epoch: p.epoch,
            version: p.version,
            effects: p.effects,
            subscribers,
        })
    }

    /// A write restarts the TTL.
    fn touch(&mut self, id: ObjectId, now: Instant) {
        let Some(o) = self.objects.get_mut(&id) else {
            return;
        };
        let moved = o.ttl.map(|t| (o.expires.replace(now + t), now + t));
        if let Some((old, new)) = moved {
            if let Some(old) = old {
                self.expiry.remove(&(old, id));
            }
            self.expiry.insert((new, id));
        }
    }

    /// The object's state; with `subscriber`, that node gets its deltas from now on.
    pub(crate) fn read(
        &mut self,
        id: ObjectId,
        fingerprint: u32,
        type_name: &str,
        subscriber: Option<SocketAddr>,
    ) -> Result<Snapshot, Refusal> {
        let max = self.limits.max_subscribers;
        let o = self.get(id)?;
        // 0: a resync of a replica whose type was checked when it subscribed.
        if fingerprint != 0 && o.fingerprint != fingerprint {
            return Err(Refusal::WrongType {
                expected: type_name.chars().take(256).collect(),
                found: o.schema.type_name.clone(),
            });
        }
        if let Some(s) = subscriber
            && !o.subscribers.contains(&s)
        {
            if o.subscribers.len() >= max {
                return Err(Refusal::TooManySubscribers { max });
            }
            o.subscribers.insert(s);
        }
        let o = &self.objects[&id];
        Ok(self.snapshot_of(id, o))
    }

    /// `node` no longer wants the object's deltas.
    pub(crate) fn unsubscribe(&mut self, id: ObjectId, node: SocketAddr) {
        if let Ok(o) = self.get(id) {
            o.subscribers.remove(&node);
        }
    }

    /// `node` left the mesh: it subscribes to nothing any more.
    pub(crate) fn forget_node(&mut self, node: SocketAddr) {
        for o in self.objects.values_mut() {
            o.subscribers.remove(&node);
        }
    }

    /// Removes an object.
    pub(crate) fn remove(&mut self, id: ObjectId) -> Result<Gone, Refusal> {
        self.get(id)?;
        let o = self.objects.remove(&id).ok_or(Refusal::NotFound)?;
        if let Some(at) = o.expires {
            self.expiry.remove(&(at, id));
        }
        Ok(Gone {
            id,
            reason: RemoveReason::Removed,
            subscribers: o.subscribers.into_iter().collect(),
            backup: o.backup.map(|b| (b, o.epoch)),
        })
    }

    /// Removes the objects whose TTL passed by `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Gone> {
        let mut gone = Vec::new();
        while let Some(&(at, id)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(o) = self.objects.remove(&id) {
                gone.push(Gone {
                    id,
                    reason: RemoveReason::Expired,
                    subscribers: o.subscribers.into_iter().collect(),
                    backup: o.backup.map(|b| (b, o.epoch)),
                });
            }
        }
        gone
    }

    /// When the next object expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.expiry.first().map(|(at, _)| *at)
    }

    /// Every object this node owns.
    pub(crate) fn list(&self) -> Vec<ObjectInfo> {
        self.objects
            .iter()
            .map(|(id, o)| ObjectInfo {
                id: *id,
                type_name: o.schema.type_name.clone(),
                epoch: o.epoch,
                version: o.version,
                subscribers: o.subscribers.len(),
                backup: o.backup,
                bytes: o.state.bytes,
            })
            .collect()
    }

    /// An owned object read untyped (for tools).
    pub(crate) fn inspect(&mut self, id: ObjectId) -> Result<super::wire::Inspection, Refusal> {
        self.get(id)?;
        let info = self
            .list()
            .into_iter()
            .find(|i| i.id == id)
            .ok_or(Refusal::NotFound)?;
        let o = &self.objects[&id];
        Ok(super::wire::Inspection {
            info,
            schema: (*o.schema).clone(),
            fields: o.state.fields.clone(),
        })
    }

    /// The schema of an owned object (for tools).
    pub(crate) fn schema(&self, id: ObjectId) -> Option<Arc<Schema>> {
        self.objects.get(&id).map(|o| o.schema.clone())
    }
}

#[cfg(test)]
mod tests;
