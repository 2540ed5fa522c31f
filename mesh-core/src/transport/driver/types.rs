//! The transport's configuration, errors, peer events and received messages.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::rudp::{self, ConfigError, Failure, RejectReason, SendError, UnreachableReason};
use crate::transport::socket::{SocketConfig, SocketError};

/// Configuration of a [`Transport`](super::Transport): where to bind and the protocol tunables.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TransportConfig {
    /// Socket binding.
    pub socket: SocketConfig,
    /// Protocol tunables.
    pub protocol: rudp::Config,
}

impl TransportConfig {
    /// Binds to `addr` (port 0 = any free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.socket.address = Some(addr.ip());
        self.socket.port = addr.port();
        self
    }

    /// Sets the protocol configuration.
    pub fn protocol(mut self, protocol: rudp::Config) -> Self {
        self.protocol = protocol;
        self
    }
}

/// What can go wrong with the transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The socket could not be bound or configured.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The protocol configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The message could not be queued.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The message was queued but failed.
    #[error("message to {peer} failed: {failure}")]
    Failed {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        failure: Failure,
    },
    /// The transport was closed.
    #[error("the transport is closed")]
    Closed,
}

/// A change in a peer's state, as seen by the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// A session is established.
    Up {
        /// The peer.
        peer: SocketAddr,
        /// Its incarnation.
        incarnation: u64,
    },
    /// The peer restarted (new incarnation at the same address).
    Restarted {
        /// The peer.
        peer: SocketAddr,
        /// Previous incarnation.
        old: u64,
        /// New incarnation.
        new: u64,
    },
    /// The peer is unreachable.
    Unreachable {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: UnreachableReason,
    },
    /// The peer and we cannot talk (other cluster, wire version).
    Incompatible {
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: RejectReason,
    },
    /// We refused a message from the peer as too large.
    Refused {
        /// The peer.
        peer: SocketAddr,
        /// The refused size.
        size: u64,
    },
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The sender.
    pub from: SocketAddr,
    /// The channel of a reliable message; `None` for an unreliable one.
    pub channel: Option<u8>,
    /// The payload.
    pub data: Bytes,
    /// The sender's incarnation (0 if its session closed before the message was taken).
    pub incarnation: u64,
}
