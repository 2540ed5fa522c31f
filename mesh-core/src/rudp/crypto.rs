//! Cluster-key cryptography, all from reviewed designs and well-kept crates:
//!
//! * **Handshake**: Noise `NNpsk0` with X25519, AES-256-GCM and BLAKE2s, run by the `snow`
//!   crate. The `Hello` carries Noise's first message (the pre-shared cluster key mixed
//!   in before the initiator's ephemeral key), the `HelloAck` its second (the responder's
//!   ephemeral key and their Diffie-Hellman). Only a holder of the cluster key can produce
//!   either, each session gets fresh keys (forward secrecy: a key stolen later does not
//!   decrypt recorded traffic), and the payload of each message authenticates the handshake
//!   fields sent beside it.
//! * **Data packets**: AES-256-GCM (`ring`, which uses the CPU's AES instructions where it
//!   has them) under the two transport keys Noise's `Split()` yields, one per direction, with
//!   the packet number as the nonce, encoded as Noise's AESGCM transport messages encode their
//!   counter, and the packet header as associated data. Packet numbers are never reused within a session, and a number already received is
//!   refused after authentication (the session's received set is the replay window).
//! * **Packets without a session** (`Reset`, `Reject`): a 16-byte BLAKE2s MAC under a key
//!   derived from the cluster key with BLAKE2s in keyed mode and a fixed context string.
//!
//! This module is sans-IO: bytes in, bytes out.

use std::fmt;
use std::str::FromStr;

use blake2::Blake2sMac;
use blake2::digest::consts::{U16, U32};
use blake2::digest::{KeyInit, Mac};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

/// Length of a cluster key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of the authentication tag every keyed data packet ends with.
pub(crate) const TAG_LEN: usize = 16;
/// Length of the MAC that ends a keyed `Reset` or `Reject`.
pub(crate) const MAC_LEN: usize = 16;
/// Most keys a keyring holds (rotation needs two; a responder tries each in turn).
pub const MAX_KEYS: usize = 4;
const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_AESGCM_BLAKE2s";
const PROLOGUE: &[u8] = b"mesh rudp handshake v2";
/// Largest Noise message a handshake packet carries (ours are 32 + payload + 16 bytes).
const MAX_NOISE_MSG: usize = 256;

/// A secret shared by every member of a cluster: 32 random bytes, written as 64 hex digits.
///
/// With a key, nodes refuse every packet that does not prove it: a node without it can
/// neither join, nor inject messages, nor end a session. Make one with
/// [`ClusterKey::generate`] (or `openssl rand -hex 32`) and give it to every node through
/// `MeshBuilder::cluster_key`, the config file's `cluster_key` or `MESH_CLUSTER_KEY`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

/// A key's public fingerprint, safe to log: it tells keys apart without revealing them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u64);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why a cluster key or a keyring change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not 64 hex digits.
    #[error(
        "a cluster key is 64 hex digits (32 bytes), got {len} characters{}; make one with `openssl rand -hex 32`",
        if *.bad_digit { " with a non-hex digit" } else { "" }
    )]
    Format {
        /// Characters in the text.
        len: usize,
        /// Whether a character is not a hex digit.
        bad_digit: bool,
    },
    /// The keyring is full.
    #[error("the keyring already holds {MAX_KEYS} keys; remove one first")]
    Full,
    /// No key with this id is installed.
    #[error("no key {0} is installed; install it first")]
    Unknown(KeyId),
    /// The key in use cannot be removed.
    #[error("key {0} is the one in use; switch to another key first")]
    InUse(KeyId),
    /// The node was started without a cluster key, so it has no keyring to change.
    #[error(
        "this node was started without a cluster key; keys can only be rotated on a node started with one"
    )]
    NoKeyring,
}

