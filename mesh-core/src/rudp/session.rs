//! One peer's session: packet numbers, acknowledgements, loss detection and retransmission,
//! congestion and flow control, liveness. No I/O: the endpoint feeds it and drains it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::Config;
use super::congestion::Congestion;
use super::counters::Counters;
use super::ranges::RangeSet;
use super::recv::{Budget, Parsed, RecvChannel, StreamReject};
use super::rtt::RttEstimator;
use super::send::{MessageId, Outcome, SendChannel};
use super::sent::{SentPacket, SentPackets, StreamRanges};
use super::wire::{self, Frame, Header, Kind, RawAck, RawFrame, RawFrames, varint};

/// How many packet-number ranges we remember (and acknowledge) at most.
const MAX_RECV_RANGES: usize = 64;
/// How many ranges one ACK frame carries at most (the newest). Enough that one window of a
/// bulk transfer under a few percent of loss is covered by a single ACK: a range that drops
/// out of the frame before its packets were acknowledged makes the sender resend them.
const ACK_RANGES: usize = 32;
/// Ack-eliciting packets received without an acknowledgement after which the ACK should go
/// out even in the middle of a batch of datagrams (see [`Session::ack_overdue`]).
const ACK_OVERDUE: u32 = 64;
/// Probe packets a retransmission timeout lets out beyond the congestion window.
const PTO_PROBES: u8 = 2;
/// Timer granularity: loss detection never waits less than this.
const GRANULARITY: Duration = Duration::from_millis(1);

/// A message or datagram received and waiting for the application.
#[derive(Debug)]
pub(super) struct Ready {
    pub(super) channel: Option<u8>,
    pub(super) data: Bytes,
    pub(super) end: u64,
}

/// Messages and datagrams received and not yet taken by the application, in arrival order.
#[derive(Debug, Default)]
pub(super) struct ReadyQueue {
    pub(super) q: VecDeque<(SocketAddr, u64, Ready)>,
    pub(super) datagrams: usize,
}

/// Reserves memory for a large message waiting on `rc`, within the per-peer and global
/// budgets; on success the channel's credit grows to cover the whole message.
fn try_grant(rc: &mut RecvChannel, credit: &mut u64, budget: &mut Budget, cfg: &Config) {
    let want = rc.wanted();
    if want > 0 && *credit + want <= cfg.max_peer_buffer as u64 && budget.try_reserve(want as usize)
    {
        *credit += want;
        rc.grant();
    }
}

/// Handshake progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// We sent `Hello` and wait for `HelloAck`.
    Connecting {
        /// When the next `Hello` is due.
        resend_at: Instant,
        /// How many were sent.
        attempts: u32,
    },
    /// Both sides know each other's incarnation and agree on the session id.
    Established,
}

/// What the session wants the endpoint to report, produced while handling input.
#[derive(Debug)]
pub(super) enum SessionOutput {
    Outcome(Outcome),
    Refused { channel: u8, size: u64 },
    Protocol(&'static str),
}

/// Per-peer protocol state.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) addr: SocketAddr,
    pub(super) id: u64,
    pub(super) peer_incarnation: u64,
    pub(super) state: State,
    send: Vec<SendChannel>,
    recv: Vec<RecvChannel>,
    next_pn: u64,
    /// Ack-eliciting packets in flight (the only ones remembered).
    sent: SentPackets,
    largest_acked: Option<u64>,
    last_eliciting_sent: Option<Instant>,
    loss_time: Option<Instant>,
    pto_count: u32,
    rtt: RttEstimator,
    cc: Congestion,
    recv_pns: RangeSet,
    pn_floor: u64,
    largest_recv: Option<(u64, Instant)>,
    ack_pending: bool,
    ack_deadline: Option<Instant>,
    eliciting_since_ack: u32,
    last_recv: Instant,
    busy_since: Option<Instant>,
    dgram_out: VecDeque<Bytes>,
    refused_out: Vec<(u8, u64, u64, u64)>,
    ping_due: bool,
    /// Probe packets still allowed past the congestion window after a timeout.
    probes: u8,
    /// The newest ack-eliciting packet asked for an immediate acknowledgement.
    asked_immediate_ack: bool,
    next_blocked_ping: Option<Instant>,
    flush_at: Option<Instant>,
    burst: u32,
    rr: usize,
    /// When channel 0 last had a message queued (latency traffic present).
    latency_at: Option<Instant>,
    latency_window: usize,
    /// Credit bytes this session holds in the endpoint budget.
    pub(super) credit: u64,
    /// A data packet was received on this session (it is no longer fresh).
    pub(super) got_data: bool,
    /// Scratch space reused across packets (kept to avoid allocating per packet).
    parsed: VecDeque<Parsed>,
    done: Vec<Outcome>,
}

