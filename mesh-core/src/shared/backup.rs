//! The objects a node holds as another owner's backup, and the choice of a backup node.
//! Sans-IO: the runtime passes in what arrives and sends what comes out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::SharedLimits;
use super::error::Refusal;
use super::id::ObjectId;
use super::schema::Schema;
use super::state::{ObjectState, StateLimits};
use super::wire::{BackupChoice, BackupMsg, BackupReply};
use crate::node::NodeId;

/// One object held for its owner, ready to take over.
#[derive(Debug, Clone)]
pub(crate) struct Standby {
    pub(crate) owner: NodeId,
    pub(crate) schema: Arc<Schema>,
    pub(crate) state: ObjectState,
    pub(crate) epoch: u32,
    pub(crate) version: u64,
    pub(crate) ttl: Option<Duration>,
    pub(crate) choice: BackupChoice,
}

/// The objects this node backs.
pub(crate) struct StandbyTable {
    limits: SharedLimits,
    entries: HashMap<ObjectId, Standby>,
}

impl StandbyTable {
    pub(crate) fn new(limits: SharedLimits) -> StandbyTable {
        StandbyTable {
            limits,
            entries: HashMap::new(),
        }
    }

    fn state_limits(&self) -> StateLimits {
        StateLimits {
            max_bytes: self.limits.max_object_bytes,
            max_map_len: self.limits.max_map_len,
        }
    }

    /// A message from `from`, the object's owner by its own account. An older epoch than
    /// the one held is fenced; a delta that does not follow what is held asks for the
    /// whole object.
    pub(crate) fn receive(&mut self, from: NodeId, msg: BackupMsg) -> Result<BackupReply, Refusal> {
        let id = msg.id();
        if let Some(held) = self.entries.get(&id)
            && held.epoch > msg.epoch()
        {
            return Err(Refusal::Fenced {
                owner: held.owner,
                epoch: held.epoch,
            });
        }
        match msg {
            BackupMsg::Full {
                schema,
                fields,
                epoch,
                version,
                ttl_ms,
                choice,
                ..
            } => {
                if !self.entries.contains_key(&id) && self.entries.len() >= self.limits.max_objects
                {
                    return Err(Refusal::TooManyObjects {
                        max: self.limits.max_objects,
                    });
                }
                schema
                    .check(self.limits.max_fields)
                    .map_err(|detail| Refusal::Malformed { detail })?;
                let state = ObjectState::new(&schema, fields, self.state_limits())?;
                self.entries.insert(
                    id,
                    Standby {
                        owner: from,
                        schema: Arc::new(schema),
                        state,
                        epoch,
                        version,
                        ttl: ttl_ms.map(Duration::from_millis),
                        choice,
                    },
                );
                Ok(BackupReply::Held)
            }
            BackupMsg::Delta {
                epoch,
                version,
                effects,
                ..
            } => {
                let Some(held) = self.entries.get_mut(&id) else {
                    return Ok(BackupReply::NeedFull);
                };
                if held.owner != from || held.epoch != epoch || held.version + 1 != version {
                    return Ok(BackupReply::NeedFull);
                }
                let mut next = held.state.clone();
                if next.apply_effects(&held.schema, &effects).is_err() {
                    return Ok(BackupReply::NeedFull);
                }
                held.state = next;
                held.version = version;
                Ok(BackupReply::Held)
            }
            BackupMsg::Drop { .. } => {
                if self.entries.get(&id).is_some_and(|h| h.owner == from) {
                    self.entries.remove(&id);
                }
                Ok(BackupReply::Held)
            }
        }
    }

    /// Whether this node backs `id`, and for which owner.
    pub(crate) fn owner_of(&self, id: ObjectId) -> Option<NodeId> {
        self.entries.get(&id).map(|s| s.owner)
    }

