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

/// Stopping a node whose only unacknowledged data goes to a node that already left does not
/// wait for the transport to give that peer up (here `peer_timeout` is 20 s, so waiting for
/// it would exceed the 10 s bound; before the fix, stop waited for any unacknowledged byte).
#[tokio::test]
async fn stop_does_not_wait_for_data_to_a_node_that_left() {
    let registry = LocalRegistry::new();
    let start = |t: &'static str| {
        mesh_core::Mesh::builder()
            .node_type(t)
            .discovery(mesh_core::Discovery::local_registry(&registry))
            .peer_timeout(Duration::from_secs(20))
            .shutdown_timeout(Duration::from_secs(30))
            .start()
    };
    let a = start("a").await.unwrap();
    let b = start("b").await.unwrap();
    let b_addr = b.addr();
    // A session exists (a message went through and was acknowledged).
    let _h = b
        .handle(
            7000,
            mesh_core::rpc::handler(|_c: mesh_core::CallContext, _s: String| async {}),
        )
        .unwrap();
    NotesClient::for_node(b_addr)
        .on(&a)
        .note("first".into())
        .await
        .unwrap();
    b.stop().await;
    assert!(!a.exists(b_addr), "b left the view");
    // Data to b's address now stays unacknowledged (nothing reads there).
    let r = NotesClient::for_node(b_addr)
        .on(&a)
        .with_timeout(Duration::from_millis(50))
        .note("into the void".into())
        .await;
    assert!(r.is_err(), "{r:?}");
    tokio::time::timeout(Duration::from_secs(10), a.stop())
        .await
        .expect("stop returns without waiting for the departed peer");
}