impl ClusterKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        ClusterKey(bytes)
    }

    /// The key as 64 lowercase hex digits (to store it; it is a secret).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The key's public fingerprint.
    pub fn id(&self) -> KeyId {
        let d = derive(&self.0, b"mesh key id");
        let mut a = [0u8; 8];
        a.copy_from_slice(&d[..8]);
        KeyId(u64::from_be_bytes(a))
    }

    fn control_key(&self) -> [u8; 32] {
        derive(&self.0, b"mesh control mac")
    }

    fn record_key(&self) -> [u8; 32] {
        derive(&self.0, b"mesh discovery record mac")
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(id {})", self.id())
    }
}

impl FromStr for ClusterKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        let bad_digit = !s.bytes().all(|b| b.is_ascii_hexdigit());
        if s.len() != 2 * KEY_LEN || bad_digit {
            return Err(KeyError::Format {
                len: s.chars().count(),
                bad_digit,
            });
        }
        let mut out = [0u8; KEY_LEN];
        if !unhex(s, &mut out) {
            return Err(KeyError::Format {
                len: s.len(),
                bad_digit: true,
            });
        }
        Ok(ClusterKey(out))
    }
}

/// `bytes` as lowercase hex digits.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Fills `out` from exactly `2 * out.len()` hex digits; false if `s` is anything else.
pub(crate) fn unhex(s: &str, out: &mut [u8]) -> bool {
    if s.len() != 2 * out.len() {
        return false;
    }
    out.iter_mut().enumerate().all(|(i, o)| {
        s.get(2 * i..2 * i + 2)
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .map(|v| *o = v)
            .is_some()
    })
}

/// Written as its 64 hex digits (a configuration that holds the key holds the secret).
impl serde::Serialize for ClusterKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// Read from 64 hex digits.
impl<'de> serde::Deserialize<'de> for ClusterKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// BLAKE2s in keyed mode as a KDF: `key` keys the hash of the context string.
fn derive(key: &[u8; 32], context: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // A 32-byte key is always a valid BLAKE2s key; the fallback only satisfies the type.
    if let Ok(mut m) = <Blake2sMac<U32> as KeyInit>::new_from_slice(key) {
        m.update(context);
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    out
}

/// The cluster keys a node accepts, and the one it uses for the handshakes it starts.
///
/// Rotation, as Serf and memberlist do it, on a live cluster: [`install`](Self::install)
/// the new key on every node, then [`use_key`](Self::use_key) it on every node, then
/// [`remove`](Self::remove) the old one. Sessions keep the keys their handshake gave them,
/// so no call fails on the way.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    /// The first is the key in use.
    keys: Vec<ClusterKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("in_use", &self.primary().id())
            .field("installed", &self.ids())
            .finish()
    }
}

impl Keyring {
    /// A keyring holding `key`, in use.
    pub fn new(key: ClusterKey) -> Self {
        Keyring { keys: vec![key] }
    }

    /// The key used for new handshakes.
    pub fn primary(&self) -> &ClusterKey {
        &self.keys[0]
    }

    /// The ids of the installed keys, the one in use first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(ClusterKey::id).collect()
    }

    /// Accepts handshakes under `key` too (installing a key twice does nothing).
    pub fn install(&mut self, key: ClusterKey) -> Result<(), KeyError> {
        if self.keys.contains(&key) {
            return Ok(());
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyError::Full);
        }
        self.keys.push(key);
        Ok(())
    }

    /// Uses the installed key `id` for the handshakes this node starts.
    pub fn use_key(&mut self, id: KeyId) -> Result<(), KeyError> {
        let i = self
            .keys
            .iter()
            .position(|k| k.id() == id)
            .ok_or(KeyError::Unknown(id))?;
        self.keys.swap(0, i);
        Ok(())
    }

    /// Stops accepting handshakes under key `id`. Sessions it opened keep working.
    pub fn remove(&mut self, id: KeyId) -> Result<(), KeyError> {
        if self.primary().id() == id {
            return Err(KeyError::InUse(id));
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.id() != id);
        if self.keys.len() == before {
            return Err(KeyError::Unknown(id));
        }
        Ok(())
    }

    /// The MAC that ends a keyed `Reset` or `Reject`, under the key in use.
    pub(crate) fn control_mac(&self, packet: &[u8]) -> [u8; MAC_LEN] {
        mac(&self.primary().control_key(), packet)
    }

    /// Whether `mac` is the MAC of `packet` under any installed key.
    pub(crate) fn check_control_mac(&self, packet: &[u8], mac: &[u8]) -> bool {
        self.keys
            .iter()
            .any(|k| verify_mac(&k.control_key(), packet, mac))
    }

    /// The MAC of a discovery record, under the key in use (a key of its own, derived from
    /// the cluster key: a record MAC is never a valid packet MAC).
    pub(crate) fn record_mac(&self, record: &[u8]) -> [u8; MAC_LEN] {
        mac(&self.primary().record_key(), record)
    }

    /// Whether `mac` is the MAC of discovery record `record` under any installed key.
    pub(crate) fn check_record_mac(&self, record: &[u8], mac: &[u8]) -> bool {
        self.keys
            .iter()
            .any(|k| verify_mac(&k.record_key(), record, mac))
    }
}

