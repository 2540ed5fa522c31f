//! Loss recovery: acknowledgements, loss detection, retransmission timeouts and probes,
//! liveness (RFC 9002's rules, with the first timeout a tail-loss probe).

use std::time::{Duration, Instant};

use super::*;

impl Session {
    pub(in crate::rudp) fn on_ack(
        &mut self,
        cfg: &Config,
        now: Instant,
        ack: &RawAck<'_>,
        out: &mut Vec<SessionOutput>,
        counters: &mut Counters,
    ) {
        let largest = ack.largest();
        if largest >= self.next_pn {
            // Acknowledges a packet we never sent: ignore the frame.
            counters.drops.malformed += 1;
            return;
        }
        // An RTT sample comes from the largest acknowledged packet if it is newly acknowledged.
        let sample = self.sent.get(largest).map(|p| p.time);
        let mut any = false;
        let mut done = std::mem::take(&mut self.done);
        for (lo, hi) in ack.ranges() {
            for pn in self.sent.span(lo, hi.saturating_add(1)) {
                let Some(p) = self.sent.remove(pn) else {
                    continue;
                };
                any = true;
                self.cc.on_acked(p.size, p.time);
                for (ch, off, len) in p.stream.iter() {
                    if let Some(sc) = self.send.get_mut(usize::from(ch)) {
                        sc.on_acked(off..off + len, &mut done);
                    }
                }
            }
        }
        out.extend(done.drain(..).map(SessionOutput::Outcome));
        self.done = done;
        if !any {
            return;
        }
        if self.largest_acked.is_none_or(|l| largest > l) {
            self.largest_acked = Some(largest);
        }
        if let Some(sent) = sample {
            let delay = Duration::from_micros(ack.delay_us).min(cfg.max_ack_delay * 4);
            self.rtt.update(now.saturating_duration_since(sent), delay);
        }
        self.pto_count = 0;
        self.probes = 0;
        self.detect_lost(now, counters);
    }

    pub(in crate::rudp) fn loss_delay(&self) -> Duration {
        (self.rtt.smoothed().max(self.rtt.latest()) * 9 / 8).max(GRANULARITY)
    }

    pub(in crate::rudp) fn detect_lost(&mut self, now: Instant, counters: &mut Counters) {
        self.loss_time = None;
        let Some(largest) = self.largest_acked else {
            return;
        };
        let below = self.sent.span(0, largest);
        if below.is_empty() {
            return;
        }
        let delay = self.loss_delay();
        for pn in below {
            let Some(p) = self.sent.get(pn) else {
                continue;
            };
            if pn + 3 <= largest || p.time + delay <= now {
                if let Some(p) = self.sent.remove(pn) {
                    counters.packets_lost += 1;
                    self.traffic.packets_lost += 1;
                    self.cc.on_lost(p.size, p.time, now);
                    self.requeue(p, counters);
                }
            } else {
                let t = p.time + delay;
                self.loss_time = Some(self.loss_time.map_or(t, |l| l.min(t)));
            }
        }
    }

    pub(in crate::rudp) fn requeue(&mut self, p: SentPacket, counters: &mut Counters) {
        for (ch, off, len) in p.stream.iter() {
            if let Some(sc) = self.send.get_mut(usize::from(ch)) {
                counters.retransmitted_bytes += len;
                sc.on_lost(off..off + len);
            }
        }
        for ch in p.max_data {
            if let Some(rc) = self.recv.get_mut(usize::from(ch)) {
                rc.reannounce();
            }
        }
        self.refused_out.extend(p.refused);
    }

    // ----- timers -----

    pub(in crate::rudp) fn pto_deadline(&self, cfg: &Config) -> Option<Instant> {
        let last = self.last_eliciting_sent?;
        // Only ack-eliciting packets are remembered.
        if self.sent.is_empty() {
            return None;
        }
        if self.pto_count == 0 {
            // The first timeout is a tail-loss probe (as RACK-TLP): twice the smoothed RTT,
            // plus the peer's worst-case ack delay (its `max_ack_delay` and a timer tick)
            // unless the newest packet asked for an immediate acknowledgement. It only sends
            // probes, so firing early costs one packet.
            let mut tlp = (self.rtt.smoothed() * 2).max(GRANULARITY);
            if !self.asked_immediate_ack {
                tlp += cfg.max_ack_delay + GRANULARITY;
            }
            return Some(last + tlp);
        }
        let pto = self.rtt.pto(GRANULARITY, cfg.max_ack_delay, cfg.min_rto);
        Some(last + pto * 2u32.saturating_pow((self.pto_count - 1).min(6)))
    }

    /// An acknowledgement is owed for many packets: a driver reading datagrams in large
    /// batches should write it before handling the rest of the batch, so that one lost ACK
    /// does not hide a whole window from the sender.
    pub(in crate::rudp) fn ack_overdue(&self) -> bool {
        self.ack_pending && self.eliciting_since_ack >= ACK_OVERDUE
    }

    pub(in crate::rudp) fn liveness_deadline(&self, cfg: &Config) -> Option<Instant> {
        let busy = self.busy_since?;
        Some(self.last_recv.max(busy) + cfg.peer_timeout)
    }

    /// The earliest instant at which [`on_timeout`](Self::on_timeout) has work.
    pub(in crate::rudp) fn next_timeout(&self, cfg: &Config) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |y| y.min(x)));
            }
        };
        if let State::Connecting { resend_at, .. } = self.state {
            min(Some(resend_at));
        }
        min(self.ack_deadline);
        min(self.loss_time);
        min(self.pto_deadline(cfg));
        min(self.liveness_deadline(cfg));
        min(self.flush_at);
        min(self.next_blocked_ping);
        t
    }

    /// Runs expired timers. Returns true when the peer is to be declared unreachable.
    pub(in crate::rudp) fn on_timeout(
        &mut self,
        cfg: &Config,
        now: Instant,
        counters: &mut Counters,
    ) -> bool {
        if self.liveness_deadline(cfg).is_some_and(|d| d <= now) {
            return true;
        }
        if self.loss_time.is_some_and(|t| t <= now) {
            self.detect_lost(now, counters);
        }
        if self.pto_deadline(cfg).is_some_and(|t| t <= now) {
            self.pto_count += 1;
            counters.timeouts += 1;
            tracing::trace!(peer = %self.addr, pto_count = self.pto_count, "retransmission timeout");
            if self.pto_count >= 3 {
                self.cc.on_persistent_congestion(now);
            }
            // As RFC 9002: a timeout declares nothing lost (its usual cause on a LAN is a lost
            // ACK or a stalled peer, and resending a whole window for it would double the
            // cost). It sends probes past the congestion window; their acknowledgement then
            // tells which packets are really missing. With nothing new to send, the probe
            // carries the newest outstanding packet again (a tail loss is repaired at once).
            self.probes = PTO_PROBES;
            self.ping_due = true;
            if !self.send.iter().any(SendChannel::has_sendable)
                && let Some(pn) = self.sent.newest()
                && let Some(p) = self.sent.remove(pn)
            {
                self.cc.on_forgotten(p.size);
                self.requeue(p, counters);
            }
            self.last_eliciting_sent = Some(now);
        }
        if self.next_blocked_ping.is_some_and(|t| t <= now) {
            self.ping_due = true;
            self.next_blocked_ping = None;
        }
        false
    }
}
