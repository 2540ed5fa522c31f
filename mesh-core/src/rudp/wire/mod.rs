//! Wire format: packet headers and frames, encoded and decoded without panics.
//!
//! Every packet starts with the same 16 bytes, stable across wire versions so that any version
//! can at least tell a foreign or incompatible packet apart and answer it:
//!
//! ```text
//! 0      2        3           4            8              16
//! | magic | version | kind|flags | cluster id | session id   | ...kind-specific body
//! ```
//!
//! * `kind` is the low nibble of byte 3; the high nibble holds flag bits. One is defined,
//!   [`FLAG_AUTH`]: the packet is authenticated under the cluster key. The others are
//!   reserved, and a packet with any of them set is refused (the sender learns which flags
//!   through a `Reject`).
//! * With a cluster key, `Hello` and `HelloAck` bodies start with a Noise handshake message
//!   (see [`split_keyed`]), data packets end with an AEAD tag over everything after the
//!   packet number (the header and packet number are its associated data), and `Reset` and
//!   `Reject` end with a MAC.
//! * Data packets continue with a varint packet number, then frames until the end.
//! * Integers are big-endian; variable-length integers use 7 bits per byte, high bit =
//!   continuation (at most 10 bytes for a `u64`).

use bytes::BufMut;

mod frames;
#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) use frames::{AckFrame, Frames, MAX_ACK_RANGES};
pub(crate) use frames::{Frame, datagram_frame_len, encode_stream_header, owned};
pub(crate) use frames::{RawAck, RawFrame, RawFrames, ack_frame_len, encode_ack_frame};

/// The two magic bytes every packet starts with ("MS").
pub(crate) const MAGIC: [u8; 2] = *b"MS";
/// The wire version this build speaks.
pub(crate) const WIRE_VERSION: u8 = 2;
/// Size of the address-ownership cookie a `Retry` carries and the next `Hello` echoes.
pub(crate) const COOKIE_LEN: usize = 16;
/// An address-ownership cookie.
pub(crate) type Cookie = [u8; COOKIE_LEN];
/// Flag: the packet is authenticated under the cluster key.
pub(crate) const FLAG_AUTH: u8 = 0x10;
/// Size of the fixed header every packet starts with.
pub(crate) const HEADER_LEN: usize = 16;

/// What a packet is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Opens a session: carries the sender's incarnation and proposes a session id.
    Hello = 1,
    /// Accepts a session: carries the responder's incarnation and echoes the initiator's.
    HelloAck = 2,
    /// Carries a packet number and frames.
    Data = 3,
    /// "I have no such session": carries the sender's incarnation.
    Reset = 4,
    /// "I refuse your packets": wrong cluster or unsupported wire version. Its session id
    /// echoes the refused packet's, so only the peer that saw our packet can make us stop.
    Reject = 5,
    /// "Prove you receive at your address": the answer to a `Hello` without a valid cookie.
    /// Carries a cookie (a MAC over the address and incarnation under a key only the
    /// responder knows, valid for a few seconds) to echo in the next `Hello`. The responder
    /// keeps no state for it, and it is never larger than the `Hello` it answers.
    Retry = 6,
}

impl Kind {
    fn from_nibble(n: u8) -> Option<Kind> {
        Some(match n {
            1 => Kind::Hello,
            2 => Kind::HelloAck,
            3 => Kind::Data,
            4 => Kind::Reset,
            5 => Kind::Reject,
            6 => Kind::Retry,
            _ => return None,
        })
    }
}

/// Why a packet could not be decoded. Used as a drop-counter label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DecodeError {
    /// Not one of ours: too short for a header or wrong magic.
    #[error("not a mesh packet (too short or wrong magic)")]
    Foreign,
    /// A header field or frame is malformed or truncated.
    #[error("malformed or truncated packet")]
    Malformed,
}

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Wire version of the sender.
    pub version: u8,
    /// Packet kind.
    pub kind: Kind,
    /// Flag bits (high nibble of byte 3).
    pub flags: u8,
    /// Cluster id of the sender.
    pub cluster: u32,
    /// Session id the packet belongs to (proposed one for `Hello`).
    pub session: u64,
}

