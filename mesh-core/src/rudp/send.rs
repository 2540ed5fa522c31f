//! The sending half of a reliable channel: queued messages as a byte stream, what was sent,
//! lost and acknowledged, and which messages are fully acknowledged.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::Bytes;

use super::ranges::RangeSet;
use super::wire::varint;

/// Identifies one reliable message sent by an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

#[derive(Debug)]
struct PendingMsg {
    id: MessageId,
    start: u64,
    end: u64,
    refused: Option<(u64, u64)>,
}

/// What became of a message once its last byte was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The peer holds the whole message.
    Delivered(MessageId),
    /// The peer refused it as too large (`size`, its `max`).
    Refused(MessageId, u64, u64),
}

/// A piece of the channel's byte stream: a message's length prefix (held inline) or its
/// payload (the caller's `Bytes`, not copied).
#[derive(Debug)]
enum Chunk {
    Prefix([u8; 10], u8),
    Data(Bytes),
}

impl Chunk {
    fn len(&self) -> usize {
        match self {
            Chunk::Prefix(_, n) => usize::from(*n),
            Chunk::Data(b) => b.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Prefix(b, n) => &b[..usize::from(*n)],
            Chunk::Data(b) => b,
        }
    }
}

/// Sending state of one channel.
#[derive(Debug, Default)]
pub(crate) struct SendChannel {
    write: u64,
    chunks: VecDeque<(u64, Chunk)>,
    next_new: u64,
    lost: RangeSet,
    acked: RangeSet,
    acked_prefix: u64,
    peer_max: u64,
    msgs: VecDeque<PendingMsg>,
}

impl SendChannel {
    /// A channel the peer initially lets us send `initial_credit` bytes on.
    pub(crate) fn new(initial_credit: u64) -> Self {
        SendChannel {
            peer_max: initial_credit,
            ..Default::default()
        }
    }

    /// Bytes queued and not yet acknowledged.
    pub(crate) fn unacked_bytes(&self) -> u64 {
        self.write - self.acked_prefix
    }

    /// Appends a message.
    pub(crate) fn push(&mut self, id: MessageId, payload: Bytes) {
        let start = self.write;
        let (prefix, n) = varint::to_array(payload.len() as u64);
        self.append(Chunk::Prefix(prefix, n as u8));
        self.append(Chunk::Data(payload));
        self.msgs.push_back(PendingMsg {
            id,
            start,
            end: self.write,
            refused: None,
        });
    }

    fn append(&mut self, b: Chunk) {
        let len = b.len() as u64;
        if len > 0 {
            self.chunks.push_back((self.write, b));
            self.write += len;
        }
    }

    /// Whether anything can be sent now (retransmissions or new bytes within credit).
    pub(crate) fn has_sendable(&self) -> bool {
        !self.lost.is_empty() || self.next_new < self.write.min(self.peer_max)
    }

    /// Whether new bytes wait for credit from the peer.
    pub(crate) fn is_blocked(&self) -> bool {
        self.lost.is_empty() && self.next_new < self.write && self.next_new >= self.peer_max
    }

    /// Whether anything is queued but not acknowledged.
    pub(crate) fn is_busy(&self) -> bool {
        self.acked_prefix < self.write
    }

    /// The next range to send, at most `max_len` bytes: a lost range first, then new bytes.
    pub(crate) fn next_range(&mut self, max_len: usize) -> Option<Range<u64>> {
        if max_len == 0 {
            return None;
        }
        while let Some(r) = self.lost.first() {
            let end = r.end.min(r.start + max_len as u64);
            self.lost.remove(r.start..end);
            // Skip parts acknowledged meanwhile.
            let missing = self.acked.missing(r.start..end);
            if let Some(first) = missing.first() {
                let first = first.clone();
                // Put back whatever we do not send now.
                for m in missing.iter().skip(1) {
                    self.lost.insert(m.clone());
                }
                if first.start >= self.acked_prefix {
                    return Some(first);
                }
            }
        }
        let limit = self.write.min(self.peer_max);
        if self.next_new < limit {
            let start = self.next_new;
            let end = limit.min(start + max_len as u64);
            self.next_new = end;
            return Some(start..end);
        }
        None
    }

