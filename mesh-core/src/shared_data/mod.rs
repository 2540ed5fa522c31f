//! Cluster-wide shared data: a key-value map every node of the cluster holds (guests
//! excepted), typed through serde, each key ordered by one owner.
//!
//! ```
//! use mesh_core::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = LocalRegistry::new();
//! let a = Mesh::builder().discovery(Discovery::local_registry(&registry)).start().await?;
//! let b = Mesh::builder().discovery(Discovery::local_registry(&registry)).start().await?;
//! # while a.nodes().len() < 2 || b.nodes().len() < 2 { tokio::task::yield_now().await; }
//!
//! a.shared_data().set("motd", &"welcome".to_string()).await?;
//! // A node joining now receives the data before `start` returns.
//! let c = Mesh::builder().discovery(Discovery::local_registry(&registry)).start().await?;
//! assert_eq!(c.shared_data().get::<String>("motd")?, Some("welcome".to_string()));
//! b.shared_data().remove("motd").await?;
//! assert_eq!(b.shared_data().get::<String>("motd")?, None);
//! # c.stop().await; b.stop().await; a.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Semantics
//!
//! * **One owner per key.** The owner of a key is chosen by rendezvous hash over the live
//!   members (every node computes the same one from the same view); its runner-up is the
//!   key's backup, and becomes its owner when the first is gone. A write goes to the owner,
//!   which stamps it `(epoch, version)`: the version rises by one per write, across owners;
//!   the epoch rises whenever another node orders the key. Concurrent writers from many
//!   nodes are ordered, never raced: every node ends with the owner's last write.
//! * **Acknowledged once the backup holds it.** The owner sends each write to the key's
//!   backup before it answers. A backup holding a later version (a new owner ordering from
//!   a stale copy) makes the owner order after that one; a backup holding a newer epoch
//!   refuses the write ([`DataRefusal::Fenced`]): an old owner that was cut off cannot
//!   overwrite what the new one ordered.
//! * **Everyone holds everything.** The owner pushes each write to every member; a node
//!   keeps, per key, the entry with the greatest `(epoch, version)`, so late, repeated or
//!   reordered pushes change nothing, and a removal (a tombstone) is not undone by an
//!   older set. Reads are local and may lag the owner briefly.
//! * **Joining.** A node that joins reads the whole map from a member, in pages, before
//!   [`MeshBuilder::start`](crate::MeshBuilder::start) returns.
//! * **Limits** ([`SharedDataLimits`], the config's `shared_data` table): key length, value
//!   size and live key count, checked by the writer and again by the owner.

mod runtime;
mod store;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub(crate) use runtime::Runtime;

use crate::codec::CodecError;
use crate::node::NodeId;
use crate::rpc::CallError;

/// Limits on the shared data, each refused with its own [`DataRefusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SharedDataLimits {
    /// Bytes of a key at most (default 256).
    pub max_key_len: usize,
    /// Encoded bytes of a value at most (default 64 KiB; never more than a quarter of the
    /// mesh's `max_message_size`).
    pub max_value_bytes: usize,
    /// Live keys at most (default 100,000).
    pub max_keys: usize,
}

impl Default for SharedDataLimits {
    fn default() -> Self {
        SharedDataLimits {
            max_key_len: 256,
            max_value_bytes: 64 * 1024,
            max_keys: 100_000,
        }
    }
}

impl SharedDataLimits {
    /// The limits a node applies: values within a quarter of `max_message_size`.
    pub(crate) fn effective(mut self, max_message_size: usize) -> SharedDataLimits {
        self.max_value_bytes = self.max_value_bytes.min(max_message_size / 4).max(1);
        self
    }
}

/// Why a write was refused; nothing changed anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum DataRefusal {
    /// The key is empty or longer than `shared_data.max_key_len`.
    #[error("a key of {len} bytes: keys hold 1 to {max} bytes")]
    KeyLength {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is larger than `shared_data.max_value_bytes`.
    #[error("a value of {size} bytes, more than the limit of {max}")]
    ValueTooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The data holds `shared_data.max_keys` live keys already.
    #[error("the shared data already holds its limit of {max} keys")]
    TooManyKeys {
        /// The limit.
        max: usize,
    },
    /// The node asked does not own the key by its view (views differ for a moment): the
    /// writer asks again.
    #[error("not the owner of the key; its owner is {owner:?}")]
    NotOwner {
        /// The owner by that node's view.
        owner: Option<NodeId>,
    },
    /// A newer owner ordered the key: this write, from an older epoch, changed nothing.
    #[error("fenced: {owner} orders the key at epoch {epoch}; nothing changed, write again")]
    Fenced {
        /// The newer owner.
        owner: NodeId,
        /// Its epoch.
        epoch: u32,
    },
    /// The key's backup did not hold the write: nothing changed.
    #[error("the key's backup did not hold the write: {detail}")]
    NoBackup {
        /// What went wrong.
        detail: String,
    },
}

