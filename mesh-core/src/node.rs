//! What a node is: its id, its record in the membership view, its status, and the ways to
//! name one ([`Target`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A metadata value a node publishes (any serde value, stored as JSON).
pub type Value = serde_json::Value;

/// One run of one node: its advertised mesh address and the random incarnation of the
/// process. A restarted process at the same address has a new id.
///
/// Displayed and parsed as `ADDR#INCARNATION`, e.g. `127.0.0.1:8100#5f3a9c0d12e4b7a1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// The address peers send to.
    pub addr: SocketAddr,
    /// The process's random incarnation (never zero for a real node).
    pub incarnation: u64,
}

impl NodeId {
    /// An id from its parts.
    pub fn new(addr: SocketAddr, incarnation: u64) -> NodeId {
        NodeId { addr, incarnation }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:016x}", self.addr, self.incarnation)
    }
}

/// A string that is not `ADDR#INCARNATION`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a node id: expected ADDR#INCARNATION, e.g. 127.0.0.1:8100#5f3a9c0d12e4b7a1")]
pub struct ParseNodeIdError(pub String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseNodeIdError(s.chars().take(80).collect());
        let (addr, inc) = s.rsplit_once('#').ok_or_else(bad)?;
        let addr = addr.parse().map_err(|_| bad())?;
        let incarnation = u64::from_str_radix(inc, 16).map_err(|_| bad())?;
        Ok(NodeId { addr, incarnation })
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether a node takes new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NodeStatus {
    /// Serving and taking new work.
    #[default]
    Online,
    /// Shutting down: finishing what it has, taking nothing new.
    Offline,
    /// Full: keeps its current work but is skipped when new work is placed.
    Taken,
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
            NodeStatus::Taken => "taken",
        })
    }
}

/// A node as the membership view knows it: what discovery publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeRecord {
    /// Its id (advertised address and incarnation).
    pub id: NodeId,
    /// Its type (`"game"`, `"matchmaker"`, ...).
    pub node_type: String,
    /// Its role (free text, e.g. the network protocol it serves clients on).
    #[serde(default)]
    pub role: String,
    /// Whether it takes new work.
    #[serde(default)]
    pub status: NodeStatus,
    /// The services it serves: name -> first command id.
    #[serde(default)]
    pub services: BTreeMap<String, u16>,
    /// Every command id it has a handler for.
    #[serde(default)]
    pub commands: BTreeSet<u16>,
    /// Metadata values it publishes.
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
    /// The transport wire version it speaks.
    #[serde(default)]
    pub wire_version: u8,
    /// When it started, in milliseconds since the Unix epoch (its own clock; informative).
    #[serde(default)]
    pub started_at_ms: u64,
}

impl NodeRecord {
    /// A fresh online record with no services or values.
    pub fn new(id: NodeId, node_type: impl Into<String>) -> NodeRecord {
        NodeRecord {
            id,
            node_type: node_type.into(),
            role: String::new(),
            status: NodeStatus::Online,
            services: BTreeMap::new(),
            commands: BTreeSet::new(),
            values: BTreeMap::new(),
            wire_version: crate::rudp::wire::WIRE_VERSION,
            started_at_ms: 0,
        }
    }

    /// The address to send to.
    pub fn addr(&self) -> SocketAddr {
        self.id.addr
    }

    /// Whether it serves `command`.
    pub fn serves(&self, command: u16) -> bool {
        self.commands.contains(&command)
    }

    /// A metadata value, if set.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// Whether this record is newer than `other` at the same address (a later start wins; the
    /// incarnation breaks ties).
    pub(crate) fn supersedes(&self, other: &NodeRecord) -> bool {
        (self.started_at_ms, self.id.incarnation) > (other.started_at_ms, other.id.incarnation)
    }
}

