//! Version 2: a compatible change. `count` is unchanged and `reserve` is new, at the next
//! id; mesh-build takes this change and grows the lock.

use mesh_core::mesh_service;

/// The service as version 2 declares it.
#[mesh_service(id = 3000, name = "Inventory")]
pub trait Inventory {
    /// How many of `item` this node holds (3000, as in version 1).
    async fn count(&self, item: String) -> u32;
    /// Reserves `n` of `item`; answers how many are left (3001, new).
    async fn reserve(&self, item: String, n: u32) -> Result<u32, String>;
}

/// A version-2 node's store (it holds as many of an item as its name has letters).
pub(crate) struct Store {
    /// The node's name, for the output.
    pub(crate) name: String,
}

impl Inventory for Store {
    async fn count(&self, item: String) -> u32 {
        u32::try_from(item.len()).unwrap_or(u32::MAX)
    }

    async fn reserve(&self, item: String, n: u32) -> Result<u32, String> {
        let have = self.count(item.clone()).await;
        have.checked_sub(n)
            .ok_or_else(|| format!("{} holds only {have} of {item}", self.name))
    }
}
