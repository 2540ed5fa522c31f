//! Shared objects: small live values (a room, a counter) that one node owns and every
//! interested node reads locally, declared with `#[derive(SharedObject)]`.
//!
//! ```
//! use std::collections::BTreeMap;
//! use mesh_core::prelude::*;
//!
//! #[derive(SharedObject, Clone, Default, Debug)]
//! pub struct Room {
//!     #[shared(min = 0, max = 100)]
//!     players: i64,
//!     name: String,
//!     #[shared(max_len = 500)]
//!     members: BTreeMap<String, u32>,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = LocalRegistry::new();
//! let a = Mesh::builder().discovery(Discovery::local_registry(&registry)).start().await?;
//! let b = Mesh::builder().discovery(Discovery::local_registry(&registry)).start().await?;
//!
//! // Node a creates (and owns) a room; node b subscribes to it by id.
//! let room = a.shared().create(Room::default()).await?;
//! let same = b.shared().get::<Room>(room.id()).await?;
//!
//! same.inc_players(2).await?;                       // ordered by the owner, a
//! same.set_name("lobby".into()).await?;
//! same.members_put("bob".into(), 7).await?;
//! assert_eq!(same.players(), 2);                    // read locally, no I/O
//! assert!(same.inc_players(99).await.is_err());     // 101 > max: refused, nothing changed
//! assert_eq!(same.players(), 2);
//! room.wait_version(same.version()).await?;         // a's own replica catches up
//! assert_eq!(room.name(), "lobby");
//! assert_eq!(room.members().get("bob"), Some(&7));
//! # b.stop().await; a.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Semantics
//!
//! * **One owner orders every write.** The creating node (or the one named with
//!   [`Create::on`]) owns the object; every write goes to it and gets the next version (and
//!   the owner's epoch). A write is a list of ops applied all or none: a batch is never seen
//!   half-applied.
//! * **Refused writes change nothing.** A counter leaving its bounds (unless the field
//!   clamps), a failed compare-and-set, a full map, an oversize object, a removed object or
//!   an unknown field: the writer gets [`SharedError::Refused`] with the [`Refusal`], and no
//!   replica, the writer's included, sees any change.
//! * **Replicas apply in order, once.** The owner turns each op into its effect (an `inc`
//!   becomes the counter's new value), so replicas apply effects without re-deciding
//!   anything. A replica applies versions in order, ignores duplicates, holds early deltas
//!   while a gap fills for a short grace period and reads a snapshot when it does not. An
//!   owner whose send queue to a subscriber is full skips it and tells it to resync.
//! * **Reads are local and may lag**: [`ObjectHandle::refresh`] reads at the owner,
//!   [`ObjectHandle::wait_version`] waits for a version. A write resolves once the owner
//!   ordered it and this node's replica holds it (read-your-writes on the writing node).
//!   Events arrive in version order.
//! * **TTL** counts from the last write and is enforced by the owner; expiry reaches every
//!   replica as [`RemoveReason::Expired`].
//! * **Backups and owner loss.** An object may name a backup ([`Create::backup`], or
//!   [`Create::backup_auto`]: a rendezvous-hash choice among the live nodes of the owner's
//!   type). Its writes are then acknowledged only once the backup holds them (writes to one
//!   such object take turns, each waiting for the backup). When membership says the owner
//!   left or restarted (a new incarnation), the backup takes the object over at epoch + 1,
//!   and replicas subscribe there by themselves ([`SharedEvent::OwnerChanged`]); writers
//!   follow their replica. An automatic backup that is lost is chosen again; a named one
//!   that is lost leaves the object without a backup. Without a backup, owner loss gives
//!   every replica [`RemoveReason::OwnerLost`]: never a stale copy served as live.
//! * **Fencing.** A write stamped by an older epoch is refused wherever the newer one is
//!   known: an old owner that was cut off and comes back finds its backup holding the
//!   object at a newer epoch, gets [`Refusal::Fenced`] (the writer sees it; nothing
//!   changed), stops ordering the object and sends its subscribers to the new owner;
//!   replicas ignore deltas of older epochs. While a partition lasts, each side can only
//!   reach its own part of the mesh: there is no quorum, so an owner cut off together with
//!   its writers and a newly chosen backup can go on at the old epoch until it meets the
//!   newer one.
//! * [`Shared::get`] finds an object that moved: when the node in its id is gone, every
//!   member is asked at once and the one that orders it answers.
//! * **Limits** ([`SharedLimits`], in the config's `shared` table): objects per node, bytes
//!   per object, map length, subscribing nodes per object; each refused with its error.
//! * Pushes are believed only from the address of the owner the replica follows (others
//!   are dropped and counted, [`SharedStats::forged_pushes`]); backup messages only from
//!   members.

