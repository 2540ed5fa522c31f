//! The messages between writers, replicas and owners, on reserved command ids.

use serde::{Deserialize, Serialize};

use super::error::RemoveReason;
use super::id::ObjectId;
use super::schema::Schema;
use super::state::{Effect, FieldState, Op};
use crate::node::NodeId;

/// Creates an object on the receiving node: request [`CreateReq`], answer [`Snapshot`].
pub(crate) const CMD_CREATE: u16 = 65100;
/// Orders a write: [`WriteReq`] -> [`Ack`].
pub(crate) const CMD_WRITE: u16 = 65101;
/// Reads (and optionally subscribes to) an object: [`ReadReq`] -> [`Snapshot`].
pub(crate) const CMD_READ: u16 = 65102;
/// Ends a subscription (one-way): [`Unsubscribe`].
pub(crate) const CMD_UNSUBSCRIBE: u16 = 65103;
/// Removes an object: serial -> `()`.
pub(crate) const CMD_REMOVE: u16 = 65104;
/// What an owner tells its subscribers (one-way): [`Push`].
pub(crate) const CMD_PUSH: u16 = 65105;
/// Lists the objects a node owns: `()` -> `Vec<ObjectInfo>`.
pub(crate) const CMD_LIST: u16 = 65106;
/// What an owner tells its backup before it acknowledges a write: [`BackupMsg`] ->
/// [`BackupReply`].
pub(crate) const CMD_BACKUP: u16 = 65107;
/// Reads an object untyped, for tools: [`ObjectId`] -> [`Inspection`].
pub(crate) const CMD_INSPECT: u16 = 65108;

/// An object read untyped at its owner (for tools): its schema and raw field states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Inspection {
    /// What the owner lists of it.
    pub info: ObjectInfo,
    /// Its schema (field names, ids and kinds).
    pub schema: Schema,
    /// Its fields, in schema order: counters as numbers, values and map entries as their
    /// encoded (postcard) bytes.
    pub fields: Vec<FieldState>,
}

impl Inspection {
    /// The object as JSON: `{"id", "type", "epoch", "version", "backup", "fields": {name:
    /// value}}`, counters as numbers, values as `{"postcard_hex": ".."}`, maps as arrays of
    /// `[key_hex, value_hex]` (the bytes' Rust types are not known here).
    pub fn to_json(&self) -> serde_json::Value {
        fn hex(b: &[u8]) -> String {
            b.iter().map(|x| format!("{x:02x}")).collect()
        }
        let mut fields = serde_json::Map::new();
        for (spec, f) in self.schema.fields.iter().zip(&self.fields) {
            let v = match f {
                FieldState::Counter(n) => match i64::try_from(*n) {
                    Ok(n) => serde_json::Value::from(n),
                    Err(_) => serde_json::Value::from(n.to_string()),
                },
                FieldState::Value(b) => serde_json::json!({ "postcard_hex": hex(b) }),
                FieldState::Map(m) => serde_json::Value::Array(
                    m.iter()
                        .map(|(k, v)| serde_json::json!([hex(k), hex(v)]))
                        .collect(),
                ),
            };
            fields.insert(spec.name.clone(), v);
        }
        serde_json::json!({
            "id": self.info.id.to_string(),
            "type": self.info.type_name,
            "epoch": self.info.epoch,
            "version": self.info.version,
            "backup": self.info.backup.map(|b| b.to_string()),
            "subscribers": self.info.subscribers,
            "bytes": self.info.bytes,
            "fields": fields,
        })
    }
}

/// Which node holds an object's backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) enum BackupChoice {
    /// None: the object is lost with its owner.
    #[default]
    None,
    /// This node.
    Node(NodeId),
    /// Chosen by rendezvous hash among the live nodes of a type (the owner's type when
    /// none is named), chosen again when it is lost.
    Auto { node_type: Option<String> },
}

