//! A version 2 that would break the fleet: `count` takes an item number instead of a name,
//! at the same id. Nodes of version 1 would decode the number as a name; the fingerprint
//! makes them refuse it at run time, and mesh-build refuses it at build time.

use mesh_core::mesh_service;

/// The service as the breaking version declares it.
#[mesh_service(id = 3000, name = "Inventory")]
pub trait Inventory {
    /// How many of item number `item` this node holds (3000: same id, another type).
    async fn count(&self, item: u64) -> u32;
}

/// A node's store.
pub(crate) struct Store;

impl Inventory for Store {
    async fn count(&self, item: u64) -> u32 {
        u32::try_from(item).unwrap_or(u32::MAX)
    }
}
