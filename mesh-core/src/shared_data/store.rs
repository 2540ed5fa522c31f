//! One node's copy of the cluster's shared data, and the ordering rules its owners follow.
//! Sans-IO: the runtime passes what arrives and sends what comes out.
//!
//! Every key's entry carries `(epoch, version)` and the node that ordered it. Versions
//! rise by one per write across owners (a new owner continues the sequence); the epoch
//! rises when another node orders the key. An entry replaces another only if its
//! `(epoch, version)` is greater, so duplicates and reordering change nothing, and a
//! removal is a tombstone an older set cannot undo.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{DataRefusal, SharedDataLimits};
use crate::node::NodeId;

/// One key's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The encoded value; `None` for a removed key (a tombstone).
    pub(crate) value: Option<Bytes>,
    pub(crate) epoch: u32,
    pub(crate) version: u64,
    /// The node that ordered it.
    pub(crate) owner: NodeId,
    /// The node that wrote it (none for a guest).
    pub(crate) by: Option<NodeId>,
}

impl Entry {
    fn stamp(&self) -> (u32, u64) {
        (self.epoch, self.version)
    }
}

/// What a backup says of an entry it is asked to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Held.
    Held,
    /// It holds a later version: order after that one.
    Behind(Entry),
}

/// The data of one node.
pub(crate) struct Store {
    limits: SharedDataLimits,
    entries: BTreeMap<String, Entry>,
    live: usize,
    /// Tombstones, oldest first: at most `max_keys` are kept.
    tombstones: VecDeque<String>,
}

impl Store {
    pub(crate) fn new(limits: SharedDataLimits) -> Store {
        Store {
            limits,
            entries: BTreeMap::new(),
            live: 0,
            tombstones: VecDeque::new(),
        }
    }

    /// Checks a key and a value against the limits (both sides check: the writer before
    /// sending, the owner on what arrives).
    pub(crate) fn check(&self, key: &str, value: Option<&Bytes>) -> Result<(), DataRefusal> {
        if key.is_empty() || key.len() > self.limits.max_key_len {
            return Err(DataRefusal::KeyLength {
                len: key.len(),
                max: self.limits.max_key_len,
            });
        }
        if let Some(v) = value
            && v.len() > self.limits.max_value_bytes
        {
            return Err(DataRefusal::ValueTooLarge {
                size: v.len(),
                max: self.limits.max_value_bytes,
            });
        }
        if value.is_some()
            && self.live >= self.limits.max_keys
            && self.entries.get(key).is_none_or(|e| e.value.is_none())
        {
            return Err(DataRefusal::TooManyKeys {
                max: self.limits.max_keys,
            });
        }
        Ok(())
    }

    /// The entry `me` orders next for `key`: the next version, at the key's epoch if `me`
    /// ordered it last, else one more.
    pub(crate) fn order(
        &self,
        key: &str,
        value: Option<Bytes>,
        me: NodeId,
        by: Option<NodeId>,
    ) -> Result<Entry, DataRefusal> {
        self.check(key, value.as_ref())?;
        let (epoch, version) = match self.entries.get(key) {
            Some(e) if e.owner == me => (e.epoch, e.version + 1),
            Some(e) => (e.epoch.saturating_add(1), e.version + 1),
            None => (1, 1),
        };
        Ok(Entry {
            value,
            epoch,
            version,
            owner: me,
            by,
        })
    }

    /// As a backup: holds `entry` unless it is fenced (an older epoch than held) or behind
    /// (not a later version than held).
    pub(crate) fn hold(&mut self, key: &str, entry: Entry) -> Result<Hold, DataRefusal> {
        if key.len() > self.limits.max_key_len {
            return Err(DataRefusal::KeyLength {
                len: key.len(),
                max: self.limits.max_key_len,
            });
        }
        if let Some(held) = self.entries.get(key) {
            if entry.epoch < held.epoch {
                return Err(DataRefusal::Fenced {
                    owner: held.owner,
                    epoch: held.epoch,
                });
            }
            if entry.version <= held.version && entry != *held {
                return Ok(Hold::Behind(held.clone()));
            }
        }
        self.apply(key, entry);
        Ok(Hold::Held)
    }

    /// Applies `entry` if it is newer than what is held; true if it changed anything.
    pub(crate) fn apply(&mut self, key: &str, entry: Entry) -> bool {
        if key.len() > self.limits.max_key_len {
            return false;
        }
        let was_live = match self.entries.get(key) {
            Some(held) if held.stamp() >= entry.stamp() => return false,
            Some(held) => held.value.is_some(),
            None => false,
        };
        let live = entry.value.is_some();
        if live && !was_live && self.live >= self.limits.max_keys {
            // Full: only the owner refuses writes; a replica keeps what it has.
            return false;
        }
        self.entries.insert(key.to_string(), entry);
        match (was_live, live) {
            (false, true) => self.live += 1,
            (true, false) => {
                self.live -= 1;
                self.tombstones.push_back(key.to_string());
                self.trim_tombstones();
            }
            _ => {}
        }
        true
    }

