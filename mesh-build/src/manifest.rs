//! The manifest: every service, method and shared object a crate declares, as the macros
//! see them. Written as JSON into `OUT_DIR`; read back from dependencies' builds.

use serde::{Deserialize, Serialize};

/// The manifest format's version (a newer mesh-build refuses what it cannot read).
pub const FORMAT: u32 = 1;

/// Everything one crate declares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The crate's package name (`CARGO_PKG_NAME`).
    pub package: String,
    /// The package version.
    pub version: String,
    /// Its services, in source order.
    pub services: Vec<ServiceEntry>,
    /// Its shared-object types, in source order.
    pub shared_objects: Vec<SharedObjectEntry>,
}

/// Where an item is declared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The file, relative to the package root.
    pub file: String,
    /// The 1-based line of the item's name.
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One `#[mesh_service]` trait.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceEntry {
    /// The service name (part of every fingerprint; the trait's name unless `name = ".."`).
    pub name: String,
    /// The trait's path in the crate (`rooms::Lobby`).
    pub path: String,
    /// The base id (`id = N`).
    pub base_id: u16,
    /// Where the trait is.
    pub location: Location,
    /// Its methods, in declaration order.
    pub methods: Vec<MethodEntry>,
}

impl ServiceEntry {
    /// The command ids its methods use, sorted.
    pub fn ids(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.methods.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids
    }
}

/// One method of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodEntry {
    /// The method's name.
    pub name: String,
    /// Its command id.
    pub id: u16,
    /// `request`, `oneway` or `unreliable`.
    pub kind: String,
    /// The arguments that are sent: name and type as written.
    pub args: Vec<Arg>,
    /// The return type as written (`()` for none).
    pub returns: String,
    /// What the fingerprint hashes: `Service::method(A,B)->R`.
    pub signature: String,
    /// The signature fingerprint the receiver checks.
    pub fingerprint: u32,
}

/// One argument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arg {
    /// Its name.
    pub name: String,
    /// Its type as written.
    #[serde(rename = "type")]
    pub ty: String,
}

/// One `#[derive(SharedObject)]` struct.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SharedObjectEntry {
    /// The type name (what owners check).
    pub name: String,
    /// The struct's path in the crate.
    pub path: String,
    /// Where it is.
    pub location: Location,
    /// Its fields, in declaration order.
    pub fields: Vec<FieldEntry>,
}

/// One field of a shared object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FieldEntry {
    /// The field's name.
    pub name: String,
    /// Its field id.
    pub id: u16,
    /// `counter`, `value` or `map`.
    pub kind: String,
    /// Its type as written.
    #[serde(rename = "type")]
    pub ty: String,
    /// A counter's bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<(i128, i128)>,
    /// A map's entry limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_len: Option<u32>,
}
