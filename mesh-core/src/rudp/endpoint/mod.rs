//! The endpoint: every session of one node, the handshake, budgets, events and transmits.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::{Config, ConfigError};
use super::cookie::CookieJar;
use super::counters::{Counters, PeerCounters};
use super::crypto::Keyring;
use super::hash::{FastMap, FastState};
use super::recent::Recent;
use super::recv::Budget;
use super::send::{MessageId, Outcome};
use super::session::{ReadyQueue, Session, SessionOutput, State};
use super::wire::{self, DecodeError, Header, HeaderError, HelloBody, Kind};

mod events;
mod handshake;
mod limits;

pub use events::{Event, Failure, Incoming, SendError, Transmit, UnreachableReason};

const MAX_CONTROL_QUEUE: usize = 1024;
const MAX_REMEMBERED_PEERS: usize = 8192;
/// Refusals (`Reject`, `Reset`) per second to one IP address.
const REJECT_TOKENS_PER_SEC: u32 = 20;
/// Refusals per second to all addresses together (bounds what spoofed sources can make us
/// send).
const REJECT_TOKENS_TOTAL_PER_SEC: u32 = 1000;
/// IP addresses whose refusal budget is tracked at once.
const MAX_REJECT_BUCKETS: usize = 1024;

/// The sans-IO protocol endpoint of one node.
#[derive(Debug)]
pub struct Endpoint {
    cfg: Config,
    incarnation: u64,
    sessions: FastMap<SocketAddr, Session>,
    budget: Budget,
    ready: ReadyQueue,
    events: VecDeque<Event>,
    control: VecDeque<(SocketAddr, Vec<u8>)>,
    counters: Counters,
    next_msg: u64,
    rng: StdRng,
    /// The refusal budget of all addresses together: tokens left and when it was refilled.
    reject_total: (u32, Option<Instant>),
    /// The refusal budget of each IP address (one flooding source does not use up the
    /// refusals a real peer needs).
    reject_buckets: Recent<IpAddr, (u32, Instant)>,
    incompatible_reported: Recent<SocketAddr, Instant>,
    /// Last incarnation and session id seen per address (restart detection, reopen ids).
    remembered: Recent<SocketAddr, (u64, u64)>,
    order: Vec<SocketAddr>,
    cursor: usize,
    /// Scratch space for what a session reports while handling a packet.
    outputs: Vec<SessionOutput>,
    /// See [`Endpoint::credit_update_due`].
    credit_due: bool,
    /// Something may have become sendable since `poll_transmit` last found nothing: set by
    /// every input (datagrams, timers, sends, taking messages, closing).
    tx_hint: bool,
    /// See [`Endpoint::ack_overdue`].
    ack_overdue: bool,
    /// Makes and checks the cookies of `Retry` (no state before an address is proven).
    cookies: CookieJar,
    /// The cluster keys, when configured: every packet is then authenticated.
    keyring: Option<Keyring>,
    /// Where a keyed data packet is decrypted.
    scratch: Vec<u8>,
    /// When stalled reservations were last looked for.
    stall_scan_at: Option<Instant>,
    /// Strict membership: the only addresses whose datagrams are read (besides peers we
    /// opened a session to).
    members: Option<std::collections::HashSet<SocketAddr, FastState>>,
}

