//! The untyped state of one object and the writes on it: what the owner orders (sans-IO, no
//! Rust type needed) and the effects it replicates.
//!
//! A write is a list of [`Op`]s, applied all or none. The owner turns each op into an
//! [`Effect`] (an `inc` becomes the counter's new value, a `cas` a plain set), so replicas
//! apply effects without re-checking anything and an effect applied twice changes nothing.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::Refusal;
use super::schema::{FieldKind, Schema};

/// One field's value as the owner keeps it: counters as numbers, values and map entries as
/// their encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FieldState {
    /// A counter's value.
    Counter(i128),
    /// An encoded value.
    Value(Bytes),
    /// Encoded keys to encoded values.
    Map(BTreeMap<Bytes, Bytes>),
}

impl FieldState {
    /// Bytes this field counts against the object's size limit.
    fn size(&self) -> usize {
        match self {
            FieldState::Counter(_) => 16,
            FieldState::Value(v) => v.len(),
            FieldState::Map(m) => m.iter().map(|(k, v)| k.len() + v.len()).sum(),
        }
    }
}

/// One write on one field, as the writer asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Op {
    /// Replaces a value (counters: the new number).
    Set {
        /// The field id.
        field: u16,
        /// The encoded value.
        value: Bytes,
    },
    /// Sets a counter to a number.
    SetCounter {
        /// The field id.
        field: u16,
        /// The new value.
        value: i128,
    },
    /// Replaces a value if it currently equals `expected` (compared encoded).
    Cas {
        /// The field id.
        field: u16,
        /// The encoded value expected now.
        expected: Bytes,
        /// The encoded new value.
        new: Bytes,
    },
    /// Sets a counter if it currently equals `expected`.
    CasCounter {
        /// The field id.
        field: u16,
        /// The value expected now.
        expected: i128,
        /// The new value.
        new: i128,
    },
    /// Adds to a counter (negative: subtracts).
    Inc {
        /// The field id.
        field: u16,
        /// How much.
        by: i64,
    },
    /// Inserts or replaces a map entry.
    Put {
        /// The field id.
        field: u16,
        /// The encoded key.
        key: Bytes,
        /// The encoded value.
        value: Bytes,
    },
    /// Removes a map entry (absent: no change).
    Delete {
        /// The field id.
        field: u16,
        /// The encoded key.
        key: Bytes,
    },
}

impl Op {
    /// The field the op writes.
    pub fn field(&self) -> u16 {
        match self {
            Op::Set { field, .. }
            | Op::SetCounter { field, .. }
            | Op::Cas { field, .. }
            | Op::CasCounter { field, .. }
            | Op::Inc { field, .. }
            | Op::Put { field, .. }
            | Op::Delete { field, .. } => *field,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Op::Set { .. } => "set",
            Op::SetCounter { .. } => "set",
            Op::Cas { .. } | Op::CasCounter { .. } => "cas",
            Op::Inc { .. } => "inc",
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
        }
    }
}

/// What an ordered write did to one field: replicas apply these as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Effect {
    /// The counter's new value.
    Counter {
        /// The field id.
        field: u16,
        /// The value.
        value: i128,
    },
    /// The field's new encoded value.
    Value {
        /// The field id.
        field: u16,
        /// The encoded value.
        value: Bytes,
    },
    /// A map entry inserted or replaced.
    Put {
        /// The field id.
        field: u16,
        /// The encoded key.
        key: Bytes,
        /// The encoded value.
        value: Bytes,
    },
    /// A map entry removed.
    Delete {
        /// The field id.
        field: u16,
        /// The encoded key.
        key: Bytes,
    },
}

impl Effect {
    /// The field the effect changed.
    pub fn field(&self) -> u16 {
        match self {
            Effect::Counter { field, .. }
            | Effect::Value { field, .. }
            | Effect::Put { field, .. }
            | Effect::Delete { field, .. } => *field,
        }
    }
}

/// Limits the owner applies to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateLimits {
    pub(crate) max_bytes: usize,
    pub(crate) max_map_len: u32,
}

/// An object's fields as the owner orders them.
#[derive(Debug, Clone)]
pub(crate) struct ObjectState {
    pub(crate) fields: Vec<FieldState>,
    pub(crate) bytes: usize,
}

