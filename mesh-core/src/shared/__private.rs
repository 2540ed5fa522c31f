//! What `#[derive(SharedObject)]` expands to calls: encoding fields and ops, applying
//! effects. Not a public API.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};

use bytes::Bytes;
pub use serde::Serialize;
use serde::de::DeserializeOwned;

pub use super::handle::ObjectHandle;
pub use super::schema::{FieldDef, FieldKind};
pub use super::state::{Effect, FieldState, Op};
pub use super::{Batch, SharedError, SharedObject};
pub use crate::codec::CodecError;

use super::id::ObjectId;
use crate::codec::{decode, encode};

/// An integer field type.
pub trait Counter: Copy {
    /// Widens it.
    fn to_i128(self) -> i128;
    /// Narrows it back (the owner keeps values within the type's range).
    fn from_i128(v: i128) -> Option<Self>;
}

macro_rules! counter {
    ($($t:ty),*) => {$(
        impl Counter for $t {
            fn to_i128(self) -> i128 { self as i128 }
            fn from_i128(v: i128) -> Option<Self> { <$t>::try_from(v).ok() }
        }
    )*};
}
counter!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

/// A map field type.
pub trait SharedMap<K, V>: Default {
    /// Inserts or replaces.
    fn put(&mut self, k: K, v: V);
    /// Removes.
    fn delete(&mut self, k: &K);
    /// Every entry.
    fn entries(&self) -> Vec<(&K, &V)>;
}

impl<K: Ord, V> SharedMap<K, V> for BTreeMap<K, V> {
    fn put(&mut self, k: K, v: V) {
        self.insert(k, v);
    }
    fn delete(&mut self, k: &K) {
        self.remove(k);
    }
    fn entries(&self) -> Vec<(&K, &V)> {
        self.iter().collect()
    }
}

impl<K: Hash + Eq, V, S: BuildHasher + Default> SharedMap<K, V> for HashMap<K, V, S> {
    fn put(&mut self, k: K, v: V) {
        self.insert(k, v);
    }
    fn delete(&mut self, k: &K) {
        self.remove(k);
    }
    fn entries(&self) -> Vec<(&K, &V)> {
        self.iter().collect()
    }
}

fn missing(pos: usize) -> CodecError {
    CodecError::Decode(format!("field {pos}: no such field, or of another kind"))
}

/// A value field's state.
pub fn value<V: Serialize>(v: &V) -> Result<FieldState, CodecError> {
    encode(v).map(FieldState::Value)
}

/// A counter field's state.
pub fn counter<N: Counter>(n: N) -> FieldState {
    FieldState::Counter(n.to_i128())
}

/// A map field's state.
pub fn map<K: Serialize, V: Serialize, M: SharedMap<K, V>>(
    m: &M,
) -> Result<FieldState, CodecError> {
    let mut out = BTreeMap::new();
    for (k, v) in m.entries() {
        out.insert(encode(k)?, encode(v)?);
    }
    Ok(FieldState::Map(out))
}

/// A value field from its state.
pub fn from_value<V: DeserializeOwned>(f: &[FieldState], pos: usize) -> Result<V, CodecError> {
    match f.get(pos) {
        Some(FieldState::Value(b)) => decode(b),
        _ => Err(missing(pos)),
    }
}

/// A counter field from its state.
pub fn from_counter<N: Counter>(f: &[FieldState], pos: usize) -> Result<N, CodecError> {
    match f.get(pos) {
        Some(FieldState::Counter(v)) => N::from_i128(*v)
            .ok_or_else(|| CodecError::Decode(format!("field {pos}: {v} out of the type's range"))),
        _ => Err(missing(pos)),
    }
}

/// A map field from its state.
pub fn from_map<K: DeserializeOwned, V: DeserializeOwned, M: SharedMap<K, V>>(
    f: &[FieldState],
    pos: usize,
) -> Result<M, CodecError> {
    match f.get(pos) {
        Some(FieldState::Map(m)) => {
            let mut out = M::default();
            for (k, v) in m {
                out.put(decode(k)?, decode(v)?);
            }
            Ok(out)
        }
        _ => Err(missing(pos)),
    }
}