impl Session {
    /// A session reserving `credit` bytes (channels x window) already taken from the budget.
    pub(super) fn new(
        cfg: &Config,
        addr: SocketAddr,
        id: u64,
        peer_incarnation: u64,
        state: State,
        now: Instant,
    ) -> Self {
        let window = cfg.channel_window as u64;
        let channels = usize::from(cfg.channels);
        Session {
            addr,
            id,
            peer_incarnation,
            state,
            send: (0..channels).map(|_| SendChannel::new(window)).collect(),
            recv: (0..channels)
                .map(|_| RecvChannel::new(window, cfg.max_message_size as u64))
                .collect(),
            next_pn: 0,
            sent: SentPackets::default(),
            largest_acked: None,
            last_eliciting_sent: None,
            loss_time: None,
            pto_count: 0,
            rtt: RttEstimator::new(cfg.initial_rtt),
            cc: Congestion::new(
                cfg.max_datagram_size,
                cfg.initial_window,
                cfg.max_window,
                cfg.loss_threshold_pct,
            ),
            recv_pns: RangeSet::new(),
            pn_floor: 0,
            largest_recv: None,
            ack_pending: false,
            ack_deadline: None,
            eliciting_since_ack: 0,
            last_recv: now,
            busy_since: matches!(state, State::Connecting { .. }).then_some(now),
            dgram_out: VecDeque::new(),
            refused_out: Vec::new(),
            ping_due: false,
            probes: 0,
            asked_immediate_ack: false,
            next_blocked_ping: None,
            flush_at: None,
            burst: 0,
            rr: 1,
            latency_at: None,
            latency_window: cfg.latency_window,
            credit: window * channels as u64,
            got_data: false,
            parsed: VecDeque::new(),
            done: Vec::new(),
        }
    }

    /// Smoothed round-trip time.
    pub(super) fn srtt(&self) -> Duration {
        self.rtt.smoothed()
    }

    /// Congestion window in bytes.
    pub(super) fn cwnd(&self) -> usize {
        self.cc.window()
    }

    /// Queues a reliable message.
    pub(super) fn push(
        &mut self,
        cfg: &Config,
        now: Instant,
        channel: u8,
        id: MessageId,
        data: Bytes,
    ) {
        if channel == 0 {
            self.latency_at = Some(now);
        }
        if let Some(ch) = self.send.get_mut(usize::from(channel)) {
            ch.push(id, data);
            self.mark_busy(now);
            self.schedule_flush(cfg, now);
        }
    }

    /// Queues an unreliable datagram; false when the queue is full.
    pub(super) fn push_datagram(&mut self, cfg: &Config, now: Instant, data: Bytes) -> bool {
        if self.dgram_out.len() >= cfg.max_datagram_queue {
            return false;
        }
        self.dgram_out.push_back(data);
        self.schedule_flush(cfg, now);
        true
    }

    fn schedule_flush(&mut self, cfg: &Config, now: Instant) {
        if !cfg.send_interval.is_zero() && self.flush_at.is_none() {
            self.flush_at = Some(now + cfg.send_interval);
        }
    }

