//! What can go wrong with a shared object, typed.

use serde::{Deserialize, Serialize};

use super::id::ObjectId;
use crate::codec::CodecError;
use crate::rpc::CallError;

/// Why the owner refused a write (or a create, or a subscription). A refused write changes
/// nothing, on the owner or on any replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A counter would leave its bounds (and the field does not clamp).
    #[error("`{field}` would become {value}, outside {min}..={max}")]
    OutOfBounds {
        /// The field.
        field: String,
        /// The value the write would have produced.
        value: i128,
        /// The field's smallest value.
        min: i128,
        /// The field's largest value.
        max: i128,
    },
    /// A compare-and-set found another value: read the object again and retry if needed.
    #[error("compare-and-set on `{field}` failed: the value changed; read it again")]
    CasFailed {
        /// The field.
        field: String,
    },
    /// The write named a field id the object does not have (writer and owner built with
    /// different versions of the type).
    #[error("the object has no field with id {field}")]
    UnknownField {
        /// The field id.
        field: u16,
    },
    /// The operation does not apply to the field's kind (e.g. `inc` on a map).
    #[error("`{op}` does not apply to field `{field}`")]
    WrongKind {
        /// The field.
        field: String,
        /// The operation.
        op: String,
    },
    /// A map is at its length limit.
    #[error("map `{field}` already holds its limit of {max_len} entries")]
    MapFull {
        /// The field.
        field: String,
        /// Its limit.
        max_len: u32,
    },
    /// The object would exceed the owner's size limit (`shared.max_object_bytes`).
    #[error("the object would hold {size} bytes, more than the owner's limit of {max}")]
    TooLarge {
        /// The size it would have.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// No such object at the owner: it was removed, expired, or never existed.
    #[error("the owner has no such object (removed, expired, or never created)")]
    NotFound,
    /// The owner holds as many objects as it may (`shared.max_objects`).
    #[error("the owner already holds its limit of {max} objects")]
    TooManyObjects {
        /// The limit.
        max: usize,
    },
    /// The object has as many subscribers as it may (`shared.max_subscribers`).
    #[error("the object already has its limit of {max} subscribing nodes")]
    TooManySubscribers {
        /// The limit.
        max: usize,
    },
    /// The object is of another type (or another version of it) than asked for.
    #[error("the object is a `{found}`, not the `{expected}` asked for (or another version of it)")]
    WrongType {
        /// The type asked for.
        expected: String,
        /// The object's type.
        found: String,
    },
    /// A newer owner took the object over (its backup, when this owner was thought gone):
    /// the write was stamped by an older epoch and changed nothing anywhere. The handle
    /// follows the new owner; write again if the write still makes sense.
    #[error("fenced: {owner} took the object over at epoch {epoch}; nothing changed, write again")]
    Fenced {
        /// The node that orders the object now.
        owner: crate::node::NodeId,
        /// Its epoch.
        epoch: u32,
    },
    /// The object moved to another owner (the handle retries there by itself).
    #[error("the object is ordered by {owner} now (epoch {epoch})")]
    Moved {
        /// The node that orders the object now.
        owner: crate::node::NodeId,
        /// Its epoch.
        epoch: u32,
    },
    /// This node holds the object's backup, and its owner still lives: ask the owner.
    #[error("this node only holds the object's backup; its owner still orders it")]
    Standby,
    /// The object's backup could not be chosen or did not hold the write: nothing changed.
    #[error("no backup holds the object: {detail}; nothing changed")]
    NoBackup {
        /// What went wrong.
        detail: String,
    },
    /// The request did not make sense (a schema or state no derive produces).
    #[error("malformed request: {detail}")]
    Malformed {
        /// What was wrong.
        detail: String,
    },
}

/// Why an object is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RemoveReason {
    /// Someone removed it.
    Removed,
    /// Its TTL passed with no change.
    Expired,
    /// Its owner left the mesh (or restarted) and no backup took it over.
    OwnerLost,
}

impl std::fmt::Display for RemoveReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RemoveReason::Removed => "removed",
            RemoveReason::Expired => "expired",
            RemoveReason::OwnerLost => "its owner is gone",
        })
    }
}

/// The error of a shared-object operation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SharedError {
    /// The owner refused it; nothing changed anywhere.
    #[error("the owner of {id} refused: {refusal}")]
    Refused {
        /// The object.
        id: ObjectId,
        /// Why.
        refusal: Refusal,
    },
    /// The object is gone (this node's replica knows it).
    #[error("shared object {id} is gone: {reason}")]
    Removed {
        /// The object.
        id: ObjectId,
        /// Why.
        reason: RemoveReason,
    },
    /// The owner could not be reached, or the call failed on the way; a write may or may not
    /// have been applied (read the object again).
    #[error("calling the owner of shared object {id} failed: {source}")]
    Call {
        /// The object (for `create`: the id is not known yet and names the target's node
        /// with serial 0).
        id: ObjectId,
        /// The failure.
        #[source]
        source: Box<CallError<Refusal>>,
    },
    /// A value could not be encoded, or the owner's bytes do not decode as this type's
    /// field (writer and owner disagree on the type).
    #[error("shared object {id}: {source}")]
    Codec {
        /// The object.
        id: ObjectId,
        /// The failure.
        #[source]
        source: std::sync::Arc<CodecError>,
    },
}

impl SharedError {
    /// The owner's refusal, if that is what this is.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            SharedError::Refused { refusal, .. } => Some(refusal),
            SharedError::Call { source, .. } => match &**source {
                CallError::Remote(r) => Some(r),
                _ => None,
            },
            _ => None,
        }
    }

    pub(crate) fn codec(id: ObjectId, e: CodecError) -> SharedError {
        SharedError::Codec {
            id,
            source: std::sync::Arc::new(e),
        }
    }

    pub(crate) fn from_call(id: ObjectId, e: CallError<Refusal>) -> SharedError {
        match e {
            CallError::Remote(refusal) => SharedError::Refused { id, refusal },
            source => SharedError::Call {
                id,
                source: Box::new(source),
            },
        }
    }
}
