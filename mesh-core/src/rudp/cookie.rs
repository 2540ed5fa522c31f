//! Stateless address-ownership cookies (as QUIC's Retry and WireGuard's cookie reply).
//!
//! A `Hello` from an address we hold nothing for gets a `Retry` carrying a cookie: a MAC
//! over the source address, the sender's incarnation and a coarse time slot, under a key
//! drawn at random when the endpoint starts. The responder keeps no state for it. Only a
//! sender that receives at the address can echo the cookie, so session memory is never
//! allocated for a spoofed source. A cookie is valid in its slot and the next one.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use blake2::Blake2sMac;
use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};

use super::wire::{COOKIE_LEN, Cookie};

/// Length of a time slot: a cookie lives between one and two of them.
const SLOT: Duration = Duration::from_secs(8);

/// Makes and checks cookies.
#[derive(Clone)]
pub(crate) struct CookieJar {
    key: [u8; 32],
    /// The first instant seen: slots count from it (the endpoint has no wall clock).
    epoch: Option<Instant>,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar").finish_non_exhaustive()
    }
}

impl CookieJar {
    /// A jar with a secret `key`.
    pub(crate) fn new(key: [u8; 32]) -> Self {
        CookieJar { key, epoch: None }
    }

    fn slot(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs() / SLOT.as_secs()
    }

    fn mac(&self, slot: u64, from: SocketAddr, incarnation: u64) -> Cookie {
        let mut out = [0u8; COOKIE_LEN];
        // A 32-byte key is always a valid BLAKE2s key; the fallback only satisfies the type.
        let Ok(mut m) = <Blake2sMac<U16> as KeyInit>::new_from_slice(&self.key) else {
            return out;
        };
        m.update(&slot.to_be_bytes());
        match from {
            SocketAddr::V4(a) => {
                m.update(&[4]);
                m.update(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                m.update(&[6]);
                m.update(&a.ip().octets());
            }
        }
        m.update(&from.port().to_be_bytes());
        m.update(&incarnation.to_be_bytes());
        out.copy_from_slice(&m.finalize().into_bytes());
        out
    }

    /// The cookie for a `Hello` from `from` with `incarnation`, now.
    pub(crate) fn make(&mut self, now: Instant, from: SocketAddr, incarnation: u64) -> Cookie {
        let slot = self.slot(now);
        self.mac(slot, from, incarnation)
    }

    /// Whether `cookie` was made for `from` and `incarnation` in this slot or the previous
    /// one (compared in constant time).
    pub(crate) fn check(
        &mut self,
        now: Instant,
        from: SocketAddr,
        incarnation: u64,
        cookie: &Cookie,
    ) -> bool {
        let slot = self.slot(now);
        let current = self.mac(slot, from, incarnation);
        let previous = slot.checked_sub(1).map(|s| self.mac(s, from, incarnation));
        ct_eq(&current, cookie) | previous.is_some_and(|p| ct_eq(&p, cookie))
    }
}

fn ct_eq(a: &Cookie, b: &Cookie) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_binds_address_incarnation_and_time() {
        let mut jar = CookieJar::new([7; 32]);
        let t0 = Instant::now();
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let c = jar.make(t0, a, 9);
        assert!(jar.check(t0, a, 9, &c));
        assert!(
            jar.check(t0 + SLOT + SLOT / 2, a, 9, &c),
            "valid in the next slot"
        );
        assert!(
            !jar.check(t0 + SLOT * 2, a, 9, &c),
            "expired after two slots"
        );
        assert!(!jar.check(t0, b, 9, &c), "another port");
        assert!(!jar.check(t0, a, 10, &c), "another incarnation");
        let mut other = CookieJar::new([8; 32]);
        assert!(!other.check(t0, a, 9, &c), "another key");
        let mut flipped = c;
        flipped[0] ^= 1;
        assert!(!jar.check(t0, a, 9, &flipped));
    }
}
