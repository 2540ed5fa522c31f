//! The objects a node owns: creation, ordering writes, subscribers, TTL, limits. Sans-IO:
//! the caller passes the time and sends what comes out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::SharedLimits;
use super::error::{Refusal, RemoveReason};
use super::id::ObjectId;
use super::schema::Schema;
use super::state::{Effect, FieldState, ObjectState, Op, StateLimits, to_wire};
use super::wire::{ObjectInfo, Snapshot};
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
}

/// The objects one node incarnation owns.
pub(crate) struct OwnerTable {
    me: NodeId,
    limits: SharedLimits,
    next_serial: u64,
    objects: BTreeMap<u64, Owned>,
    expiry: BTreeSet<(Instant, u64)>,
}

impl OwnerTable {
    pub(crate) fn new(me: NodeId, limits: SharedLimits) -> OwnerTable {
        OwnerTable {
            me,
            limits,
            next_serial: 1,
            objects: BTreeMap::new(),
            expiry: BTreeSet::new(),
        }
    }

    fn state_limits(&self) -> StateLimits {
        StateLimits {
            max_bytes: self.limits.max_object_bytes,
            max_map_len: self.limits.max_map_len,
        }
    }

    fn id(&self, serial: u64) -> ObjectId {
        ObjectId {
            owner: self.me,
            serial,
        }
    }

    fn get(&mut self, id: ObjectId) -> Result<&mut Owned, Refusal> {
        if id.owner != self.me {
            return Err(Refusal::NotFound);
        }
        self.objects.get_mut(&id.serial).ok_or(Refusal::NotFound)
    }

    fn snapshot_of(&self, serial: u64, o: &Owned) -> Snapshot {
        Snapshot {
            id: self.id(serial),
            fingerprint: o.fingerprint,
            epoch: o.epoch,
            version: o.version,
            fields: o.state.fields.clone(),
        }
    }

    /// A new object at version 1; `subscriber` (the creator) gets its deltas.
    pub(crate) fn create(
        &mut self,
        schema: Schema,
        fields: Vec<FieldState>,
        ttl: Option<Duration>,
        subscriber: Option<SocketAddr>,
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
        let serial = self.next_serial;
        self.next_serial += 1;
        let expires = ttl.map(|t| now + t);
        if let Some(at) = expires {
            self.expiry.insert((at, serial));
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
        };
        let snap = self.snapshot_of(serial, &owned);
        self.objects.insert(serial, owned);
        Ok(snap)
    }

    /// Orders a write: all of `ops` or none.
    pub(crate) fn write(
        &mut self,
        id: ObjectId,
        ops: &[Op],
        now: Instant,
    ) -> Result<Committed, Refusal> {
        let limits = self.state_limits();
        let o = self.get(id)?;
        let effects = o.state.apply(&o.schema, ops, limits)?;
        o.version += 1;
        let (epoch, version) = (o.epoch, o.version);
        let effects = to_wire(&o.schema, effects);
        let subscribers = o.subscribers.iter().copied().collect();
        let moved = o.ttl.map(|t| (o.expires.replace(now + t), now + t));
        if let Some((old, new)) = moved {
            if let Some(old) = old {
                self.expiry.remove(&(old, id.serial));
            }
            self.expiry.insert((new, id.serial));
        }
        Ok(Committed {
            epoch,
            version,
            effects,
            subscribers,
        })
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
        let o = &self.objects[&id.serial];
        Ok(self.snapshot_of(id.serial, o))
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
        let o = self.objects.remove(&id.serial).ok_or(Refusal::NotFound)?;
        if let Some(at) = o.expires {
            self.expiry.remove(&(at, id.serial));
        }
        Ok(Gone {
            id,
            reason: RemoveReason::Removed,
            subscribers: o.subscribers.into_iter().collect(),
        })
    }

    /// Removes the objects whose TTL passed by `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Gone> {
        let mut gone = Vec::new();
        while let Some(&(at, serial)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(o) = self.objects.remove(&serial) {
                gone.push(Gone {
                    id: self.id(serial),
                    reason: RemoveReason::Expired,
                    subscribers: o.subscribers.into_iter().collect(),
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
            .map(|(serial, o)| ObjectInfo {
                id: self.id(*serial),
                type_name: o.schema.type_name.clone(),
                epoch: o.epoch,
                version: o.version,
                subscribers: o.subscribers.len(),
                bytes: o.state.bytes,
            })
            .collect()
    }

    /// The schema of an owned object (for tools).
    pub(crate) fn schema(&self, id: ObjectId) -> Option<Arc<Schema>> {
        if id.owner != self.me {
            return None;
        }
        self.objects.get(&id.serial).map(|o| o.schema.clone())
    }
}

#[cfg(test)]
mod tests;
