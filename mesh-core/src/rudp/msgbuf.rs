//! The reassembly buffer of one message: bytes are copied once, straight to their place,
//! whether they arrive in order or after a gap.
//!
//! Under loss, every datagram that follows a lost one arrives out of order until the lost one
//! is resent, about one round trip later: with a few percent of loss that is nearly all of a
//! bulk transfer. Writing those bytes into the message at their offset (instead of holding
//! them aside and copying them again once the gap is filled) keeps loss from doubling the
//! receiver's work.

use bytes::Bytes;

use super::ranges::RangeSet;

/// Messages at least this large ask the kernel for huge pages (see [`advise_huge_pages`]).
const HUGE_PAGE_MIN: usize = 4 << 20;

/// A message being reassembled.
#[derive(Debug)]
pub(crate) struct MessageBuf {
    /// Bytes written so far; `buf.len()` is the end of the furthest write (gaps before it
    /// are zeros until their bytes arrive). Its capacity is the writable extent.
    buf: Vec<u8>,
    /// Bytes known contiguous from the start.
    filled: usize,
    /// The message's length.
    len: usize,
    /// Ranges written past `filled` (offsets in the message).
    placed: RangeSet,
    /// Bytes in `placed`.
    placed_bytes: usize,
}

impl MessageBuf {
    /// A buffer for a message of `len` bytes of which the first `extent` may be written now
    /// (the rest once [`grow`](Self::grow) is called).
    pub(crate) fn new(len: usize, extent: usize) -> Self {
        let buf = Vec::with_capacity(extent.min(len));
        advise_huge_pages(&buf);
        MessageBuf {
            buf,
            filled: 0,
            len,
            placed: RangeSet::new(),
            placed_bytes: 0,
        }
    }

    /// Makes the whole message writable.
    pub(crate) fn grow(&mut self) {
        let more = self.len - self.buf.len();
        if self.buf.capacity() - self.buf.len() < more {
            self.buf.reserve_exact(more);
            advise_huge_pages(&self.buf);
        }
    }

    /// Bytes that may be written from the start (the extent).
    pub(crate) fn extent(&self) -> usize {
        self.buf.capacity().min(self.len)
    }

    /// Bytes contiguous from the start.
    #[cfg(test)]
    pub(crate) fn filled(&self) -> usize {
        self.filled
    }

    /// Distinct bytes of the message held (contiguous or placed).
    pub(crate) fn stored(&self) -> usize {
        self.filled + self.placed_bytes
    }

    /// Whether every byte has arrived.
    pub(crate) fn is_complete(&self) -> bool {
        self.filled == self.len
    }

    /// Writes the bytes that continue the contiguous part, up to the message's end. Returns
    /// how many were taken from `data`, and how far the contiguous part advanced in all
    /// (more than taken when bytes placed earlier joined it).
    pub(crate) fn write_next(&mut self, data: &[u8]) -> (usize, usize) {
        let before = self.filled;
        let take = data.len().min(self.len - self.filled);
        self.write_at(self.filled, &data[..take]);
        self.filled += take;
        while let Some(r) = self.placed.first() {
            if r.start > self.filled as u64 {
                break;
            }
            self.filled = self.filled.max(r.end as usize);
            self.placed_bytes -= (r.end - r.start) as usize;
            self.placed.pop_min();
        }
        (take, self.filled - before)
    }

    /// Writes bytes that arrived ahead of the contiguous part at message offset `at`. The
    /// caller passes only bytes not yet received, past [`filled`](Self::filled) and within
    /// the [`extent`](Self::extent).
    pub(crate) fn place(&mut self, at: usize, data: &[u8]) {
        debug_assert!(at >= self.filled && at + data.len() <= self.extent());
        self.write_at(at, data);
        self.placed.insert(at as u64..(at + data.len()) as u64);
        self.placed_bytes += data.len();
    }

    fn write_at(&mut self, at: usize, data: &[u8]) {
        if at > self.buf.len() {
            // A gap: zeros until its bytes arrive.
            self.buf.resize(at, 0);
        }
        let overlap = (self.buf.len() - at).min(data.len());
        self.buf[at..at + overlap].copy_from_slice(&data[..overlap]);
        self.buf.extend_from_slice(&data[overlap..]);
    }

    /// The message, once complete.
    pub(crate) fn freeze(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

/// Asks the kernel to back the 2 MiB-aligned part of a large buffer's allocation with
/// transparent huge pages (where they are enabled in `madvise` mode, the common default).
/// Filling a 10 MB message then takes 5 page faults instead of 2,560: on a virtual machine,
/// where a fault costs 2 us or more, that is several milliseconds per message.
#[allow(unsafe_code)]
fn advise_huge_pages(buf: &Vec<u8>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if buf.capacity() < HUGE_PAGE_MIN {
            return;
        }
        let start = buf.as_ptr() as usize;
        let end = start + buf.capacity();
        let aligned = start.next_multiple_of(HUGE);
        if end <= aligned + HUGE {
            return;
        }
        let len = (end - aligned) / HUGE * HUGE;
        // SAFETY: the range lies inside the vector's allocation, which we own; MADV_HUGEPAGE
        // is a hint that never changes the contents of memory or its validity, and a failure
        // (no THP support) leaves everything as it was.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (buf, HUGE_PAGE_MIN);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn in_order_and_placed_bytes_join() {
        let msg: Vec<u8> = (0..100u8).collect();
        let mut b = MessageBuf::new(100, 50);
        assert_eq!(b.extent(), 50);
        b.place(20, &msg[20..30]);
        b.place(40, &msg[40..50]);
        assert_eq!(b.write_next(&msg[0..10]), (10, 10));
        assert_eq!(b.stored(), 30);
        assert_eq!(b.write_next(&msg[10..20]), (10, 20));
        assert_eq!(b.filled(), 30);
        assert_eq!(b.stored(), 40);
        b.grow();
        assert_eq!(b.extent(), 100);
        b.place(60, &msg[60..100]);
        assert_eq!(b.write_next(&msg[30..40]), (10, 20));
        assert_eq!(b.write_next(&msg[50..70]), (20, 50));
        assert!(b.is_complete());
        assert_eq!(&b.freeze()[..], &msg[..]);
    }

    #[test]
    fn large_buffers_survive_the_huge_page_hint() {
        let len = 10 << 20;
        let mut b = MessageBuf::new(len, 64 << 10);
        b.grow();
        let chunk = vec![7u8; 1200];
        let mut at = 0;
        while !b.is_complete() {
            let (took, _) = b.write_next(&chunk[..chunk.len().min(len - at)]);
            at += took;
        }
        let m = b.freeze();
        assert_eq!(m.len(), len);
        assert!(m.iter().all(|&x| x == 7));
    }
}
