//! Building packets: what goes in the next datagram (credit updates, refusals, datagrams,
//! stream data with channel 0 first, the ACK), within the congestion and latency windows.

use crate::rudp::crypto::TAG_LEN;
use std::time::{Duration, Instant};

use super::*;

impl Session {
    // ----- sending -----

    /// Whether there is something to put in a packet now.
    pub(in crate::rudp) fn wants_to_send(&self, now: Instant) -> bool {
        if self.state != State::Established {
            return false;
        }
        let ack = self.ack_pending && self.ack_deadline.is_some_and(|d| d <= now);
        let flush_ok = self.flush_at.is_none_or(|t| t <= now);
        ack || self.ping_due
            || !self.refused_out.is_empty()
            || (flush_ok
                && (!self.dgram_out.is_empty()
                    || ((self.cc.available() > 0 || self.probes > 0)
                        && self.send.iter().any(SendChannel::has_sendable))))
            || self.recv.iter().any(|r| r.announce_pending())
    }

    /// Writes one `Data` packet of at most `max_size` bytes into `out` (appended). Returns its
    /// size, or `None` if there is nothing to send.
    pub(in crate::rudp) fn write_packet(
        &mut self,
        cfg: &Config,
        now: Instant,
        out: &mut Vec<u8>,
        max_size: usize,
        counters: &mut Counters,
    ) -> Option<usize> {
        if self.state != State::Established {
            return None;
        }
        let start = out.len();
        Header {
            version: wire::WIRE_VERSION,
            kind: Kind::Data,
            flags: if self.keys.is_some() {
                wire::FLAG_AUTH
            } else {
                0
            },
            cluster: cfg.cluster_id,
            session: self.id,
        }
        .encode(out);
        let pn = self.next_pn;
        varint::put(out, pn);
        let body_at = out.len();
        // A keyed packet ends with its authentication tag.
        let tag = if self.keys.is_some() { TAG_LEN } else { 0 };
        let limit = start + max_size.saturating_sub(tag);
        let mut sp = SentPacket {
            time: now,
            size: 0,
            stream: StreamRanges::default(),
            max_data: Vec::new(),
            refused: Vec::new(),
        };
        let ack_due = self.ack_pending && self.ack_deadline.is_some_and(|d| d <= now);
        let mut has_payload = false;
        let mut has_stream = false;

        // Flow-control credit updates.
        for (i, rc) in self.recv.iter_mut().enumerate() {
            if out.len() + 12 > limit {
                break;
            }
            if let Some(max) = rc.poll_announce() {
                let ch = i as u8;
                Frame::MaxData { channel: ch, max }.encode(out);
                sp.max_data.push(ch);
            }
        }
        while let Some(&(channel, offset, size, max)) = self.refused_out.last() {
            if out.len() + 32 > limit {
                break;
            }
            Frame::Refused {
                channel,
                offset,
                size,
                max,
            }
            .encode(out);
            sp.refused.push((channel, offset, size, max));
            self.refused_out.pop();
        }
        let flush_ok = self.flush_at.is_none_or(|t| t <= now);
        if flush_ok {
            while let Some(d) = self.dgram_out.front() {
                if out.len() + wire::datagram_frame_len(d.len()) > limit {
                    break;
                }
                if let Some(d) = self.dgram_out.pop_front() {
                    Frame::Datagram(&d).encode(out);
                    counters.datagrams_sent += 1;
                    has_payload = true;
                }
            }
            // Reserve room for an ACK frame if one goes in.
            let ack_room = if self.ack_pending {
                16 + 4 * self.recv_pns.len().min(ACK_RANGES)
            } else {
                0
            };
            // Channel 0 first (small, latency-sensitive traffic), then the others in turn.
            let n = self.send.len();
            let rr = self.rr;
            let order = std::iter::once(0)
                .chain((0..n.saturating_sub(1)).map(|k| 1 + (rr - 1 + k) % (n - 1)));
            for i in order {
                loop {
                    if !self.send.get(i).is_some_and(SendChannel::has_sendable) {
                        break;
                    }
                    // Channel 0 carries small latency-sensitive messages: it is bounded by
                    // its flow-control window and does not wait behind bulk data's window.
                    if i != 0
                        && self.probes == 0
                        && self.bulk_room(now) == 0
                        && !self.sent.is_empty()
                    {
                        break;
                    }
                    let room = limit.saturating_sub(out.len() + ack_room + 12);
                    if room < 16 {
                        break;
                    }
                    let Some(sc) = self.send.get_mut(i) else {
                        break;
                    };
                    let Some(r) = sc.next_range(room) else { break };
                    let len = (r.end - r.start) as usize;
                    wire::encode_stream_header(i as u8, r.start, len, out);
                    sc.copy_range(r.clone(), out);
                    sp.stream.push((i as u8, r.start, r.end - r.start));
                    has_payload = true;
                    has_stream = true;
                }
            }
            if n > 1 {
                self.rr = 1 + self.rr % (n - 1);
            }
            if has_payload {
                self.flush_at = None;
            }
        }
        let more = self.send.iter().any(SendChannel::has_sendable);
        if has_payload && !more && self.burst > 0 {
            // The last packet of a burst asks for an immediate acknowledgement.
            self.ping_due = true;
        }
        let mut pinged = false;
        if self.ping_due && out.len() < limit {
            Frame::Ping.encode(out);
            self.ping_due = false;
            has_payload = true;
            pinged = true;
        }
        let eliciting = has_payload || !sp.max_data.is_empty() || !sp.refused.is_empty();
        if !eliciting && !ack_due {
            out.truncate(start);
            self.burst = 0;
            return None;
        }
        if self.ack_pending {
            // Insert the ACK at the front of the frames would need a shift; appending is
            // equivalent since frames are independent.
            let delay_us = self.ack_delay_us(now);
            let mut ranges = [(0u64, 0u64); ACK_RANGES];
            let mut n = 0;
            for (slot, r) in ranges.iter_mut().zip(self.ack_ranges()) {
                *slot = r;
                n += 1;
            }
            let ranges = &ranges[..n];
            if out.len() + wire::ack_frame_len(delay_us, ranges.iter().copied()) <= limit {
                wire::encode_ack_frame(delay_us, ranges.iter().copied(), out);
                self.ack_pending = false;
                self.ack_deadline = None;
                self.eliciting_since_ack = 0;
            }
        }
        if has_stream && more && out.len() < limit {
            // More follows: pad to the full size so the packets form one GSO batch.
            out.resize(limit, 0);
        }
        if let Some(keys) = &self.keys {
            keys.seal(pn, out, start, body_at);
        }
        let size = out.len() - start;
        self.next_pn += 1;
        counters.packets_sent += 1;
        self.traffic.packets_out += 1;
        if eliciting {
            sp.size = size;
            self.cc.on_sent(size);
            self.last_eliciting_sent = Some(now);
            self.asked_immediate_ack = pinged;
            self.probes = self.probes.saturating_sub(1);
            self.sent.insert(pn, sp);
            self.mark_busy(now);
            self.burst += 1;
        }
        if !more {
            // Nothing else queued: the next packet starts a new burst.
            self.burst = 0;
        }
        // A sender blocked by the peer's credit keeps probing so a dead peer is noticed.
        if self.send.iter().any(SendChannel::is_blocked) && self.next_blocked_ping.is_none() {
            self.next_blocked_ping = Some(now + cfg.peer_timeout / 4);
        }
        Some(size)
    }

    /// Bytes of bulk data that may go out now: the congestion window's room, reduced to the
    /// latency window while channel 0 was used within the last 8 RTTs (at least 2 ms).
    pub(in crate::rudp) fn bulk_room(&self, now: Instant) -> usize {
        let room = self.cc.available();
        let horizon = (self.rtt.smoothed() * 8).max(Duration::from_millis(2));
        let recent = self
            .latency_at
            .is_some_and(|t| now.saturating_duration_since(t) < horizon);
        if recent {
            room.min(self.latency_window.saturating_sub(self.cc.in_flight()))
        } else {
            room
        }
    }

    pub(in crate::rudp) fn ack_delay_us(&self, now: Instant) -> u64 {
        self.largest_recv.map_or(0, |(_, t)| {
            now.saturating_duration_since(t).as_micros() as u64
        })
    }

    /// The ranges an ACK frame carries: the newest [`ACK_RANGES`], descending, as
    /// `(first, last)`.
    pub(in crate::rudp) fn ack_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.recv_pns
            .iter()
            .rev()
            .take(ACK_RANGES)
            .map(|r| (r.start, r.end - 1))
    }
}
