//! The reliable-UDP protocol as a sans-IO state machine.
//!
//! [`Endpoint`] holds every session of one node. Feed it datagrams with
//! [`Endpoint::handle`] and the clock with [`Endpoint::handle_timeout`]; take datagrams out
//! with [`Endpoint::poll_transmit`], received messages with [`Endpoint::poll_message`] and
//! events (delivery, failure, peer up/restarted/unreachable/incompatible) with
//! [`Endpoint::poll_event`]. It never touches a socket, a clock or a task, so loss,
//! reordering, duplication and restarts are tested deterministically.
//!
//! What it guarantees:
//! * sessions open with a handshake carrying each side's random incarnation, the cluster id
//!   and the wire version; a restarted peer is detected and everything in flight to the old
//!   one fails with [`Failure::Restarted`];
//! * reliable messages are delivered exactly once and in order per channel, with selective
//!   acknowledgements, RTT-driven loss detection, packet numbers never reused;
//! * a peer silent for `peer_timeout` while anything is in flight is declared unreachable and
//!   each message in flight fails once;
//! * receive memory is bounded per peer and in total by flow-control credit; a receiver that
//!   does not consume stalls its senders, and nothing acknowledged is ever dropped;
//! * malformed, truncated and foreign datagrams are dropped and counted, never a panic.

mod config;
mod congestion;
mod cookie;
mod counters;
mod crypto;
mod endpoint;
pub(crate) mod hash;
mod msgbuf;
mod ranges;
mod recent;
mod recv;
mod rtt;
mod send;
mod sent;
mod session;
pub(crate) mod wire;

#[cfg(test)]
mod attack_tests;
#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use config::{Config, ConfigError, MIN_DATAGRAM_SIZE, cluster_id};
pub use counters::{Counters, DropCounters, PeerCounters};
pub use crypto::{ClusterKey, KEY_LEN, KeyError, KeyId, Keyring, MAX_KEYS};
pub(crate) use crypto::{hex, unhex};
pub use endpoint::{Endpoint, Event, Failure, Incoming, SendError, Transmit, UnreachableReason};
pub use send::MessageId;
pub use wire::RejectReason;