/// Anything that names a node: a [`NodeId`] (one incarnation), a [`SocketAddr`], a
/// `"host:port"` string or a [`NodeRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// One incarnation of a node: a call fails with "restarted" if another runs there.
    Node(NodeId),
    /// Whatever process runs at this address.
    Addr(SocketAddr),
    /// A `host:port` to resolve (DNS names are resolved when used).
    HostPort(String),
}

impl Target {
    /// The incarnation this target insists on, if any.
    pub fn incarnation(&self) -> Option<u64> {
        match self {
            Target::Node(id) => Some(id.incarnation),
            _ => None,
        }
    }

    /// The address, when known without a DNS lookup.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Target::Node(id) => Some(id.addr),
            Target::Addr(a) => Some(*a),
            Target::HostPort(s) => s.parse().ok(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Node(id) => id.fmt(f),
            Target::Addr(a) => a.fmt(f),
            Target::HostPort(s) => f.write_str(s),
        }
    }
}

impl From<NodeId> for Target {
    fn from(id: NodeId) -> Self {
        Target::Node(id)
    }
}

impl From<&NodeId> for Target {
    fn from(id: &NodeId) -> Self {
        Target::Node(*id)
    }
}

impl From<SocketAddr> for Target {
    fn from(a: SocketAddr) -> Self {
        Target::Addr(a)
    }
}

impl From<&SocketAddr> for Target {
    fn from(a: &SocketAddr) -> Self {
        Target::Addr(*a)
    }
}

impl From<&str> for Target {
    fn from(s: &str) -> Self {
        if let Ok(id) = s.parse::<NodeId>() {
            return Target::Node(id);
        }
        match s.parse::<SocketAddr>() {
            Ok(a) => Target::Addr(a),
            Err(_) => Target::HostPort(s.to_string()),
        }
    }
}

impl From<String> for Target {
    fn from(s: String) -> Self {
        Target::from(s.as_str())
    }
}

impl From<&String> for Target {
    fn from(s: &String) -> Self {
        Target::from(s.as_str())
    }
}

impl From<&NodeRecord> for Target {
    fn from(r: &NodeRecord) -> Self {
        Target::Node(r.id)
    }
}

impl From<NodeRecord> for Target {
    fn from(r: NodeRecord) -> Self {
        Target::Node(r.id)
    }
}

impl From<&Target> for Target {
    fn from(t: &Target) -> Self {
        t.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_as_text_and_json() {
        let id = NodeId::new(
            "127.0.0.1:8100".parse().unwrap_or_else(|_| unreachable!()),
            0x5f3a,
        );
        let s = id.to_string();
        assert_eq!(s, "127.0.0.1:8100#0000000000005f3a");
        assert_eq!(s.parse::<NodeId>(), Ok(id));
        let v6 = NodeId::new("[::1]:9".parse().unwrap_or_else(|_| unreachable!()), 7);
        assert_eq!(v6.to_string().parse::<NodeId>(), Ok(v6));
        assert!("127.0.0.1:8100".parse::<NodeId>().is_err());
        assert!("x#1".parse::<NodeId>().is_err());
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(serde_json::from_str::<NodeId>(&json).ok(), Some(id));
    }

    #[test]
    fn targets_from_strings() {
        assert!(matches!(Target::from("127.0.0.1:1"), Target::Addr(_)));
        assert!(matches!(Target::from("localhost:1"), Target::HostPort(_)));
        assert!(matches!(
            Target::from("127.0.0.1:1#00000000000000ff"),
            Target::Node(NodeId {
                incarnation: 255,
                ..
            })
        ));
    }

    #[test]
    fn garbled_records_are_errors_not_panics() {
        for bad in ["", "{", "[]", r#"{"id":"nope","node_type":"x"}"#, "null"] {
            assert!(serde_json::from_str::<NodeRecord>(bad).is_err(), "{bad}");
        }
        let ok = r#"{"id":"127.0.0.1:1#01","node_type":"game"}"#;
        let r: NodeRecord = serde_json::from_str(ok).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, NodeStatus::Online);
    }
}
