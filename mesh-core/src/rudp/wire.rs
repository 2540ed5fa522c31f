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
//! * `kind` is the low nibble of byte 3; the high nibble holds flags. Flag [`FLAG_AUTH_TAG`]
//!   reserves room for a trailing authentication tag (a later wire feature; packets carrying it
//!   are refused by this version).
//! * Data packets continue with a varint packet number, then frames until the end.
//! * Integers are big-endian; variable-length integers use 7 bits per byte, high bit =
//!   continuation (at most 10 bytes for a `u64`).

use bytes::{BufMut, Bytes};

/// The two magic bytes every packet starts with ("MS").
pub const MAGIC: [u8; 2] = *b"MS";
/// The wire version this build speaks.
pub const WIRE_VERSION: u8 = 1;
/// Size of the fixed header every packet starts with.
pub const HEADER_LEN: usize = 16;
/// Flag bit: the packet ends with an authentication tag (reserved for cluster-key AEAD).
pub const FLAG_AUTH_TAG: u8 = 0x10;

/// What a packet is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opens a session: carries the sender's incarnation and proposes a session id.
    Hello = 1,
    /// Accepts a session: carries the responder's incarnation and echoes the initiator's.
    HelloAck = 2,
    /// Carries a packet number and frames.
    Data = 3,
    /// "I have no such session": carries the sender's incarnation.
    Reset = 4,
    /// "I refuse your packets": wrong cluster or unsupported wire version.
    Reject = 5,
}

impl Kind {
    fn from_nibble(n: u8) -> Option<Kind> {
        Some(match n {
            1 => Kind::Hello,
            2 => Kind::HelloAck,
            3 => Kind::Data,
            4 => Kind::Reset,
            5 => Kind::Reject,
            _ => return None,
        })
    }
}

/// Why a packet could not be decoded. Used as a drop-counter label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not one of ours: too short for a header or wrong magic.
    #[error("not a mesh packet (too short or wrong magic)")]
    Foreign,
    /// A header field or frame is malformed or truncated.
    #[error("malformed or truncated packet")]
    Malformed,
}

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
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
    pub fn encode(&self, out: &mut Vec<u8>) {
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
    pub fn decode(buf: &[u8]) -> Result<(Header, &[u8]), HeaderError> {
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
            None if version != WIRE_VERSION => Err(HeaderError::Version { version, cluster }),
            None => Err(HeaderError::Decode(DecodeError::Malformed)),
        }
    }
}

/// Why a header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Foreign or malformed.
    Decode(DecodeError),
    /// A kind we do not know from a version we do not speak.
    Version {
        /// The sender's wire version.
        version: u8,
        /// The sender's cluster id.
        cluster: u32,
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
        "the peer does not support packet flags {flags:#04x} (authentication configured on one side only?)"
    )]
    Flags {
        /// The unsupported flags.
        flags: u8,
    },
}

/// Variable-length integers.
pub mod varint {
    /// Appends `v` as a varint.
    pub fn put(out: &mut Vec<u8>, mut v: u64) {
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
    pub fn len(v: u64) -> usize {
        let bits = 64 - (v | 1).leading_zeros() as usize;
        bits.div_ceil(7)
    }

    /// Reads a varint from the front of `buf`, advancing it.
    pub fn get(buf: &mut &[u8]) -> Option<u64> {
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
pub struct HelloBody {
    /// The sender's incarnation.
    pub incarnation: u64,
    /// `HelloAck` only: the initiator's incarnation as the responder saw it.
    pub echo: u64,
    /// `HelloAck` only: the responder has received no data on this session yet, so the
    /// initiator may adopt it with fresh stream state.
    pub fresh: bool,
}

impl HelloBody {
    /// Encodes the body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.incarnation);
        out.put_u64(self.echo);
        out.push(u8::from(self.fresh));
    }
    /// Decodes the body.
    pub fn decode(mut b: &[u8]) -> Result<Self, DecodeError> {
        let incarnation = get_u64(&mut b).ok_or(DecodeError::Malformed)?;
        let echo = get_u64(&mut b).ok_or(DecodeError::Malformed)?;
        let fresh = get_u8(&mut b).ok_or(DecodeError::Malformed)? != 0;
        if incarnation == 0 {
            return Err(DecodeError::Malformed);
        }
        Ok(HelloBody {
            incarnation,
            echo,
            fresh,
        })
    }
}

/// Encodes a `Reject` body: reason code, our cluster id, our version, unsupported flags.
pub fn encode_reject(reason: RejectReason, out: &mut Vec<u8>) {
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
    }
}

/// Decodes a `Reject` body, seen from the side that receives it (`ours` = our own values).
pub fn decode_reject(
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
        _ => Err(DecodeError::Malformed),
    }
}