    /// The objects backed for `owner`.
    pub(crate) fn of_owner(&self, owner: NodeId) -> Vec<ObjectId> {
        self.entries
            .iter()
            .filter(|(_, s)| s.owner == owner)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every owner this node backs objects for.
    pub(crate) fn owners(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.entries.values().map(|s| s.owner).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Takes `id` out, to own it.
    pub(crate) fn take(&mut self, id: ObjectId) -> Option<Standby> {
        self.entries.remove(&id)
    }

    /// How many objects this node backs.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A stable 64-bit hash of `chunks` (FNV-1a, then a splitmix64 avalanche so close inputs do
/// not give close weights): rendezvous hashing, where every node computes the same winner
/// from the same view.
pub(crate) fn hash64(chunks: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in chunks {
        for b in *chunk {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The weight of `node` for object `id`.
fn weight(id: ObjectId, node: NodeId) -> u64 {
    hash64(&[
        id.owner.addr.to_string().as_bytes(),
        &id.owner.incarnation.to_le_bytes(),
        &id.serial.to_le_bytes(),
        node.addr.to_string().as_bytes(),
        &node.incarnation.to_le_bytes(),
    ])
}

/// The rendezvous choice for `id` among `candidates`.
pub(crate) fn rendezvous(
    id: ObjectId,
    candidates: impl IntoIterator<Item = NodeId>,
) -> Option<NodeId> {
    candidates.into_iter().max_by_key(|n| (weight(id, *n), *n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::schema::{FieldKind, FieldSpec};
    use crate::shared::state::{Effect, FieldState};

    fn node(port: u16, inc: u64) -> NodeId {
        NodeId::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)), inc)
    }

    fn schema() -> Schema {
        Schema {
            type_name: "Counter".into(),
            fields: vec![FieldSpec {
                id: 3,
                name: "n".into(),
                kind: FieldKind::Counter {
                    min: 0,
                    max: 100,
                    clamp: false,
                },
            }],
        }
    }

    fn full(id: ObjectId, epoch: u32, version: u64, n: i128) -> BackupMsg {
        BackupMsg::Full {
            id,
            schema: schema(),
            fields: vec![FieldState::Counter(n)],
            epoch,
            version,
            ttl_ms: None,
            choice: BackupChoice::None,
        }
    }

    fn delta(id: ObjectId, epoch: u32, version: u64, n: i128) -> BackupMsg {
        BackupMsg::Delta {
            id,
            epoch,
            version,
            effects: vec![Effect::Counter { field: 3, value: n }],
        }
    }

    #[test]
    fn deltas_follow_in_order_and_gaps_ask_for_the_whole_object() {
        let owner = node(1, 1);
        let id = ObjectId { owner, serial: 1 };
        let mut t = StandbyTable::new(SharedLimits::default());
        assert_eq!(
            t.receive(owner, delta(id, 1, 2, 1)),
            Ok(BackupReply::NeedFull)
        );
        assert_eq!(t.receive(owner, full(id, 1, 1, 0)), Ok(BackupReply::Held));
        assert_eq!(t.receive(owner, delta(id, 1, 2, 1)), Ok(BackupReply::Held));
        // A repeat, a gap, another sender: the whole object, please.
        assert_eq!(
            t.receive(owner, delta(id, 1, 2, 1)),
            Ok(BackupReply::NeedFull)
        );
        assert_eq!(
            t.receive(owner, delta(id, 1, 4, 1)),
            Ok(BackupReply::NeedFull)
        );
        assert_eq!(
            t.receive(node(2, 1), delta(id, 1, 3, 1)),
            Ok(BackupReply::NeedFull)
        );
        let s = t.take(id).unwrap();
        assert_eq!(
            (s.version, &s.state.fields[..]),
            (2, &[FieldState::Counter(1)][..])
        );
    }

    #[test]
    fn an_older_epoch_is_fenced() {
        let old = node(1, 1);
        let new = node(2, 1);
        let id = ObjectId {
            owner: old,
            serial: 1,
        };
        let mut t = StandbyTable::new(SharedLimits::default());
        t.receive(new, full(id, 2, 5, 5)).unwrap();
        assert_eq!(
            t.receive(old, delta(id, 1, 6, 6)),
            Err(Refusal::Fenced {
                owner: new,
                epoch: 2
            })
        );
        assert!(matches!(
            t.receive(old, full(id, 1, 9, 9)),
            Err(Refusal::Fenced { .. })
        ));
        // A drop from someone who is not the owner changes nothing.
        t.receive(old, BackupMsg::Drop { id, epoch: 2 }).unwrap();
        assert_eq!(t.owner_of(id), Some(new));
    }

    #[test]
    fn limits_and_bad_effects_are_refused_or_repaired() {
        let owner = node(1, 1);
        let limits = SharedLimits {
            max_objects: 1,
            ..SharedLimits::default()
        };
        let mut t = StandbyTable::new(limits);
        let a = ObjectId { owner, serial: 1 };
        let b = ObjectId { owner, serial: 2 };
        t.receive(owner, full(a, 1, 1, 0)).unwrap();
        assert!(matches!(
            t.receive(owner, full(b, 1, 1, 0)),
            Err(Refusal::TooManyObjects { max: 1 })
        ));
        // An effect on a field the schema lacks: the backup asks for the whole object.
        let bad = BackupMsg::Delta {
            id: a,
            epoch: 1,
            version: 2,
            effects: vec![Effect::Counter { field: 9, value: 1 }],
        };
        assert_eq!(t.receive(owner, bad), Ok(BackupReply::NeedFull));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn rendezvous_is_stable_and_spreads() {
        let owner = node(1, 1);
        let nodes: Vec<NodeId> = (2..12).map(|p| node(p, 7)).collect();
        let mut wins = std::collections::HashMap::new();
        for serial in 0..1000 {
            let id = ObjectId { owner, serial };
            let a = rendezvous(id, nodes.iter().copied()).unwrap();
            let b = rendezvous(id, nodes.iter().rev().copied()).unwrap();
            assert_eq!(a, b, "the order of the view does not matter");
            *wins.entry(a).or_insert(0) += 1;
        }
        assert_eq!(wins.len(), nodes.len());
        assert!(wins.values().all(|w| *w > 40), "{wins:?}");
        assert_eq!(rendezvous(ObjectId { owner, serial: 1 }, []), None);
    }
}
