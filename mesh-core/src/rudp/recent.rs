//! A map with a fixed capacity that forgets its oldest entry to make room: for what the
//! endpoint remembers about addresses it no longer has a session with. Unlike clearing the
//! whole map when it fills, a flood of new addresses pushes out old entries one at a time,
//! and never all of them at once.

use std::collections::VecDeque;
use std::hash::Hash;

use super::hash::{FastMap, FastState};

/// At most `cap` entries; inserting a new key into a full map evicts the oldest key.
#[derive(Debug)]
pub(crate) struct Recent<K, V> {
    map: FastMap<K, V>,
    /// Keys in insertion order (exactly the map's keys).
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Copy, V> Recent<K, V> {
    /// An empty map of at most `cap` (at least 1) entries.
    pub(crate) fn new(cap: usize, keys: FastState) -> Self {
        Recent {
            map: FastMap::with_hasher(keys),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    pub(crate) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k)
    }

    /// Sets `k` to `v`; a new key in a full map evicts the oldest one.
    pub(crate) fn insert(&mut self, k: K, v: V) {
        if let Some(old) = self.map.get_mut(&k) {
            *old = v;
            return;
        }
        while self.map.len() >= self.cap {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&oldest);
        }
        self.map.insert(k, v);
        self.order.push_back(k);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_forgets_the_oldest_entry_only() {
        let mut r = Recent::new(3, FastState::from_seed(1));
        for k in 0..3u32 {
            r.insert(k, k * 10);
        }
        r.insert(1, 11);
        r.insert(7, 70);
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(&0), None);
        assert_eq!(r.get(&1), Some(&11));
        assert_eq!(r.get(&2), Some(&20));
        assert_eq!(r.get(&7), Some(&70));
        for k in 100..10_000u32 {
            r.insert(k, 0);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(&9_999), Some(&0));
    }
}