    /// Copies the bytes of `r` into `out`.
    pub(crate) fn copy_range(&self, r: Range<u64>, out: &mut Vec<u8>) {
        let idx = self
            .chunks
            .partition_point(|(off, b)| off + b.len() as u64 <= r.start);
        let mut pos = r.start;
        for (off, b) in self.chunks.range(idx..) {
            if pos >= r.end {
                break;
            }
            let from = (pos - off) as usize;
            let to = ((r.end - off) as usize).min(b.len());
            out.extend_from_slice(&b.bytes()[from..to]);
            pos = off + to as u64;
        }
    }

    /// Credit update from the peer.
    pub(crate) fn on_max_data(&mut self, max: u64) {
        self.peer_max = self.peer_max.max(max);
    }

    /// The peer refused the message starting at `start`.
    pub(crate) fn on_refused(&mut self, start: u64, size: u64, max: u64) {
        if let Some(m) = self.msgs.iter_mut().find(|m| m.start == start) {
            m.refused = Some((size, max));
        }
    }

    /// Bytes `r` were acknowledged; finished messages are appended to `done`.
    pub(crate) fn on_acked(&mut self, r: Range<u64>, done: &mut Vec<Outcome>) {
        if r.end <= self.acked_prefix {
            return;
        }
        if r.start > self.acked_prefix {
            // A hole remains below: remember the range until the hole is filled.
            self.acked.insert(r);
            return;
        }
        // The acknowledged prefix grows (the common, in-order case): absorb the ranges
        // acknowledged earlier that now touch it.
        let mut prefix = r.end;
        while let Some(first) = self.acked.first()
            && first.start <= prefix
        {
            prefix = prefix.max(first.end);
            self.acked.pop_min();
        }
        self.acked_prefix = prefix;
        if !self.lost.is_empty() {
            self.lost.remove_below(prefix);
        }
        while let Some((off, b)) = self.chunks.front() {
            if off + b.len() as u64 <= self.acked_prefix {
                self.chunks.pop_front();
            } else {
                break;
            }
        }
        while let Some(m) = self.msgs.front() {
            if m.end > self.acked_prefix {
                break;
            }
            let outcome = match m.refused {
                Some((size, max)) => Outcome::Refused(m.id, size, max),
                None => Outcome::Delivered(m.id),
            };
            done.push(outcome);
            self.msgs.pop_front();
        }
    }

    /// Bytes `r` were declared lost: send them again unless acknowledged.
    pub(crate) fn on_lost(&mut self, r: Range<u64>) {
        let start = r.start.max(self.acked_prefix);
        for m in self.acked.missing(start..r.end.max(start)) {
            self.lost.insert(m);
        }
    }

    /// Every message not yet fully acknowledged, in order (for failing them).
    pub(crate) fn drain_pending(&mut self) -> impl Iterator<Item = MessageId> + '_ {
        self.chunks.clear();
        self.msgs.drain(..).map(|m| m.id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn send_ack_and_retransmit() {
        let mut ch = SendChannel::new(1 << 20);
        ch.push(MessageId(1), Bytes::from_static(b"abc"));
        ch.push(MessageId(2), Bytes::from(vec![7u8; 3000]));
        let total = ch.unacked_bytes();
        assert_eq!(total, 4 + 2 + 3000);
        let a = ch.next_range(1000).unwrap();
        let b = ch.next_range(5000).unwrap();
        assert_eq!((a.clone(), b.clone()), (0..1000, 1000..total));
        let mut buf = Vec::new();
        ch.copy_range(0..6, &mut buf);
        assert_eq!(&buf, &[3, b'a', b'b', b'c', 0xb8, 0x17]);
        let mut done = Vec::new();
        ch.on_acked(b.clone(), &mut done);
        assert!(done.is_empty());
        ch.on_lost(a.clone());
        assert_eq!(ch.next_range(400), Some(0..400));
        ch.on_acked(0..400, &mut done);
        assert_eq!(done, vec![Outcome::Delivered(MessageId(1))]);
        assert_eq!(ch.next_range(5000), Some(400..1000));
        ch.on_acked(400..1000, &mut done);
        assert_eq!(done.len(), 2);
        assert!(!ch.is_busy());
    }

    #[test]
    fn credit_blocks() {
        let mut ch = SendChannel::new(10);
        ch.push(MessageId(1), Bytes::from(vec![0u8; 20]));
        assert_eq!(ch.next_range(100), Some(0..10));
        assert!(ch.is_blocked());
        assert_eq!(ch.next_range(100), None);
        ch.on_max_data(100);
        assert_eq!(ch.next_range(100), Some(10..21));
    }
}