/// Frame type codes inside `Data` packets.
mod code {
    pub(super) const PADDING: u8 = 0;
    pub(super) const ACK: u8 = 1;
    pub(super) const STREAM: u8 = 2;
    pub(super) const MAX_DATA: u8 = 3;
    pub(super) const DATAGRAM: u8 = 4;
    pub(super) const PING: u8 = 5;
    pub(super) const REFUSED: u8 = 6;
}

/// A frame inside a `Data` packet, borrowed from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Acknowledges packet-number ranges; `ranges` are `(start, end_inclusive)` descending.
    Ack(AckFrame),
    /// Bytes of a channel's reliable stream at `offset`.
    Stream {
        /// Channel index.
        channel: u8,
        /// Stream offset of the first byte.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// Flow-control credit: the sender may send stream bytes below `max` on `channel`.
    MaxData {
        /// Channel index.
        channel: u8,
        /// Absolute stream offset limit.
        max: u64,
    },
    /// One unreliable message.
    Datagram(&'a [u8]),
    /// Asks for an acknowledgement (liveness probe).
    Ping,
    /// The message starting at `offset` on `channel` was refused (too large for the receiver).
    Refused {
        /// Channel index.
        channel: u8,
        /// Stream offset where the refused message starts.
        offset: u64,
        /// The message's size.
        size: u64,
        /// The receiver's limit.
        max: u64,
    },
}

/// Acknowledged ranges, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckFrame {
    /// Microseconds the receiver held the largest packet before acknowledging it.
    pub delay_us: u64,
    /// `(first, last)` inclusive packet-number ranges, descending and disjoint.
    pub ranges: Vec<(u64, u64)>,
}

/// Bound on ranges decoded from one ACK frame (a peer cannot make us allocate more).
pub const MAX_ACK_RANGES: usize = 64;

impl Frame<'_> {
    /// Appends the frame's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Ack(ack) => {
                out.push(code::ACK);
                encode_ack(ack, out);
            }
            Frame::Stream {
                channel,
                offset,
                data,
            } => {
                encode_stream_header(*channel, *offset, data.len(), out);
                out.extend_from_slice(data);
            }
            Frame::MaxData { channel, max } => {
                out.push(code::MAX_DATA);
                out.push(*channel);
                varint::put(out, *max);
            }
            Frame::Datagram(d) => {
                out.push(code::DATAGRAM);
                varint::put(out, d.len() as u64);
                out.extend_from_slice(d);
            }
            Frame::Ping => out.push(code::PING),
            Frame::Refused {
                channel,
                offset,
                size,
                max,
            } => {
                out.push(code::REFUSED);
                out.push(*channel);
                varint::put(out, *offset);
                varint::put(out, *size);
                varint::put(out, *max);
            }
        }
    }
}

/// Writes a STREAM frame header for `len` bytes; the caller appends the bytes.
pub fn encode_stream_header(channel: u8, offset: u64, len: usize, out: &mut Vec<u8>) {
    out.push(code::STREAM);
    out.push(channel);
    varint::put(out, offset);
    varint::put(out, len as u64);
}

/// Encoded size of a STREAM frame header.
pub fn stream_header_len(offset: u64, len: usize) -> usize {
    2 + varint::len(offset) + varint::len(len as u64)
}

/// Encoded size of a DATAGRAM frame carrying `len` bytes.
pub fn datagram_frame_len(len: usize) -> usize {
    1 + varint::len(len as u64) + len
}