pub(crate) mod backup;
mod error;
mod handle;
mod id;
mod owner;
mod replica;
mod runtime;
mod schema;
mod serve;
mod state;
mod wire;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::{Refusal, RemoveReason, SharedError};
pub use handle::{Batch, ObjectHandle, SharedEvent, SharedEvents};
pub use id::{ObjectId, ParseObjectIdError};
pub use runtime::SharedStats;
pub use schema::{FieldDef, FieldKind, FieldSpec, Schema};
pub use state::{Effect, FieldState, Op};
pub use wire::{Inspection, ObjectInfo};

pub(crate) use runtime::Runtime;

use crate::codec::CodecError;
use crate::node::NodeId;
use crate::node::Target;
use replica::Replica;
use wire::{BackupChoice, CMD_CREATE, CMD_LIST, CreateReq, Snapshot};

/// A type whose values are shared objects. Implemented by `#[derive(SharedObject)]`; not
/// meant to be implemented by hand.
pub trait SharedObject: Clone + Send + Sync + Sized + 'static {
    /// The generated handle (`RoomHandle` for `Room`).
    type Handle: From<ObjectHandle<Self>> + Send + Sync;
    /// The type's name, checked by `get::<T>`.
    const TYPE_NAME: &'static str;
    /// Its fields, in declaration order.
    const FIELDS: &'static [FieldDef];
    /// The value as owner-side field states, in [`FIELDS`](Self::FIELDS) order.
    fn to_fields(&self) -> Result<Vec<FieldState>, CodecError>;
    /// A value from field states in [`FIELDS`](Self::FIELDS) order.
    fn from_fields(fields: &[FieldState]) -> Result<Self, CodecError>;
    /// Applies one effect the owner ordered.
    fn apply_effect(&mut self, effect: &Effect) -> Result<(), CodecError>;
}

/// Limits on shared objects, each configurable (the config's `shared` table) and refused
/// with its own [`Refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SharedLimits {
    /// Objects one node may own (default 100,000).
    pub max_objects: usize,
    /// Encoded bytes one object may hold (default 1 MiB; never more than half the mesh's
    /// `max_message_size`, so a snapshot with its framing always fits in one message).
    pub max_object_bytes: usize,
    /// Entries a map field may hold, whatever its `max_len` (default 100,000).
    pub max_map_len: u32,
    /// Nodes that may subscribe to one object (default 1,024).
    pub max_subscribers: usize,
    /// Fields an object type may have (default 256).
    pub max_fields: usize,
}

impl Default for SharedLimits {
    fn default() -> Self {
        SharedLimits {
            max_objects: 100_000,
            max_object_bytes: 1024 * 1024,
            max_map_len: 100_000,
            max_subscribers: 1024,
            max_fields: 256,
        }
    }
}

impl SharedLimits {
    /// The limits a node applies: `max_object_bytes` within half of `max_message_size`.
    pub(crate) fn effective(mut self, max_message_size: usize) -> SharedLimits {
        self.max_object_bytes = self.max_object_bytes.min(max_message_size / 2).max(1);
        self
    }
}

/// The shared objects of one node ([`Mesh::shared`](crate::Mesh::shared)). Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub(crate) rt: Arc<Runtime>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("node", &self.rt.me).finish()
    }
}

impl Shared {
    /// Creates an object holding `value`, owned by this node unless [`Create::on`] names
    /// another; `.await` it for the handle.
    pub fn create<T: SharedObject>(&self, value: T) -> Create<T> {
        Create {
            rt: self.rt.clone(),
            value,
            ttl: None,
            owner: None,
            backup: BackupChoice::None,
        }
    }

    /// A handle on object `id` of type `T`: fetches a snapshot from the owner and subscribes
    /// to its writes (or shares the replica this node already holds).
    pub async fn get<T: SharedObject>(&self, id: ObjectId) -> Result<T::Handle, SharedError> {
        let rt = &self.rt;
        let wrong = || SharedError::Refused {
            id,
            refusal: Refusal::WrongType {
                expected: T::TYPE_NAME.to_string(),
                found: "another type".to_string(),
            },
        };
        if let Some(r) = rt.typed::<T>(id).map_err(|()| wrong())? {
            return Ok(handle(rt, r));
        }
        rt.expect(id);
        let check = (handle::fingerprint::<T>(), T::TYPE_NAME);
        // The id names the node that created it; after a takeover another orders it.
        let at = rt.locate(id).await;
        let snap = match rt.read_at(at, id, Some(check), true).await {
            Ok(s) => s,
            Err(e) => {
                rt.unexpect(id);
                return Err(e);
            }
        };
        install::<T>(rt, &snap)
    }

    /// Removes object `id` at its owner; every replica sees [`RemoveReason::Removed`].
    pub async fn remove(&self, id: ObjectId) -> Result<(), SharedError> {
        let owner = self.rt.locate(id).await;
        handle::remove(&self.rt, owner, id).await
    }