/// An owner's message to its backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum BackupMsg {
    /// The whole object: the backup replaces what it holds.
    Full {
        id: ObjectId,
        schema: Schema,
        fields: Vec<FieldState>,
        epoch: u32,
        version: u64,
        ttl_ms: Option<u64>,
        choice: BackupChoice,
    },
    /// One ordered write, the next version after what the backup holds.
    Delta {
        id: ObjectId,
        epoch: u32,
        version: u64,
        effects: Vec<Effect>,
    },
    /// The object is gone: forget it.
    Drop { id: ObjectId, epoch: u32 },
}

impl BackupMsg {
    pub(crate) fn id(&self) -> ObjectId {
        match self {
            BackupMsg::Full { id, .. }
            | BackupMsg::Delta { id, .. }
            | BackupMsg::Drop { id, .. } => *id,
        }
    }

    pub(crate) fn epoch(&self) -> u32 {
        match self {
            BackupMsg::Full { epoch, .. }
            | BackupMsg::Delta { epoch, .. }
            | BackupMsg::Drop { epoch, .. } => *epoch,
        }
    }
}

/// A backup's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum BackupReply {
    /// It holds the message's version now.
    Held,
    /// It does not hold the version before this delta: send the whole object.
    NeedFull,
}

/// A new object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CreateReq {
    pub(crate) schema: Schema,
    pub(crate) fields: Vec<FieldState>,
    pub(crate) ttl_ms: Option<u64>,
    /// Subscribe the creator.
    pub(crate) subscribe: bool,
    /// Where the backup goes.
    pub(crate) backup: BackupChoice,
}

/// A write to order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WriteReq {
    pub(crate) id: ObjectId,
    pub(crate) ops: Vec<Op>,
}

/// A write the owner ordered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ack {
    pub(crate) epoch: u32,
    pub(crate) version: u64,
    pub(crate) effects: Vec<Effect>,
}

/// A read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReadReq {
    pub(crate) id: ObjectId,
    /// The schema fingerprint the reader expects, and its type name (for the error).
    pub(crate) fingerprint: u32,
    pub(crate) type_name: String,
    /// Subscribe the reader to the object's deltas.
    pub(crate) subscribe: bool,
}

/// An object's whole state at one version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) id: ObjectId,
    /// The node that orders the object now (the id's node until a backup took over).
    pub(crate) owner: NodeId,
    /// The node holding its backup.
    pub(crate) backup: Option<NodeId>,
    pub(crate) fingerprint: u32,
    pub(crate) epoch: u32,
    pub(crate) version: u64,
    pub(crate) fields: Vec<FieldState>,
}

/// A subscription to end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Unsubscribe {
    pub(crate) id: ObjectId,
}

/// What an owner tells a subscriber.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Push {
    /// One ordered write.
    Delta {
        id: ObjectId,
        epoch: u32,
        version: u64,
        by: Option<NodeId>,
        effects: Vec<Effect>,
    },
    /// The object is gone.
    Removed { id: ObjectId, reason: RemoveReason },
    /// Deltas were dropped for this subscriber (it fell behind): read a snapshot.
    Resync { id: ObjectId },
    /// Who orders the object and who backs it changed: a new backup, or (from an owner a
    /// newer epoch fenced) the node to follow.
    Placement {
        id: ObjectId,
        owner: NodeId,
        backup: Option<NodeId>,
        epoch: u32,
    },
}

impl Push {
    pub(crate) fn id(&self) -> ObjectId {
        match self {
            Push::Delta { id, .. }
            | Push::Removed { id, .. }
            | Push::Resync { id }
            | Push::Placement { id, .. } => *id,
        }
    }
}

/// One object a node owns, as tools list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// The object.
    pub id: ObjectId,
    /// Its Rust type name.
    pub type_name: String,
    /// Its epoch.
    pub epoch: u32,
    /// Its current version.
    pub version: u64,
    /// How many nodes hold a replica.
    pub subscribers: usize,
    /// The node holding its backup, if any.
    pub backup: Option<NodeId>,
    /// Its encoded size in bytes.
    pub bytes: usize,
}
