//! Reliable one-way sends are bounded by the client's deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(missing_docs)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use mesh_core::rpc::CallError;
use mesh_core::{LocalRegistry, mesh_service};

mod common;

use common::node;

/// A service with one reliable one-way method.
#[mesh_service(id = 7000)]
pub trait Notes {
    /// Reliable one-way (7000).
    #[mesh(oneway)]
    async fn note(&self, text: String);
}

/// A one-way send to an address where nothing answers (a socket nobody reads) fails with
/// `Timeout` at the client's deadline, before the transport gives the peer up.
#[tokio::test]
async fn a_one_way_send_to_a_silent_peer_times_out_at_the_deadline() {
    let registry = LocalRegistry::new();
    let mesh = node(&registry, "sender").await;
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = silent.local_addr().unwrap();
    let r = NotesClient::for_node(addr)
        .on(&mesh)
        .with_timeout(Duration::from_millis(150))
        .note("hello?".into())
        .await;
    // Without the deadline it would fail as unreachable once the handshake times out
    // (peer_timeout, 1 s).
    assert!(
        matches!(r, Err(CallError::Timeout { command: 7000, .. })),
        "{r:?}"
    );
    mesh.stop().await;
}