/// Applies an effect to a value field.
pub fn apply_value<V: DeserializeOwned>(slot: &mut V, e: &Effect) -> Result<(), CodecError> {
    match e {
        Effect::Value { value, .. } => {
            *slot = decode(value)?;
            Ok(())
        }
        _ => Err(missing(e.field() as usize)),
    }
}

/// Applies an effect to a counter field.
pub fn apply_counter<N: Counter>(slot: &mut N, e: &Effect) -> Result<(), CodecError> {
    match e {
        Effect::Counter { value, .. } => {
            *slot = N::from_i128(*value)
                .ok_or_else(|| CodecError::Decode(format!("{value} out of the type's range")))?;
            Ok(())
        }
        _ => Err(missing(e.field() as usize)),
    }
}

/// Applies an effect to a map field.
pub fn apply_map<K: DeserializeOwned, V: DeserializeOwned, M: SharedMap<K, V>>(
    slot: &mut M,
    e: &Effect,
) -> Result<(), CodecError> {
    match e {
        Effect::Put { key, value, .. } => {
            slot.put(decode(key)?, decode(value)?);
            Ok(())
        }
        Effect::Delete { key, .. } => {
            slot.delete(&decode(key)?);
            Ok(())
        }
        _ => Err(missing(e.field() as usize)),
    }
}

/// An effect naming a field this type does not have.
pub fn unknown_field(e: &Effect) -> CodecError {
    CodecError::Decode(format!("no field with id {}", e.field()))
}

fn enc<T: Serialize + ?Sized>(id: ObjectId, v: &T) -> Result<Bytes, SharedError> {
    encode(v).map_err(|e| SharedError::codec(id, e))
}

/// `set` on a value field.
pub fn op_set<V: Serialize>(id: ObjectId, field: u16, v: &V) -> Result<Op, SharedError> {
    Ok(Op::Set {
        field,
        value: enc(id, v)?,
    })
}

/// `cas` on a value field; `expected` encodes as the field's type does (`&str` for a
/// `String` field, through `Borrow`).
pub fn op_cas<F, Q>(id: ObjectId, field: u16, expected: &Q, new: &F) -> Result<Op, SharedError>
where
    F: Serialize + Borrow<Q>,
    Q: Serialize + ?Sized,
{
    Ok(Op::Cas {
        field,
        expected: enc(id, expected)?,
        new: enc(id, new)?,
    })
}

/// `set` on a counter.
pub fn op_set_counter<N: Counter>(field: u16, v: N) -> Result<Op, SharedError> {
    Ok(Op::SetCounter {
        field,
        value: v.to_i128(),
    })
}

/// `cas` on a counter.
pub fn op_cas_counter<N: Counter>(field: u16, expected: N, new: N) -> Result<Op, SharedError> {
    Ok(Op::CasCounter {
        field,
        expected: expected.to_i128(),
        new: new.to_i128(),
    })
}

/// `inc` on a counter.
pub fn op_inc(field: u16, by: i64) -> Result<Op, SharedError> {
    Ok(Op::Inc { field, by })
}

/// `put` on a map.
pub fn op_put<K: Serialize, V: Serialize>(
    id: ObjectId,
    field: u16,
    k: &K,
    v: &V,
) -> Result<Op, SharedError> {
    Ok(Op::Put {
        field,
        key: enc(id, k)?,
        value: enc(id, v)?,
    })
}

/// `delete` on a map; the key encodes as the map's key type does (through `Borrow`).
pub fn op_delete<Q: Serialize + ?Sized>(
    id: ObjectId,
    field: u16,
    k: &Q,
) -> Result<Op, SharedError> {
    Ok(Op::Delete {
        field,
        key: enc(id, k)?,
    })
}

/// Writes one op through a handle.
pub async fn write1<T: SharedObject>(
    h: &ObjectHandle<T>,
    op: Result<Op, SharedError>,
) -> Result<u64, SharedError> {
    h.write(vec![op?]).await
}