impl Header {
    /// Writes the header into `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&MAGIC);
        h[2] = self.version;
        h[3] = (self.kind as u8) | (self.flags & 0xF0);
        h[4..8].copy_from_slice(&self.cluster.to_be_bytes());
        h[8..16].copy_from_slice(&self.session.to_be_bytes());
        out.extend_from_slice(&h);
    }

    /// Reads the version and magic only (stable across versions), then the rest.
    ///
    /// Returns the header and the body after it. An unknown kind is `Malformed` only when the
    /// version is ours; for another version the caller refuses by version first.
    pub(crate) fn decode(buf: &[u8]) -> Result<(Header, &[u8]), HeaderError> {
        if buf.len() < HEADER_LEN || buf[0..2] != MAGIC {
            return Err(HeaderError::Decode(DecodeError::Foreign));
        }
        let version = buf[2];
        let cluster = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let mut s = [0u8; 8];
        s.copy_from_slice(&buf[8..16]);
        let session = u64::from_be_bytes(s);
        let flags = buf[3] & 0xF0;
        match Kind::from_nibble(buf[3] & 0x0F) {
            Some(kind) => Ok((
                Header {
                    version,
                    kind,
                    flags,
                    cluster,
                    session,
                },
                &buf[HEADER_LEN..],
            )),
            None if version != WIRE_VERSION => Err(HeaderError::Version {
                version,
                cluster,
                session,
            }),
            None => Err(HeaderError::Decode(DecodeError::Malformed)),
        }
    }
}

/// A packet of this wire version with `flags`: the header, then what `body` writes.
pub(crate) fn packet(
    kind: Kind,
    flags: u8,
    cluster: u32,
    session: u64,
    body: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    Header {
        version: WIRE_VERSION,
        kind,
        flags,
        cluster,
        session,
    }
    .encode(&mut out);
    body(&mut out);
    out
}

/// Splits a keyed `Hello` or `HelloAck` body, `[u8 length][Noise message][plain body]`,
/// into the Noise message and the plain body.
pub(crate) fn split_keyed(body: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let mut b = body;
    let len = get_u8(&mut b).ok_or(DecodeError::Malformed)?;
    let noise = get_bytes(&mut b, u64::from(len)).ok_or(DecodeError::Malformed)?;
    Ok((noise, b))
}

/// Writes a keyed `Hello` or `HelloAck` body (see [`split_keyed`]).
pub(crate) fn encode_keyed(noise: &[u8], body: &HelloBody, out: &mut Vec<u8>) {
    out.push(u8::try_from(noise.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(noise.get(..255).unwrap_or(noise));
    body.encode(out);
}

/// What a keyed handshake message authenticates of the packet around it: the session id
/// and every field of the body but the cookie.
pub(crate) fn hello_auth(session: u64, body: &HelloBody) -> [u8; 25] {
    let mut a = [0u8; 25];
    a[..8].copy_from_slice(&session.to_be_bytes());
    a[8..16].copy_from_slice(&body.incarnation.to_be_bytes());
    a[16..24].copy_from_slice(&body.echo.to_be_bytes());
    a[24] = u8::from(body.fresh);
    a
}

/// Why a header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Foreign or malformed.
    Decode(DecodeError),
    /// A kind we do not know from a version we do not speak.
    Version {
        /// The sender's wire version.
        version: u8,
        /// The sender's cluster id.
        cluster: u32,
        /// The session id in the header (echoed in our `Reject`).
        session: u64,
    },
}

/// Why a peer refuses our packets (body of a `Reject` packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The peer belongs to another cluster (different cluster id).
    #[error(
        "the peer belongs to another cluster (its cluster id is {theirs:#010x}, ours {ours:#010x}); check the cluster name in both configurations"
    )]
    OtherCluster {
        /// The refusing peer's cluster id.
        theirs: u32,
        /// Our cluster id.
        ours: u32,
    },
    /// The peer does not speak our wire version.
    #[error("the peer speaks wire version {theirs}, we speak {ours}; upgrade the older node")]
    Version {
        /// The refusing peer's wire version.
        theirs: u8,
        /// Our wire version.
        ours: u8,
    },
    /// The peer refuses packets with flags it does not support (e.g. an authentication tag).
    #[error(
        "the peer does not support packet flags {flags:#04x} (a cluster key configured on one side only?)"
    )]
    Flags {
        /// The unsupported flags.
        flags: u8,
    },
    /// The peer has a cluster key and refuses unauthenticated packets.
    #[error(
        "the peer requires a cluster key and ours has none; configure the cluster's key (MESH_CLUSTER_KEY)"
    )]
    KeyRequired,
    /// The peer sends unauthenticated packets: it has no cluster key and ours requires one.
    #[error(
        "the peer has no cluster key and ours requires one; configure the cluster's key on it (MESH_CLUSTER_KEY)"
    )]
    Unauthenticated,
}

