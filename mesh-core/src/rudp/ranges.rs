//! A set of disjoint half-open `u64` ranges: received packet numbers, received or acknowledged
//! stream offsets.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges, merged on insert.
#[derive(Debug, Clone, Default)]
pub(crate) struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Number of disjoint ranges.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `v` is in the set.
    pub(crate) fn contains(&self, v: u64) -> bool {
        self.map
            .range(..=v)
            .next_back()
            .is_some_and(|(_, &end)| v < end)
    }

    /// The pieces of `r` that are not yet in the set, in ascending order.
    pub(crate) fn missing(&self, r: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut cur = r.start;
        if let Some((_, &end)) = self.map.range(..=cur).next_back() {
            cur = cur.max(end);
        }
        if cur >= r.end {
            return out;
        }
        for (&s, &e) in self.map.range(cur..r.end) {
            if s > cur {
                out.push(cur..s.min(r.end));
            }
            cur = cur.max(e);
            if cur >= r.end {
                break;
            }
        }
        if cur < r.end {
            out.push(cur..r.end);
        }
        out
    }

    /// Adds `r`, merging with overlapping and adjacent ranges. Returns whether anything was new.
    pub(crate) fn insert(&mut self, r: Range<u64>) -> bool {
        if r.start >= r.end {
            return false;
        }
        // Fast path: the range extends the last one (in-order packet numbers, stream bytes).
        if let Some(mut last) = self.map.last_entry()
            && *last.key() <= r.start
            && *last.get() >= r.start
        {
            if *last.get() >= r.end {
                return false;
            }
            *last.get_mut() = r.end;
            return true;
        }
        let (mut start, mut end) = (r.start, r.end);
        if let Some((&s, &e)) = self.map.range(..=start).next_back()
            && e >= start
        {
            if e >= end {
                return false;
            }
            start = s;
            end = end.max(e);
        }
        // Ranges starting inside `start..=end` (other than at `start`) merge into this one.
        while let Some((&s, &e)) = self.map.range(start.saturating_add(1)..=end).next() {
            self.map.remove(&s);
            end = end.max(e);
        }
        // Extends the range starting at `start` in place, or adds one.
        self.map.insert(start, end);
        true
    }

    /// Removes every value below `v`.
    pub(crate) fn remove_below(&mut self, v: u64) {
        while let Some((&s, &e)) = self.map.first_key_value() {
            if e <= v {
                self.map.remove(&s);
            } else {
                if s < v {
                    self.map.remove(&s);
                    self.map.insert(v, e);
                }
                break;
            }
        }
    }

    /// Removes `r` from the set.
    pub(crate) fn remove(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let mut touched: Vec<(u64, u64)> = Vec::new();
        if let Some((&s, &e)) = self.map.range(..r.start).next_back()
            && e > r.start
        {
            touched.push((s, e));
        }
        touched.extend(self.map.range(r.start..r.end).map(|(&s, &e)| (s, e)));
        for (s, e) in touched {
            self.map.remove(&s);
            if s < r.start {
                self.map.insert(s, r.start);
            }
            if e > r.end {
                self.map.insert(r.end, e);
            }
        }
    }

    /// Drops the lowest range (used to bound memory).
    pub(crate) fn pop_min(&mut self) -> Option<Range<u64>> {
        self.map.pop_first().map(|(s, e)| s..e)
    }

    /// The lowest range.
    pub(crate) fn first(&self) -> Option<Range<u64>> {
        self.map.first_key_value().map(|(&s, &e)| s..e)
    }

    /// Ranges in ascending order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = Range<u64>> + Clone + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn insert_merge_missing() {
        let mut s = RangeSet::new();
        assert!(s.insert(5..10));
        assert!(s.insert(20..30));
        assert!(!s.insert(6..9));
        assert_eq!(s.missing(0..40), vec![0..5, 10..20, 30..40]);
        assert!(s.insert(10..20));
        assert_eq!(s.len(), 1);
        assert!(s.contains(29) && !s.contains(30) && !s.contains(4));
        s.remove_below(7);
        assert_eq!(s.first(), Some(7..30));
        s.remove(10..12);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![7..10, 12..30]);
    }

    proptest! {
        #[test]
        fn matches_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..20, 0u8..3), 1..60)) {
            let mut s = RangeSet::new();
            let mut bits = [false; 256];
            for (start, len, op) in ops {
                let r = start..start + len;
                match op {
                    0 => { s.insert(r.clone()); for i in r { bits[i as usize] = true; } }
                    1 => { s.remove(r.clone()); for i in r { bits[i as usize] = false; } }
                    _ => { s.remove_below(start); for b in bits.iter_mut().take(start as usize) { *b = false; } }
                }
                for (i, &b) in bits.iter().enumerate() {
                    prop_assert_eq!(s.contains(i as u64), b);
                }
                let missing: usize = s.missing(0..256).iter().map(|r| (r.end - r.start) as usize).sum();
                prop_assert_eq!(missing, bits.iter().filter(|b| !**b).count());
                let v: Vec<_> = s.iter().collect();
                for w in v.windows(2) { prop_assert!(w[0].end < w[1].start); }
            }
        }
    }
}
