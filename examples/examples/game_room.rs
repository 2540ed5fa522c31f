//! Game rooms as shared objects: a lobby node owns the rooms (each with a backup on a
//! second lobby node), players join from several game nodes at once, a watcher on another
//! node follows one room's events, the lobby owner stops and its backup takes the rooms
//! over without losing a join, and a room closes.
//!
//! Every node runs in this process over the in-process registry, on loopback. Run:
//! `cargo run --example game_room`. It exits 0 only if every replica agrees with the
//! owner, each room's player count equals its successful joins, and no room went past its
//! limit.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_core::prelude::*;
use mesh_core::shared::{Refusal, RemoveReason, SharedEvent};

/// Players a room holds at most.
const SEATS: i64 = 8;

/// A room: a bounded player count, a name, and who sits where.
#[derive(SharedObject, Clone, Default, Debug)]
pub struct Room {
    #[shared(min = 0, max = 8)]
    players: i64,
    name: String,
    #[shared(max_len = 64)]
    members: BTreeMap<String, u32>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn start(registry: &LocalRegistry, node_type: &str) -> Result<Mesh, Error> {
    Ok(Mesh::builder()
        .node_type(node_type)
        .discovery(Discovery::local_registry(registry))
        .start()
        .await?)
}

/// A player joins a room: takes a seat (refused when the room is full), then sits down.
async fn join(room: &RoomHandle, player: String, level: u32) -> Result<bool, Error> {
    let joined = room
        .batch()
        .inc_players(1)
        .members_put(player, level)
        .commit()
        .await;
    match joined {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.refusal(), Some(Refusal::OutOfBounds { .. })) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn run() -> Result<(), Error> {
    let registry = LocalRegistry::new();
    let lobby = start(&registry, "lobby").await?;
    let spare = start(&registry, "lobby").await?;
    let mut games = Vec::new();
    for _ in 0..3 {
        games.push(start(&registry, "game").await?);
    }
    let watcher = start(&registry, "game").await?;
    tokio::time::timeout(Duration::from_secs(10), async {
        while lobby.nodes().len() < 6 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;

    // The lobby opens two rooms; their backups go to the other lobby node.
    let mut rooms = Vec::new();
    for name in ["arena", "garden"] {
        let room = lobby
            .shared()
            .create(Room {
                name: name.into(),
                ..Room::default()
            })
            .backup_auto()
            .await?;
        println!("room {name} is {}", room.id());
        rooms.push(room);
    }
    let ids: Vec<_> = rooms.iter().map(|r| r.id()).collect();
    let watched = watcher.shared().get::<Room>(ids[0]).await?;
    let mut events = watched.events();

    // 30 players try to join each room from three game nodes at once: 8 seats each.
    let mut tasks = Vec::new();
    for (g, game) in games.iter().enumerate() {
        for &id in &ids {
            let room = game.shared().get::<Room>(id).await?;
            tasks.push(tokio::spawn(async move {
                let mut seated = 0u32;
                let mut turned_away = 0u32;
                for p in 0..10 {
                    if join(&room, format!("p{g}-{p}"), p).await? {
                        seated += 1;
                    } else {
                        turned_away += 1;
                    }
                }
                Ok::<_, Error>((id, seated, turned_away))
            }));
        }
    }
    let mut seated: BTreeMap<_, u32> = BTreeMap::new();
    let mut turned_away = 0;
    for t in tasks {
        let (id, s, a) = t.await??;
        *seated.entry(id).or_default() += s;
        turned_away += a;
    }
    for (id, n) in &seated {
        println!("joins: {n} seated in {id}");
    }
    println!("joins: {turned_away} turned away (room full)");
    let mut updates = 0;
    while let Ok(Some(SharedEvent::Updated { .. })) =
        tokio::time::timeout(Duration::from_millis(200), events.next()).await
    {
        updates += 1;
    }
    println!("the watcher saw {updates} updates of {}", ids[0]);

    // The lobby owner stops: the spare lobby holds every room and takes them over.
    drop(rooms);
    lobby.stop().await;
    let moved = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(SharedEvent::OwnerChanged { owner, epoch }) => return Some((owner, epoch)),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await?;
    if let Some((owner, epoch)) = moved {
        println!("owner changed to {owner} at epoch {epoch} (the spare lobby)");
    }
    if moved.map(|m| m.0) != Some(spare.id()) {
        return Err("the backup did not take the room over".into());
    }
    // A seat frees up and is taken again, ordered by the new owner.
    let at_game = games[0].shared().get::<Room>(ids[0]).await?;
    let leaving = at_game
        .members()
        .into_keys()
        .next()
        .ok_or("the arena is empty")?;
    at_game
        .batch()
        .inc_players(-1)
        .members_delete(&leaving)
        .commit()
        .await?;
    println!("{leaving} left the arena");
    if !join(&at_game, "late".into(), 1).await? {
        return Err("a freed seat could not be taken".into());
    }

    // Every replica agrees with the owner.
    let mut ok = true;
    for &id in &ids {
        let owner_view = spare.shared().get::<Room>(id).await?;
        owner_view.refresh().await?;
        let expected = i64::from(seated[&id]);
        let (players, members) = (owner_view.players(), owner_view.members().len());
        println!(
            "{}: {players} players, {members} members at the owner",
            owner_view.name()
        );
        ok &= players == expected && members as i64 == expected && players <= SEATS;
        for g in games.iter().chain([&watcher]) {
            let r = g.shared().get::<Room>(id).await?;
            r.wait_version(owner_view.version()).await?;
            ok &= r.players() == players && r.members() == owner_view.members();
        }
    }

    // The arena closes: the watcher sees it go.
    spare.shared().remove(ids[0]).await?;
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(SharedEvent::Removed { reason }) = events.next().await {
                return reason;
            }
        }
    })
    .await?;
    println!("the watcher saw the arena close: {gone}");
    ok &= gone == RemoveReason::Removed;

    drop((watched, at_game));
    for g in games {
        g.stop().await;
    }
    watcher.stop().await;
    spare.stop().await;
    if ok {
        println!("done: every replica agrees");
        Ok(())
    } else {
        Err("replicas disagree with the owner".into())
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("game_room failed: {e}");
        std::process::exit(1);
    }
}