    /// The objects this node owns.
    pub fn owned(&self) -> Vec<ObjectInfo> {
        self.rt.owned()
    }

    /// The objects `node` owns (asked over the mesh).
    pub async fn list(&self, node: impl Into<Target>) -> Result<Vec<ObjectInfo>, crate::CallError> {
        self.rt.client(node).call(CMD_LIST, &()).await
    }

    /// Reads object `id` untyped at its owner, for tools that do not know its Rust type
    /// ([`Inspection::to_json`] shows it as JSON).
    pub async fn inspect(&self, id: ObjectId) -> Result<Inspection, SharedError> {
        let owner = self.rt.locate(id).await;
        self.rt
            .client(owner)
            .call_fallible::<_, Inspection, Refusal>(wire::CMD_INSPECT, &id)
            .await
            .map_err(|e| SharedError::from_call(id, e))
    }

    /// The schema of an object this node owns (for tools reading it untyped).
    pub fn schema(&self, id: ObjectId) -> Option<Schema> {
        self.rt.schema(id).map(|s| (*s).clone())
    }

    /// What this layer dropped or repaired since the node started.
    pub fn stats(&self) -> SharedStats {
        self.rt.stats()
    }
}

fn handle<T: SharedObject>(rt: &Arc<Runtime>, replica: Arc<Replica<T>>) -> T::Handle {
    T::Handle::from(ObjectHandle {
        replica,
        rt: rt.clone(),
    })
}

fn install<T: SharedObject>(rt: &Arc<Runtime>, snap: &Snapshot) -> Result<T::Handle, SharedError> {
    let replica = Replica::<T>::new(snap, Arc::downgrade(rt)).map_err(|e| {
        rt.unexpect(snap.id);
        SharedError::codec(snap.id, e)
    })?;
    Ok(handle(rt, rt.install(Arc::new(replica))))
}

/// A shared object about to be created ([`Shared::create`]); `.await` it.
#[must_use = "nothing is created until this is awaited"]
pub struct Create<T: SharedObject> {
    rt: Arc<Runtime>,
    value: T,
    ttl: Option<Duration>,
    owner: Option<Target>,
    backup: BackupChoice,
}

impl<T: SharedObject> std::fmt::Debug for Create<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Create")
            .field("type", &T::TYPE_NAME)
            .field("ttl", &self.ttl)
            .field("owner", &self.owner)
            .field("backup", &self.backup)
            .finish()
    }
}

impl<T: SharedObject> Create<T> {
    /// Removes the object once it has gone `ttl` without a write (enforced by the owner).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Stores the object on (and lets it be ordered by) `owner` instead of this node.
    pub fn on(mut self, owner: impl Into<Target>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Keeps a backup of the object on `node`: every write is acknowledged once `node`
    /// holds it, and `node` takes the object over (epoch + 1) if the owner is lost. If
    /// `node` is lost, the object goes on without a backup.
    pub fn backup(mut self, node: NodeId) -> Self {
        self.backup = BackupChoice::Node(node);
        self
    }

    /// Keeps a backup on a node chosen by rendezvous hash among the live nodes of the
    /// owner's type (chosen again whenever it is lost). Creation fails with
    /// [`Refusal::NoBackup`] when there is no such node.
    pub fn backup_auto(mut self) -> Self {
        self.backup = BackupChoice::Auto { node_type: None };
        self
    }

    /// As [`backup_auto`](Self::backup_auto), among the live nodes of `node_type`.
    pub fn backup_auto_in(mut self, node_type: impl Into<String>) -> Self {
        self.backup = BackupChoice::Auto {
            node_type: Some(node_type.into()),
        };
        self
    }

    async fn run(self) -> Result<T::Handle, SharedError> {
        let rt = self.rt;
        let target = self.owner.unwrap_or(Target::Node(rt.me));
        // The id is not known before the owner answers: errors name the target's node.
        let provisional = ObjectId {
            owner: match &target {
                Target::Node(id) => *id,
                _ => rt.me,
            },
            serial: 0,
        };
        let fields = self
            .value
            .to_fields()
            .map_err(|e| SharedError::codec(provisional, e))?;
        let req = CreateReq {
            schema: Schema::from_defs(T::TYPE_NAME, T::FIELDS),
            fields,
            ttl_ms: self
                .ttl
                .map(|t| t.as_millis().min(u128::from(u64::MAX)) as u64),
            subscribe: true,
            backup: self.backup,
        };
        let snap: Snapshot = rt
            .client(target)
            .call_fallible::<_, Snapshot, Refusal>(CMD_CREATE, &req)
            .await
            .map_err(|e| SharedError::from_call(provisional, e))?;
        install::<T>(&rt, &snap)
    }
}

impl<T: SharedObject> IntoFuture for Create<T> {
    type Output = Result<T::Handle, SharedError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

#[doc(hidden)]
pub mod __private;