fn encode_ack(ack: &AckFrame, out: &mut Vec<u8>) {
    encode_ack_ranges(ack.delay_us, ack.ranges.iter().copied(), out);
}

/// Encodes an ACK frame body from `(first, last)` ranges, descending and disjoint (at least one
/// range: an empty iterator encodes an empty ACK). Nothing is allocated.
pub(crate) fn encode_ack_ranges(
    delay_us: u64,
    ranges: impl Iterator<Item = (u64, u64)> + Clone,
    out: &mut Vec<u8>,
) {
    let mut it = ranges.clone();
    let Some((first_lo, first_hi)) = it.next() else {
        varint::put(out, 0);
        varint::put(out, delay_us);
        varint::put(out, 0);
        return;
    };
    varint::put(out, first_hi);
    varint::put(out, delay_us);
    varint::put(out, it.count() as u64);
    varint::put(out, first_hi - first_lo);
    let mut prev_lo = first_lo;
    for (lo, hi) in ranges.skip(1) {
        // gap: number of missing packets between ranges, minus one (as in QUIC).
        varint::put(out, prev_lo - hi - 2);
        varint::put(out, hi - lo);
        prev_lo = lo;
    }
}

/// Appends an ACK frame (type byte and body) for `ranges`; see [`encode_ack_ranges`].
pub(crate) fn encode_ack_frame(
    delay_us: u64,
    ranges: impl Iterator<Item = (u64, u64)> + Clone,
    out: &mut Vec<u8>,
) {
    out.push(code::ACK);
    encode_ack_ranges(delay_us, ranges, out);
}

/// Encoded size of an ACK frame (type byte included) for `ranges`, as
/// [`encode_ack_ranges`] writes it.
pub(crate) fn ack_frame_len(delay_us: u64, ranges: impl Iterator<Item = (u64, u64)>) -> usize {
    let mut n = 1 + varint::len(delay_us);
    let mut count = 0usize;
    let mut prev_lo = 0;
    for (i, (lo, hi)) in ranges.enumerate() {
        if i == 0 {
            n += varint::len(hi) + varint::len(hi - lo);
        } else {
            n += varint::len(prev_lo - hi - 2) + varint::len(hi - lo);
        }
        prev_lo = lo;
        count += 1;
    }
    if count == 0 {
        return 1 + 1 + varint::len(delay_us) + 1;
    }
    n + varint::len(count as u64 - 1)
}

/// An ACK frame as it lies in the packet: the ranges are decoded while iterating, so reading
/// one allocates nothing. Validated when the frame is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawAck<'a> {
    /// Microseconds the receiver held the largest packet before acknowledging it.
    pub(crate) delay_us: u64,
    largest: u64,
    first_len: u64,
    extra: u64,
    rest: &'a [u8],
}

impl<'a> RawAck<'a> {
    fn decode(b: &mut &'a [u8]) -> Option<RawAck<'a>> {
        let largest = varint::get(b)?;
        let delay_us = varint::get(b)?;
        let extra = varint::get(b)?;
        let first_len = varint::get(b)?;
        let start = *b;
        let mut lo = largest.checked_sub(first_len)?;
        for _ in 0..extra {
            let gap = varint::get(b)?;
            let len = varint::get(b)?;
            let hi = lo.checked_sub(gap.checked_add(2)?)?;
            lo = hi.checked_sub(len)?;
        }
        let used = start.len() - b.len();
        Some(RawAck {
            delay_us,
            largest,
            first_len,
            extra,
            rest: &start[..used],
        })
    }

    /// The largest acknowledged packet number.
    pub(crate) fn largest(&self) -> u64 {
        self.largest
    }

    /// `(first, last)` inclusive ranges, descending; at most `1 + MAX_ACK_RANGES` of them.
    pub(crate) fn ranges(&self) -> AckRanges<'a> {
        AckRanges {
            next: Some((self.largest - self.first_len, self.largest)),
            left: self.extra.min(MAX_ACK_RANGES as u64),
            rest: self.rest,
        }
    }

    fn to_frame(self) -> AckFrame {
        AckFrame {
            delay_us: self.delay_us,
            ranges: self.ranges().collect(),
        }
    }
}