/// The error of a shared-data operation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// Refused (by this node's checks or the owner's); nothing changed.
    #[error("shared data `{key}`: {refusal}")]
    Refused {
        /// The key.
        key: String,
        /// Why.
        refusal: DataRefusal,
    },
    /// The owner could not be reached; the write may or may not have been applied.
    #[error("shared data `{key}`: calling its owner failed: {source}")]
    Call {
        /// The key.
        key: String,
        /// The failure.
        #[source]
        source: Box<CallError<DataRefusal>>,
    },
    /// The value does not encode, or the stored bytes are not a `T` (wrong type on `get`).
    #[error("shared data `{key}`: {source}")]
    Codec {
        /// The key.
        key: String,
        /// The failure.
        #[source]
        source: Arc<CodecError>,
    },
    /// No member is there to own the key (this node is a guest alone with no members).
    #[error("shared data `{key}`: no member to own it")]
    NoOwner {
        /// The key.
        key: String,
    },
}

impl DataError {
    /// The refusal, if that is what this is.
    pub fn refusal(&self) -> Option<&DataRefusal> {
        match self {
            DataError::Refused { refusal, .. } => Some(refusal),
            DataError::Call { source, .. } => match &**source {
                CallError::Remote(r) => Some(r),
                _ => None,
            },
            _ => None,
        }
    }

    pub(crate) fn from_call(key: &str, e: CallError<DataRefusal>) -> DataError {
        match e {
            CallError::Remote(refusal) => DataError::Refused {
                key: key.to_string(),
                refusal,
            },
            e => DataError::Call {
                key: key.to_string(),
                source: Box::new(e),
            },
        }
    }
}

/// A change to the shared data, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataEvent {
    /// A key was set.
    Updated {
        /// The key.
        key: String,
        /// Its version now.
        version: u64,
        /// The node that wrote it (none for a guest).
        by: Option<NodeId>,
    },
    /// A key was removed.
    Removed {
        /// The key.
        key: String,
        /// The version of the removal.
        version: u64,
    },
    /// This reader fell behind and missed `missed` events (read the data for its state).
    Lagged {
        /// Events missed.
        missed: u64,
    },
}

/// What the shared data of a node holds and repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataStats {
    /// Live keys held.
    pub keys: usize,
    /// Pushes refused because the sender is not a member.
    pub forged_pushes: u64,
    /// Writes this node ordered as an owner.
    pub ordered: u64,
}

/// The cluster's shared data, from one node ([`Mesh::shared_data`](crate::Mesh::shared_data)).
/// Cheap to clone.
#[derive(Clone)]
pub struct SharedData {
    pub(crate) rt: Arc<Runtime>,
}

impl std::fmt::Debug for SharedData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedData")
            .field("node", &self.rt.me)
            .finish()
    }
}

impl SharedData {
    /// Sets `key` to `value`; resolves with the version once the key's owner ordered it
    /// and its backup holds it (this node's copy holds it too).
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<u64, DataError> {
        let bytes = crate::codec::encode(value).map_err(|e| DataError::Codec {
            key: key.to_string(),
            source: Arc::new(e),
        })?;
        self.rt.write(key, Some(bytes)).await
    }

    /// Removes `key` everywhere; resolves with the version of the removal.
    pub async fn remove(&self, key: &str) -> Result<u64, DataError> {
        self.rt.write(key, None).await
    }

    /// The value of `key` as this node holds it (no I/O; may lag the owner briefly).
    /// A value that is not a `T` is [`DataError::Codec`].
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, DataError> {
        let Some(bytes) = self.rt.value(key) else {
            return Ok(None);
        };
        crate::codec::decode(&bytes)
            .map(Some)
            .map_err(|e| DataError::Codec {
                key: key.to_string(),
                source: Arc::new(e),
            })
    }

    /// The version of `key` this node holds (0 if it never saw it).
    pub fn version(&self, key: &str) -> u64 {
        self.rt.version(key)
    }

    /// The live keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.rt.keys()
    }

    /// Changes from now on, as this node applies them.
    pub fn events(&self) -> DataEvents {
        DataEvents {
            rx: self.rt.events.subscribe(),
        }
    }

    /// What this node holds and did.
    pub fn stats(&self) -> DataStats {
        self.rt.stats()
    }
}

/// The event stream of [`SharedData::events`].
#[derive(Debug)]
pub struct DataEvents {
    rx: tokio::sync::broadcast::Receiver<DataEvent>,
}

impl DataEvents {
    /// The next event; `None` once the node stopped.
    pub async fn next(&mut self) -> Option<DataEvent> {
        use tokio::sync::broadcast::error::RecvError;
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(RecvError::Lagged(missed)) => Some(DataEvent::Lagged { missed }),
            Err(RecvError::Closed) => None,
        }
    }
}
