//! Handles on objects: local reads of the replica, writes ordered by the owner, events.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::SharedObject;
use super::error::{RemoveReason, SharedError};
use super::id::ObjectId;
use super::replica::{Replica, Sink};
use super::runtime::Runtime;
use super::state::Op;
use super::wire::{Ack, CMD_REMOVE, CMD_WRITE, WriteReq};
use crate::rpc::CallError;

/// A handle on one shared object of type `T`, through this node's replica. Cheap to clone;
/// the replica (and its subscription at the owner) lives while a handle does.
///
/// The generated handle (`RoomHandle` for `Room`) derefs to this and adds one method per
/// field and operation.
pub struct ObjectHandle<T: SharedObject> {
    pub(crate) replica: Arc<Replica<T>>,
    pub(crate) rt: Arc<Runtime>,
}

impl<T: SharedObject> Clone for ObjectHandle<T> {
    fn clone(&self) -> Self {
        ObjectHandle {
            replica: self.replica.clone(),
            rt: self.rt.clone(),
        }
    }
}

impl<T: SharedObject> std::fmt::Debug for ObjectHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectHandle")
            .field("id", &self.id())
            .field("type", &T::TYPE_NAME)
            .field("version", &self.version())
            .finish()
    }
}

impl<T: SharedObject> ObjectHandle<T> {
    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.replica.id
    }

    /// The version this node's replica holds (every ordered write adds one).
    pub fn version(&self) -> u64 {
        self.replica.read().version
    }

    /// The owner's epoch the replica holds.
    pub fn epoch(&self) -> u32 {
        self.replica.read().epoch
    }

    /// A copy of the whole object as this node's replica holds it (no I/O; may lag the
    /// owner: see [`refresh`](Self::refresh)).
    pub fn get(&self) -> T {
        self.replica.read().value.clone()
    }

    /// Reads the replica without copying it.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.replica.read().value)
    }

    /// Why the object is gone, once it is.
    pub fn removed(&self) -> Option<RemoveReason> {
        self.replica.read().removed
    }

    /// The replica's events from now on, in version order.
    pub fn events(&self) -> SharedEvents {
        SharedEvents {
            rx: self.replica.subscribe_events(),
            done: false,
        }
    }

    fn gone(&self) -> Result<(), SharedError> {
        match self.removed() {
            Some(reason) => Err(SharedError::Removed {
                id: self.id(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Reads the object at its owner and brings the replica up to that version; returns it.
    pub async fn refresh(&self) -> Result<u64, SharedError> {
        self.gone()?;
        let owner = self.replica.owner();
        let snap = self
            .rt
            .read_at(
                owner,
                self.id(),
                Some((fingerprint::<T>(), T::TYPE_NAME)),
                false,
            )
            .await;
        let snap = match snap {
            Err(SharedError::Refused {
                refusal: super::Refusal::NotFound,
                ..
            }) => {
                self.replica.removed(RemoveReason::Removed);
                return Err(SharedError::Removed {
                    id: self.id(),
                    reason: RemoveReason::Removed,
                });
            }
            r => r?,
        };
        self.replica
            .snapshot(&snap)
            .map_err(|e| SharedError::codec(self.id(), e))?;
        Ok(snap.version)
    }

    /// Waits until the replica holds version `version` or later (fails if the object goes).
    pub async fn wait_version(&self, version: u64) -> Result<(), SharedError> {
        self.replica
            .wait_until(|s| s.version >= version || s.gone)
            .await;
        if self.version() >= version {
            return Ok(());
        }
        self.gone()?;
        Ok(())
    }

    /// Waits (bounded) until the replica follows an owner other than `from`.
    async fn wait_owner_change(&self, from: crate::node::NodeId) {
        let bound = self.rt.follow_bound();
        let wait = self.replica.wait_until(|s| s.owner != from || s.gone);
        let _ = tokio::time::timeout(bound, wait).await;
    }

    /// Orders a write of raw ops at the owner (the generated methods build the ops);
    /// resolves with the version it got once this node's replica holds it. A write sent
    /// to an owner that handed the object on is sent again to the new one (it changed
    /// nothing where it was refused).
    #[doc(hidden)]
    pub async fn write(&self, ops: Vec<Op>) -> Result<u64, SharedError> {
        let id = self.id();
        let req = WriteReq { id, ops };
        let mut attempts = 0;
        let ack: Ack = loop {
            self.gone()?;
            attempts += 1;
            let owner = self.replica.owner();
            if owner != self.rt.me && !self.rt.is_member(owner) && self.replica.backup().is_some() {
                // The owner is gone and a backup takes over: wait for the move.
                self.rt.follow(self.replica.clone(), id);
                self.wait_owner_change(owner).await;
                if self.replica.owner() != owner && attempts < MAX_WRITE_ATTEMPTS {
                    continue;
                }
            }
            let r = self
                .rt
                .client(owner)
                .call_fallible::<_, Ack, super::Refusal>(CMD_WRITE, &req)
                .await;
            match r {
                Ok(ack) => break ack,
                Err(CallError::Remote(super::Refusal::NotFound)) => {
                    self.replica.removed(RemoveReason::Removed);
                    return Err(SharedError::Removed {
                        id,
                        reason: RemoveReason::Removed,
                    });
                }
                Err(CallError::Remote(super::Refusal::Moved { owner: to, .. }))
                    if attempts < MAX_WRITE_ATTEMPTS =>
                {
                    self.rt.follow_to(self.replica.clone(), id, to);
                    self.wait_owner_change(owner).await;
                }
                Err(CallError::Remote(super::Refusal::Standby))
                    if attempts < MAX_WRITE_ATTEMPTS =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(CallError::Remote(refusal @ super::Refusal::Fenced { owner: to, .. })) => {
                    // Refused as stamped by an old epoch: the replica follows the new owner,
                    // the writer decides whether to write again.
                    self.rt.follow_to(self.replica.clone(), id, to);
                    return Err(SharedError::Refused { id, refusal });
                }
                Err(e) => {
                    // The write may have been ordered with its answer lost: the replica
                    // reads the owner's state rather than wait for a later delta.
                    self.rt.resync_now(self.replica.clone(), id);
                    return Err(SharedError::from_call(id, e));
                }
            }
        };
        // Read-your-writes: apply the acknowledged effects here at once when they follow
        // what the replica holds (the owner's push of them is then a duplicate).
        let by = Some(self.rt.me);
        let flow = self.replica.delta(ack.epoch, ack.version, by, ack.effects);
        if flow == super::replica::Flow::Gap {
            // No later push may come to fill the gap (they may all be in already).
            self.rt.resync_later(self.replica.clone(), id);
            let _ = tokio::time::timeout(
                self.rt.rpc.settings.default_timeout,
                self.wait_version(ack.version),
            )
            .await;
        }
        Ok(ack.version)
    }

    /// A batch of writes on this object, committed atomically (the generated batch type
    /// wraps it).
    #[doc(hidden)]
    pub fn raw_batch(&self) -> Batch<T> {
        Batch {
            handle: self.clone(),
            ops: Vec::new(),
            error: None,
        }
    }

    /// Removes the object everywhere.
    pub async fn remove(&self) -> Result<(), SharedError> {
        remove(&self.rt, self.replica.owner(), self.id()).await
    }
}

/// Attempts of one write across owner moves.
const MAX_WRITE_ATTEMPTS: u32 = 5;
/// The pause before asking a backup that has not taken over yet again.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Removes `id` at `owner`.
pub(crate) async fn remove(
    rt: &Runtime,
    owner: crate::node::NodeId,
    id: ObjectId,
) -> Result<(), SharedError> {
    rt.client(owner)
        .call_fallible::<_, (), super::Refusal>(CMD_REMOVE, &id)
        .await
        .map_err(|e| SharedError::from_call(id, e))
}

pub(crate) fn fingerprint<T: SharedObject>() -> u32 {
    super::Schema::from_defs(T::TYPE_NAME, T::FIELDS).fingerprint()
}

/// Writes collected to commit as one: the owner applies all of them or none, and no
/// replica ever sees some without the others.
#[derive(Debug)]
pub struct Batch<T: SharedObject> {
    handle: ObjectHandle<T>,
    ops: Vec<Op>,
    error: Option<SharedError>,
}

impl<T: SharedObject> Batch<T> {
    /// The object the batch writes.
    #[doc(hidden)]
    pub fn id(&self) -> ObjectId {
        self.handle.id()
    }

    /// Adds an op (or the error building it; the batch then fails at commit).
    #[doc(hidden)]
    pub fn push(&mut self, op: Result<Op, SharedError>) {
        match op {
            Ok(op) => self.ops.push(op),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    /// Orders every write of the batch, atomically; resolves with the version it got.
    pub async fn commit(self) -> Result<u64, SharedError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.handle.write(self.ops).await
    }
}

/// What happens to a shared object, as one node's replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SharedEvent {
    /// Ordered writes reached the replica (a snapshot lists every field, `by` none).
    Updated {
        /// The fields that changed.
        fields: Vec<&'static str>,
        /// The version the replica holds now.
        version: u64,
        /// The node that wrote (none for a guest or a snapshot).
        by: Option<crate::node::NodeId>,
    },
    /// The object is gone.
    Removed {
        /// Why.
        reason: RemoveReason,
    },
    /// Another node orders the object now (its backup took over when the owner was lost,
    /// or a newer owner fenced the old one); writes go there by themselves.
    OwnerChanged {
        /// The node that orders the object now.
        owner: crate::node::NodeId,
        /// Its epoch.
        epoch: u32,
    },
    /// This reader fell behind and missed `missed` events (the replica itself did not: read
    /// it for the current state).
    Lagged {
        /// Events missed.
        missed: u64,
    },
}

/// The event stream of one replica ([`ObjectHandle::events`]).
#[derive(Debug)]
pub struct SharedEvents {
    rx: broadcast::Receiver<SharedEvent>,
    done: bool,
}

impl SharedEvents {
    /// The next event; `None` after `Removed`.
    pub async fn next(&mut self) -> Option<SharedEvent> {
        if self.done {
            return None;
        }
        match self.rx.recv().await {
            Ok(e) => {
                if matches!(e, SharedEvent::Removed { .. }) {
                    self.done = true;
                }
                Some(e)
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Some(SharedEvent::Lagged { missed })
            }
            Err(broadcast::error::RecvError::Closed) => {
                self.done = true;
                None
            }
        }
    }
}