/// Iterator over the ranges of a [`RawAck`].
#[derive(Debug, Clone)]
pub(crate) struct AckRanges<'a> {
    next: Option<(u64, u64)>,
    left: u64,
    rest: &'a [u8],
}

impl Iterator for AckRanges<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let cur = self.next.take()?;
        if self.left > 0 {
            self.left -= 1;
            // Validated when the frame was read; a failure here just ends the ranges.
            self.next = (|| {
                let gap = varint::get(&mut self.rest)?;
                let len = varint::get(&mut self.rest)?;
                let hi = cur.0.checked_sub(gap.checked_add(2)?)?;
                Some((hi.checked_sub(len)?, hi))
            })();
        }
        Some(cur)
    }
}

/// A frame inside a `Data` packet as the receive path reads it (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawFrame<'a> {
    Ack(RawAck<'a>),
    Stream {
        channel: u8,
        offset: u64,
        data: &'a [u8],
    },
    MaxData {
        channel: u8,
        max: u64,
    },
    Datagram(&'a [u8]),
    Ping,
    Refused {
        channel: u8,
        offset: u64,
        size: u64,
        max: u64,
    },
}

impl<'a> RawFrame<'a> {
    fn into_frame(self) -> Frame<'a> {
        match self {
            RawFrame::Ack(a) => Frame::Ack(a.to_frame()),
            RawFrame::Stream {
                channel,
                offset,
                data,
            } => Frame::Stream {
                channel,
                offset,
                data,
            },
            RawFrame::MaxData { channel, max } => Frame::MaxData { channel, max },
            RawFrame::Datagram(d) => Frame::Datagram(d),
            RawFrame::Ping => Frame::Ping,
            RawFrame::Refused {
                channel,
                offset,
                size,
                max,
            } => Frame::Refused {
                channel,
                offset,
                size,
                max,
            },
        }
    }
}

/// Iterates over the frames of a `Data` packet body without allocating.
pub(crate) struct RawFrames<'a> {
    buf: &'a [u8],
}

impl<'a> RawFrames<'a> {
    /// Frames of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        RawFrames { buf }
    }
}

impl<'a> Iterator for RawFrames<'a> {
    type Item = Result<RawFrame<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&c, rest) = self.buf.split_first()?;
            self.buf = rest;
            let b = &mut self.buf;
            let frame = match c {
                code::PADDING => continue,
                code::ACK => RawAck::decode(b).map(RawFrame::Ack),
                code::STREAM => (|| {
                    let channel = get_u8(b)?;
                    let offset = varint::get(b)?;
                    let len = varint::get(b)?;
                    offset.checked_add(len)?;
                    let data = get_bytes(b, len)?;
                    Some(RawFrame::Stream {
                        channel,
                        offset,
                        data,
                    })
                })(),
                code::MAX_DATA => (|| {
                    let channel = get_u8(b)?;
                    let max = varint::get(b)?;
                    Some(RawFrame::MaxData { channel, max })
                })(),
                code::DATAGRAM => (|| {
                    let len = varint::get(b)?;
                    Some(RawFrame::Datagram(get_bytes(b, len)?))
                })(),
                code::PING => Some(RawFrame::Ping),
                code::REFUSED => (|| {
                    let channel = get_u8(b)?;
                    let offset = varint::get(b)?;
                    let size = varint::get(b)?;
                    let max = varint::get(b)?;
                    Some(RawFrame::Refused {
                        channel,
                        offset,
                        size,
                        max,
                    })
                })(),
                _ => None,
            };
            return Some(match frame {
                Some(f) => Ok(f),
                None => {
                    self.buf = &[];
                    Err(DecodeError::Malformed)
                }
            });
        }
    }
}

/// Iterates over the frames of a `Data` packet body (after the packet number).
pub struct Frames<'a> {
    raw: RawFrames<'a>,
}

impl<'a> Frames<'a> {
    /// Frames of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Frames {
            raw: RawFrames::new(buf),
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.raw.next().map(|r| r.map(RawFrame::into_frame))
    }
}

