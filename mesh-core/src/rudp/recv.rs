//! The receiving half of a reliable channel: reorders stream bytes, splits them into messages,
//! and grants flow-control credit as the application consumes them.
//!
//! Each channel is a byte stream of `varint(len) ++ payload` messages. The peer may only send
//! bytes below the credit limit we announced (`max_data`), so the bytes held here never exceed
//! the credit, and the credit is reserved from the endpoint-wide [`Budget`]: memory is bounded
//! per peer and in total. A message larger than the channel window reserves its whole size
//! before it is accepted past the window, so a message that has started can always finish.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::msgbuf::MessageBuf;
use std::net::IpAddr;

use super::hash::FastMap;
use super::ranges::RangeSet;
use super::wire::varint;

/// Memory that flow-control credit is reserved from, shared by every session of an endpoint.
///
/// Reservations for large messages (credit above a session's initial windows) are also
/// counted per IP address of the peer and capped there: peers on one box that announce large
/// messages and never finish them cannot hold the whole budget.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    limit: usize,
    used: usize,
    ip_limit: usize,
    by_ip: FastMap<IpAddr, usize>,
}

impl Budget {
    /// A budget of `limit` bytes, of which peers at one IP address may reserve at most
    /// `ip_limit` for large messages.
    pub(crate) fn new(limit: usize, ip_limit: usize) -> Self {
        Budget {
            limit,
            used: 0,
            ip_limit,
            by_ip: FastMap::default(),
        }
    }
    /// Reserves `n` bytes for a large message from a peer at `ip`, within both limits.
    pub(crate) fn try_reserve_for(&mut self, ip: IpAddr, n: usize) -> bool {
        let held = self.by_ip.get(&ip).copied().unwrap_or(0);
        if held + n > self.ip_limit || !self.try_reserve(n) {
            return false;
        }
        self.by_ip.insert(ip, held + n);
        true
    }
    /// Returns `n` bytes reserved with [`try_reserve_for`](Self::try_reserve_for).
    pub(crate) fn release_for(&mut self, ip: IpAddr, n: usize) {
        self.release(n);
        if let Some(held) = self.by_ip.get_mut(&ip) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }
    /// Reserves `n` bytes if they are available.
    pub(crate) fn try_reserve(&mut self, n: usize) -> bool {
        if self.limit - self.used >= n {
            self.used += n;
            true
        } else {
            false
        }
    }
    /// Returns `n` bytes.
    pub(crate) fn release(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
    }
    /// Bytes reserved now.
    pub(crate) fn used(&self) -> usize {
        self.used
    }
}

/// What parsing the stream produced.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// A whole message; `end` is the stream offset just past it.
    Message {
        /// The payload.
        data: Bytes,
        /// Stream offset just past the message.
        end: u64,
    },
    /// A message over the size limit started at `start`; its bytes are being discarded.
    Refused {
        /// Stream offset where the message (its length prefix) starts.
        start: u64,
        /// Announced size.
        size: u64,
    },
}

#[derive(Debug)]
enum Parser {
    Prefix {
        buf: [u8; 10],
        n: usize,
        start: u64,
    },
    /// A message's bytes; `start` is the stream offset of its first byte.
    Body {
        buf: MessageBuf,
        start: u64,
    },
    Skip {
        remaining: u64,
    },
}

/// Why a stream frame was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamReject {
    /// Bytes beyond the credit we granted: the peer broke flow control.
    FlowControl,
    /// A length prefix longer than 10 bytes or over `u64`.
    BadPrefix,
    /// More out-of-order pieces held than the channel allows.
    TooFragmented,
}

/// Receiving state of one channel.
#[derive(Debug)]
pub(crate) struct RecvChannel {
    head: u64,
    segments: BTreeMap<u64, Bytes>,
    received: RangeSet,
    parser: Parser,
    consumed: u64,
    announced: u64,
    window: u64,
    reserved: u64,
    /// End offset of the message the reservation covers.
    reserve_end: u64,
    /// Bytes of the current message still needing a reservation (0 = none pending).
    wanted: u64,
    /// End offset of the message waiting for a reservation.
    pending_end: u64,
    max_message: u64,
    /// Most separate out-of-order pieces held at once.
    max_pieces: usize,
    buffered: usize,
    announce_needed: bool,
}