    fn mark_busy(&mut self, now: Instant) {
        if self.busy_since.is_none() {
            self.busy_since = Some(now);
        }
    }

    /// Received bytes held out of order or in partial messages.
    pub(super) fn buffered(&self) -> usize {
        self.recv.iter().map(RecvChannel::buffered).sum()
    }

    /// Bytes queued on all channels and not yet acknowledged.
    pub(super) fn unacked_bytes(&self) -> u64 {
        self.send.iter().map(SendChannel::unacked_bytes).sum()
    }

    /// Whether anything is in flight or waiting to be sent (liveness is checked while busy).
    fn is_busy(&self) -> bool {
        !matches!(self.state, State::Established)
            || !self.sent.is_empty()
            || self.send.iter().any(SendChannel::is_busy)
    }

    // ----- receiving -----

    #[allow(clippy::too_many_arguments)]
    /// Handles the body of a `Data` packet (after the header). Returns false if the packet
    /// was dropped (duplicate or malformed).
    pub(super) fn on_data(
        &mut self,
        cfg: &Config,
        now: Instant,
        mut body: &[u8],
        budget: &mut Budget,
        ready: &mut ReadyQueue,
        out: &mut Vec<SessionOutput>,
        counters: &mut Counters,
    ) -> bool {
        let Some(pn) = varint::get(&mut body) else {
            counters.drops.malformed += 1;
            return false;
        };
        self.last_recv = now;
        self.got_data = true;
        // The next packet in order cannot be a duplicate (the common case: no lookup).
        let next_in_order = self.largest_recv.is_some_and(|(l, _)| pn == l + 1);
        if !next_in_order && (pn < self.pn_floor || self.recv_pns.contains(pn)) {
            counters.drops.duplicate += 1;
            self.ack_pending = true;
            self.ack_deadline = Some(now);
            return false;
        }
        let mut eliciting = false;
        let mut immediate = false;
        let mut parsed = std::mem::take(&mut self.parsed);
        let ok = self.on_frames(
            cfg,
            now,
            body,
            budget,
            ready,
            out,
            counters,
            &mut parsed,
            &mut eliciting,
            &mut immediate,
        );
        parsed.clear();
        self.parsed = parsed;
        if !ok {
            return false;
        }
        // Record the packet number.
        let in_order = self.largest_recv.is_none_or(|(l, _)| pn == l + 1);
        self.recv_pns.insert(pn..pn + 1);
        while self.recv_pns.len() > MAX_RECV_RANGES {
            if let Some(r) = self.recv_pns.pop_min() {
                self.pn_floor = r.end;
            }
        }
        if self.largest_recv.is_none_or(|(l, _)| pn > l) {
            self.largest_recv = Some((pn, now));
        }
        if eliciting {
            self.ack_pending = true;
            self.eliciting_since_ack += 1;
            if immediate || !in_order || self.eliciting_since_ack >= cfg.ack_frequency {
                self.ack_deadline = Some(now);
            } else if self.ack_deadline.is_none() {
                self.ack_deadline = Some(now + cfg.max_ack_delay);
            }
        }
        true
    }

