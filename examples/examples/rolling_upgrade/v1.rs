//! Version 1 of the inventory service: what the fleet runs before the upgrade.

use mesh_core::mesh_service;

/// The service as version 1 declares it.
#[mesh_service(id = 3000, name = "Inventory")]
pub trait Inventory {
    /// How many of `item` this node holds (3000).
    async fn count(&self, item: String) -> u32;
}

/// A version-1 node's store (it holds as many of an item as its name has letters).
pub(crate) struct Store;

impl Inventory for Store {
    async fn count(&self, item: String) -> u32 {
        u32::try_from(item.len()).unwrap_or(u32::MAX)
    }
}