impl RecvChannel {
    /// A channel whose initial credit `window` is already reserved by the caller, holding
    /// at most `max_pieces` separate out-of-order pieces.
    pub(crate) fn new(window: u64, max_message: u64, max_pieces: usize) -> Self {
        RecvChannel {
            head: 0,
            segments: BTreeMap::new(),
            received: RangeSet::new(),
            parser: Parser::Prefix {
                buf: [0; 10],
                n: 0,
                start: 0,
            },
            consumed: 0,
            announced: window,
            window,
            reserved: 0,
            reserve_end: 0,
            wanted: 0,
            pending_end: 0,
            max_message,
            max_pieces,
            buffered: 0,
            announce_needed: false,
        }
    }

    /// Bytes held out of order or in a partial message.
    pub(crate) fn buffered(&self) -> usize {
        match &self.parser {
            Parser::Body { buf, .. } => self.buffered + buf.stored(),
            _ => self.buffered,
        }
    }

    /// Accepts stream bytes at `offset`; complete messages are appended to `out`.
    pub(crate) fn on_stream(
        &mut self,
        offset: u64,
        data: &[u8],
        out: &mut VecDeque<Parsed>,
    ) -> Result<(), StreamReject> {
        let end = offset + data.len() as u64;
        if end > self.announced {
            return Err(StreamReject::FlowControl);
        }
        if end <= self.head {
            return Ok(());
        }
        let skip = self.head.saturating_sub(offset) as usize;
        let (offset, data) = (offset + skip as u64, &data[skip..]);
        if offset == self.head && self.segments.is_empty() {
            self.feed(data, out)?;
        } else {
            // Every piece held apart is bookkeeping a peer could multiply with tiny frames:
            // beyond what losses in a window can make, refuse the packet (it is not
            // acknowledged, so an honest sender resends it once the gaps have closed).
            // (Bytes at the head always pass: they close gaps.)
            if offset > self.head && self.received.len() >= self.max_pieces {
                return Err(StreamReject::TooFragmented);
            }
            for piece in self.received.missing(offset..end) {
                let a = (piece.start - offset) as usize;
                let b = (piece.end - offset) as usize;
                self.received.insert(piece.clone());
                if piece.start == self.head {
                    self.feed(&data[a..b], out)?;
                    continue;
                }
                // Bytes of the message being reassembled go straight to their place; the
                // rest waits aside until the head reaches it.
                let placed = self.place(piece.start, &data[a..b]);
                if placed < b - a {
                    self.buffered += b - a - placed;
                    self.segments.insert(
                        piece.start + placed as u64,
                        Bytes::copy_from_slice(&data[a + placed..b]),
                    );
                }
            }
        }
        while let Some(entry) = self.segments.first_entry() {
            let start = *entry.key();
            if start > self.head {
                break;
            }
            let seg = entry.remove();
            self.buffered -= seg.len();
            let seg_end = start + seg.len() as u64;
            if seg_end > self.head {
                let from = (self.head - start) as usize;
                self.feed(&seg[from..], out)?;
            }
        }
        self.received.remove_below(self.head);
        Ok(())
    }

    /// Writes bytes at stream offset `at` (past the head) into the message being reassembled,
    /// as far as its buffer reaches. Returns how many leading bytes of `data` it took.
    fn place(&mut self, at: u64, data: &[u8]) -> usize {
        let Parser::Body { buf, start } = &mut self.parser else {
            return 0;
        };
        let rel = at - *start;
        let room = (buf.extent() as u64).saturating_sub(rel);
        let n = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if n > 0 {
            buf.place(rel as usize, &data[..n]);
        }
        n
    }

