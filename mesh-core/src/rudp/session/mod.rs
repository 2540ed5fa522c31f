//! One peer's session: packet numbers, acknowledgements, loss detection and retransmission,
//! congestion and flow control, liveness. No I/O: the endpoint feeds it and drains it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::Config;
use super::congestion::Congestion;
use super::counters::Counters;
use super::crypto::{Initiator, SessionKeys};
use super::ranges::RangeSet;
use super::recv::{Budget, Parsed, RecvChannel, StreamReject};
use super::rtt::RttEstimator;
use super::send::{MessageId, Outcome, SendChannel};
use super::sent::{SentPacket, SentPackets, StreamRanges};
use super::wire::{self, Cookie, Frame, Header, Kind, RawAck, RawFrame, RawFrames, varint};

mod recovery;
mod transmit;

/// Most out-of-order pieces one channel holds: four times the packets of a full congestion
/// window (losses in flight cannot make more gaps than that), and at least 1024.
fn max_stream_pieces(cfg: &Config) -> usize {
    (4 * cfg.max_window / cfg.max_datagram_size.max(1)).max(1024)
}

/// How many packet-number ranges we remember (and acknowledge) at most.
const MAX_RECV_RANGES: usize = 64;
/// Packet numbers at or above this are refused (as QUIC's 2^62 limit): a sender would
/// need centuries to get there, and `pn + 1` never overflows below it.
const MAX_PACKET_NUMBER: u64 = 1 << 62;
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
fn try_grant(
    rc: &mut RecvChannel,
    credit: &mut u64,
    budget: &mut Budget,
    cfg: &Config,
    ip: std::net::IpAddr,
) {
    let want = rc.wanted();
    if want > 0
        && *credit + want <= cfg.max_peer_buffer as u64
        && budget.try_reserve_for(ip, want as usize)
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

/// What one session carried: the per-peer figures of [`Endpoint::peers`](super::Endpoint::peers).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Traffic {
    pub(super) packets_out: u64,
    pub(super) packets_lost: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
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
    /// When stream data last arrived in order (see [`Session::stalled_reservation`]).
    pub(super) progress_at: Instant,
    /// The responder's `Retry` cookie, echoed in our next `Hello` (initiator only).
    pub(super) cookie: Option<Cookie>,
    /// With a cluster key: the session's AEAD keys, set when the handshake completes.
    /// Every data packet is sealed and opened with them.
    pub(super) keys: Option<SessionKeys>,
    /// With a cluster key, initiator only: the Noise handshake in progress and the session
    /// id it authenticates (a new id needs a new handshake).
    pub(super) initiator: Option<(u64, Initiator)>,
    /// With a cluster key, responder only: the `HelloAck` we sent, resent as is when the
    /// initiator repeats its `Hello` (its handshake state is gone once keys exist).
    pub(super) ack_packet: Option<Vec<u8>>,
    /// Opened by a peer's `Hello` and no data yet: from this instant on, a new peer that
    /// finds the session limits reached takes its place (a handshake alone does not hold
    /// memory for long).
    pub(super) half_open_until: Option<Instant>,
    /// Opened by the peer's `Hello` (counted against `max_sessions_per_ip`).
    pub(super) inbound: bool,
    /// What this session carried (the endpoint's per-peer figures).
    pub(super) traffic: Traffic,
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
                .map(|_| {
                    RecvChannel::new(window, cfg.max_message_size as u64, max_stream_pieces(cfg))
                })
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
            progress_at: now,
            cookie: None,
            keys: None,
            initiator: None,
            ack_packet: None,
            half_open_until: None,
            inbound: false,
            traffic: Traffic::default(),
            parsed: VecDeque::new(),
            done: Vec::new(),
        }
    }

    /// Smoothed round-trip time.
    pub(super) fn srtt(&self) -> Duration {
        self.rtt.smoothed()
    }

    /// The 99th percentile of the recent round-trip samples.
    pub(super) fn rtt_p99(&self) -> Option<Duration> {
        self.rtt.p99()
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
        if pn >= MAX_PACKET_NUMBER {
            // No sender gets there (2^62 packets); only a forged packet says so.
            counters.drops.malformed += 1;
            return false;
        }
        self.last_recv = now;
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
        self.got_data = true;
        self.half_open_until = None;
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
                    let head = rc.head();
                    match rc.on_stream(offset, data, parsed) {
                        Ok(()) => {
                            if rc.head() > head {
                                self.progress_at = now;
                            }
                        }
                        Err(StreamReject::FlowControl) => {
                            counters.drops.flow_control += 1;
                            out.push(SessionOutput::Protocol("peer exceeded flow-control credit"));
                            return false;
                        }
                        Err(StreamReject::TooFragmented) => {
                            counters.drops.fragmented += 1;
                            out.push(SessionOutput::Protocol("stream data too fragmented"));
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
                    try_grant(rc, &mut self.credit, budget, cfg, self.addr.ip());
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
        budget.release_for(self.addr.ip(), released as usize);
        try_grant(rc, &mut self.credit, budget, cfg, self.addr.ip());
        rc.announce_pending()
    }

    /// Retries pending large-message reservations (budget freed elsewhere).
    pub(super) fn retry_reservations(&mut self, budget: &mut Budget, cfg: &Config) {
        for rc in &mut self.recv {
            try_grant(rc, &mut self.credit, budget, cfg, self.addr.ip());
        }
    }

    /// Whether a large message waits for a reservation the budget could not give.
    pub(super) fn waiting_for_budget(&self) -> bool {
        self.recv.iter().any(|r| r.wanted() > 0)
    }

    /// Whether this session holds a reservation for a large message that has not moved
    /// since `since`: a sender that announced it and stopped sending (while acknowledging,
    /// so the session stays alive).
    pub(super) fn stalled_reservation(&self, since: Instant) -> bool {
        self.progress_at <= since && self.recv.iter().any(RecvChannel::receiving_reserved)
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