    /// Processes the frames of a packet body. False if the packet is to be dropped.
    #[allow(clippy::too_many_arguments)]
    fn on_frames(
        &mut self,
        cfg: &Config,
        now: Instant,
        body: &[u8],
        budget: &mut Budget,
        ready: &mut ReadyQueue,
        out: &mut Vec<SessionOutput>,
        counters: &mut Counters,
        parsed: &mut VecDeque<Parsed>,
        eliciting: &mut bool,
        immediate: &mut bool,
    ) -> bool {
        for frame in RawFrames::new(body) {
            let frame = match frame {
                Ok(f) => f,
                Err(_) => {
                    counters.drops.malformed += 1;
                    out.push(SessionOutput::Protocol("malformed frame"));
                    return false;
                }
            };
            match frame {
                RawFrame::Ack(ack) => self.on_ack(cfg, now, &ack, out, counters),
                RawFrame::Stream {
                    channel,
                    offset,
                    data,
                } => {
                    *eliciting = true;
                    let Some(rc) = self.recv.get_mut(usize::from(channel)) else {
                        counters.drops.malformed += 1;
                        out.push(SessionOutput::Protocol(
                            "stream frame on an unknown channel",
                        ));
                        return false;
                    };
                    match rc.on_stream(offset, data, parsed) {
                        Ok(()) => {}
                        Err(StreamReject::FlowControl) => {
                            counters.drops.flow_control += 1;
                            out.push(SessionOutput::Protocol("peer exceeded flow-control credit"));
                            return false;
                        }
                        Err(StreamReject::BadPrefix) => {
                            counters.drops.malformed += 1;
                            out.push(SessionOutput::Protocol("bad message length prefix"));
                            return false;
                        }
                    }
                    for p in parsed.drain(..) {
                        match p {
                            Parsed::Message { data, end } => {
                                counters.messages_received += 1;
                                ready.q.push_back((
                                    self.addr,
                                    self.id,
                                    Ready {
                                        channel: Some(channel),
                                        data,
                                        end,
                                    },
                                ));
                            }
                            Parsed::Refused { start, size } => {
                                counters.refused_oversize += 1;
                                self.refused_out.push((
                                    channel,
                                    start,
                                    size,
                                    cfg.max_message_size as u64,
                                ));
                                out.push(SessionOutput::Refused { channel, size });
                            }
                        }
                    }
                    try_grant(rc, &mut self.credit, budget, cfg);
                }
                RawFrame::MaxData { channel, max } => {
                    *eliciting = true;
                    if let Some(sc) = self.send.get_mut(usize::from(channel)) {
                        sc.on_max_data(max);
                        self.next_blocked_ping = None;
                    }
                }
                RawFrame::Datagram(d) => {
                    *eliciting = true;
                    if ready.datagrams >= cfg.max_datagram_queue {
                        counters.drops.datagram_queue_full += 1;
                    } else {
                        counters.datagrams_received += 1;
                        ready.datagrams += 1;
                        ready.q.push_back((
                            self.addr,
                            self.id,
                            Ready {
                                channel: None,
                                data: wire::owned(d),
                                end: 0,
                            },
                        ));
                    }
                }
                RawFrame::Ping => {
                    *eliciting = true;
                    *immediate = true;
                }
                RawFrame::Refused {
                    channel,
                    offset,
                    size,
                    max,
                } => {
                    *eliciting = true;
                    if let Some(sc) = self.send.get_mut(usize::from(channel)) {
                        sc.on_refused(offset, size, max);
                    }
                }
            }
        }
        true
    }

