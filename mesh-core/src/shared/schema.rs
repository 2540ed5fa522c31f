//! What an object's fields are: ids, names and kinds, as the derive declares them and as the
//! owner enforces them (the owner needs no Rust type: the schema travels with `create`).

use serde::{Deserialize, Serialize};

/// How a field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FieldKind {
    /// An integer: `inc`, `set`, `cas`, kept within `min..=max` (the declared bounds
    /// narrowed to the Rust type's range). Out of bounds, a write is refused, or clamped
    /// when `clamp` is set.
    Counter {
        /// Smallest value.
        min: i128,
        /// Largest value.
        max: i128,
        /// Clamp writes to the bounds instead of refusing them.
        clamp: bool,
    },
    /// Any serde value: `set`, `cas`.
    Value,
    /// A map: `put`, `delete`, at most `max_len` entries.
    Map {
        /// Most entries the map may hold.
        max_len: u32,
    },
}

/// One field, as the derive declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDef {
    /// The field id (declaration order unless `#[shared(id = N)]` says otherwise).
    pub id: u16,
    /// The Rust field name.
    pub name: &'static str,
    /// How it is written.
    pub kind: FieldKind,
}

/// One field as it travels and as the owner keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// The field id.
    pub id: u16,
    /// The field name.
    pub name: String,
    /// How it is written.
    pub kind: FieldKind,
}

/// An object type's fields, carried by `create` so the owner can order writes without
/// knowing the Rust type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// The Rust type name (`Room`).
    pub type_name: String,
    /// Its fields, in declaration order.
    pub fields: Vec<FieldSpec>,
}

impl Schema {
    /// The schema of a derived type.
    pub fn from_defs(type_name: &str, defs: &[FieldDef]) -> Schema {
        Schema {
            type_name: type_name.to_string(),
            fields: defs
                .iter()
                .map(|d| FieldSpec {
                    id: d.id,
                    name: d.name.to_string(),
                    kind: d.kind,
                })
                .collect(),
        }
    }

    /// A fingerprint of the type name and every field's id, name and kind: `get::<T>` of an
    /// object created as another type (or another version of it) is refused by it.
    pub fn fingerprint(&self) -> u32 {
        let mut text = self.type_name.clone();
        for f in &self.fields {
            text.push_str(&format!(";{}:{}:{:?}", f.id, f.name, f.kind));
        }
        crate::rpc::fingerprint(&text)
    }

    /// The position of field `id`.
    pub(crate) fn index_of(&self, id: u16) -> Option<usize> {
        self.fields.iter().position(|f| f.id == id)
    }

    /// Refuses schemas no derive produces (duplicate ids, empty bounds), so the owner's
    /// tables cannot be fed nonsense from the network.
    pub(crate) fn check(&self, max_fields: usize) -> Result<(), String> {
        if self.fields.len() > max_fields {
            return Err(format!(
                "{} fields (at most {max_fields})",
                self.fields.len()
            ));
        }
        if self.type_name.len() > 256 {
            return Err("type name longer than 256 bytes".into());
        }
        for (i, f) in self.fields.iter().enumerate() {
            if self.fields[..i].iter().any(|g| g.id == f.id) {
                return Err(format!("field id {} appears twice", f.id));
            }
            if f.name.len() > 256 {
                return Err(format!("field {} has a name longer than 256 bytes", f.id));
            }
            if let FieldKind::Counter { min, max, .. } = f.kind
                && min > max
            {
                return Err(format!("field `{}` has min {min} > max {max}", f.name));
            }
        }
        Ok(())
    }
}
