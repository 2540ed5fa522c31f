//! Shared objects over real loopback meshes: ordering, refusals, CAS, batches, TTL, owner
//! loss, removal and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_core::shared::{ObjectId, Refusal, RemoveReason, SharedError, SharedEvent};
use mesh_core::{LocalRegistry, Mesh, SharedObject};
use tokio::time::timeout;

mod common;

use common::{LIMIT, node};

/// A game room.
#[derive(SharedObject, Clone, Default, Debug, PartialEq)]
pub struct Room {
    #[shared(min = 0, max = 100_000)]
    players: i64,
    name: String,
    #[shared(max_len = 500)]
    members: BTreeMap<String, u32>,
}

/// Bounded counters.
#[derive(SharedObject, Clone, Default, Debug)]
pub struct Gauge {
    #[shared(min = 0, max = 10)]
    level: u32,
    #[shared(min = -5, max = 5, on_bound = clamp)]
    tilt: i32,
}

/// Another type.
#[derive(SharedObject, Clone, Default, Debug)]
pub struct Other {
    x: u8,
}

async fn nodes(n: usize) -> (LocalRegistry, Vec<Mesh>) {
    let registry = LocalRegistry::new();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(node(&registry, "game").await);
    }
    for m in &out {
        timeout(LIMIT, async {
            while m.nodes().len() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("every node sees the others");
    }
    (registry, out)
}

/// A handle on `id` from every node (each node subscribes).
async fn on_every<T: SharedObject>(nodes: &[Mesh], id: ObjectId) -> Vec<T::Handle> {
    let mut handles = Vec::new();
    for n in nodes {
        handles.push(n.shared().get::<T>(id).await.unwrap());
    }
    handles
}

async fn stop_all(nodes: Vec<Mesh>) {
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_incs_from_five_nodes_sum_exactly() {
    let (_r, nodes) = nodes(5).await;
    let room = nodes[0].shared().create(Room::default()).await.unwrap();
    let handles = on_every::<Room>(&nodes, room.id()).await;
    let mut tasks = Vec::new();
    for h in &handles {
        for _ in 0..1000 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move { h.inc_players(1).await }));
        }
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(timeout(LIMIT, t).await.unwrap().unwrap().unwrap());
    }
    // Each write got its own version: 5,000 distinct, after the creation's 1.
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 5000);
    assert_eq!(versions.first(), Some(&2));
    assert_eq!(versions.last(), Some(&5001));
    for h in &handles {
        timeout(LIMIT, h.wait_version(5001)).await.unwrap().unwrap();
        assert_eq!(h.players(), 5000);
    }
    assert_eq!(room.refresh().await.unwrap(), 5001);
    drop((room, handles));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_change_nothing_anywhere() {
    let (_r, nodes) = nodes(3).await;
    let g = nodes[0].shared().create(Gauge::default()).await.unwrap();
    let handles = on_every::<Gauge>(&nodes, g.id()).await;
    // 30 writers race for 10 slots: exactly 10 win, the rest see the bound.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let h = handles[i % 3].clone();
        tasks.push(tokio::spawn(async move { h.inc_level(1).await }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(SharedError::Refused {
                refusal: Refusal::OutOfBounds { value, max, .. },
                ..
            }) => {
                assert_eq!((value, max), (11, 10));
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((ok, refused), (10, 20));
    let top = g.refresh().await.unwrap();
    assert_eq!(top, 11, "only accepted writes take a version");
    for h in &handles {
        timeout(LIMIT, h.wait_version(top)).await.unwrap().unwrap();
        assert_eq!(h.level(), 10);
        assert_eq!(h.version(), top);
    }
    // A clamping field never refuses; it stops at its bound.
    handles[1].inc_tilt(100).await.unwrap();
    assert_eq!(handles[1].tilt(), 5);
    handles[2].inc_tilt(-1000).await.unwrap();
    assert_eq!(handles[2].tilt(), -5);
    drop((g, handles));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_under_contention_has_one_winner_per_round() {
    let (_r, nodes) = nodes(4).await;
    let room = nodes[0].shared().create(Room::default()).await.unwrap();
    let handles = on_every::<Room>(&nodes, room.id()).await;
    let mut current = String::new();
    for round in 0..20 {
        let mut tasks = Vec::new();
        for (i, h) in handles.iter().enumerate() {
            let h = h.clone();
            let expected = current.clone();
            let new = format!("r{round}-n{i}");
            tasks.push(tokio::spawn(async move {
                h.cas_name(expected.as_str(), new.clone())
                    .await
                    .map(|_| new)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(new) => winners.push(new),
                Err(SharedError::Refused {
                    refusal: Refusal::CasFailed { field },
                    ..
                }) => assert_eq!(field, "name"),
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        current = winners.remove(0);
        room.refresh().await.unwrap();
        assert_eq!(room.name(), current);
    }
    drop((room, handles));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_never_seen_half_applied() {
    let (_r, nodes) = nodes(2).await;
    let room = nodes[0].shared().create(Room::default()).await.unwrap();
    let watcher = nodes[1].shared().get::<Room>(room.id()).await.unwrap();
    let mut events = watcher.events();
    let check = {
        let watcher = watcher.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while let Some(e) = events.next().await {
                if let SharedEvent::Updated {
                    fields, version, ..
                } = e
                {
                    // Every batch writes both fields: never one without the other.
                    let (players, members) = watcher.read(|r| (r.players, r.members.len()));
                    assert_eq!(players as usize, members, "at version {version}");
                    if version > 1 {
                        assert_eq!(fields, vec!["players", "members"]);
                    }
                    seen += 1;
                    if version == 51 {
                        return seen;
                    }
                }
            }
            seen
        })
    };
    for i in 0..50 {
        room.batch()
            .inc_players(1)
            .members_put(format!("p{i}"), i)
            .commit()
            .await
            .unwrap();
    }
    assert!(timeout(LIMIT, check).await.unwrap().unwrap() >= 1);
    // A batch with one refused op changes nothing, on the owner or anywhere.
    let before = room.refresh().await.unwrap();
    let err = room
        .batch()
        .members_put("extra".into(), 1)
        .inc_players(-1000)
        .commit()
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        SharedError::Refused {
            refusal: Refusal::OutOfBounds { .. },
            ..
        }
    ));
    assert_eq!(room.refresh().await.unwrap(), before);
    assert!(!room.members().contains_key("extra"));
    assert_eq!(room.players(), 50);
    drop((room, watcher));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_set_put_delete_and_events_in_order() {
    let (_r, nodes) = nodes(2).await;
    let room = nodes[0]
        .shared()
        .create(Room {
            players: 3,
            name: "start".into(),
            members: BTreeMap::new(),
        })
        .await
        .unwrap();
    let other = nodes[1].shared().get::<Room>(room.id()).await.unwrap();
    assert_eq!(other.get().players, 3);
    assert_eq!(other.name(), "start");
    let mut events = other.events();
    other.set_name("lobby".into()).await.unwrap();
    other.members_put("bob".into(), 7).await.unwrap();
    other.members_put("eve".into(), 8).await.unwrap();
    other.members_delete("bob").await.unwrap();
    other.set_players(9).await.unwrap();
    // Read-your-writes on the writing node.
    assert_eq!(other.name(), "lobby");
    assert_eq!(other.members(), BTreeMap::from([("eve".to_string(), 8)]));
    let mut versions = Vec::new();
    while versions.len() < 5 {
        match timeout(LIMIT, events.next()).await.unwrap().unwrap() {
            SharedEvent::Updated { version, by, .. } => {
                assert_eq!(by, Some(nodes[1].id()));
                versions.push(version);
            }
            e => panic!("unexpected event {e:?}"),
        }
    }
    assert_eq!(versions, vec![2, 3, 4, 5, 6]);
    room.wait_version(6).await.unwrap();
    assert_eq!(room.get(), other.get());
    drop((room, other));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expiry_reaches_every_replica() {
    let (_r, nodes) = nodes(3).await;
    let room = nodes[0]
        .shared()
        .create(Room::default())
        .ttl(Duration::from_millis(300))
        .on(nodes[1].id())
        .await
        .unwrap();
    assert_eq!(room.id().owner, nodes[1].id());
    let far = nodes[2].shared().get::<Room>(room.id()).await.unwrap();
    let mut events = far.events();
    // Writes keep it alive past its TTL.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        room.inc_players(1).await.unwrap();
    }
    assert!(far.removed().is_none());
    let reason = timeout(LIMIT, async {
        loop {
            if let Some(SharedEvent::Removed { reason }) = events.next().await {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(reason, RemoveReason::Expired);
    timeout(LIMIT, async {
        while room.removed().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(room.removed(), Some(RemoveReason::Expired));
    assert!(matches!(
        room.inc_players(1).await,
        Err(SharedError::Removed {
            reason: RemoveReason::Expired,
            ..
        })
    ));
    assert!(nodes[1].shared().owned().is_empty());
    drop((room, far));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_loss_removes_every_replica() {
    let (_r, mut nodes) = nodes(3).await;
    let owner = nodes.remove(0);
    let room = owner.shared().create(Room::default()).await.unwrap();
    let a = nodes[0].shared().get::<Room>(room.id()).await.unwrap();
    let b = nodes[1].shared().get::<Room>(room.id()).await.unwrap();
    a.inc_players(5).await.unwrap();
    let (mut ea, mut eb) = (a.events(), b.events());
    owner.stop().await;
    for ev in [&mut ea, &mut eb] {
        let reason = timeout(LIMIT, async {
            loop {
                if let Some(SharedEvent::Removed { reason }) = ev.next().await {
                    return reason;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(reason, RemoveReason::OwnerLost);
    }
    assert_eq!(a.removed(), Some(RemoveReason::OwnerLost));
    assert!(matches!(
        b.inc_players(1).await,
        Err(SharedError::Removed {
            reason: RemoveReason::OwnerLost,
            ..
        })
    ));
    drop((room, a, b));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_reaches_every_replica() {
    let (_r, nodes) = nodes(2).await;
    let room = nodes[0].shared().create(Room::default()).await.unwrap();
    let other = nodes[1].shared().get::<Room>(room.id()).await.unwrap();
    let mut ev = other.events();
    nodes[1].shared().remove(room.id()).await.unwrap();
    let e = timeout(LIMIT, ev.next()).await.unwrap();
    assert_eq!(
        e,
        Some(SharedEvent::Removed {
            reason: RemoveReason::Removed
        })
    );
    assert_eq!(timeout(LIMIT, ev.next()).await.unwrap(), None);
    assert!(nodes[0].shared().owned().is_empty());
    assert!(matches!(
        nodes[1].shared().remove(room.id()).await,
        Err(SharedError::Refused {
            refusal: Refusal::NotFound,
            ..
        })
    ));
    drop((room, other));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let (_r, nodes) = nodes(2).await;
    let room = nodes[0].shared().create(Room::default()).await.unwrap();
    // Wrong type on get.
    match nodes[1].shared().get::<Other>(room.id()).await {
        Err(SharedError::Refused {
            refusal: Refusal::WrongType { expected, found },
            ..
        }) => {
            assert!(expected.ends_with("Other"), "{expected}");
            assert!(found.ends_with("Room"), "{found}");
        }
        r => panic!("expected WrongType, got {r:?}"),
    }
    // Unknown object.
    let unknown = ObjectId {
        serial: room.id().serial + 1000,
        ..room.id()
    };
    assert!(matches!(
        nodes[1].shared().get::<Room>(unknown).await,
        Err(SharedError::Refused {
            refusal: Refusal::NotFound,
            ..
        })
    ));
    // A map past its max_len.
    let mut full = Room::default();
    for i in 0..500 {
        full.members.insert(format!("m{i}"), i);
    }
    let big = nodes[1]
        .shared()
        .create(full)
        .on(nodes[0].id())
        .await
        .unwrap();
    let v = big.version();
    assert!(matches!(
        big.members_put("one more".into(), 1).await,
        Err(SharedError::Refused {
            refusal: Refusal::MapFull { max_len: 500, .. },
            ..
        })
    ));
    big.members_put("m3".into(), 33).await.unwrap(); // replacing is not growing
    assert_eq!(big.version(), v + 1);
    // Ids print and parse back.
    let text = room.id().to_string();
    assert_eq!(text.parse::<ObjectId>().unwrap(), room.id());
    assert!("nonsense".parse::<ObjectId>().is_err());
    // Tools list what a node owns.
    let listed = nodes[1].shared().list(nodes[0].id()).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|o| o.id == big.id() && o.subscribers == 1)
    );
    drop((room, big));
    stop_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_read_an_object_untyped_as_json() {
    let (_r, nodes) = nodes(2).await;
    let room = nodes[0].shared().create(Room::default()).await.unwrap();
    room.inc_players(3).await.unwrap();
    room.set_name("lobby".into()).await.unwrap();
    room.members_put("bob".into(), 7).await.unwrap();
    // From a node that holds no replica and does not need the type.
    let seen = nodes[1].shared().inspect(room.id()).await.unwrap();
    assert_eq!(seen.info.version, 4);
    let json = seen.to_json();
    assert_eq!(json["type"], "Room");
    assert_eq!(json["id"], room.id().to_string());
    assert_eq!(json["fields"]["players"], 3);
    // "lobby" as postcard: its length, then its bytes.
    assert_eq!(json["fields"]["name"]["postcard_hex"], "056c6f626279");
    assert_eq!(json["fields"]["members"][0][0], "03626f62");
    let missing = ObjectId {
        owner: nodes[0].id(),
        serial: 999,
    };
    let e = nodes[1].shared().inspect(missing).await.unwrap_err();
    assert_eq!(e.refusal(), Some(&Refusal::NotFound));
    drop(room);
    stop_all(nodes).await;
}
