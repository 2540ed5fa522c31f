//! The tokio driver around the [`rudp`](crate::rudp) endpoint: one UDP socket per node.
//!
//! A [`Transport`] is a cheap-to-clone handle. Sending happens on the caller's task: the
//! message is queued in the endpoint and the resulting datagrams are written to the socket at
//! once, so a request costs no extra task hop. A task waiting in [`Transport::recv`] reads the
//! socket itself when datagrams arrive (it is woken first), so a request is answered without a
//! hand-over between tasks; one driver task reads the socket when nobody else does, runs the
//! protocol timers and sends what received acknowledgements let out. Messages are consumed
//! from the endpoint only when the application takes them, so a slow application stalls its
//! senders through flow control instead of growing a queue.
//!
//! The protocol's timers run on the transport's [`Clock`]: by default the real monotonic
//! clock (`std::time::Instant`; tokio's paused test time does not move it), or a manual clock
//! a test moves itself ([`Transport::bind_with_clock`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), mesh_core::transport::TransportError> {
//! use bytes::Bytes;
//! use mesh_core::transport::{Transport, TransportConfig};
//!
//! let a = Transport::bind(TransportConfig::default()).await?;
//! let b = Transport::bind(TransportConfig::default()).await?;
//! a.send(b.local_addr(), 0, Bytes::from_static(b"hello")).await?; // resolves on ack
//! let msg = b.recv().await?;
//! assert_eq!(&msg.data[..], b"hello");
//! # Ok(()) }
//! ```

mod clock;
mod driver;
pub(crate) mod socket;

pub use clock::Clock;
pub use driver::{Delivery, PeerEvent, Received, Transport, TransportConfig, TransportError};
pub use socket::{SocketConfig, SocketError};
