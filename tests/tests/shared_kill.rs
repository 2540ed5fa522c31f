//! Shared objects whose owner process is `kill -9`ed: the owner and the backup are
//! `mesh-node` processes (they hold the object untyped), this test is the writing node;
//! discovery is a `redis-server` spawned on a free loopback port (heartbeat 100 ms, expiry
//! 300 ms).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "discovery_redis_util.rs"]
mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use mesh_core::shared::{RemoveReason, SharedEvent, SharedEvents};
use mesh_core::{Discovery, SharedObject};
use mesh_tests::redis::RedisServer;
use util::{NodeProcess, TestResult, WAIT, builder, init_tracing, wait_views};

/// A counter with a name.
#[derive(SharedObject, Clone, Default, Debug, PartialEq)]
pub struct Tally {
    #[shared(min = 0, max = 1_000_000)]
    n: i64,
    label: String,
}

async fn next_owner_or_removal(ev: &mut SharedEvents) -> SharedEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            match ev.next().await {
                Some(e @ (SharedEvent::OwnerChanged { .. } | SharedEvent::Removed { .. })) => {
                    return e;
                }
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await
    .expect("the replica hears of the owner's death")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_with_a_backup_loses_no_acknowledged_write() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let env = [("MESH_REDIS_URL", url.as_str()), ("MESH_PREFIX", "sk")];
    let mut owner = NodeProcess::spawn(&env)?;
    let backup = NodeProcess::spawn(&env)?;
    let me = builder(Discovery::redis(&url), "sk", "game")
        .request_timeout(Duration::from_secs(1))
        .start()
        .await?;
    wait_views(&[&me], &[me.id(), owner.id, backup.id], WAIT).await?;
    // The object lives in the owner process, its backup in the other one.
    let room = me
        .shared()
        .create(Tally::default())
        .on(owner.id)
        .backup(backup.id)
        .await?;
    assert_eq!(room.id().owner, owner.id);
    room.set_label("arena".into()).await?;
    let mut ev = room.events();
    let acked = Arc::new(AtomicI64::new(0));
    let attempted = Arc::new(AtomicI64::new(0));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let h = room.clone();
        let (acked, attempted) = (acked.clone(), attempted.clone());
        writers.push(tokio::spawn(async move {
            for _ in 0..100 {
                attempted.fetch_add(1, Ordering::Relaxed);
                if h.inc_n(1).await.is_ok() {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::timeout(WAIT, async {
        while acked.load(Ordering::Relaxed) < 60 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await?;
    owner.kill9();
    let killed = Instant::now();
    let e = next_owner_or_removal(&mut ev).await;
    eprintln!(
        "owner killed; replica moved after {:?}: {e:?}",
        killed.elapsed()
    );
    assert_eq!(
        e,
        SharedEvent::OwnerChanged {
            owner: backup.id,
            epoch: 2
        }
    );
    for w in writers {
        tokio::time::timeout(WAIT * 2, w).await??;
    }
    room.refresh().await?;
    let (acked, attempted) = (
        acked.load(Ordering::Relaxed),
        attempted.load(Ordering::Relaxed),
    );
    let n = room.n();
    eprintln!("{n} counted, {acked} acknowledged, {attempted} tried");
    assert!(
        acked <= n && n <= attempted,
        "{n} counted, {acked} acknowledged, {attempted} tried"
    );
    assert_eq!(room.label(), "arena");
    assert_eq!(room.epoch(), 2);
    // Writes go on at the backup, which orders the object now.
    room.inc_n(1).await?;
    let listed = me.shared().list(backup.id).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].epoch, listed[0].version), (2, room.version()));
    drop((room, ev));
    me.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_without_a_backup_is_lost_on_every_replica() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let env = [("MESH_REDIS_URL", url.as_str()), ("MESH_PREFIX", "sn")];
    let mut owner = NodeProcess::spawn(&env)?;
    let a = builder(Discovery::redis(&url), "sn", "game")
        .start()
        .await?;
    let b = builder(Discovery::redis(&url), "sn", "game")
        .start()
        .await?;
    wait_views(&[&a, &b], &[a.id(), b.id(), owner.id], WAIT).await?;
    let at_a = a.shared().create(Tally::default()).on(owner.id).await?;
    at_a.inc_n(3).await?;
    let at_b = b.shared().get::<Tally>(at_a.id()).await?;
    let (mut ea, mut eb) = (at_a.events(), at_b.events());
    owner.kill9();
    let killed = Instant::now();
    for ev in [&mut ea, &mut eb] {
        let e = next_owner_or_removal(ev).await;
        assert_eq!(
            e,
            SharedEvent::Removed {
                reason: RemoveReason::OwnerLost
            }
        );
    }
    eprintln!(
        "OwnerLost on both replicas {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(at_b.removed(), Some(RemoveReason::OwnerLost));
    drop((at_a, at_b, ea, eb));
    a.stop().await;
    b.stop().await;
    Ok(())
}
