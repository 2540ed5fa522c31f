//! Counters of what the endpoint did and dropped, by reason, and per peer.

use std::net::SocketAddr;
use std::time::Duration;

/// Datagrams dropped, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DropCounters {
    /// Not a mesh packet (too short, wrong magic).
    pub foreign: u64,
    /// A mesh packet that does not parse (truncated, bad frame, impossible ACK).
    pub malformed: u64,
    /// From another cluster.
    pub other_cluster: u64,
    /// An unsupported wire version.
    pub version: u64,
    /// Unsupported header flags (e.g. an authentication tag).
    pub flags: u64,
    /// Data for a session we do not have.
    pub no_session: u64,
    /// Handshake packets that do not match our state (stale, for an older incarnation).
    pub stale_handshake: u64,
    /// Packets already received.
    pub duplicate: u64,
    /// Stream bytes beyond the credit we granted.
    pub flow_control: u64,
    /// Stream data in more out-of-order pieces on one channel than a sender's window can
    /// make (a peer fragmenting on purpose to make the receiver's bookkeeping grow): the
    /// packet is dropped and not acknowledged.
    pub fragmented: u64,
    /// A new peer refused because of the session limit or the memory budget.
    pub session_limit: u64,
    /// A new peer refused because its IP address already opened `max_sessions_per_ip`.
    pub address_limit: u64,
    /// A `Hello` without a valid cookie: answered with a `Retry`, no state kept.
    pub unproven_hello: u64,
    /// A session a peer opened and then sent no data on within `peer_timeout`: closed
    /// quietly.
    pub half_open: u64,
    /// Unreliable datagrams dropped because the receive queue was full.
    pub datagram_queue_full: u64,
    /// With a cluster key: a packet without authentication (from a node without a key).
    pub unauthenticated: u64,
    /// With a cluster key: a packet whose handshake message, tag or MAC does not verify
    /// under any installed key (a wrong key, a forgery, an altered packet).
    pub bad_auth: u64,
    /// Strict membership: a datagram from an address outside the membership view, dropped
    /// before it is read.
    pub not_member: u64,
    /// A session closed because it held a large-message reservation without sending any of
    /// the message for `2 * peer_timeout` while another peer waited for receive memory.
    pub stalled: u64,
}

impl DropCounters {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.foreign
            + self.malformed
            + self.other_cluster
            + self.version
            + self.flags
            + self.no_session
            + self.stale_handshake
            + self.duplicate
            + self.flow_control
            + self.fragmented
            + self.session_limit
            + self.address_limit
            + self.unproven_hello
            + self.half_open
            + self.datagram_queue_full
            + self.unauthenticated
            + self.bad_auth
            + self.not_member
            + self.stalled
    }
}

/// Endpoint-wide counters. Cheap to copy for a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Counters {
    /// Datagrams handed to the endpoint.
    pub datagrams_in: u64,
    /// Datagrams produced by the endpoint.
    pub datagrams_out: u64,
    /// Bytes handed in.
    pub bytes_in: u64,
    /// Bytes produced.
    pub bytes_out: u64,
    /// Data packets produced.
    pub packets_sent: u64,
    /// Packets declared lost (their frames were sent again).
    pub packets_lost: u64,
    /// Stream bytes queued again after a loss.
    pub retransmitted_bytes: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Reliable messages queued for sending.
    pub messages_sent: u64,
    /// Reliable messages received whole.
    pub messages_received: u64,
    /// Unreliable datagrams sent.
    pub datagrams_sent: u64,
    /// Unreliable datagrams received.
    pub datagrams_received: u64,
    /// Incoming messages refused as larger than `max_message_size`.
    pub refused_oversize: u64,
    /// Sessions opened.
    pub sessions_opened: u64,
    /// Sessions closed.
    pub sessions_closed: u64,
    /// Drops by reason.
    pub drops: DropCounters,
}

/// What the session with one peer carried and measured ([`Endpoint::peers`](super::Endpoint::peers)).
/// The figures are the session's: a new session (the peer restarted, or the session was
/// closed and opened again) starts them from zero.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerCounters {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The peer's incarnation once the handshake completed.
    pub incarnation: Option<u64>,
    /// Smoothed round-trip time (the configured initial RTT before the first sample).
    pub srtt: Duration,
    /// The 99th percentile of the last 128 round-trip samples (none before the first).
    pub rtt_p99: Option<Duration>,
    /// Data packets sent to the peer.
    pub packets_out: u64,
    /// Of those, packets declared lost (their frames were sent again).
    pub packets_lost: u64,
    /// Bytes of authenticated data packets received from the peer.
    pub bytes_in: u64,
    /// Bytes of data packets sent to the peer.
    pub bytes_out: u64,
}