impl Endpoint {
    /// A new endpoint for a process with the given random `incarnation` (non-zero); `seed`
    /// drives session-id choice and keys the endpoint's hash maps (pass a secret random seed
    /// in production, a constant in tests: one seed replays the same run exactly).
    pub fn new(cfg: Config, incarnation: u64, seed: u64) -> Result<Self, ConfigError> {
        cfg.validate()?;
        if incarnation == 0 {
            return Err(ConfigError {
                field: "incarnation",
                problem: "must not be zero".into(),
            });
        }
        // Distinct from the rng's stream, so the keys say nothing about the session ids.
        let keys = FastState::from_seed(seed ^ 0x6d65_7368_2d68_6173);
        let mut rng = StdRng::seed_from_u64(seed);
        let cookies = CookieJar::new(rng.random());
        Ok(Endpoint {
            cookies,
            keyring: cfg.keyring.clone(),
            scratch: Vec::new(),
            members: None,
            stall_scan_at: None,
            budget: Budget::new(cfg.max_total_buffer, cfg.max_buffer_per_ip),
            cfg,
            incarnation,
            sessions: FastMap::with_hasher(keys),
            ready: ReadyQueue::default(),
            events: VecDeque::new(),
            control: VecDeque::new(),
            counters: Counters::default(),
            next_msg: 0,
            rng,
            reject_total: (REJECT_TOKENS_TOTAL_PER_SEC, None),
            reject_buckets: Recent::new(MAX_REJECT_BUCKETS, keys),
            incompatible_reported: Recent::new(1024, keys),
            remembered: Recent::new(MAX_REMEMBERED_PEERS, keys),
            order: Vec::new(),
            cursor: 0,
            outputs: Vec::new(),
            credit_due: false,
            tx_hint: false,
            ack_overdue: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The cluster keys, if the endpoint has any (see [`Config::keyring`]).
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    /// Changes the installed cluster keys (rotation). Sessions keep the keys their
    /// handshake gave them; new handshakes use the key now in use. An endpoint started
    /// without a key has none to change (`None`).
    pub fn keyring_mut(&mut self) -> Option<&mut Keyring> {
        self.keyring.as_mut()
    }

    /// Strict membership: reads datagrams only from `members` and from the peers this
    /// endpoint opened a session to (so the answers to a call by address still come in);
    /// every other datagram is dropped before it is parsed (`drops.not_member`). `None`
    /// reads from anyone.
    pub fn restrict_to_members(&mut self, members: Option<impl IntoIterator<Item = SocketAddr>>) {
        self.members = members.map(|m| {
            let mut set = std::collections::HashSet::with_hasher(*self.sessions.hasher());
            set.extend(m);
            set
        });
    }

    /// The header flags of every packet we send.
    fn flags(&self) -> u8 {
        if self.keyring.is_some() {
            wire::FLAG_AUTH
        } else {
            0
        }
    }

    /// The keys of the endpoint's hash maps (derived from its seed).
    #[cfg(test)]
    pub(crate) fn hash_keys(&self) -> FastState {
        *self.sessions.hasher()
    }

    /// The id of the session with `peer` (tests forge packets inside a session with it).
    #[cfg(test)]
    pub(crate) fn session_id(&self, peer: SocketAddr) -> Option<u64> {
        self.sessions.get(&peer).map(|s| s.id)
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Receive memory reserved now (flow-control credit of all sessions).
    pub fn reserved_memory(&self) -> usize {
        self.budget.used()
    }

    /// Receive memory actually held now: partial and out-of-order data plus messages waiting
    /// in [`poll_message`](Self::poll_message). Never above `max_total_buffer` for reliable
    /// data (flow-control credit bounds it).
    pub fn buffered_memory(&self) -> usize {
        self.sessions.values().map(Session::buffered).sum::<usize>()
            + self
                .ready
                .q
                .iter()
                .map(|(_, _, r)| r.data.len())
                .sum::<usize>()
    }

    /// Number of sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Smoothed RTT and congestion window of the session with `peer`, if any.
    pub fn path_stats(&self, peer: SocketAddr) -> Option<(Duration, usize)> {
        self.sessions.get(&peer).map(|s| (s.srtt(), s.cwnd()))
    }

    /// What the session with each peer carried and measured, in no particular order.
    pub fn peers(&self) -> impl Iterator<Item = PeerCounters> + '_ {
        self.sessions.values().map(|s| PeerCounters {
            addr: s.addr,
            incarnation: (s.state == State::Established).then_some(s.peer_incarnation),
            srtt: s.srtt(),
            rtt_p99: s.rtt_p99(),
            packets_out: s.traffic.packets_out,
            packets_lost: s.traffic.packets_lost,
            bytes_in: s.traffic.bytes_in,
            bytes_out: s.traffic.bytes_out,
        })
    }

    /// The incarnation of `peer` if a session is established.
    pub fn peer_incarnation(&self, peer: SocketAddr) -> Option<u64> {
        self.sessions
            .get(&peer)
            .filter(|s| s.state == State::Established)
            .map(|s| s.peer_incarnation)
    }

    /// Bytes queued to `peer` and not yet acknowledged.
    pub fn queued_bytes(&self, peer: SocketAddr) -> u64 {
        self.sessions.get(&peer).map_or(0, Session::unacked_bytes)
    }

    /// Bytes queued to each peer and not yet acknowledged (peers with nothing queued
    /// omitted).
    pub fn unacked_by_peer(&self) -> impl Iterator<Item = (SocketAddr, u64)> + '_ {
        self.sessions
            .iter()
            .map(|(p, s)| (*p, s.unacked_bytes()))
            .filter(|(_, n)| *n > 0)
    }

    /// Bytes queued to every peer and not yet acknowledged.
    pub fn total_queued_bytes(&self) -> u64 {
        self.sessions.values().map(Session::unacked_bytes).sum()
    }

    /// Whether a message of `size` bytes would be accepted for `peer` now.
    pub fn has_room(&self, peer: SocketAddr, size: usize) -> bool {
        let q = self.queued_bytes(peer);
        q == 0 || q + size as u64 <= self.cfg.max_send_queue as u64
    }

    fn new_message_id(&mut self) -> MessageId {
        self.next_msg += 1;
        MessageId(self.next_msg)
    }

    /// Queues a reliable message to `peer` on `channel`, opening a session if needed.
    pub fn send(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        channel: u8,
        data: Bytes,
    ) -> Result<MessageId, SendError> {
        self.send_or_return(now, peer, channel, data)
            .map_err(|(e, _)| e)
    }

    /// Like [`send`](Self::send), but a refused message's payload comes back with the error,
    /// so a caller that waits for room ([`SendError::Full`]) and retries keeps it without a
    /// clone.
    pub fn send_or_return(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        channel: u8,
        data: Bytes,
    ) -> Result<MessageId, (SendError, Bytes)> {
        if channel >= self.cfg.channels {
            let e = SendError::NoSuchChannel {
                channel,
                channels: self.cfg.channels,
            };
            return Err((e, data));
        }
        if data.len() > self.cfg.max_message_size {
            let e = SendError::TooLarge {
                size: data.len(),
                max: self.cfg.max_message_size,
            };
            return Err((e, data));
        }
        // One lookup on the common path: a session exists.
        let cfg = &self.cfg;
        if let Some(s) = self.sessions.get_mut(&peer) {
            let queued = s.unacked_bytes();
            if queued != 0 && queued + data.len() as u64 > cfg.max_send_queue as u64 {
                return Err((SendError::Full { peer, queued }, data));
            }
            self.next_msg += 1;
            let id = MessageId(self.next_msg);
            s.push(cfg, now, channel, id, data);
            self.counters.messages_sent += 1;
            self.tx_hint = true;
            return Ok(id);
        }
        if let Err(e) = self.ensure_session(now, peer) {
            return Err((e, data));
        }
        let id = self.new_message_id();
        let cfg = &self.cfg;
        if let Some(s) = self.sessions.get_mut(&peer) {
            s.push(cfg, now, channel, id, data);
        }
        self.counters.messages_sent += 1;
        self.tx_hint = true;
        Ok(id)
    }

    /// Queues an unreliable datagram to `peer` (one datagram; no retransmission, no order).
    pub fn send_datagram(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        data: Bytes,
    ) -> Result<(), SendError> {
        let max = self.cfg.max_unreliable_payload();
        if data.len() > max {
            return Err(SendError::TooLarge {
                size: data.len(),
                max,
            });
        }
        self.ensure_session(now, peer)?;
        self.tx_hint = true;
        let cfg = &self.cfg;
        if let Some(s) = self.sessions.get_mut(&peer)
            && !s.push_datagram(cfg, now, data)
        {
            return Err(SendError::Full {
                peer,
                queued: cfg.max_datagram_queue as u64,
            });
        }
        Ok(())
    }

    fn ensure_session(&mut self, now: Instant, peer: SocketAddr) -> Result<(), SendError> {
        if self.sessions.contains_key(&peer) {
            return Ok(());
        }
        let id = self.propose_id(peer);
        let state = State::Connecting {
            resend_at: now,
            attempts: 0,
        };
        match self.open_session(now, peer, id, 0, state) {
            Ok(()) => {
                tracing::debug!(%peer, session = id, "opening session");
                Ok(())
            }
            Err(why) => Err(SendError::Overloaded { peer, why }),
        }
    }

    fn propose_id(&mut self, peer: SocketAddr) -> u64 {
        let base = self.remembered.get(&peer).map_or(0, |&(_, id)| id);
        let r: u64 = self.rng.random_range(1..=u64::from(u32::MAX));
        if base == 0 {
            self.rng.random_range(1..u64::MAX / 2)
        } else {
            base.saturating_add(r)
        }
    }

    fn open_session(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        id: u64,
        peer_incarnation: u64,
        state: State,
    ) -> Result<(), &'static str> {
        let inbound = state == State::Established;
        let credit = self.session_credit();
        if self.session_refusal(peer, inbound, credit).is_some() {
            // Stale handshakes may make room.
            self.reclaim_half_open(now);
        }
        if let Some((why, by_address)) = self.session_refusal(peer, inbound, credit) {
            if by_address {
                self.counters.drops.address_limit += 1;
            } else {
                self.counters.drops.session_limit += 1;
            }
            return Err(why);
        }
        if !self.budget.try_reserve(credit) {
            self.counters.drops.session_limit += 1;
            return Err("max_total_buffer exhausted");
        }
        let mut s = Session::new(&self.cfg, peer, id, peer_incarnation, state, now);
        if inbound {
            s.inbound = true;
            s.half_open_until = Some(now + self.cfg.peer_timeout);
        }
        self.sessions.insert(peer, s);
        self.order.push(peer);
        self.counters.sessions_opened += 1;
        Ok(())
    }

    /// The credit a new session reserves: every channel's initial window.
    fn session_credit(&self) -> usize {
        self.cfg.channel_window * usize::from(self.cfg.channels)
    }

    /// Closes the session with `peer` (if any), failing what is in flight with `error`.
    fn close_session(&mut self, peer: SocketAddr, error: Failure) {
        let Some(mut s) = self.sessions.remove(&peer) else {
            return;
        };
        // Freed budget may let other sessions announce credit.
        self.tx_hint = true;
        // The initial windows, then what large messages reserved (counted per address).
        let base = self.session_credit() as u64;
        self.budget.release(s.credit.min(base) as usize);
        self.budget
            .release_for(peer.ip(), s.credit.saturating_sub(base) as usize);
        self.order.retain(|a| *a != peer);
        self.counters.sessions_closed += 1;
        // A handshake that never brought data proves nothing worth remembering: a flood of
        // them must not push real peers out of the table.
        if s.peer_incarnation != 0 && (s.got_data || !s.inbound) {
            self.remember(peer, s.peer_incarnation, s.id);
        }
        let failed = s.fail_all();
        if !failed.is_empty() {
            tracing::debug!(%peer, messages = failed.len(), %error, "failing messages in flight");
        }
        for id in failed {
            self.events.push_back(Event::Failed { peer, id, error });
        }
        // Budget freed: let waiting large messages of others proceed.
        let cfg = &self.cfg;
        for s in self.sessions.values_mut() {
            s.retry_reservations(&mut self.budget, cfg);
        }
    }

    fn remember(&mut self, peer: SocketAddr, incarnation: u64, id: u64) {
        self.remembered.insert(peer, (incarnation, id));
    }

    /// Closes the session with `peer` locally; messages in flight fail as `Closed`.
    pub fn close(&mut self, peer: SocketAddr) {
        self.close_session(peer, Failure::Unreachable(UnreachableReason::Closed));
    }

    // ----- input -----

    /// Handles one datagram received from `from`.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.tx_hint = true;
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += data.len() as u64;
        if let Some(m) = &self.members
            && !m.contains(&from)
            && self.sessions.get(&from).is_none_or(|s| s.inbound)
        {
            self.counters.drops.not_member += 1;
            return;
        }
        let (h, body) = match Header::decode(data) {
            Ok(x) => x,
            Err(HeaderError::Decode(DecodeError::Foreign)) => {
                self.counters.drops.foreign += 1;
                return;
            }
            Err(HeaderError::Decode(_)) => {
                self.counters.drops.malformed += 1;
                return;
            }
            Err(HeaderError::Version {
                version,
                cluster,
                session,
            }) => {
                self.refuse(now, from, version, cluster, 0, session);
                return;
            }
        };
        if h.kind == Kind::Reject {
            self.on_reject(from, h.session, h.flags, data);
            return;
        }
        if h.version != wire::WIRE_VERSION
            || h.cluster != self.cfg.cluster_id
            || h.flags != self.flags()
        {
            self.refuse(now, from, h.version, h.cluster, h.flags, h.session);
            return;
        }
        match h.kind {
            Kind::Hello => self.on_hello(now, from, h.session, body),
            Kind::HelloAck => self.on_hello_ack(now, from, h.session, body),
            Kind::Data => self.on_data(now, from, h.session, data),
            Kind::Reset => self.on_reset(from, h.session, data),
            Kind::Retry => self.on_retry(now, from, h.session, body),
            Kind::Reject => {}
        }
    }

