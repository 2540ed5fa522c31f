//! Packets sent and not yet acknowledged or declared lost, indexed by packet number.
//!
//! Packet numbers only grow, and packets leave roughly in the order they were sent, so a ring
//! of slots starting at the oldest outstanding packet number replaces an ordered map: insert,
//! lookup and removal are O(1) and nothing is allocated per packet once the ring has grown.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Instant;

/// Stream bytes a packet carried: `(channel, offset, len)`. The first range is stored inline
/// (a packet almost always carries one), further ones spill to a vector.
#[derive(Debug, Default)]
pub(super) struct StreamRanges {
    first: Option<(u8, u64, u64)>,
    more: Vec<(u8, u64, u64)>,
}

impl StreamRanges {
    /// Appends a range.
    pub(super) fn push(&mut self, r: (u8, u64, u64)) {
        if self.first.is_none() {
            self.first = Some(r);
        } else {
            self.more.push(r);
        }
    }

    /// The ranges, in the order pushed.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u8, u64, u64)> + '_ {
        self.first.iter().copied().chain(self.more.iter().copied())
    }
}

/// What the sender remembers about a packet until it is acknowledged or lost.
#[derive(Debug)]
pub(super) struct SentPacket {
    pub(super) time: Instant,
    pub(super) size: usize,
    pub(super) stream: StreamRanges,
    pub(super) max_data: Vec<u8>,
    pub(super) refused: Vec<(u8, u64, u64, u64)>,
}

/// The outstanding packets of a session.
#[derive(Debug, Default)]
pub(super) struct SentPackets {
    /// Packet number of `slots[0]`.
    base: u64,
    slots: VecDeque<Option<SentPacket>>,
    len: usize,
}

impl SentPackets {
    /// Whether nothing is outstanding.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records packet `pn`, which must be above every packet number recorded before.
    pub(super) fn insert(&mut self, pn: u64, p: SentPacket) {
        if self.slots.is_empty() {
            self.base = pn;
        }
        let end = self.base + self.slots.len() as u64;
        if pn < end {
            // Not expected (numbers only grow); keep the packet anyway if its slot is free.
            if let Some(slot) = pn
                .checked_sub(self.base)
                .and_then(|i| self.slots.get_mut(i as usize))
                && slot.is_none()
            {
                *slot = Some(p);
                self.len += 1;
            }
            return;
        }
        for _ in end..pn {
            self.slots.push_back(None);
        }
        self.slots.push_back(Some(p));
        self.len += 1;
    }

    /// Removes packet `pn` if it is outstanding.
    pub(super) fn remove(&mut self, pn: u64) -> Option<SentPacket> {
        let i = usize::try_from(pn.checked_sub(self.base)?).ok()?;
        let p = self.slots.get_mut(i)?.take()?;
        self.len -= 1;
        self.trim();
        Some(p)
    }

    /// Drops empty slots at the front (and everything once nothing is outstanding).
    fn trim(&mut self) {
        if self.len == 0 {
            self.base += self.slots.len() as u64;
            self.slots.clear();
            return;
        }
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    /// The packet numbers in `lo..hi` that may be outstanding (clipped to what is recorded).
    pub(super) fn span(&self, lo: u64, hi: u64) -> Range<u64> {
        let end = self.base + self.slots.len() as u64;
        let lo = lo.max(self.base);
        let hi = hi.min(end);
        lo..hi.max(lo)
    }

    /// The packet `pn`, if outstanding.
    pub(super) fn get(&self, pn: u64) -> Option<&SentPacket> {
        let i = usize::try_from(pn.checked_sub(self.base)?).ok()?;
        self.slots.get(i)?.as_ref()
    }

    /// The newest outstanding packet number.
    pub(super) fn newest(&self) -> Option<u64> {
        let i = self.slots.iter().rposition(Option::is_some)?;
        Some(self.base + i as u64)
    }

    /// Removes and returns every outstanding packet.
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = SentPacket> {
        self.base += self.slots.len() as u64;
        self.len = 0;
        std::mem::take(&mut self.slots).into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pkt(size: usize) -> SentPacket {
        SentPacket {
            time: Instant::now(),
            size,
            stream: StreamRanges::default(),
            max_data: Vec::new(),
            refused: Vec::new(),
        }
    }

    #[test]
    fn ring_insert_remove_and_gaps() {
        let mut s = SentPackets::default();
        s.insert(5, pkt(5));
        s.insert(6, pkt(6));
        s.insert(9, pkt(9)); // 7 and 8 were not ack-eliciting
        assert_eq!(s.span(0, 101), 5..10);
        assert_eq!(s.span(7, 9), 7..9);
        assert_eq!(s.span(0, 3), 5..5);
        assert!(s.get(7).is_none());
        let below9: Vec<u64> = s.span(0, 9).filter(|&pn| s.get(pn).is_some()).collect();
        assert_eq!(below9, vec![5, 6]);
        assert_eq!(s.remove(6).unwrap().size, 6);
        assert!(s.remove(6).is_none());
        assert!(s.remove(4).is_none());
        assert_eq!(s.remove(5).unwrap().size, 5);
        // The front is trimmed to the oldest outstanding packet.
        assert_eq!(s.span(0, 101), 9..10);
        assert_eq!(s.remove(9).unwrap().size, 9);
        assert!(s.is_empty());
        s.insert(12, pkt(12));
        assert_eq!(s.span(0, u64::MAX), 12..13);
        assert_eq!(s.take_all().count(), 1);
        assert!(s.is_empty());
        s.insert(13, pkt(13));
        assert_eq!(s.span(0, u64::MAX), 13..14);
    }
}
