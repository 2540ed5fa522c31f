//! The handshake and session lifecycle on the wire: hellos and their acknowledgements,
//! resets, and refusals of packets from another cluster or wire version (rate-limited).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use super::{
    Endpoint, Event, Failure, MAX_CONTROL_QUEUE, REJECT_TOKENS_PER_SEC,
    REJECT_TOKENS_TOTAL_PER_SEC, UnreachableReason,
};
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
        } else {
            self.counters.drops.flags += 1;
            (RejectReason::Flags { flags }, RejectReason::Flags { flags })
        };
        // Report each refusing address at most once per peer_timeout.
        let due = self
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

    pub(super) fn on_reject(&mut self, from: SocketAddr, session: u64, body: &[u8]) {
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
            Some(_) => {}
        }
        tracing::warn!(peer = %from, %reason, "peer refuses our packets");
        self.events
            .push_back(Event::Incompatible { peer: from, reason });
        self.close_session(from, Failure::Incompatible(reason));
    }

    /// Queues a handshake-level packet of `kind` to `to`.
    fn send_control(
        &mut self,
        to: SocketAddr,
        kind: Kind,
        session: u64,
        body: impl FnOnce(&mut Vec<u8>),
    ) {
        let packet = wire::packet(kind, self.cfg.cluster_id, session, body);
        self.push_control(to, packet);
    }

    pub(super) fn send_hello(&mut self, to: SocketAddr, kind: Kind, session: u64, body: HelloBody) {
        self.send_control(to, kind, session, |out| body.encode(out));
    }

    pub(super) fn ack_hello(&mut self, to: SocketAddr) {
        if let Some(s) = self.sessions.get(&to) {
            let body = HelloBody {
                incarnation: self.incarnation,
                echo: s.peer_incarnation,
                fresh: !s.got_data,
                cookie: None,
            };
            let id = s.id;
            self.send_hello(to, Kind::HelloAck, id, body);
        }
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

    pub(super) fn on_hello(&mut self, now: Instant, from: SocketAddr, proposed: u64, body: &[u8]) {
        let Ok(hello) = HelloBody::decode(body) else {
            self.counters.drops.malformed += 1;
            return;
        };
        let inc = hello.incarnation;
        let existing = self
            .sessions
            .get(&from)
            .map(|s| (s.state, s.id, s.peer_incarnation));
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
                // Simultaneous open: both adopt the larger proposal.
                if let Some(s) = self.sessions.get_mut(&from) {
                    s.id = id.max(proposed);
                    s.peer_incarnation = inc;
                    s.state = State::Established;
                }
                self.established(from, inc);
            }
        }
        self.ack_hello(from);
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
        let Ok(ack) = HelloBody::decode(body) else {
            self.counters.drops.malformed += 1;
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

    pub(super) fn on_reset(&mut self, from: SocketAddr, id: u64, body: &[u8]) {
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
