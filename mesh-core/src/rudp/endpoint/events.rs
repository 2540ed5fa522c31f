//! What the endpoint reports: events, failures, errors of sends, incoming messages and
//! transmits.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::rudp::send::MessageId;
use crate::rudp::wire::RejectReason;

/// Why a peer is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnreachableReason {
    /// Silent for `peer_timeout` while something was in flight to it.
    #[error("the peer was silent for longer than peer_timeout while messages were in flight")]
    Timeout,
    /// It did not answer the handshake within `peer_timeout`.
    #[error(
        "the peer did not answer the handshake within peer_timeout (is it running, and is the address right?)"
    )]
    HandshakeTimeout,
    /// It has no such session (it closed its side, e.g. after its own timeout).
    #[error(
        "the peer no longer has the session (it closed it); the message may or may not have been delivered"
    )]
    SessionLost,
    /// The session was closed locally.
    #[error("the session was closed locally")]
    Closed,
}

/// Why a reliable message failed. Each failed message gets exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The peer is unreachable; the message may or may not have been delivered.
    #[error("peer unreachable: {0}")]
    Unreachable(UnreachableReason),
    /// The peer restarted (new incarnation); the old one may or may not have received it.
    #[error(
        "the peer restarted (incarnation {old:#x} -> {new:#x}); the message may have reached the old process"
    )]
    Restarted {
        /// The incarnation the message was sent to.
        old: u64,
        /// The new incarnation.
        new: u64,
    },
    /// The peer refuses our packets.
    #[error("the peer is incompatible: {0}")]
    Incompatible(RejectReason),
    /// The peer refused the message as larger than its limit.
    #[error("the peer refused a {size}-byte message: its max_message_size is {max}")]
    TooLarge {
        /// The message size.
        size: u64,
        /// The peer's limit.
        max: u64,
    },
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message is larger than allowed; nothing was sent.
    #[error(
        "message of {size} bytes exceeds the limit of {max} bytes; split it or raise the limit"
    )]
    TooLarge {
        /// The message size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The send queue for this peer is full; wait for acknowledgements and retry.
    #[error("the send queue to {peer} is full ({queued} bytes waiting); retry when it drains")]
    Full {
        /// The peer.
        peer: SocketAddr,
        /// Bytes queued.
        queued: u64,
    },
    /// No such channel.
    #[error("channel {channel} does not exist (this endpoint has {channels} channels)")]
    NoSuchChannel {
        /// The channel asked for.
        channel: u8,
        /// How many there are.
        channels: u8,
    },
    /// No session can be opened: too many peers or receive memory exhausted.
    #[error("cannot open a session to {peer}: {why}")]
    Overloaded {
        /// The peer.
        peer: SocketAddr,
        /// Which limit was hit.
        why: &'static str,
    },
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A session with `peer` is established.
    Connected {
        /// The peer.
        peer: SocketAddr,
        /// Its incarnation.
        incarnation: u64,
    },
    /// `peer` restarted: a new incarnation at a known address.
    Restarted {
        /// The peer.
        peer: SocketAddr,
        /// Previous incarnation.
        old: u64,
        /// New incarnation.
        new: u64,
    },
    /// The session with `peer` was closed as unreachable.
    Unreachable {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: UnreachableReason,
    },
    /// `peer` refuses our packets, or we refuse its.
    Incompatible {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: RejectReason,
    },
    /// Message `id` to `peer` was acknowledged.
    Delivered {
        /// The peer.
        peer: SocketAddr,
        /// The message.
        id: MessageId,
    },
    /// Message `id` to `peer` failed.
    Failed {
        /// The peer.
        peer: SocketAddr,
        /// The message.
        id: MessageId,
        /// Why.
        error: Failure,
    },
    /// We refused an incoming message as larger than `max_message_size`.
    Refused {
        /// The sender.
        peer: SocketAddr,
        /// Its channel.
        channel: u8,
        /// Its announced size.
        size: u64,
    },
}

/// A received message or datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The sender.
    pub peer: SocketAddr,
    /// The channel of a reliable message; `None` for an unreliable datagram.
    pub channel: Option<u8>,
    /// The payload.
    pub data: Bytes,
    /// The sender's incarnation, as its session knew it (0 if the session closed since):
    /// with `peer`, it tells a restarted process from the one before.
    pub incarnation: u64,
}

/// Where a batch of datagrams written by [`Endpoint::poll_transmit`](super::Endpoint::poll_transmit) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub destination: SocketAddr,
    /// Size of each datagram; the buffer holds consecutive datagrams of this size (the last
    /// may be shorter).
    pub segment_size: usize,
    /// Number of datagrams.
    pub segments: usize,
}
