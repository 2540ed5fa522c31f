//! Shared objects on a bad path: the owner is reached only through a relay that drops 5% of
//! the datagrams in each direction and reorders 5% more; replicas still converge, every
//! acknowledged write is applied once, and every replica's events come in version order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use mesh_core::shared::SharedEvent;
use mesh_core::{Discovery, LocalRegistry, Mesh, SharedObject};
use tokio::time::timeout;

mod common;

use common::proxy::LossyProxy;
use common::{LIMIT, node};

/// A counter and a log of who wrote last.
#[derive(SharedObject, Clone, Default, Debug, PartialEq)]
pub struct Tally {
    #[shared(min = 0, max = 1_000_000)]
    count: i64,
    last: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_under_loss_and_reordering() {
    let registry = LocalRegistry::new();
    // The owner binds 127.0.0.1 and advertises 127.0.0.2, where the relay listens on the
    // same port: everything the others send it crosses the relay, and so do its answers
    // and pushes (it sends them back to the address it heard from, the relay's).
    let owner = Mesh::builder()
        .node_type("game")
        .discovery(Discovery::local_registry(&registry))
        .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
        .advertise(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .start()
        .await
        .unwrap();
    let port = owner.addr().port();
    let proxy = LossyProxy::start(
        SocketAddr::from(([127, 0, 0, 2], port)),
        SocketAddr::from(([127, 0, 0, 1], port)),
        0.05,
        0.05,
        7,
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(node(&registry, "game").await);
    }
    let tally = owner.shared().create(Tally::default()).await.unwrap();
    let mut handles = Vec::new();
    for r in &replicas {
        handles.push(
            timeout(LIMIT, r.shared().get::<Tally>(tally.id()))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // 3 replicas x 200 incs, 20 in flight each, plus a set of `last` after each 20: 630
    // writes after the creation's version 1.
    const PER: usize = 200;
    let last = 1 + 3 * PER as u64 + 3 * (PER as u64 / 20);

    // Every replica's events, from now on, until the last version.
    let mut watchers = Vec::new();
    for h in &handles {
        let mut events = h.events();
        watchers.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            while versions.last() != Some(&last) {
                match timeout(LIMIT, events.next()).await {
                    Ok(Some(SharedEvent::Updated { version, .. })) => versions.push(version),
                    Ok(other) => panic!("unexpected event {other:?}"),
                    Err(_) => break,
                }
            }
            versions
        }));
    }

    let mut writers = Vec::new();
    for (i, h) in handles.iter().enumerate() {
        let h = h.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = 0usize;
            for chunk in 0..PER / 20 {
                let mut batch = Vec::new();
                for _ in 0..20 {
                    let h = h.clone();
                    batch.push(tokio::spawn(async move { h.inc_count(1).await }));
                }
                for b in batch {
                    b.await.unwrap().unwrap();
                    acked += 1;
                }
                h.set_last(format!("replica {i} chunk {chunk}"))
                    .await
                    .unwrap();
            }
            acked
        }));
    }
    let mut acked = 0;
    for w in writers {
        acked += timeout(LIMIT * 3, w).await.unwrap().unwrap();
    }
    assert_eq!(acked, 3 * PER);

    assert_eq!(tally.refresh().await.unwrap(), last);
    assert_eq!(tally.count(), (3 * PER) as i64);
    for h in &handles {
        timeout(LIMIT, h.wait_version(last)).await.unwrap().unwrap();
        assert_eq!(h.get(), tally.get(), "a replica differs from the owner");
    }
    for w in watchers {
        let versions = w.await.unwrap();
        // In order, each once; a gap is allowed only where a snapshot replaced deltas.
        assert!(
            versions.windows(2).all(|p| p[0] < p[1]),
            "out of order: {versions:?}"
        );
        assert_eq!(versions.last(), Some(&last));
    }
    let c = &proxy.counts;
    let (dropped, reordered) = (
        c.dropped.load(Ordering::Relaxed),
        c.reordered.load(Ordering::Relaxed),
    );
    eprintln!(
        "relay: {} forwarded, {dropped} dropped, {reordered} reordered",
        c.forwarded.load(Ordering::Relaxed)
    );
    assert!(
        dropped > 20 && reordered > 20,
        "the path was not bad enough to test anything"
    );
    drop((tally, handles));
    for r in replicas {
        r.stop().await;
    }
    owner.stop().await;
}
