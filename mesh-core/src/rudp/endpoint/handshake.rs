//! The handshake and session lifecycle on the wire: hellos and their acknowledgements,
//! resets, and refusals of packets from another cluster or wire version (rate-limited).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use super::{
    Endpoint, Event, Failure, MAX_CONTROL_QUEUE, REJECT_TOKENS_PER_SEC,
    REJECT_TOKENS_TOTAL_PER_SEC, UnreachableReason,
};
use crate::rudp::crypto::{self, Initiator, MAC_LEN, Responder};
use crate::rudp::session::State;
use crate::rudp::wire::{self, HelloBody, Kind, RejectReason};

impl Endpoint {
    pub(super) fn refuse(
        &mut self,
        now: Instant,
        from: SocketAddr,
        version: u8,
        cluster: u32,
        flags: u8,
        session: u64,
    ) {
        let (ours_to_them, local) = if version != wire::WIRE_VERSION {
            self.counters.drops.version += 1;
            (
                RejectReason::Version {
                    theirs: wire::WIRE_VERSION,
                    ours: version,
                },
                RejectReason::Version {
                    theirs: version,
                    ours: wire::WIRE_VERSION,
                },
            )
        } else if cluster != self.cfg.cluster_id {
            self.counters.drops.other_cluster += 1;
            (
                RejectReason::OtherCluster {
                    theirs: self.cfg.cluster_id,
                    ours: cluster,
                },
                RejectReason::OtherCluster {
                    theirs: cluster,
                    ours: self.cfg.cluster_id,
                },
            )
        } else if self.keyring.is_some() && flags == 0 {
            // A node without the key: tell it, once in a while, why nothing it sends counts.
            self.counters.drops.unauthenticated += 1;
            (RejectReason::KeyRequired, RejectReason::Unauthenticated)
        } else {
            self.counters.drops.flags += 1;
            (RejectReason::Flags { flags }, RejectReason::Flags { flags })
        };
        // Report each refusing address at most once per peer_timeout. With a key, not an
        // address we hold an authenticated session with: that session proves the peer is
        // compatible, so the packet was forged in its name (and reporting it would fail the
        // calls in flight to it).
        let keyed_peer = self.keyring.is_some()
            && self
                .sessions
                .get(&from)
                .is_some_and(|s| s.state == State::Established);
        let due = !keyed_peer
            && self
                .incompatible_reported
                .get(&from)
                .is_none_or(|t| now.saturating_duration_since(*t) >= self.cfg.peer_timeout);
        if due {
            self.incompatible_reported.insert(from, now);
            tracing::warn!(peer = %from, reason = %local, "refusing packets from an incompatible peer");
            self.events.push_back(Event::Incompatible {
                peer: from,
                reason: local,
            });
        }
        if self.take_reject_token(now, from) {
            self.send_control(from, Kind::Reject, session, |out| {
                wire::encode_reject(ours_to_them, out);
            });
        }
    }

    /// Whether a refusal (`Reject`, `Reset`) may go to `to` now: each IP address has its
    /// own budget per second, and all together a larger one.
    pub(super) fn take_reject_token(&mut self, now: Instant, to: SocketAddr) -> bool {
        let second = Duration::from_secs(1);
        let (total, refilled) = &mut self.reject_total;
        if refilled.is_none_or(|t| now.saturating_duration_since(t) >= second) {
            *total = REJECT_TOKENS_TOTAL_PER_SEC;
            *refilled = Some(now);
        }
        if *total == 0 {
            return false;
        }
        let ip = to.ip();
        match self.reject_buckets.get_mut(&ip) {
            Some((tokens, refill)) => {
                if now.saturating_duration_since(*refill) >= second {
                    *tokens = REJECT_TOKENS_PER_SEC;
                    *refill = now;
                }
                if *tokens == 0 {
                    return false;
                }
                *tokens -= 1;
            }
            None => self
                .reject_buckets
                .insert(ip, (REJECT_TOKENS_PER_SEC - 1, now)),
        }
        self.reject_total.0 -= 1;
        true
    }

    pub(super) fn push_control(&mut self, to: SocketAddr, packet: Vec<u8>) {
        if self.control.len() < MAX_CONTROL_QUEUE {
            self.control.push_back((to, packet));
        }
    }

