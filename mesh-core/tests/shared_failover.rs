//! Shared objects whose owner is lost, over real loopback meshes: a backup holds every
//! acknowledged write and takes over with epoch + 1, replicas follow it, writers re-route,
//! an old owner's writes are fenced, and an automatic backup is chosen again when lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use mesh_core::shared::{Refusal, SharedError, SharedEvent};
use mesh_core::{LocalRegistry, Mesh, NodeId, SharedObject};
use tokio::time::timeout;

mod common;

use common::{LIMIT, node};

/// A counter with a name.
#[derive(SharedObject, Clone, Default, Debug, PartialEq)]
pub struct Tally {
    #[shared(min = 0, max = 1_000_000)]
    n: i64,
    label: String,
}

async fn nodes(n: usize) -> (LocalRegistry, Vec<Mesh>) {
    let registry = LocalRegistry::new();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(node(&registry, "game").await);
    }
    for m in &out {
        see(m, n).await;
    }
    (registry, out)
}

async fn see(m: &Mesh, n: usize) {
    timeout(LIMIT, async {
        while m.nodes().len() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the view settles");
}

/// Waits for an `OwnerChanged` event naming `owner`; returns its epoch.
async fn owner_changed(ev: &mut mesh_core::shared::SharedEvents, owner: NodeId) -> u32 {
    timeout(LIMIT, async {
        loop {
            match ev.next().await {
                Some(SharedEvent::OwnerChanged { owner: o, epoch }) if o == owner => return epoch,
                Some(SharedEvent::Removed { reason }) => panic!("removed: {reason}"),
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await
    .expect("the replica follows the new owner")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_lost_mid_writes_loses_no_acknowledged_write() {
    let (_r, mut nodes) = nodes(3).await;
    let c = nodes.pop().unwrap();
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    let room = a
        .shared()
        .create(Tally::default())
        .backup(b.id())
        .await
        .unwrap();
    assert_eq!(a.shared().owned()[0].backup, Some(b.id()));
    let at_c = c.shared().get::<Tally>(room.id()).await.unwrap();
    let mut ev = at_c.events();
    // Writers on c: every acknowledged inc is counted; some in flight when a stops fail.
    let acked = Arc::new(AtomicI64::new(0));
    let attempted = Arc::new(AtomicI64::new(0));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let h = at_c.clone();
        let (acked, attempted) = (acked.clone(), attempted.clone());
        writers.push(tokio::spawn(async move {
            for _ in 0..60 {
                attempted.fetch_add(1, Ordering::Relaxed);
                if h.inc_n(1).await.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    timeout(LIMIT, async {
        while acked.load(Ordering::Relaxed) < 40 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    a.stop().await;
    let epoch = owner_changed(&mut ev, b.id()).await;
    assert_eq!(epoch, 2, "the backup takes over at epoch + 1");
    for w in writers {
        timeout(LIMIT, w).await.unwrap().unwrap();
    }
    // The replica is up to date with the new owner after a read there.
    at_c.refresh().await.unwrap();
    let (acked, attempted) = (
        acked.load(Ordering::Relaxed),
        attempted.load(Ordering::Relaxed),
    );
    let n = at_c.n();
    assert!(
        n >= acked && n <= attempted,
        "{n} counted, {acked} acknowledged, {attempted} tried"
    );
    assert!(
        acked > 100,
        "writes went on at the new owner: {acked} acknowledged"
    );
    assert_eq!(b.shared().owned()[0].epoch, 2);
    assert_eq!(b.shared().stats().takeovers, 1);
    // Writes go on at b, and b's replica agrees.
    at_c.inc_n(1).await.unwrap();
    let at_b = b.shared().get::<Tally>(room.id()).await.unwrap();
    assert_eq!((at_b.version(), at_b.n()), (at_c.version(), at_c.n()));
    drop((room, at_c, at_b));
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_owner_cut_off_and_back_is_fenced() {
    let (registry, mut nodes) = nodes(3).await;
    let c = nodes.pop().unwrap();
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    let at_a = a
        .shared()
        .create(Tally::default())
        .backup(b.id())
        .await
        .unwrap();
    let id = at_a.id();
    at_a.inc_n(5).await.unwrap();
    let at_c = c.shared().get::<Tally>(id).await.unwrap();
    let mut ev_c = at_c.events();
    let mut ev_a = at_a.events();
    // a is cut off: b and c see it leave, while a runs on, believing it still owns the
    // object.
    registry.evict(a.id());
    see(&b, 2).await;
    see(&c, 2).await;
    assert_eq!(owner_changed(&mut ev_c, b.id()).await, 2);
    at_c.inc_n(10).await.unwrap();
    assert_eq!(at_c.n(), 15);
    // The old owner orders a write at epoch 1: its backup, now the owner, fences it.
    let r = at_a.inc_n(100).await;
    match r {
        Err(SharedError::Refused {
            refusal: Refusal::Fenced { owner, epoch },
            ..
        }) => assert_eq!((owner, epoch), (b.id(), 2)),
        other => panic!("expected fenced, got {other:?}"),
    }
    assert_eq!(a.shared().stats().fenced, 1);
    assert!(a.shared().owned().is_empty(), "a no longer orders it");
    // Nothing of it anywhere; a's replica follows b and sees b's write.
    assert_eq!(owner_changed(&mut ev_a, b.id()).await, 2);
    assert_eq!(at_a.n(), 15);
    at_c.refresh().await.unwrap();
    assert_eq!(at_c.n(), 15);
    // Written again, it is ordered by b.
    at_a.inc_n(100).await.unwrap();
    at_c.wait_version(at_a.version()).await.unwrap();
    assert_eq!(at_c.n(), 115);
    assert_eq!(at_a.epoch(), 2);
    drop((at_a, at_c));
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_backup_is_chosen_again_when_lost() {
    let (_r, nodes) = nodes(4).await;
    let room = nodes[0]
        .shared()
        .create(Tally::default())
        .backup_auto()
        .await
        .unwrap();
    room.set_label("lobby".into()).await.unwrap();
    let first = nodes[0].shared().owned()[0].backup.expect("a backup");
    assert_ne!(first, nodes[0].id());
    let idx = nodes.iter().position(|m| m.id() == first).unwrap();
    let mut nodes = nodes;
    let lost = nodes.remove(idx);
    lost.stop().await;
    let second = timeout(LIMIT, async {
        loop {
            if let Some(b) = nodes[0].shared().owned()[0].backup
                && b != first
            {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("another backup is chosen");
    assert_ne!(second, nodes[0].id());
    room.inc_n(3).await.unwrap();
    // The owner is lost next: the second backup takes over, with every write.
    let idx = nodes
        .iter()
        .position(|m| m.id() != nodes[0].id() && m.id() != second);
    let watcher = nodes.remove(idx.unwrap());
    let at_w = watcher.shared().get::<Tally>(room.id()).await.unwrap();
    let mut ev = at_w.events();
    let owner = nodes.remove(0);
    drop(room);
    owner.stop().await;
    owner_changed(&mut ev, second).await;
    assert_eq!((at_w.n(), at_w.label()), (3, "lobby".to_string()));
    at_w.inc_n(1).await.unwrap();
    assert_eq!(at_w.n(), 4);
    drop(at_w);
    watcher.stop().await;
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_is_not_a_live_member_is_refused() {
    let (_r, nodes) = nodes(1).await;
    let stranger = NodeId::new("127.0.0.1:9".parse().unwrap(), 1);
    let r = nodes[0]
        .shared()
        .create(Tally::default())
        .backup(stranger)
        .await;
    assert!(
        matches!(
            r.as_ref().err().and_then(|e| e.refusal()),
            Some(Refusal::NoBackup { .. })
        ),
        "{r:?}"
    );
    let r = nodes[0]
        .shared()
        .create(Tally::default())
        .backup_auto()
        .await;
    assert!(
        matches!(
            r.as_ref().err().and_then(|e| e.refusal()),
            Some(Refusal::NoBackup { .. })
        ),
        "{r:?}"
    );
    assert!(nodes[0].shared().owned().is_empty(), "nothing was created");
    for n in nodes {
        n.stop().await;
    }
}