/// Copies `data` into a fresh `Bytes` (payloads never keep a whole receive buffer alive).
pub fn owned(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(data)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn varint_round_trip() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut out = Vec::new();
            varint::put(&mut out, v);
            assert_eq!(out.len(), varint::len(v));
            let mut s = &out[..];
            assert_eq!(varint::get(&mut s), Some(v));
            assert!(s.is_empty());
            let (a, n) = varint::to_array(v);
            assert_eq!(&a[..n], &out[..]);
        }
        let mut over: &[u8] = &[0xff; 11];
        assert_eq!(varint::get(&mut over), None);
    }

    #[test]
    fn frames_round_trip() {
        let frames = vec![
            Frame::Ack(AckFrame {
                delay_us: 17,
                ranges: vec![(10, 12), (5, 7), (0, 2)],
            }),
            Frame::Stream {
                channel: 1,
                offset: 99_999,
                data: b"hello",
            },
            Frame::MaxData {
                channel: 2,
                max: 1 << 40,
            },
            Frame::Datagram(b"x"),
            Frame::Ping,
            Frame::Refused {
                channel: 0,
                offset: 5,
                size: 6,
                max: 7,
            },
        ];
        let mut out = Vec::new();
        for f in &frames {
            f.encode(&mut out);
        }
        let back: Vec<_> = Frames::new(&out).collect::<Result<_, _>>().unwrap();
        assert_eq!(back, frames);
    }

    #[test]
    fn ack_length_and_lazy_ranges() {
        for ranges in [
            vec![],
            vec![(3u64, 3u64)],
            vec![(10, 12), (5, 7), (0, 2)],
            vec![(1 << 40, (1 << 40) + 5), (200, 300), (0, 0)],
        ] {
            let mut out = Vec::new();
            out.push(code::ACK);
            encode_ack_ranges(1234, ranges.iter().copied(), &mut out);
            assert_eq!(out.len(), ack_frame_len(1234, ranges.iter().copied()));
            let f = RawFrames::new(&out).next().unwrap();
            if ranges.is_empty() {
                // An empty ACK is never sent, and is not a valid frame.
                assert!(f.is_err());
                continue;
            }
            if let Ok(RawFrame::Ack(a)) = f {
                assert_eq!(a.ranges().collect::<Vec<_>>(), ranges);
                assert_eq!(a.largest(), ranges[0].1);
                assert_eq!(a.delay_us, 1234);
            } else {
                panic!("not an ack: {f:?}");
            }
        }
        // More ranges than MAX_ACK_RANGES: the extra ones are read past, not returned.
        let many: Vec<(u64, u64)> = (0..100u64).rev().map(|i| (i * 3, i * 3)).collect();
        let mut out = vec![code::ACK];
        encode_ack_ranges(0, many.iter().copied(), &mut out);
        out.push(code::PING);
        let frames: Vec<_> = RawFrames::new(&out).collect::<Result<_, _>>().unwrap();
        assert_eq!(frames.len(), 2);
        if let RawFrame::Ack(a) = frames[0] {
            assert_eq!(a.ranges().count(), 1 + MAX_ACK_RANGES);
        }
    }

    #[test]
    fn header_round_trip_and_foreign() {
        let h = Header {
            version: WIRE_VERSION,
            kind: Kind::Data,
            flags: 0,
            cluster: 0xdead_beef,
            session: 42,
        };
        let mut out = Vec::new();
        h.encode(&mut out);
        out.push(7);
        let (back, rest) = Header::decode(&out).unwrap();
        assert_eq!(back, h);
        assert_eq!(rest, &[7]);
        assert_eq!(
            Header::decode(b"GET / HTTP/1.1\r\n\r\n"),
            Err(HeaderError::Decode(DecodeError::Foreign))
        );
    }

    #[test]
    fn truncated_frames_are_malformed() {
        let mut out = Vec::new();
        Frame::Stream {
            channel: 0,
            offset: 0,
            data: b"abcdef",
        }
        .encode(&mut out);
        for cut in 1..out.len() {
            let r: Result<Vec<_>, _> = Frames::new(&out[..cut]).collect();
            assert!(r.is_err(), "cut at {cut}");
        }
    }
}
