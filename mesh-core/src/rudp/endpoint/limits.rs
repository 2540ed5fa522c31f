//! Admission under pressure: who may open a session, and which sessions give their memory
//! back when a new peer needs it (bare handshakes, large messages that stopped arriving).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Endpoint, Failure, UnreachableReason};

impl Endpoint {
    /// Why a new session with `peer` would be refused now (and whether by the per-address
    /// limit), if it would.
    pub(super) fn session_refusal(
        &self,
        peer: SocketAddr,
        inbound: bool,
        credit: usize,
    ) -> Option<(&'static str, bool)> {
        if self.sessions.len() >= self.cfg.max_sessions {
            return Some(("max_sessions reached", false));
        }
        if inbound {
            let ip = peer.ip();
            let from_ip = self
                .sessions
                .values()
                .filter(|s| s.inbound && s.addr.ip() == ip)
                .count();
            if from_ip >= self.cfg.max_sessions_per_ip {
                return Some(("max_sessions_per_ip reached", true));
            }
        }
        if self.budget.used() + credit > self.cfg.max_total_buffer {
            return Some(("max_total_buffer exhausted", false));
        }
        None
    }

    /// Closes every session a peer opened more than `peer_timeout` ago and never sent data
    /// on (nor we anything to it): nobody above knows them.
    pub(super) fn reclaim_half_open(&mut self, now: Instant) {
        let stale: Vec<SocketAddr> = self
            .sessions
            .values()
            .filter(|s| {
                s.half_open_until.is_some_and(|t| t <= now) && !s.got_data && s.unacked_bytes() == 0
            })
            .map(|s| s.addr)
            .collect();
        for peer in &stale {
            tracing::debug!(%peer, "reclaiming a handshake that brought no data");
            self.counters.drops.half_open += 1;
            self.close_session(*peer, Failure::Unreachable(UnreachableReason::SessionLost));
        }
    }

    /// A peer waits for receive memory: closes the sessions that hold a large-message
    /// reservation and sent none of that message for `2 * peer_timeout` (finding 7: peers
    /// that announce large messages, send their first datagram and only acknowledge after
    /// that would otherwise hold the budget for ever). At most one scan per 10 ms.
    pub(super) fn reclaim_stalled(&mut self, now: Instant, waiting: SocketAddr) {
        if self
            .stall_scan_at
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_millis(10))
        {
            return;
        }
        self.stall_scan_at = Some(now);
        let Some(since) = now.checked_sub(self.cfg.peer_timeout * 2) else {
            return;
        };
        let stalled: Vec<SocketAddr> = self
            .sessions
            .values()
            .filter(|s| s.addr != waiting && s.stalled_reservation(since))
            .map(|s| s.addr)
            .collect();
        for peer in stalled {
            tracing::warn!(%peer, "closing a session that holds receive memory for a message it stopped sending");
            self.counters.drops.stalled += 1;
            self.close_session(peer, Failure::Unreachable(UnreachableReason::SessionLost));
        }
    }
}
