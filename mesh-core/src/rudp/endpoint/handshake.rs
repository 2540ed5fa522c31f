//! The handshake and session lifecycle on the wire: hellos and their acknowledgements,
//! resets, and refusals of packets from another cluster or wire version (rate-limited).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use super::{
    Endpoint, Event, Failure, MAX_CONTROL_QUEUE, REJECT_TOKENS_PER_SEC, UnreachableReason,
};
use crate::rudp::session::State;
use crate::rudp::wire::{self, Header, HelloBody, Kind, RejectReason};

impl Endpoint {
    pub(super) fn refuse(
        &mut self,
        now: Instant,
        from: SocketAddr,
        version: u8,
        cluster: u32,
        flags: u8,
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
            if self.incompatible_reported.len() >= 1024 {
                self.incompatible_reported.clear();
            }
            self.incompatible_reported.insert(from, now);
            tracing::warn!(peer = %from, reason = %local, "refusing packets from an incompatible peer");
            self.events.push_back(Event::Incompatible {
                peer: from,
                reason: local,
            });
        }
        if self.take_reject_token(now) {
            let mut out = Vec::with_capacity(24);
            Header {
                version: wire::WIRE_VERSION,
                kind: Kind::Reject,
                flags: 0,
                cluster: self.cfg.cluster_id,
                session: 0,
            }
            .encode(&mut out);
            wire::encode_reject(ours_to_them, &mut out);
            self.push_control(from, out);
        }
    }

    pub(super) fn take_reject_token(&mut self, now: Instant) -> bool {
        let refill = self.reject_refill.get_or_insert(now);
        if now.saturating_duration_since(*refill) >= Duration::from_secs(1) {
            self.reject_tokens = REJECT_TOKENS_PER_SEC;
            self.reject_refill = Some(now);
        }
        if self.reject_tokens > 0 {
            self.reject_tokens -= 1;
            true
        } else {
            false
        }
    }

    pub(super) fn push_control(&mut self, to: SocketAddr, packet: Vec<u8>) {
        if self.control.len() < MAX_CONTROL_QUEUE {
            self.control.push_back((to, packet));
        }
    }

    pub(super) fn on_reject(&mut self, from: SocketAddr, body: &[u8]) {
        let reason = match wire::decode_reject(body, self.cfg.cluster_id, wire::WIRE_VERSION) {
            Ok(r) => r,
            Err(_) => {
                self.counters.drops.malformed += 1;
                return;
            }
        };
        // Only a peer we are talking to can make us give up on it.
        if !self.sessions.contains_key(&from) {
            self.counters.drops.no_session += 1;
            return;
        }
        tracing::warn!(peer = %from, %reason, "peer refuses our packets");
        self.events
            .push_back(Event::Incompatible { peer: from, reason });
        self.close_session(from, Failure::Incompatible(reason));
    }

    pub(super) fn send_hello(&mut self, to: SocketAddr, kind: Kind, session: u64, body: HelloBody) {
        let mut out = Vec::with_capacity(40);
        Header {
            version: wire::WIRE_VERSION,
            kind,
            flags: 0,
            cluster: self.cfg.cluster_id,
            session,
        }
        .encode(&mut out);
        body.encode(&mut out);
        self.push_control(to, out);
    }

    pub(super) fn ack_hello(&mut self, to: SocketAddr) {
        if let Some(s) = self.sessions.get(&to) {
            let body = HelloBody {
                incarnation: self.incarnation,
                echo: s.peer_incarnation,
                fresh: !s.got_data,
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
        if let Some(s) = self.sessions.get(&peer) {
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
                if s.peer_incarnation != ack.incarnation {
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
        if !self.take_reject_token(now) {
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
