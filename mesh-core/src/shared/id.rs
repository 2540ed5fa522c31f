//! Object ids: the owner's node id and a serial the owner minted, printable and parseable.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::node::NodeId;

/// The id of a shared object: the node that owns it and a serial that node minted.
///
/// Displayed and parsed as `OWNER/SERIAL` (the owner as [`NodeId`] displays, the serial in
/// hex), e.g. `127.0.0.1:8100#5f3a9c0d12e4b7a1/1a`, for logs and the command-line tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    /// The node that orders the object's writes (that incarnation only).
    pub owner: NodeId,
    /// Unique among the objects that incarnation created.
    pub serial: u64,
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:x}", self.owner, self.serial)
    }
}

/// A string that is not `OWNER/SERIAL`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a shared object id: expected OWNER/SERIAL, e.g. 127.0.0.1:8100#5f3a9c0d12e4b7a1/1a"
)]
pub struct ParseObjectIdError(pub String);

impl FromStr for ObjectId {
    type Err = ParseObjectIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseObjectIdError(s.chars().take(100).collect());
        let (owner, serial) = s.rsplit_once('/').ok_or_else(bad)?;
        Ok(ObjectId {
            owner: owner.parse().map_err(|_| bad())?,
            serial: u64::from_str_radix(serial, 16).map_err(|_| bad())?,
        })
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.owner, self.serial).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (owner, serial) = <(NodeId, u64)>::deserialize(d)?;
        Ok(ObjectId { owner, serial })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parses_back() {
        let id = ObjectId {
            owner: NodeId::new("127.0.0.1:8100".parse().unwrap(), 0x5f3a),
            serial: 26,
        };
        let s = id.to_string();
        assert_eq!(s, "127.0.0.1:8100#0000000000005f3a/1a");
        assert_eq!(s.parse::<ObjectId>(), Ok(id));
        assert!("127.0.0.1:8100#5f3a".parse::<ObjectId>().is_err());
        assert!("x/1".parse::<ObjectId>().is_err());
        let bytes = crate::codec::encode(&id).unwrap();
        assert_eq!(crate::codec::decode::<ObjectId>(&bytes).unwrap(), id);
    }
}