    fn on_ack(
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

    fn loss_delay(&self) -> Duration {
        (self.rtt.smoothed().max(self.rtt.latest()) * 9 / 8).max(GRANULARITY)
    }

    fn detect_lost(&mut self, now: Instant, counters: &mut Counters) {
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
                    self.cc.on_lost(p.size, p.time, now);
                    self.requeue(p, counters);
                }
            } else {
                let t = p.time + delay;
                self.loss_time = Some(self.loss_time.map_or(t, |l| l.min(t)));
            }
        }
    }

    fn requeue(&mut self, p: SentPacket, counters: &mut Counters) {
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

    /// The application consumed a message that ended at `end` on `channel`.
    /// Returns whether a credit update is now waiting to be sent.
    pub(super) fn consumed(
        &mut self,
        channel: u8,
        end: u64,
        budget: &mut Budget,
        cfg: &Config,
    ) -> bool {
        let Some(rc) = self.recv.get_mut(usize::from(channel)) else {
            return false;
        };
        let released = rc.consume(end);
        self.credit -= released;
        budget.release(released as usize);
        try_grant(rc, &mut self.credit, budget, cfg);
        rc.announce_pending()
    }

    /// Retries pending large-message reservations (budget freed elsewhere).
    pub(super) fn retry_reservations(&mut self, budget: &mut Budget, cfg: &Config) {
        for rc in &mut self.recv {
            try_grant(rc, &mut self.credit, budget, cfg);
        }
    }

    // ----- timers -----

    fn pto_deadline(&self, cfg: &Config) -> Option<Instant> {
        let last = self.last_eliciting_sent?;
        // Only ack-eliciting packets are remembered.
        if self.sent.is_empty() {
            return None;
        }
        if self.pto_count == 0 {
            // The first timeout is a tail-loss probe (as RACK-TLP): twice the smoothed RTT,
            // plus the peer's ack delay unless the newest packet asked for an immediate
            // acknowledgement. It only sends probes, so firing early costs one packet.
            let mut tlp = (self.rtt.smoothed() * 2).max(GRANULARITY);
            if !self.asked_immediate_ack {
                tlp += cfg.max_ack_delay;
            }
            return Some(last + tlp);
        }
        let pto = self.rtt.pto(GRANULARITY, cfg.max_ack_delay, cfg.min_rto);
        Some(last + pto * 2u32.saturating_pow((self.pto_count - 1).min(6)))
    }

    /// An acknowledgement is owed for many packets: a driver reading datagrams in large
    /// batches should write it before handling the rest of the batch, so that one lost ACK
    /// does not hide a whole window from the sender.
    pub(super) fn ack_overdue(&self) -> bool {
        self.ack_pending && self.eliciting_since_ack >= ACK_OVERDUE
    }

    fn liveness_deadline(&self, cfg: &Config) -> Option<Instant> {
        let busy = self.busy_since?;
        Some(self.last_recv.max(busy) + cfg.peer_timeout)
    }

    /// The earliest instant at which [`on_timeout`](Self::on_timeout) has work.
    pub(super) fn next_timeout(&self, cfg: &Config) -> Option<Instant> {
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
    pub(super) fn on_timeout(
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

    // ----- sending -----

    /// Whether there is something to put in a packet now.
    pub(super) fn wants_to_send(&self, now: Instant) -> bool {
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
    pub(super) fn write_packet(
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
            flags: 0,
            cluster: cfg.cluster_id,
            session: self.id,
        }
        .encode(out);
        let pn = self.next_pn;
        varint::put(out, pn);
        let limit = start + max_size;
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
        let size = out.len() - start;
        self.next_pn += 1;
        counters.packets_sent += 1;
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
    fn bulk_room(&self, now: Instant) -> usize {
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

    fn ack_delay_us(&self, now: Instant) -> u64 {
        self.largest_recv.map_or(0, |(_, t)| {
            now.saturating_duration_since(t).as_micros() as u64
        })
    }

    /// The ranges an ACK frame carries: the newest [`ACK_RANGES`], descending, as
    /// `(first, last)`.
    fn ack_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.recv_pns
            .iter()
            .rev()
            .take(ACK_RANGES)
            .map(|r| (r.start, r.end - 1))
    }

    /// Updates idleness after sending/receiving: a session with nothing outstanding is idle.
    pub(super) fn refresh_busy(&mut self) {
        if !self.is_busy() && !self.send.iter().any(SendChannel::is_blocked) {
            self.busy_since = None;
            self.next_blocked_ping = None;
        }
    }

    /// Removes everything outstanding, returning the ids of unfinished messages.
    pub(super) fn fail_all(&mut self) -> Vec<MessageId> {
        let mut ids = Vec::new();
        for sc in &mut self.send {
            ids.extend(sc.drain_pending());
        }
        for p in self.sent.take_all() {
            self.cc.on_forgotten(p.size);
        }
        self.dgram_out.clear();
        ids
    }
}