/// Whether `mac` is the MAC of `data` under `key` (compared in constant time).
fn verify_mac(key: &[u8; 32], data: &[u8], mac: &[u8]) -> bool {
    let Ok(mut m) = <Blake2sMac<U16> as KeyInit>::new_from_slice(key) else {
        return false;
    };
    m.update(data);
    m.verify_slice(mac).is_ok()
}

/// The 16-byte BLAKE2s MAC of `data` under `key`.
fn mac(key: &[u8; 32], data: &[u8]) -> [u8; MAC_LEN] {
    let mut out = [0u8; MAC_LEN];
    if let Ok(mut m) = <Blake2sMac<U16> as KeyInit>::new_from_slice(key) {
        m.update(data);
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    out
}

/// A handshake message failed: it was not made with a key we hold, or is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadHandshake;

fn builder(key: &ClusterKey) -> Result<snow::Builder<'_>, BadHandshake> {
    let params = NOISE_PARAMS.parse().map_err(|_| BadHandshake)?;
    snow::Builder::new(params)
        .prologue(PROLOGUE)
        .and_then(|b| b.psk(0, &key.0))
        .map_err(|_| BadHandshake)
}

/// The initiator's side of a handshake in progress: its first message, kept to be resent
/// as is, and the state that reads the responder's answer.
pub(crate) struct Initiator {
    hs: Box<snow::HandshakeState>,
    /// Noise's first message, carried by every `Hello` of this attempt.
    pub(crate) message: Vec<u8>,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator").finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts a handshake under the key in use, authenticating `payload`.
    pub(crate) fn start(ring: &Keyring, payload: &[u8]) -> Result<Initiator, BadHandshake> {
        let mut hs = builder(ring.primary())?
            .build_initiator()
            .map_err(|_| BadHandshake)?;
        let mut message = vec![0u8; MAX_NOISE_MSG];
        let n = hs
            .write_message(payload, &mut message)
            .map_err(|_| BadHandshake)?;
        message.truncate(n);
        Ok(Initiator {
            hs: Box::new(hs),
            message,
        })
    }

    /// Reads the responder's message; returns its authenticated payload and the session keys.
    pub(crate) fn finish(&mut self, answer: &[u8]) -> Result<(Vec<u8>, SessionKeys), BadHandshake> {
        if answer.len() > MAX_NOISE_MSG {
            return Err(BadHandshake);
        }
        let mut payload = vec![0u8; MAX_NOISE_MSG];
        let n = self
            .hs
            .read_message(answer, &mut payload)
            .map_err(|_| BadHandshake)?;
        payload.truncate(n);
        if !self.hs.is_handshake_finished() {
            return Err(BadHandshake);
        }
        let (i2r, r2i) = self.hs.dangerously_get_raw_split();
        Ok((payload, SessionKeys::new(&i2r, &r2i)?))
    }
}