    /// Splits a `Reset` or `Reject` into its body and whether it proved the cluster key:
    /// `None` when it carries a MAC that does not verify (dropped and counted). Without a
    /// key of ours, nothing is verified and every packet counts as proven.
    fn control_body<'a>(&mut self, packet: &'a [u8], flags: u8) -> Option<(&'a [u8], bool)> {
        let Some(ring) = &self.keyring else {
            return Some((packet.get(wire::HEADER_LEN..).unwrap_or_default(), true));
        };
        if flags & wire::FLAG_AUTH == 0 {
            return Some((packet.get(wire::HEADER_LEN..).unwrap_or_default(), false));
        }
        let n = packet.len().saturating_sub(MAC_LEN);
        if n < wire::HEADER_LEN || !ring.check_control_mac(&packet[..n], &packet[n..]) {
            self.counters.drops.bad_auth += 1;
            return None;
        }
        Some((&packet[wire::HEADER_LEN..n], true))
    }

    pub(super) fn on_reject(&mut self, from: SocketAddr, session: u64, flags: u8, packet: &[u8]) {
        let Some((body, proven)) = self.control_body(packet, flags) else {
            return;
        };
        let reason = match wire::decode_reject(body, self.cfg.cluster_id, wire::WIRE_VERSION) {
            Ok(r) => r,
            Err(_) => {
                self.counters.drops.malformed += 1;
                return;
            }
        };
        // Only a peer we are talking to, and that saw our packet (the session id is echoed),
        // can make us give up on it: a forged Reject does not kill a session.
        match self.sessions.get(&from) {
            None => {
                self.counters.drops.no_session += 1;
                return;
            }
            Some(s) if s.id != session => {
                self.counters.drops.stale_handshake += 1;
                return;
            }
            // With a key, a refusal can fail a handshake in progress, never an authenticated
            // session: that session proves both sides share version, cluster and key, and
            // its MAC only proves who sent the refusal, not what made it send it (a packet
            // forged in our name with another version would).
            Some(s) if self.keyring.is_some() && s.state == State::Established => {
                if proven {
                    self.counters.drops.stale_handshake += 1;
                } else {
                    self.counters.drops.unauthenticated += 1;
                }
                return;
            }
            Some(_) => {}
        }
        tracing::warn!(peer = %from, %reason, "peer refuses our packets");
        self.events
            .push_back(Event::Incompatible { peer: from, reason });
        self.close_session(from, Failure::Incompatible(reason));
    }

    /// Queues a handshake-level packet of `kind` to `to`. With a key, a `Reset` or `Reject`
    /// ends with a MAC under it.
    fn send_control(
        &mut self,
        to: SocketAddr,
        kind: Kind,
        session: u64,
        body: impl FnOnce(&mut Vec<u8>),
    ) {
        let mut packet = wire::packet(kind, self.flags(), self.cfg.cluster_id, session, body);
        if let Some(ring) = &self.keyring
            && matches!(kind, Kind::Reset | Kind::Reject)
        {
            let mac = ring.control_mac(&packet);
            packet.extend_from_slice(&mac);
        }
        self.push_control(to, packet);
    }

    /// Sends the `Hello` of the session with `to`, `id`. With a key it carries the first
    /// message of a Noise handshake for this id, kept and resent as is.
    pub(super) fn send_first_hello(&mut self, to: SocketAddr, id: u64, body: HelloBody) {
        let Some(ring) = &self.keyring else {
            self.send_hello(to, Kind::Hello, id, body);
            return;
        };
        let Some(s) = self.sessions.get_mut(&to) else {
            return;
        };
        if s.initiator.as_ref().is_none_or(|(iid, _)| *iid != id) {
            match Initiator::start(ring, &wire::hello_auth(id, &body)) {
                Ok(init) => s.initiator = Some((id, init)),
                Err(_) => return,
            }
        }
        let Some((_, init)) = &s.initiator else {
            return;
        };
        let packet = wire::packet(
            Kind::Hello,
            wire::FLAG_AUTH,
            self.cfg.cluster_id,
            id,
            |out| wire::encode_keyed(&init.message, &body, out),
        );
        self.push_control(to, packet);
    }

    pub(super) fn send_hello(&mut self, to: SocketAddr, kind: Kind, session: u64, body: HelloBody) {
        self.send_control(to, kind, session, |out| body.encode(out));
    }

    /// Answers a `Hello` with the session we hold. With a key: a handshake just verified
    /// (`responder`) is answered with Noise's second message, which gives both sides the
    /// session keys; a repeated `Hello` gets that answer again; any other (a stale
    /// proposal) gets an answer without a handshake message, which only tells the initiator
    /// to propose a newer session id.
    pub(super) fn ack_hello(&mut self, to: SocketAddr, responder: Option<Responder>) {
        let incarnation = self.incarnation;
        let cluster = self.cfg.cluster_id;
        let keyed = self.keyring.is_some();
        let Some(s) = self.sessions.get_mut(&to) else {
            return;
        };
        let body = HelloBody {
            incarnation,
            echo: s.peer_incarnation,
            fresh: !s.got_data,
            cookie: None,
        };
        let id = s.id;
        if !keyed {
            self.send_hello(to, Kind::HelloAck, id, body);
            return;
        }
        let packet = match responder {
            Some(r) => {
                let Ok((answer, keys)) = r.reply(&wire::hello_auth(id, &body)) else {
                    self.counters.drops.bad_auth += 1;
                    return;
                };
                s.keys = Some(keys);
                let p = wire::packet(Kind::HelloAck, wire::FLAG_AUTH, cluster, id, |out| {
                    wire::encode_keyed(&answer, &body, out)
                });
                s.ack_packet = Some(p.clone());
                p
            }
            None => match &s.ack_packet {
                Some(p) => p.clone(),
                None => {
                    let mut hint = body;
                    hint.fresh = false;
                    wire::packet(Kind::HelloAck, wire::FLAG_AUTH, cluster, id, |out| {
                        wire::encode_keyed(&[], &hint, out)
                    })
                }
            },
        };
        self.push_control(to, packet);
    }

    pub(super) fn established(&mut self, peer: SocketAddr, incarnation: u64) {
        if let Some(&(old, _)) = self.remembered.get(&peer)
            && old != incarnation
        {
            tracing::info!(%peer, old = format_args!("{old:#x}"), new = format_args!("{incarnation:#x}"), "peer restarted");
            self.events.push_back(Event::Restarted {
                peer,
                old,
                new: incarnation,
            });
        }
        // A session a peer opened is remembered once it brought data (see `close_session`):
        // a flood of bare handshakes must not push real peers out of the table.
        if let Some(s) = self.sessions.get(&peer)
            && !s.inbound
        {
            self.remember(peer, incarnation, s.id);
        }
        tracing::debug!(%peer, incarnation = format_args!("{incarnation:#x}"), "session established");
        self.events
            .push_back(Event::Connected { peer, incarnation });
    }

    /// Reads a `Hello` or `HelloAck` body: the Noise message (empty without a key) and the
    /// plain fields. A malformed one is counted and `None`.
    fn read_hello<'a>(&mut self, body: &'a [u8]) -> Option<(&'a [u8], HelloBody)> {
        let split = if self.keyring.is_some() {
            wire::split_keyed(body)
        } else {
            Ok((&[][..], body))
        };
        let read = split.and_then(|(noise, plain)| Ok((noise, HelloBody::decode(plain)?)));
        if read.is_err() {
            self.counters.drops.malformed += 1;
        }
        read.ok()
    }

    pub(super) fn on_hello(&mut self, now: Instant, from: SocketAddr, proposed: u64, body: &[u8]) {
        let keyed = self.keyring.is_some();
        let Some((noise, hello)) = self.read_hello(body) else {
            return;
        };
        let inc = hello.incarnation;
        let existing = self
            .sessions
            .get(&from)
            .map(|s| (s.state, s.id, s.peer_incarnation));
        if keyed
            && let Some((State::Connecting { .. }, id, _)) = existing
            && proposed <= id
        {
            // Simultaneous open with a key: the larger proposal's handshake is the one
            // completed; the peer answers ours.
            self.counters.drops.stale_handshake += 1;
            return;
        }
        // A Hello that would create or replace a session must echo our cookie: proof that
        // the sender receives at its address. Without it, a stateless Retry answers, and a
        // spoofed source gets neither memory nor a say over a live session. Only the
        // retransmission of the Hello of the session we have (or a stale one) needs none.
        let changes_state = match existing {
            Some((State::Established, id, old)) => old != inc || proposed > id,
            _ => true,
        };
        if changes_state {
            let proven = hello
                .cookie
                .is_some_and(|c| self.cookies.check(now, from, inc, &c));
            if !proven {
                self.counters.drops.unproven_hello += 1;
                self.send_retry(now, from, proposed, inc);
                return;
            }
        }
        // With a key, a Hello that creates or replaces a session must also carry a Noise
        // handshake under one of our keys that authenticates its fields.
        let mut responder = None;
        if changes_state && let Some(ring) = &self.keyring {
            let expect = wire::hello_auth(proposed, &hello);
            match crypto::respond(ring, noise) {
                Ok((payload, r)) if payload == expect => responder = Some(r),
                _ => {
                    self.counters.drops.bad_auth += 1;
                    return;
                }
            }
        }
        match existing {
            None => {
                if self
                    .open_session(now, from, proposed, inc, State::Established)
                    .is_err()
                {
                    return;
                }
                self.established(from, inc);
            }
            Some((State::Established, _, old)) if old != inc => {
                self.close_session(from, Failure::Restarted { old, new: inc });
                if self
                    .open_session(now, from, proposed, inc, State::Established)
                    .is_err()
                {
                    return;
                }
                self.established(from, inc);
            }
            Some((State::Established, id, _)) if proposed == id => {}
            Some((State::Established, id, _)) if proposed < id => {
                // A losing proposal of a simultaneous open, or a stale retransmission.
                self.counters.drops.stale_handshake += 1;
            }
            Some((State::Established, _, _)) => {
                // Same process, newer session: the peer closed its side and reopened.
                tracing::debug!(peer = %from, "peer reopened the session");
                self.close_session(from, Failure::Unreachable(UnreachableReason::SessionLost));
                if self
                    .open_session(now, from, proposed, inc, State::Established)
                    .is_err()
                {
                    return;
                }
                self.established(from, inc);
            }
            Some((State::Connecting { .. }, id, _)) => {
                // Simultaneous open: both adopt the larger proposal (with a key, only the
                // side whose proposal lost gets here: it answers the winning handshake).
                if let Some(s) = self.sessions.get_mut(&from) {
                    s.id = id.max(proposed);
                    s.peer_incarnation = inc;
                    s.state = State::Established;
                    s.initiator = None;
                }
                self.established(from, inc);
            }
        }
        self.ack_hello(from, responder);
    }

    /// Answers an unproven `Hello` with a cookie to echo; keeps nothing.
    fn send_retry(&mut self, now: Instant, to: SocketAddr, proposed: u64, incarnation: u64) {
        let cookie = self.cookies.make(now, to, incarnation);
        self.send_control(to, Kind::Retry, proposed, |out| {
            out.extend_from_slice(&cookie)
        });
    }

    /// A responder asks us to prove our address: resend the Hello at once with its cookie.
    pub(super) fn on_retry(&mut self, now: Instant, from: SocketAddr, id: u64, body: &[u8]) {
        let Ok(cookie) = <wire::Cookie>::try_from(body) else {
            self.counters.drops.malformed += 1;
            return;
        };
        let Some(s) = self.sessions.get_mut(&from) else {
            self.counters.drops.stale_handshake += 1;
            return;
        };
        match s.state {
            // Only for the Hello we sent (its id is echoed).
            State::Connecting { attempts, .. } if s.id == id => {
                s.cookie = Some(cookie);
                s.state = State::Connecting {
                    resend_at: now,
                    attempts,
                };
                self.tx_hint = true;
            }
            _ => self.counters.drops.stale_handshake += 1,
        }
    }

    pub(super) fn on_hello_ack(&mut self, now: Instant, from: SocketAddr, id: u64, body: &[u8]) {
        let keyed = self.keyring.is_some();
        let Some((noise, ack)) = self.read_hello(body) else {
            return;
        };
        if ack.echo != self.incarnation {
            // Meant for an earlier incarnation of ours.
            self.counters.drops.stale_handshake += 1;
            return;
        }
        let Some(s) = self.sessions.get_mut(&from) else {
            self.counters.drops.stale_handshake += 1;
            return;
        };
        if keyed {
            match s.state {
                State::Connecting { .. } if id == s.id => {
                    let expect = wire::hello_auth(id, &ack);
                    let finished = match &mut s.initiator {
                        Some((iid, init)) if *iid == id => init.finish(noise).ok(),
                        _ => None,
                    };
                    match finished {
                        Some((payload, keys)) if payload == expect => {
                            s.keys = Some(keys);
                            s.initiator = None;
                            s.peer_incarnation = ack.incarnation;
                            s.state = State::Established;
                            self.established(from, ack.incarnation);
                        }
                        _ => self.counters.drops.bad_auth += 1,
                    }
                }
                State::Connecting { attempts, .. } => {
                    // The peer holds another session with us: propose a newer id, with a
                    // new handshake (a key never lets us adopt a session we did not key).
                    let r: u64 = self.rng.random_range(1..=u64::from(u32::MAX));
                    s.id = s.id.max(id).saturating_add(r);
                    s.initiator = None;
                    s.state = State::Connecting {
                        resend_at: now,
                        attempts,
                    };
                }
                // Restarts show in the peer's own Hello, which proves the key.
                State::Established => self.counters.drops.stale_handshake += 1,
            }
            return;
        }
        match s.state {
            State::Connecting { .. } if id == s.id || (id > s.id && ack.fresh) => {
                s.id = id;
                s.peer_incarnation = ack.incarnation;
                s.state = State::Established;
                self.established(from, ack.incarnation);
            }
            State::Connecting { attempts, .. } => {
                // The peer still holds an older session with us: propose a newer one.
                let r: u64 = self.rng.random_range(1..=u64::from(u32::MAX));
                s.id = s.id.max(id).saturating_add(r);
                s.state = State::Connecting {
                    resend_at: now,
                    attempts,
                };
            }
            State::Established => {
                if s.id == id && s.peer_incarnation != ack.incarnation {
                    let old = s.peer_incarnation;
                    self.close_session(
                        from,
                        Failure::Restarted {
                            old,
                            new: ack.incarnation,
                        },
                    );
                } else {
                    self.counters.drops.stale_handshake += 1;
                }
            }
        }
    }

    pub(super) fn send_reset(&mut self, now: Instant, to: SocketAddr, session: u64) {
        if !self.take_reject_token(now, to) {
            return;
        }
        self.send_hello(
            to,
            Kind::Reset,
            session,
            HelloBody {
                incarnation: self.incarnation,
                echo: 0,
                fresh: false,
                cookie: None,
            },
        );
    }

    pub(super) fn on_reset(&mut self, from: SocketAddr, id: u64, packet: &[u8]) {
        let flags = self.flags();
        let Some((body, _)) = self.control_body(packet, flags) else {
            return;
        };
        let Ok(reset) = HelloBody::decode(body) else {
            self.counters.drops.malformed += 1;
            return;
        };
        let Some(s) = self.sessions.get(&from) else {
            return;
        };
        if s.id != id || s.state != State::Established {
            self.counters.drops.stale_handshake += 1;
            return;
        }
        let old = s.peer_incarnation;
        let error = if reset.incarnation != old {
            Failure::Restarted {
                old,
                new: reset.incarnation,
            }
        } else {
            Failure::Unreachable(UnreachableReason::SessionLost)
        };
        tracing::info!(peer = %from, %error, "peer reset the session");
        if let Failure::Restarted { old, new } = error {
            self.events.push_back(Event::Restarted {
                peer: from,
                old,
                new,
            });
            self.remember(from, new, 0);
        } else {
            self.events.push_back(Event::Unreachable {
                peer: from,
                reason: UnreachableReason::SessionLost,
            });
        }
        self.close_session(from, error);
    }

    // ----- timers -----
}