    fn trim_tombstones(&mut self) {
        while self.tombstones.len() > self.limits.max_keys {
            if let Some(k) = self.tombstones.pop_front()
                && self.entries.get(&k).is_some_and(|e| e.value.is_none())
            {
                self.entries.remove(&k);
            }
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The live keys, sorted.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.value.is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Up to `max` entries (tombstones too) after `after`, for a joining node.
    pub(crate) fn page(&self, after: Option<&str>, max: usize) -> Vec<(String, Entry)> {
        use std::ops::Bound;
        let lower = match after {
            Some(k) => Bound::Excluded(k.to_string()),
            None => Bound::Unbounded,
        };
        self.entries
            .range((lower, Bound::Unbounded))
            .take(max)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }
}

/// The owner of `key` among `members` by rendezvous hash, and its backup (the runner-up:
/// the owner once the first is gone).
pub(crate) fn owners(key: &str, members: &[NodeId]) -> (Option<NodeId>, Option<NodeId>) {
    let mut best: Option<(u64, NodeId)> = None;
    let mut second: Option<(u64, NodeId)> = None;
    for &m in members {
        let w = (weight(key, m), m);
        if best.is_none_or(|b| w > b) {
            second = best;
            best = Some(w);
        } else if second.is_none_or(|s| w > s) {
            second = Some(w);
        }
    }
    (best.map(|b| b.1), second.map(|s| s.1))
}

fn weight(key: &str, node: NodeId) -> u64 {
    crate::shared::backup::hash64(&[
        key.as_bytes(),
        node.addr.to_string().as_bytes(),
        &node.incarnation.to_le_bytes(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> NodeId {
        NodeId::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)), 1)
    }

    fn v(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn newer_stamps_win_and_tombstones_stay() {
        let (a, b) = (node(1), node(2));
        let mut s = Store::new(SharedDataLimits::default());
        let e1 = s.order("k", v("1"), a, None).unwrap();
        assert_eq!((e1.epoch, e1.version), (1, 1));
        assert!(s.apply("k", e1.clone()));
        assert!(!s.apply("k", e1.clone()), "a duplicate changes nothing");
        let e2 = s.order("k", v("2"), a, None).unwrap();
        assert_eq!((e2.epoch, e2.version), (1, 2));
        // Another node orders next: the epoch rises, the version goes on.
        s.apply("k", e2.clone());
        let e3 = s.order("k", None, b, None).unwrap();
        assert_eq!((e3.epoch, e3.version), (2, 3));
        assert!(s.apply("k", e3));
        assert!(!s.apply("k", e2), "an older set does not undo a removal");
        assert!(s.keys().is_empty());
        assert_eq!(s.page(None, 10).len(), 1, "the tombstone is kept");
    }

    #[test]
    fn a_backup_fences_older_epochs_and_says_when_it_is_ahead() {
        let (a, b) = (node(1), node(2));
        let mut backup = Store::new(SharedDataLimits::default());
        let mut stale = Store::new(SharedDataLimits::default());
        let e1 = stale.order("k", v("1"), a, None).unwrap();
        stale.apply("k", e1.clone());
        backup.hold("k", e1.clone()).unwrap();
        let e2 = backup.order("k", v("2"), a, None).unwrap();
        backup.hold("k", e2.clone()).unwrap();
        // b orders from a stale copy: the backup holds a later version.
        let from_stale = stale.order("k", v("3"), b, None).unwrap();
        assert_eq!(backup.hold("k", from_stale), Ok(Hold::Behind(e2.clone())));
        // b then orders after it, at a new epoch; a's old epoch is fenced from then on.
        stale.apply("k", e2);
        let e3 = stale.order("k", v("3"), b, None).unwrap();
        assert_eq!(backup.hold("k", e3.clone()), Ok(Hold::Held));
        let old = Entry {
            epoch: 1,
            version: 9,
            ..e3
        };
        assert!(matches!(
            backup.hold("k", old),
            Err(DataRefusal::Fenced { epoch: 2, .. })
        ));
    }

    #[test]
    fn limits_are_refused() {
        let limits = SharedDataLimits {
            max_key_len: 4,
            max_value_bytes: 3,
            max_keys: 1,
        };
        let mut s = Store::new(limits);
        let a = node(1);
        assert!(matches!(
            s.order("toolong", v("1"), a, None),
            Err(DataRefusal::KeyLength { len: 7, max: 4 })
        ));
        assert!(matches!(
            s.order("k", v("1234"), a, None),
            Err(DataRefusal::ValueTooLarge { size: 4, max: 3 })
        ));
        let e = s.order("k", v("1"), a, None).unwrap();
        s.apply("k", e);
        assert!(matches!(
            s.order("j", v("1"), a, None),
            Err(DataRefusal::TooManyKeys { max: 1 })
        ));
        assert!(
            s.order("k", v("2"), a, None).is_ok(),
            "an existing key may change"
        );
    }

    #[test]
    fn the_runner_up_owns_once_the_owner_is_gone() {
        let nodes: Vec<NodeId> = (1..=6).map(node).collect();
        for i in 0..200 {
            let key = format!("key-{i}");
            let (o, b) = owners(&key, &nodes);
            let rest: Vec<NodeId> = nodes.iter().copied().filter(|n| Some(*n) != o).collect();
            assert_eq!(owners(&key, &rest).0, b);
        }
        assert_eq!(owners("k", &[]), (None, None));
    }
}