/// Answers an initiator's first message under any installed key: returns the
/// authenticated payload it carried and a responder ready to [`reply`](Responder::reply).
pub(crate) fn respond(
    ring: &Keyring,
    message: &[u8],
) -> Result<(Vec<u8>, Responder), BadHandshake> {
    if message.len() > MAX_NOISE_MSG {
        return Err(BadHandshake);
    }
    for key in &ring.keys {
        let mut hs = builder(key)?.build_responder().map_err(|_| BadHandshake)?;
        let mut payload = vec![0u8; MAX_NOISE_MSG];
        if let Ok(n) = hs.read_message(message, &mut payload) {
            payload.truncate(n);
            return Ok((payload, Responder { hs: Box::new(hs) }));
        }
    }
    Err(BadHandshake)
}

/// The responder's side after reading a valid first message.
pub(crate) struct Responder {
    hs: Box<snow::HandshakeState>,
}

impl Responder {
    /// Writes the answer authenticating `payload`; returns it and the session keys.
    pub(crate) fn reply(mut self, payload: &[u8]) -> Result<(Vec<u8>, SessionKeys), BadHandshake> {
        let mut message = vec![0u8; MAX_NOISE_MSG];
        let n = self
            .hs
            .write_message(payload, &mut message)
            .map_err(|_| BadHandshake)?;
        message.truncate(n);
        let (i2r, r2i) = self.hs.dangerously_get_raw_split();
        // The responder sends with the responder-to-initiator key.
        Ok((message, SessionKeys::new(&r2i, &i2r)?))
    }
}

/// The two AEAD keys of one session: one to send with, one to receive with.
pub(crate) struct SessionKeys {
    send: LessSafeKey,
    recv: LessSafeKey,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys").finish_non_exhaustive()
    }
}

/// The nonce of packet `pn`: 32 zero bits, then the number big-endian (Noise's AESGCM
/// nonce). Packet numbers are never reused within a session, so neither are nonces.
fn nonce(pn: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&pn.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aead_key(bytes: &[u8; 32]) -> Result<LessSafeKey, BadHandshake> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| BadHandshake)
}

impl SessionKeys {
    fn new(send: &[u8; 32], recv: &[u8; 32]) -> Result<Self, BadHandshake> {
        Ok(SessionKeys {
            send: aead_key(send)?,
            recv: aead_key(recv)?,
        })
    }

    /// Encrypts `out[body_at..]` in place under packet number `pn`, with `out[start..body_at]`
    /// (the header) as associated data, and appends the tag.
    pub(crate) fn seal(&self, pn: u64, out: &mut Vec<u8>, start: usize, body_at: usize) {
        let (head, body) = out.split_at_mut(body_at);
        let ad: &[u8] = head.get(start..).unwrap_or(&[]);
        // Sealing fails only for a message over 64 GiB; the peer then drops the packet.
        match self
            .send
            .seal_in_place_separate_tag(nonce(pn), Aad::from(ad), body)
        {
            Ok(tag) => out.extend_from_slice(tag.as_ref()),
            Err(_) => out.extend_from_slice(&[0u8; TAG_LEN]),
        }
    }