impl ObjectState {
    /// The initial state a creator sent, checked against the schema and the limits.
    pub(crate) fn new(
        schema: &Schema,
        fields: Vec<FieldState>,
        limits: StateLimits,
    ) -> Result<ObjectState, Refusal> {
        if fields.len() != schema.fields.len() {
            return Err(Refusal::Malformed {
                detail: format!(
                    "{} field values for a schema of {} fields",
                    fields.len(),
                    schema.fields.len()
                ),
            });
        }
        for (spec, value) in schema.fields.iter().zip(&fields) {
            match (spec.kind, value) {
                (FieldKind::Counter { min, max, .. }, FieldState::Counter(v)) => {
                    if *v < min || *v > max {
                        return Err(Refusal::OutOfBounds {
                            field: spec.name.clone(),
                            value: *v,
                            min,
                            max,
                        });
                    }
                }
                (FieldKind::Value, FieldState::Value(_)) => {}
                (FieldKind::Map { max_len }, FieldState::Map(m)) => {
                    let max_len = max_len.min(limits.max_map_len);
                    if m.len() > max_len as usize {
                        return Err(Refusal::MapFull {
                            field: spec.name.clone(),
                            max_len,
                        });
                    }
                }
                _ => {
                    return Err(Refusal::WrongKind {
                        field: spec.name.clone(),
                        op: "create".to_string(),
                    });
                }
            }
        }
        let bytes = fields.iter().map(FieldState::size).sum();
        if bytes > limits.max_bytes {
            return Err(Refusal::TooLarge {
                size: bytes,
                max: limits.max_bytes,
            });
        }
        Ok(ObjectState { fields, bytes })
    }

    /// Applies `ops` all or none; returns the effects to replicate.
    pub(crate) fn apply(
        &mut self,
        schema: &Schema,
        ops: &[Op],
        limits: StateLimits,
    ) -> Result<Vec<Effect>, Refusal> {
        match ops {
            [] => Ok(Vec::new()),
            [op] => {
                let effect = plan(schema, &self.fields, op, limits)?;
                let bytes = self.size_after(&effect);
                if bytes > limits.max_bytes {
                    return Err(Refusal::TooLarge {
                        size: bytes,
                        max: limits.max_bytes,
                    });
                }
                commit(&mut self.fields, &effect);
                self.bytes = bytes;
                Ok(vec![effect])
            }
            ops => {
                // On a copy: a batch is never seen (or left) half-applied.
                let mut scratch = self.clone();
                let mut effects = Vec::with_capacity(ops.len());
                for op in ops {
                    let effect = plan(schema, &scratch.fields, op, limits)?;
                    scratch.bytes = scratch.size_after(&effect);
                    commit(&mut scratch.fields, &effect);
                    effects.push(effect);
                }
                if scratch.bytes > limits.max_bytes {
                    return Err(Refusal::TooLarge {
                        size: scratch.bytes,
                        max: limits.max_bytes,
                    });
                }
                *self = scratch;
                Ok(effects)
            }
        }
    }

    /// Applies effects the owner ordered (fields named by id, as they travel), as a backup
    /// does: all or none, each checked against the field's kind.
    pub(crate) fn apply_effects(
        &mut self,
        schema: &Schema,
        effects: &[Effect],
    ) -> Result<(), Refusal> {
        let mut local = Vec::with_capacity(effects.len());
        for e in effects {
            let pos = schema
                .index_of(e.field())
                .ok_or(Refusal::UnknownField { field: e.field() })?;
            let fits = matches!(
                (e, self.fields.get(pos)),
                (Effect::Counter { .. }, Some(FieldState::Counter(_)))
                    | (Effect::Value { .. }, Some(FieldState::Value(_)))
                    | (
                        Effect::Put { .. } | Effect::Delete { .. },
                        Some(FieldState::Map(_))
                    )
            );
            if !fits {
                return Err(Refusal::Malformed {
                    detail: format!("an effect on field {} does not fit its kind", e.field()),
                });
            }
            let mut e = e.clone();
            match &mut e {
                Effect::Counter { field, .. }
                | Effect::Value { field, .. }
                | Effect::Put { field, .. }
                | Effect::Delete { field, .. } => *field = pos as u16,
            }
            local.push(e);
        }
        for e in &local {
            self.bytes = self.size_after(e);
            commit(&mut self.fields, e);
        }
        Ok(())
    }

    /// The object's size once `effect` is applied.
    fn size_after(&self, effect: &Effect) -> usize {
        match effect {
            Effect::Counter { .. } => self.bytes,
            Effect::Value { field, value } => {
                let old = self.value_len(*field);
                self.bytes - old + value.len()
            }
            Effect::Put { field, key, value } => {
                let old = self.entry_len(*field, key);
                self.bytes - old + key.len() + value.len()
            }
            Effect::Delete { field, key } => self.bytes - self.entry_len(*field, key),
        }
    }