    fn on_data(&mut self, now: Instant, from: SocketAddr, id: u64, packet: &[u8]) {
        let cfg = &self.cfg;
        let mut body = packet.get(wire::HEADER_LEN..).unwrap_or_default();
        let Some(s) = self.sessions.get_mut(&from) else {
            self.counters.drops.no_session += 1;
            self.send_reset(now, from, id);
            return;
        };
        if s.state != State::Established || s.id != id {
            let newer = id > s.id;
            self.counters.drops.no_session += 1;
            if newer && s.state == State::Established {
                self.send_reset(now, from, id);
            }
            return;
        }
        if let Some(keys) = &s.keys {
            // Authenticate before anything of the packet is believed: the packet number is
            // the nonce, the header and packet number the associated data.
            let mut rest = body;
            let Some(pn) = wire::varint::get(&mut rest) else {
                self.counters.drops.malformed += 1;
                return;
            };
            let ad_len = packet.len() - rest.len();
            self.scratch.clear();
            self.scratch.extend_from_slice(packet);
            let (ad, text) = self.scratch.split_at_mut(ad_len);
            let Some(n) = keys.open(pn, ad, text) else {
                self.counters.drops.bad_auth += 1;
                return;
            };
            self.scratch.truncate(ad_len + n);
            body = self.scratch.get(wire::HEADER_LEN..).unwrap_or_default();
        }
        s.traffic.bytes_in += packet.len() as u64;
        let mut out = std::mem::take(&mut self.outputs);
        s.on_data(
            cfg,
            now,
            body,
            &mut self.budget,
            &mut self.ready,
            &mut out,
            &mut self.counters,
        );
        s.refresh_busy();
        self.ack_overdue |= s.ack_overdue();
        if s.waiting_for_budget() {
            self.reclaim_stalled(now, from);
        }
        for o in out.drain(..) {
            match o {
                SessionOutput::Outcome(Outcome::Delivered(id)) => {
                    self.events.push_back(Event::Delivered { peer: from, id })
                }
                SessionOutput::Outcome(Outcome::Refused(id, size, max)) => {
                    self.events.push_back(Event::Failed {
                        peer: from,
                        id,
                        error: Failure::TooLarge { size, max },
                    })
                }
                SessionOutput::Refused { channel, size } => {
                    tracing::warn!(peer = %from, channel, size, "refused an oversize message");
                    self.events.push_back(Event::Refused {
                        peer: from,
                        channel,
                        size,
                    })
                }
                SessionOutput::Protocol(what) => {
                    tracing::debug!(peer = %from, what, "dropped a bad packet");
                }
            }
        }
        self.outputs = out;
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| s.next_timeout(&self.cfg))
            .min()
    }

    /// When the timers of the session with `peer` next need
    /// [`handle_timeout`](Self::handle_timeout) (one session's part of
    /// [`poll_timeout`](Self::poll_timeout)).
    pub fn poll_timeout_for(&self, peer: SocketAddr) -> Option<Instant> {
        self.sessions.get(&peer)?.next_timeout(&self.cfg)
    }

    /// Whether a session owes an acknowledgement for many packets (64 ack-eliciting ones).
    /// A driver that reads datagrams in large batches (GRO, `recvmmsg`) checks this after
    /// each [`handle`](Self::handle) and, when set, writes what
    /// [`poll_transmit`](Self::poll_transmit) returns before handling the rest of the batch:
    /// a window's worth of packets then gets several acknowledgements, and losing one of
    /// them does not leave the sender waiting for a timeout.
    pub fn ack_overdue(&self) -> bool {
        self.ack_overdue
    }

    /// Whether taking messages with [`poll_message`](Self::poll_message) made a flow-control
    /// credit update due: [`poll_transmit`](Self::poll_transmit) has it to send. Cleared when
    /// `poll_transmit` has nothing left to send.
    pub fn credit_update_due(&self) -> bool {
        self.credit_due
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx_hint = true;
        let mut dead = Vec::new();
        let cfg = &self.cfg;
        for s in self.sessions.values_mut() {
            if s.next_timeout(cfg).is_some_and(|t| t <= now)
                && s.on_timeout(cfg, now, &mut self.counters)
            {
                let reason = if s.state == State::Established {
                    UnreachableReason::Timeout
                } else {
                    UnreachableReason::HandshakeTimeout
                };
                dead.push((s.addr, reason));
            }
        }
        for (peer, reason) in dead {
            tracing::info!(%peer, %reason, "peer unreachable");
            self.events.push_back(Event::Unreachable { peer, reason });
            self.close_session(peer, Failure::Unreachable(reason));
        }
    }

    // ----- output -----

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next received message or datagram. Taking it consumes it: its flow-control
    /// credit goes back to the sender. Leave messages here to stall senders.
    pub fn poll_message(&mut self) -> Option<Incoming> {
        let (peer, session_id, r) = self.ready.q.pop_front()?;
        let mut incarnation = 0;
        if r.channel.is_none() {
            self.ready.datagrams -= 1;
        }
        if let Some(s) = self.sessions.get_mut(&peer)
            && s.id == session_id
        {
            incarnation = s.peer_incarnation;
            let cfg = &self.cfg;
            if let Some(ch) = r.channel
                && s.consumed(ch, r.end, &mut self.budget, cfg)
            {
                self.credit_due = true;
                self.tx_hint = true;
            }
        }
        Some(Incoming {
            peer,
            channel: r.channel,
            data: r.data,
            incarnation,
        })
    }

    /// Number of messages and datagrams waiting in [`poll_message`](Self::poll_message).
    pub fn pending_messages(&self) -> usize {
        self.ready.q.len()
    }

    /// Writes the next datagrams to send into `buf` (cleared first): up to `max_segments`
    /// datagrams of equal size to one destination (for GSO), the last possibly shorter.
    ///
    /// Once it has returned `None`, it returns `None` at once until an input arrives
    /// ([`handle`](Self::handle), [`handle_timeout`](Self::handle_timeout), a send, taking
    /// a message, closing): sends that become due with time alone are timers, so call
    /// `handle_timeout` when [`poll_timeout`](Self::poll_timeout) says.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        max_segments: usize,
    ) -> Option<Transmit> {
        buf.clear();
        self.ack_overdue = false;
        if !self.tx_hint {
            // Nothing happened since the last call found nothing to send.
            self.credit_due = false;
            return None;
        }
        if let Some((to, p)) = self.control.pop_front() {
            buf.extend_from_slice(&p);
            return Some(self.account(to, buf.len(), 1, buf.len()));
        }
        // Handshakes due.
        let mut hello = None;
        for s in self.sessions.values_mut() {
            if let State::Connecting {
                resend_at,
                attempts,
            } = s.state
                && resend_at <= now
            {
                let backoff = (self.cfg.initial_rtt * 3 * 2u32.saturating_pow(attempts.min(8)))
                    .min(Duration::from_millis(250));
                s.state = State::Connecting {
                    resend_at: now + backoff,
                    attempts: attempts + 1,
                };
                if attempts > 0 {
                    tracing::debug!(peer = %s.addr, attempts, "resending hello");
                }
                hello = Some((s.addr, s.id, s.cookie));
                break;
            }
        }
        if let Some((to, id, cookie)) = hello {
            let body = HelloBody {
                incarnation: self.incarnation,
                echo: 0,
                fresh: false,
                cookie,
            };
            self.send_first_hello(to, id, body);
            if let Some((to, p)) = self.control.pop_front() {
                buf.extend_from_slice(&p);
                return Some(self.account(to, buf.len(), 1, buf.len()));
            }
        }
        let n = self.order.len();
        let size = self.cfg.max_datagram_size;
        for k in 0..n {
            let idx = (self.cursor + k) % n;
            let peer = self.order[idx];
            let Some(s) = self.sessions.get_mut(&peer) else {
                continue;
            };
            if !s.wants_to_send(now) {
                continue;
            }
            let mut segments = 0;
            let mut seg_size = 0;
            while segments < max_segments.max(1) {
                let Some(len) = s.write_packet(&self.cfg, now, buf, size, &mut self.counters)
                else {
                    break;
                };
                segments += 1;
                if segments == 1 {
                    seg_size = len;
                }
                if len != seg_size || len < size {
                    break;
                }
            }
            s.refresh_busy();
            if segments > 0 {
                s.traffic.bytes_out += buf.len() as u64;
                self.cursor = (idx + 1) % n;
                if n == 1 && self.control.is_empty() && !s.wants_to_send(now) {
                    // The only session has nothing more: the next call need not look.
                    self.tx_hint = false;
                    self.credit_due = false;
                }
                return Some(self.account(peer, seg_size, segments, buf.len()));
            }
        }
        self.credit_due = false;
        self.tx_hint = false;
        None
    }

    /// Counts a transmit of `segments` datagrams, `bytes` in all, before handing it out.
    fn account(
        &mut self,
        to: SocketAddr,
        segment_size: usize,
        segments: usize,
        bytes: usize,
    ) -> Transmit {
        self.counters.datagrams_out += segments as u64;
        self.counters.bytes_out += bytes as u64;
        Transmit {
            destination: to,
            segment_size,
            segments,
        }
    }
}