    /// Decrypts `body` (the tag at its end) in place under `pn` with `ad`; returns the
    /// plaintext length, or `None` when the packet is not authentic.
    pub(crate) fn open(&self, pn: u64, ad: &[u8], body: &mut [u8]) -> Option<usize> {
        let n = body.len().checked_sub(TAG_LEN)?;
        let (text, tag) = body.split_at_mut(n);
        let tag = Tag::try_from(&*tag).ok()?;
        self.recv
            .open_in_place_separate_tag(nonce(pn), Aad::from(ad), tag, text, 0..)
            .ok()?;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(byte: u8) -> Keyring {
        Keyring::new(ClusterKey::from_bytes([byte; 32]))
    }

    #[test]
    fn a_handshake_gives_both_sides_matching_keys_and_authenticates_payloads() {
        let a = ring(1);
        let mut init = Initiator::start(&a, b"hello fields").unwrap();
        let (p1, resp) = respond(&a, &init.message).unwrap();
        assert_eq!(p1, b"hello fields");
        let (answer, r_keys) = resp.reply(b"ack fields").unwrap();
        let (p2, i_keys) = init.finish(&answer).unwrap();
        assert_eq!(p2, b"ack fields");

        let mut pkt = b"HEADERbody bytes".to_vec();
        i_keys.seal(7, &mut pkt, 0, 6);
        assert_ne!(&pkt[6..16], b"body bytes");
        let (ad, body) = pkt.split_at_mut(6);
        let n = r_keys.open(7, ad, body).unwrap();
        assert_eq!(&body[..n], b"body bytes");

        // The other direction uses the other key; a wrong nonce or header fails.
        let mut back = b"HDbody".to_vec();
        r_keys.seal(1, &mut back, 0, 2);
        let mut copy = back.clone();
        let (ad, body) = copy.split_at_mut(2);
        assert!(i_keys.open(2, ad, body).is_none());
        let mut copy = back.clone();
        copy[0] ^= 1;
        let (ad, body) = copy.split_at_mut(2);
        assert!(i_keys.open(1, ad, body).is_none());
        let (ad, body) = back.split_at_mut(2);
        assert!(i_keys.open(1, ad, body).is_some());
    }

    #[test]
    fn a_wrong_key_fails_at_the_first_message() {
        let init = Initiator::start(&ring(1), b"x").unwrap();
        assert!(respond(&ring(2), &init.message).is_err());
        let mut altered = init.message.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(respond(&ring(1), &altered).is_err());
        assert!(respond(&ring(1), &[0u8; 300]).is_err());
        assert!(respond(&ring(1), &[]).is_err());
    }

    #[test]
    fn a_keyring_accepts_every_installed_key_and_starts_with_the_one_in_use() {
        let old = ClusterKey::from_bytes([1; 32]);
        let new = ClusterKey::from_bytes([2; 32]);
        let mut r = Keyring::new(old.clone());
        r.install(new.clone()).unwrap();
        r.install(new.clone()).unwrap();
        assert_eq!(r.ids(), vec![old.id(), new.id()]);
        let init = Initiator::start(&Keyring::new(new.clone()), b"").unwrap();
        assert!(respond(&r, &init.message).is_ok());
        assert_eq!(r.remove(old.id()), Err(KeyError::InUse(old.id())));
        r.use_key(new.id()).unwrap();
        r.remove(old.id()).unwrap();
        assert_eq!(r.ids(), vec![new.id()]);
        let init = Initiator::start(&Keyring::new(old.clone()), b"").unwrap();
        assert!(respond(&r, &init.message).is_err());
        assert_eq!(r.use_key(old.id()), Err(KeyError::Unknown(old.id())));
        for b in 3..6 {
            r.install(ClusterKey::from_bytes([b; 32])).unwrap();
        }
        assert_eq!(
            r.install(ClusterKey::from_bytes([9; 32])),
            Err(KeyError::Full)
        );
    }

    #[test]
    fn control_macs_verify_under_any_installed_key_only() {
        let mut r = ring(1);
        let mac = r.control_mac(b"reset packet");
        assert!(r.check_control_mac(b"reset packet", &mac));
        assert!(!r.check_control_mac(b"reset packet!", &mac));
        assert!(!ring(2).check_control_mac(b"reset packet", &mac));
        r.install(ClusterKey::from_bytes([2; 32])).unwrap();
        assert!(r.check_control_mac(b"reset packet", &ring(2).control_mac(b"reset packet")));
    }

    #[test]
    fn keys_parse_from_hex_and_refuse_anything_else() {
        let k = ClusterKey::generate();
        assert_eq!(k.to_hex().parse::<ClusterKey>().unwrap(), k);
        assert!(matches!(
            "abc".parse::<ClusterKey>(),
            Err(KeyError::Format {
                len: 3,
                bad_digit: false
            })
        ));
        let bad = "g".repeat(64);
        assert!(matches!(
            bad.parse::<ClusterKey>(),
            Err(KeyError::Format {
                bad_digit: true,
                ..
            })
        ));
        assert!(!format!("{k:?}").contains(&k.to_hex()));
        let multibyte = "é".repeat(32);
        assert!(multibyte.parse::<ClusterKey>().is_err());
    }
}
