//! Cluster keys on a running node: a new key, and the three steps of a rotation.

use super::Mesh;
use crate::rudp::{ClusterKey, KeyError, KeyId};

impl ClusterKey {
    /// A new random key, from the operating system's generator. Give the same key to every
    /// node of the cluster.
    pub fn generate() -> Self {
        ClusterKey::from_bytes(rand::random())
    }
}

impl Mesh {
    /// The ids of the cluster keys this node accepts, the one it uses first (empty when it
    /// runs without a key).
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.inner.transport.key_ids()
    }

    /// Accepts handshakes under `key` too: the first step of a rotation, done on every node
    /// before any uses it. Sessions already open are not touched.
    pub fn install_key(&self, key: ClusterKey) -> Result<(), KeyError> {
        let id = key.id();
        self.inner.transport.change_keys(|r| r.install(key))?;
        tracing::info!(key = %id, "cluster key installed");
        Ok(())
    }

    /// Uses the installed key `id` for the handshakes this node starts: the second step,
    /// once every node has it installed.
    pub fn use_key(&self, id: KeyId) -> Result<(), KeyError> {
        self.inner.transport.change_keys(|r| r.use_key(id))?;
        tracing::info!(key = %id, "cluster key in use");
        Ok(())
    }

    /// Stops accepting handshakes under key `id`: the last step, once every node uses the
    /// new key. Sessions opened under it keep their own keys and go on working.
    pub fn remove_key(&self, id: KeyId) -> Result<(), KeyError> {
        self.inner.transport.change_keys(|r| r.remove(id))?;
        tracing::info!(key = %id, "cluster key removed");
        Ok(())
    }
}
