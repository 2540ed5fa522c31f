//! Frames inside `Data` packets: encoding, and decoding that borrows from the packet.

use bytes::Bytes;

use super::{DecodeError, get_bytes, get_u8, varint};

/// Frame type codes inside `Data` packets.
pub(super) mod code {
    pub(crate) const PADDING: u8 = 0;
    pub(crate) const ACK: u8 = 1;
    pub(crate) const STREAM: u8 = 2;
    pub(crate) const MAX_DATA: u8 = 3;
    pub(crate) const DATAGRAM: u8 = 4;
    pub(crate) const PING: u8 = 5;
    pub(crate) const REFUSED: u8 = 6;
}

/// A frame inside a `Data` packet, borrowed from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// Acknowledges packet-number ranges; `ranges` are `(start, end_inclusive)` descending.
    /// (Built by tests: the sender writes ACKs with [`encode_ack_frame`] without a `Vec`.)
    #[cfg_attr(not(test), allow(dead_code))]
    Ack(AckFrame),
    /// Bytes of a channel's reliable stream at `offset`. (Built by tests: the sender writes
    /// the header with [`encode_stream_header`] and copies the bytes after it.)
    #[cfg_attr(not(test), allow(dead_code))]
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
pub(crate) struct AckFrame {
    /// Microseconds the receiver held the largest packet before acknowledging it.
    pub delay_us: u64,
    /// `(first, last)` inclusive packet-number ranges, descending and disjoint.
    pub ranges: Vec<(u64, u64)>,
}

/// Bound on ranges decoded from one ACK frame (a peer cannot make us allocate more).
pub(crate) const MAX_ACK_RANGES: usize = 64;

impl Frame<'_> {
    /// Appends the frame's encoding to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
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
pub(crate) fn encode_stream_header(channel: u8, offset: u64, len: usize, out: &mut Vec<u8>) {
    out.push(code::STREAM);
    out.push(channel);
    varint::put(out, offset);
    varint::put(out, len as u64);
}

/// Encoded size of a DATAGRAM frame carrying `len` bytes.
pub(crate) fn datagram_frame_len(len: usize) -> usize {
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

    #[cfg(test)]
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

#[cfg(test)]
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

/// Iterates over the frames of a `Data` packet body (after the packet number), decoded into
/// owned [`Frame`]s (the tests' decoder; the receive path uses [`RawFrames`]).
#[cfg(test)]
pub(crate) struct Frames<'a> {
    raw: RawFrames<'a>,
}

#[cfg(test)]
impl<'a> Frames<'a> {
    /// Frames of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Frames {
            raw: RawFrames::new(buf),
        }
    }
}

#[cfg(test)]
impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.raw.next().map(|r| r.map(RawFrame::into_frame))
    }
}

/// Copies `data` into a fresh `Bytes` (payloads never keep a whole receive buffer alive).
pub(crate) fn owned(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(data)
}