    fn feed(&mut self, mut data: &[u8], out: &mut VecDeque<Parsed>) -> Result<(), StreamReject> {
        while !data.is_empty() {
            // Fast path: a whole small message (prefix and body) in `data`, the parser between
            // messages. The same outcome as the byte-wise path below, with one copy.
            if let Parser::Prefix { n: 0, .. } = self.parser {
                let mut rest = data;
                if let Some(len) = varint::get(&mut rest)
                    && len > 0
                    && len <= self.max_message
                    && len <= self.window
                    && len <= rest.len() as u64
                {
                    let prefix = data.len() - rest.len();
                    let len = len as usize;
                    self.head += (prefix + len) as u64;
                    out.push_back(Parsed::Message {
                        data: Bytes::copy_from_slice(&rest[..len]),
                        end: self.head,
                    });
                    if let Parser::Prefix { start, .. } = &mut self.parser {
                        *start = self.head;
                    }
                    data = &rest[len..];
                    continue;
                }
            }
            match &mut self.parser {
                Parser::Prefix { buf, n, start } => {
                    let b = data[0];
                    data = &data[1..];
                    self.head += 1;
                    buf[*n] = b;
                    *n += 1;
                    if b & 0x80 != 0 {
                        if *n == 10 {
                            return Err(StreamReject::BadPrefix);
                        }
                        continue;
                    }
                    let mut slice = &buf[..*n];
                    let len = varint::get(&mut slice).ok_or(StreamReject::BadPrefix)?;
                    let start = *start;
                    if len > self.max_message {
                        out.push_back(Parsed::Refused { start, size: len });
                        self.parser = Parser::Skip { remaining: len };
                        self.wanted = 0;
                    } else if len == 0 {
                        out.push_back(Parsed::Message {
                            data: Bytes::new(),
                            end: self.head,
                        });
                        self.parser = Parser::Prefix {
                            buf: [0; 10],
                            n: 0,
                            start: self.head,
                        };
                    } else {
                        let msg_end = self.head + len;
                        let limit = self.consumed + self.window + self.reserved;
                        // Only a message larger than the window reserves memory of its own;
                        // smaller ones wait for the application to consume.
                        if len > self.window && msg_end > limit {
                            self.wanted = msg_end - limit;
                            self.pending_end = msg_end;
                        }
                        let cap = (len as usize).min(self.window as usize);
                        self.parser = Parser::Body {
                            buf: MessageBuf::new(len as usize, cap),
                            start: self.head,
                        };
                    }
                }
                Parser::Body { buf, .. } => {
                    let (take, advanced) = buf.write_next(data);
                    data = &data[take..];
                    self.head += advanced as u64;
                    if buf.is_complete() {
                        let next = Parser::Prefix {
                            buf: [0; 10],
                            n: 0,
                            start: self.head,
                        };
                        if let Parser::Body { buf, .. } = std::mem::replace(&mut self.parser, next)
                        {
                            out.push_back(Parsed::Message {
                                data: buf.freeze(),
                                end: self.head,
                            });
                        }
                    }
                }
                Parser::Skip { remaining } => {
                    let take = (*remaining).min(data.len() as u64);
                    data = &data[take as usize..];
                    *remaining -= take;
                    self.head += take;
                    // Discarded bytes are consumed at once.
                    self.consumed = self.consumed.max(self.head);
                    self.announce_needed = true;
                    if *remaining == 0 {
                        self.parser = Parser::Prefix {
                            buf: [0; 10],
                            n: 0,
                            start: self.head,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether a large message this channel holds a reservation for is still arriving
    /// (its bytes are not all in): what a sender that stops halfway keeps reserved.
    pub(crate) fn receiving_reserved(&self) -> bool {
        self.reserved > 0 && self.head < self.reserve_end
    }

    /// Bytes received in order so far.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// Bytes of a large message still waiting for a reservation.
    pub(crate) fn wanted(&self) -> u64 {
        self.wanted
    }

    /// The reservation for the current large message (all of [`wanted`](Self::wanted)) was
    /// granted.
    pub(crate) fn grant(&mut self) {
        self.reserved += self.wanted;
        self.wanted = 0;
        self.reserve_end = self.reserve_end.max(self.pending_end);
        if let Parser::Body { buf, .. } = &mut self.parser {
            buf.grow();
        }
        self.announce_needed = true;
    }

    /// The application consumed the message ending at `end`. Returns the reserved bytes to
    /// give back to the budget. The credit limit never goes down.
    pub(crate) fn consume(&mut self, end: u64) -> u64 {
        self.consumed = self.consumed.max(end);
        let base = self.consumed + self.window;
        let target = self.reserve_end.saturating_sub(base);
        let released = self.reserved.saturating_sub(target);
        self.reserved -= released;
        if self.wanted > 0 {
            self.wanted = self.pending_end.saturating_sub(base + self.reserved);
            if self.wanted == 0 {
                self.reserve_end = self.reserve_end.max(self.pending_end);
            }
        }
        if base + self.reserved >= self.announced + self.window / 4 {
            self.announce_needed = true;
        }
        released
    }

    /// A new credit limit to announce, if one is due.
    pub(crate) fn poll_announce(&mut self) -> Option<u64> {
        if !self.announce_needed {
            return None;
        }
        self.announce_needed = false;
        let limit = self.consumed + self.window + self.reserved;
        if limit >= self.announced {
            self.announced = limit;
            return Some(limit);
        }
        None
    }

    /// Whether a credit update is waiting to be sent.
    pub(crate) fn announce_pending(&self) -> bool {
        self.announce_needed
    }

    /// Forces the current limit to be announced again (the packet carrying it was lost).
    pub(crate) fn reannounce(&mut self) {
        self.announce_needed = true;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn messages(out: VecDeque<Parsed>) -> Vec<Bytes> {
        out.into_iter()
            .filter_map(|p| match p {
                Parsed::Message { data, .. } => Some(data),
                Parsed::Refused { .. } => None,
            })
            .collect()
    }

    fn frame(msgs: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            varint::put(&mut out, m.len() as u64);
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn in_order_out_of_order_and_duplicates() {
        let stream = frame(&[b"hello", b"", b"world!"]);
        let mut ch = RecvChannel::new(1024, 100, 64);
        let mut out = VecDeque::new();
        ch.on_stream(4, &stream[4..9], &mut out).unwrap();
        assert!(out.is_empty());
        ch.on_stream(4, &stream[4..9], &mut out).unwrap();
        ch.on_stream(0, &stream[0..6], &mut out).unwrap();
        ch.on_stream(9, &stream[9..], &mut out).unwrap();
        ch.on_stream(0, &stream, &mut out).unwrap();
        let msgs = messages(out);
        assert_eq!(msgs, vec![&b"hello"[..], b"", b"world!"]);
        assert_eq!(ch.buffered(), 0);
    }

    #[test]
    fn whole_messages_then_a_partial_one_at_every_split_point() {
        let msgs: [&[u8]; 5] = [b"one", b"two!", b"three", b"", b"a longer fifth one"];
        let stream = frame(&msgs);
        for cut in 0..=stream.len() {
            let mut ch = RecvChannel::new(1024, 100, 64);
            let mut out = VecDeque::new();
            ch.on_stream(0, &stream[..cut], &mut out).unwrap();
            ch.on_stream(cut as u64, &stream[cut..], &mut out).unwrap();
            assert_eq!(messages(out), msgs.to_vec(), "cut at {cut}");
            assert_eq!(ch.buffered(), 0);
        }
    }

    #[test]
    fn out_of_order_bytes_of_a_message_are_placed_and_counted_once() {
        let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let stream = frame(&[&body, b"next"]);
        let mut ch = RecvChannel::new(8192, 10_000, 64);
        let mut out = VecDeque::new();
        // The prefix and a first piece start the message; then pieces after gaps, one of
        // them twice, and one running past the message into the next.
        ch.on_stream(0, &stream[..100], &mut out).unwrap();
        ch.on_stream(1000, &stream[1000..1500], &mut out).unwrap();
        ch.on_stream(1000, &stream[1000..1500], &mut out).unwrap();
        ch.on_stream(2500, &stream[2500..], &mut out).unwrap();
        assert!(out.is_empty());
        let held = (100 - 2) + 500 + (stream.len() - 2500); // a 2-byte length prefix
        assert_eq!(ch.buffered(), held);
        ch.on_stream(100, &stream[100..1200], &mut out).unwrap();
        assert!(out.is_empty());
        ch.on_stream(1500, &stream[1500..2500], &mut out).unwrap();
        let msgs = messages(out);
        assert_eq!(msgs, vec![&body[..], b"next"]);
        assert_eq!(ch.buffered(), 0);
    }

    #[test]
    fn out_of_order_pieces_are_bounded() {
        let body = vec![7u8; 3000];
        let stream = frame(&[&body]);
        let mut ch = RecvChannel::new(8192, 10_000, 4);
        let mut out = VecDeque::new();
        // Four separate pieces after gaps are held; a fifth is refused (its packet is not
        // acknowledged, so an honest sender resends it).
        for k in 1..=4 {
            ch.on_stream(
                k * 100,
                &stream[k as usize * 100..k as usize * 100 + 10],
                &mut out,
            )
            .unwrap();
        }
        assert_eq!(
            ch.on_stream(900, &stream[900..910], &mut out),
            Err(StreamReject::TooFragmented)
        );
        // Once the gaps close, the rest is accepted and the message completes.
        ch.on_stream(0, &stream[..1000], &mut out).unwrap();
        ch.on_stream(1000, &stream[1000..], &mut out).unwrap();
        assert_eq!(messages(out), vec![&body[..]]);
        assert_eq!(ch.buffered(), 0);
    }

    proptest::proptest! {
        /// Whatever the cut into pieces, their order and their duplicates, the messages come
        /// out whole, once and in order, and nothing stays held.
        #[test]
        fn any_arrival_order_reassembles(
            sizes in proptest::collection::vec(0usize..4000, 1..6),
            cuts in proptest::collection::vec(0usize..20_000, 0..40),
            order in proptest::collection::vec(proptest::prelude::any::<u32>(), 0..80),
            dups in proptest::collection::vec(0usize..80, 0..10),
        ) {
            let msgs: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, n)| (0..*n).map(|k| (k * 7 + i) as u8).collect())
                .collect();
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            let stream = frame(&refs);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            points.extend([0, stream.len()]);
            points.sort_unstable();
            points.dedup();
            let mut pieces: Vec<(usize, usize)> =
                points.windows(2).map(|w| (w[0], w[1])).collect();
            for d in &dups {
                if let Some(p) = pieces.get(d % pieces.len().max(1)).copied() {
                    pieces.push(p);
                }
            }
            // A seeded shuffle: sort by the random keys.
            let mut keyed: Vec<(u32, (usize, usize))> = pieces
                .into_iter()
                .enumerate()
                .map(|(i, p)| (order.get(i).copied().unwrap_or(i as u32), p))
                .collect();
            keyed.sort_by_key(|(k, _)| *k);
            let mut ch = RecvChannel::new(1 << 20, 1 << 20, 1 << 16);
            let mut out = VecDeque::new();
            for (_, (a, b)) in keyed {
                ch.on_stream(a as u64, &stream[a..b], &mut out).unwrap();
            }
            let got = messages(out);
            proptest::prop_assert_eq!(got.len(), msgs.len());
            for (g, m) in got.iter().zip(&msgs) {
                proptest::prop_assert_eq!(&g[..], &m[..]);
            }
            proptest::prop_assert_eq!(ch.buffered(), 0);
        }
    }

    #[test]
    fn flow_control_and_oversize() {
        let mut ch = RecvChannel::new(8, 4, 64);
        let mut out = VecDeque::new();
        assert_eq!(
            ch.on_stream(0, &[0u8; 9], &mut out),
            Err(StreamReject::FlowControl)
        );
        ch.on_stream(0, &frame(&[b"toolong"])[..8], &mut out)
            .unwrap();
        assert!(matches!(out[0], Parsed::Refused { start: 0, size: 7 }));
        assert_eq!(ch.poll_announce(), Some(16));
    }
}