/// Variable-length integers.
pub(crate) mod varint {
    /// Appends `v` as a varint.
    pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// `v` encoded into a fixed array: the bytes and how many of them are used.
    pub(crate) fn to_array(mut v: u64) -> ([u8; 10], usize) {
        let mut a = [0u8; 10];
        let mut n = 0;
        while v >= 0x80 && n < 9 {
            a[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        a[n] = v as u8;
        (a, n + 1)
    }

    /// Encoded length of `v`.
    pub(crate) fn len(v: u64) -> usize {
        let bits = 64 - (v | 1).leading_zeros() as usize;
        bits.div_ceil(7)
    }

    /// Reads a varint from the front of `buf`, advancing it.
    pub(crate) fn get(buf: &mut &[u8]) -> Option<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            let part = u64::from(b & 0x7F);
            if i == 9 && part > 1 {
                return None;
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
}

fn get_u8(buf: &mut &[u8]) -> Option<u8> {
    let (&b, rest) = buf.split_first()?;
    *buf = rest;
    Some(b)
}

fn get_u64(buf: &mut &[u8]) -> Option<u64> {
    if buf.len() < 8 {
        return None;
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[..8]);
    *buf = &buf[8..];
    Some(u64::from_be_bytes(a))
}

fn get_bytes<'a>(buf: &mut &'a [u8], len: u64) -> Option<&'a [u8]> {
    let len = usize::try_from(len).ok()?;
    if buf.len() < len {
        return None;
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Some(head)
}

/// Body of `Hello` and `HelloAck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HelloBody {
    /// The sender's incarnation.
    pub incarnation: u64,
    /// `HelloAck` only: the initiator's incarnation as the responder saw it.
    pub echo: u64,
    /// `HelloAck` only: the responder has received no data on this session yet, so the
    /// initiator may adopt it with fresh stream state.
    pub fresh: bool,
    /// `Hello` only: the cookie of the responder's `Retry`, proving the initiator receives
    /// at its address.
    pub cookie: Option<Cookie>,
}

impl HelloBody {
    /// Encodes the body.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.incarnation);
        out.put_u64(self.echo);
        out.push(u8::from(self.fresh));
        if let Some(c) = &self.cookie {
            out.extend_from_slice(c);
        }
    }
    /// Decodes the body.
    pub(crate) fn decode(mut b: &[u8]) -> Result<Self, DecodeError> {
        let incarnation = get_u64(&mut b).ok_or(DecodeError::Malformed)?;
        let echo = get_u64(&mut b).ok_or(DecodeError::Malformed)?;
        let fresh = get_u8(&mut b).ok_or(DecodeError::Malformed)? != 0;
        if incarnation == 0 {
            return Err(DecodeError::Malformed);
        }
        let cookie = match b.len() {
            0 => None,
            COOKIE_LEN => {
                let mut c = [0u8; COOKIE_LEN];
                c.copy_from_slice(b);
                Some(c)
            }
            _ => return Err(DecodeError::Malformed),
        };
        Ok(HelloBody {
            incarnation,
            echo,
            fresh,
            cookie,
        })
    }
}

/// Encodes a `Reject` body: reason code, our cluster id, our version, unsupported flags.
pub(crate) fn encode_reject(reason: RejectReason, out: &mut Vec<u8>) {
    match reason {
        RejectReason::OtherCluster { theirs, .. } => {
            out.push(1);
            out.put_u32(theirs);
        }
        RejectReason::Version { theirs, .. } => {
            out.push(2);
            out.put_u32(u32::from(theirs));
        }
        RejectReason::Flags { flags } => {
            out.push(3);
            out.put_u32(u32::from(flags));
        }
        RejectReason::KeyRequired => {
            out.push(4);
            out.put_u32(0);
        }
        RejectReason::Unauthenticated => {
            out.push(5);
            out.put_u32(0);
        }
    }
}

/// Decodes a `Reject` body, seen from the side that receives it (`ours` = our own values).
pub(crate) fn decode_reject(
    mut b: &[u8],
    our_cluster: u32,
    our_version: u8,
) -> Result<RejectReason, DecodeError> {
    let code = get_u8(&mut b).ok_or(DecodeError::Malformed)?;
    if b.len() < 4 {
        return Err(DecodeError::Malformed);
    }
    let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    match code {
        1 => Ok(RejectReason::OtherCluster {
            theirs: v,
            ours: our_cluster,
        }),
        2 => Ok(RejectReason::Version {
            theirs: u8::try_from(v).map_err(|_| DecodeError::Malformed)?,
            ours: our_version,
        }),
        3 => Ok(RejectReason::Flags {
            flags: u8::try_from(v).map_err(|_| DecodeError::Malformed)?,
        }),
        4 => Ok(RejectReason::KeyRequired),
        5 => Ok(RejectReason::Unauthenticated),
        _ => Err(DecodeError::Malformed),
    }
}
