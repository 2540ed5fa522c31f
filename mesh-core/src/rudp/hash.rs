//! A fast keyed hasher for the small keys the hot path looks up per packet (peer addresses,
//! message ids).
//!
//! The standard `RandomState` (SipHash-1-3) costs a few hundred instructions per socket address,
//! and a packet looks its peer up several times. This is a folded-multiply hash (the
//! construction of foldhash/ahash) with a secret key, so a remote sender cannot precompute
//! colliding addresses.
//!
//! The protocol core keys its maps from the seed its caller gives
//! ([`FastState::from_seed`], through [`Endpoint::new`](super::Endpoint::new)): a simulation
//! run with one seed iterates its maps in the same order and replays exactly. The transport
//! passes an OS-random seed. [`FastState::default`] (per-process random keys) is for maps
//! outside the deterministic core.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

const MUL: u64 = 0x5851_f42d_4c95_7f2d;

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

fn process_keys() -> (u64, u64) {
    static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
    *KEYS.get_or_init(|| (rand::random::<u64>() | 1, rand::random::<u64>()))
}

/// Builds [`FastHasher`]s keyed with a seed ([`from_seed`](Self::from_seed)) or with
/// per-process random keys ([`Default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FastState {
    k0: u64,
    k1: u64,
}

impl Default for FastState {
    fn default() -> Self {
        let (k0, k1) = process_keys();
        FastState { k0, k1 }
    }
}

/// One step of SplitMix64: spreads a seed into well-mixed, independent-looking words.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl FastState {
    /// Keys derived from `seed` alone: the same seed gives the same hashes (and map iteration
    /// order) in every run. Give it a secret random seed where remote input picks the keys.
    pub(crate) fn from_seed(seed: u64) -> Self {
        let mut x = seed;
        let k0 = splitmix(&mut x) | 1;
        let k1 = splitmix(&mut x);
        FastState { k0, k1 }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher {
            state: self.k1,
            key: self.k0,
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct FastHasher {
    state: u64,
    key: u64,
}

impl FastHasher {
    #[inline]
    fn mix(&mut self, v: u64) {
        self.state = fold(self.state ^ v, self.key ^ MUL);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        fold(self.state, self.key).rotate_left(23)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            self.mix(u64::from_le_bytes(a));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut a = [0u8; 8];
            a[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" + "" and "a" + "b" apart.
            self.mix(u64::from_le_bytes(a) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
}

/// A `HashMap` with the fast keyed hasher.
pub(crate) type FastMap<K, V> = HashMap<K, V, FastState>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::SocketAddr;

    #[test]
    fn addresses_spread() {
        let s = FastState::default();
        let mut low_bits = HashSet::new();
        for port in 0..4096u16 {
            let a = SocketAddr::from(([10, 0, 0, 1], port));
            low_bits.insert(s.hash_one(a) & 0xFFF);
        }
        // A good hash fills most of the 4096 buckets (random: ~63%).
        assert!(low_bits.len() > 2000, "{}", low_bits.len());
        let mut m: FastMap<SocketAddr, u32> = FastMap::default();
        for i in 0..1000u32 {
            m.insert(SocketAddr::from(([127, 0, 0, 1], i as u16)), i);
        }
        assert_eq!(m.get(&SocketAddr::from(([127, 0, 0, 1], 7))), Some(&7));
    }

    #[test]
    fn seeded_keys_depend_on_the_seed_only() {
        let a = SocketAddr::from(([10, 0, 0, 1], 4000));
        assert_eq!(FastState::from_seed(7), FastState::from_seed(7));
        assert_eq!(
            FastState::from_seed(7).hash_one(a),
            FastState::from_seed(7).hash_one(a)
        );
        assert_ne!(
            FastState::from_seed(7).hash_one(a),
            FastState::from_seed(8).hash_one(a)
        );
    }
}