    fn slot(&self, field: u16) -> Option<&FieldState> {
        // Effects name fields by position once planned (see `plan`).
        self.fields.get(field as usize)
    }

    fn value_len(&self, field: u16) -> usize {
        match self.slot(field) {
            Some(FieldState::Value(v)) => v.len(),
            _ => 0,
        }
    }

    fn entry_len(&self, field: u16, key: &Bytes) -> usize {
        match self.slot(field) {
            Some(FieldState::Map(m)) => m.get(key).map_or(0, |v| key.len() + v.len()),
            _ => 0,
        }
    }
}

/// Checks one op against the current fields and turns it into its effect. Effects carry
/// the field's position in the schema while planned and committed here; [`to_wire`] maps
/// them back to field ids.
fn plan(
    schema: &Schema,
    fields: &[FieldState],
    op: &Op,
    limits: StateLimits,
) -> Result<Effect, Refusal> {
    let pos = schema
        .index_of(op.field())
        .ok_or(Refusal::UnknownField { field: op.field() })?;
    let spec = &schema.fields[pos];
    let field = pos as u16;
    let wrong = || Refusal::WrongKind {
        field: spec.name.clone(),
        op: op.name().to_string(),
    };
    let current = fields.get(pos).ok_or_else(wrong)?;
    match (spec.kind, current, op) {
        (FieldKind::Counter { min, max, clamp }, FieldState::Counter(now), _) => {
            let bounded = |v: i128| -> Result<i128, Refusal> {
                if (min..=max).contains(&v) {
                    Ok(v)
                } else if clamp {
                    Ok(v.clamp(min, max))
                } else {
                    Err(Refusal::OutOfBounds {
                        field: spec.name.clone(),
                        value: v,
                        min,
                        max,
                    })
                }
            };
            let value = match op {
                Op::Inc { by, .. } => bounded(now + i128::from(*by))?,
                Op::SetCounter { value, .. } => bounded(*value)?,
                Op::CasCounter { expected, new, .. } => {
                    if now != expected {
                        return Err(Refusal::CasFailed {
                            field: spec.name.clone(),
                        });
                    }
                    bounded(*new)?
                }
                _ => return Err(wrong()),
            };
            Ok(Effect::Counter { field, value })
        }
        (FieldKind::Value, FieldState::Value(now), _) => match op {
            Op::Set { value, .. } => Ok(Effect::Value {
                field,
                value: value.clone(),
            }),
            Op::Cas { expected, new, .. } => {
                if now != expected {
                    return Err(Refusal::CasFailed {
                        field: spec.name.clone(),
                    });
                }
                Ok(Effect::Value {
                    field,
                    value: new.clone(),
                })
            }
            _ => Err(wrong()),
        },
        (FieldKind::Map { max_len }, FieldState::Map(m), _) => match op {
            Op::Put { key, value, .. } => {
                let max_len = max_len.min(limits.max_map_len);
                if !m.contains_key(key) && m.len() >= max_len as usize {
                    return Err(Refusal::MapFull {
                        field: spec.name.clone(),
                        max_len,
                    });
                }
                Ok(Effect::Put {
                    field,
                    key: key.clone(),
                    value: value.clone(),
                })
            }
            Op::Delete { key, .. } => Ok(Effect::Delete {
                field,
                key: key.clone(),
            }),
            _ => Err(wrong()),
        },
        _ => Err(wrong()),
    }
}

/// Applies a planned effect (fields by position).
fn commit(fields: &mut [FieldState], effect: &Effect) {
    match (effect, fields.get_mut(effect.field() as usize)) {
        (Effect::Counter { value, .. }, Some(FieldState::Counter(v))) => *v = *value,
        (Effect::Value { value, .. }, Some(FieldState::Value(v))) => *v = value.clone(),
        (Effect::Put { key, value, .. }, Some(FieldState::Map(m))) => {
            m.insert(key.clone(), value.clone());
        }
        (Effect::Delete { key, .. }, Some(FieldState::Map(m))) => {
            m.remove(key);
        }
        // `plan` only produces effects matching the field's kind.
        _ => {}
    }
}

/// Effects as they travel: fields named by id.
pub(crate) fn to_wire(schema: &Schema, mut effects: Vec<Effect>) -> Vec<Effect> {
    for e in &mut effects {
        let pos = e.field() as usize;
        let id = schema.fields.get(pos).map_or(u16::MAX, |f| f.id);
        match e {
            Effect::Counter { field, .. }
            | Effect::Value { field, .. }
            | Effect::Put { field, .. }
            | Effect::Delete { field, .. } => *field = id,
        }
    }
    effects
}

#[cfg(test)]
mod tests;
