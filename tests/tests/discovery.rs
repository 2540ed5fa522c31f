//! Membership without Redis: the in-process registry and static seeds, over real UDP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mesh_core::config::MeshConfig;
use mesh_core::{Discovery, LeaveReason, LocalRegistry, Mesh, MeshError, MeshEvent, NodeStatus};
use mesh_tests::mesh::{TICK, node};
use mesh_tests::node::NodeProcess;
use tokio::sync::broadcast;

/// Waits (bounded) for an event matching `f`.
async fn wait_event(
    rx: &mut broadcast::Receiver<MeshEvent>,
    f: impl Fn(&MeshEvent) -> bool,
) -> MeshEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await {
                Ok(e) if f(&e) => return e,
                Ok(_) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
    })
    .await
    .expect("event within 5 s")
}

#[tokio::test]
async fn local_join_leave_queries_values_status_hooks() {
    let reg = LocalRegistry::new();
    let a = Mesh::builder()
        .node_type("game")
        .role("UDP")
        .value("region", "eu")
        .discovery(Discovery::local_registry(&reg))
        .update_interval(TICK)
        .start()
        .await
        .unwrap();
    let mut ev = a.events();
    let b = node(&reg, "lobby").await;
    let e = wait_event(&mut ev, |e| matches!(e, MeshEvent::Joined(_))).await;
    assert_eq!(e.node_id(), Some(b.id()));
    assert_eq!(a.nodes().len(), 2);
    assert_eq!(b.nodes_by_type("game").len(), 1);
    assert_eq!(b.nodes_by_role("UDP")[0].id, a.id());
    assert_eq!(
        b.node_types(),
        vec!["game".to_string(), "lobby".to_string()]
    );
    assert!(b.exists(a.id()) && b.exists(a.addr()) && !b.is_local(a.id()) && b.is_local(b.addr()));
    assert_eq!(
        b.node_value::<String>(a.id(), "region").as_deref(),
        Some("eu")
    );
    assert_eq!(b.random_node("game").map(|r| r.id), Some(a.id()));
    assert!(b.sibling().is_none());

    // Values and status propagate as Updated events.
    let mut bev = b.events();
    a.set_value("load", 0.5).unwrap();
    wait_event(
        &mut bev,
        |e| matches!(e, MeshEvent::Updated { new, .. } if new.values.contains_key("load")),
    )
    .await;
    assert_eq!(b.node_value::<f64>(a.id(), "load"), Some(0.5));
    a.set_status(NodeStatus::Taken);
    wait_event(
        &mut bev,
        |e| matches!(e, MeshEvent::Updated { new, .. } if new.status == NodeStatus::Taken),
    )
    .await;
    assert_eq!(b.node_status(a.id()), Some(NodeStatus::Taken));
    assert!(
        b.random_node("game").is_none(),
        "taken nodes take no new work"
    );

    // Hooks run around each sync; wait_for_latest_view waits for one.
    let before = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicUsize::new(0));
    {
        let before = before.clone();
        b.on_before_sync(move || {
            before.fetch_add(1, Ordering::Relaxed);
        });
        let after = after.clone();
        b.on_after_sync(move || {
            after.fetch_add(1, Ordering::Relaxed);
        });
    }
    b.wait_for_latest_view().await.unwrap();
    assert!(before.load(Ordering::Relaxed) >= 1 && after.load(Ordering::Relaxed) >= 1);

    // Graceful leave: seen at once.
    let t = Instant::now();
    a.stop().await;
    let e = wait_event(&mut bev, |e| matches!(e, MeshEvent::Left { .. })).await;
    assert!(matches!(
        e,
        MeshEvent::Left {
            reason: LeaveReason::Graceful,
            ..
        }
    ));
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(b.nodes().len(), 1);
    b.stop().await;
    assert!(reg.is_empty("mesh"));
}

#[tokio::test]
async fn prefixes_isolate_guests_are_invisible_backups_replace_dead_nodes() {
    let reg = LocalRegistry::new();
    let other = Mesh::builder()
        .prefix("other")
        .discovery(Discovery::local_registry(&reg))
        .start()
        .await
        .unwrap();
    let mut games = Vec::new();
    for _ in 0..4 {
        games.push(
            Mesh::builder()
                .node_type("game")
                .backups("game", 2)
                .discovery(Discovery::local_registry(&reg))
                .start()
                .await
                .unwrap(),
        );
    }
    let guest = Mesh::builder()
        .node_type("tool")
        .guest(true)
        .discovery(Discovery::local_registry(&reg))
        .start()
        .await
        .unwrap();
    assert_eq!(other.nodes().len(), 1, "another prefix sees nobody");
    assert_eq!(games[0].nodes().len(), 4, "the guest is not listed");
    assert_eq!(guest.nodes().len(), 4, "but it sees everyone");
    assert!(!guest.exists(guest.id()));

    // Backups: the same two successors on every node.
    let dead = games[1].id();
    let b0 = games[0].backups(dead);
    let b2 = games[2].backups(dead);
    assert_eq!(b0.len(), 2);
    assert_eq!(
        b0.iter().map(|r| r.id).collect::<Vec<_>>(),
        b2.iter().map(|r| r.id).collect::<Vec<_>>()
    );
    // prepare_nodes: a dead node is replaced by its first live backup.
    let mut ev = games[0].events();
    games[1].stop().await;
    wait_event(&mut ev, |e| matches!(e, MeshEvent::Left { .. })).await;
    let prepared = games[0].prepare_nodes("game", [dead, games[3].id()]);
    let first_backup = b0[0].id;
    assert_eq!(prepared[0].id, first_backup);
    assert!(prepared.iter().any(|r| r.id == games[3].id()));
    for g in games {
        g.stop().await;
    }
    guest.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn bad_configuration_is_refused_at_start_naming_the_field() {
    let err = |r: Result<Mesh, MeshError>| match r {
        Err(MeshError::Config(e)) => e.field,
        other => panic!("expected a config error, got {other:?}"),
    };
    assert_eq!(
        err(Mesh::builder().node_type("").start().await),
        "node_type"
    );
    assert_eq!(
        err(Mesh::builder()
            .update_interval(Duration::from_secs(1))
            .expiry(Duration::from_millis(1200))
            .start()
            .await),
        "expiry"
    );
    assert_eq!(
        err(Mesh::builder()
            .discovery(Discovery::redis("http://nope"))
            .start()
            .await),
        "discovery.url"
    );
    assert_eq!(
        err(Mesh::builder()
            .discovery(Discovery::seeds(["no-port"]))
            .start()
            .await),
        "discovery.seeds"
    );
    let cfg = MeshConfig::from_toml_str("node_type = \"x\"\nmax_concurrent_requests = 0").unwrap();
    assert_eq!(
        err(Mesh::builder().config(cfg).start().await),
        "max_concurrent_requests"
    );
    // An unreachable seed list fails start with a clear error instead of hanging.
    let r = Mesh::builder()
        .discovery(Discovery::seeds(["127.0.0.1:9"]))
        .update_interval(TICK)
        .start()
        .await;
    assert!(matches!(r, Err(MeshError::Discovery(_))), "{r:?}");
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn static_seeds_join_leave_expire_and_values() {
    let port = free_udp_port();
    let seed_addr = format!("127.0.0.1:{port}");
    let seeds = Discovery::seeds([seed_addr.clone()]);
    let seed = Mesh::builder()
        .node_type("seed")
        .port(port)
        .discovery(seeds.clone())
        .update_interval(TICK)
        .start()
        .await
        .unwrap();
    assert_eq!(seed.addr().to_string(), seed_addr);
    let a = Mesh::builder()
        .node_type("game")
        .discovery(seeds.clone())
        .update_interval(TICK)
        .start()
        .await
        .unwrap();
    let b = Mesh::builder()
        .node_type("game")
        .discovery(seeds.clone())
        .update_interval(TICK)
        .start()
        .await
        .unwrap();
    // Everyone learns everyone through the seed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(a.nodes().len() == 3 && b.nodes().len() == 3 && seed.nodes().len() == 3) {
        assert!(
            Instant::now() < deadline,
            "a {:?} b {:?}",
            a.nodes().len(),
            b.nodes().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Values travel.
    let mut ev = b.events();
    a.set_value("players", 12).unwrap();
    wait_event(
        &mut ev,
        |e| matches!(e, MeshEvent::Updated { new, .. } if new.id == a.id()),
    )
    .await;
    assert_eq!(b.node_value::<u32>(a.id(), "players"), Some(12));

    // A process killed with -9 expires from every view.
    let env = seed_addr.clone();
    let mut victim = tokio::task::spawn_blocking(move || {
        NodeProcess::spawn(&[
            ("MESH_SEEDS", env.as_str()),
            ("MESH_UPDATE_INTERVAL", "100ms"),
            ("MESH_NODE_TYPE", "victim"),
        ])
    })
    .await
    .unwrap()
    .unwrap();
    let vid = victim.id;
    wait_event(
        &mut ev,
        |e| matches!(e, MeshEvent::Joined(r) if r.id == vid),
    )
    .await;
    victim.kill();
    let e = wait_event(
        &mut ev,
        |e| matches!(e, MeshEvent::Left { node, .. } if node.id == vid),
    )
    .await;
    assert!(matches!(
        e,
        MeshEvent::Left {
            reason: LeaveReason::Expired,
            ..
        }
    ));

    // A graceful stop is seen at once, and a late report cannot bring it back.
    let t = Instant::now();
    let aid = a.id();
    a.stop().await;
    let e = wait_event(
        &mut ev,
        |e| matches!(e, MeshEvent::Left { node, .. } if node.id == aid),
    )
    .await;
    assert!(matches!(
        e,
        MeshEvent::Left {
            reason: LeaveReason::Graceful,
            ..
        }
    ));
    assert!(t.elapsed() < Duration::from_millis(500));
    tokio::time::sleep(TICK * 3).await;
    assert!(!b.exists(aid));
    b.stop().await;
    seed.stop().await;
}

/// Security finding 6: a node that is not a seed sending a seeds `View` could list fake
/// nodes and, with a record "started" at `u64::MAX` at a real node's address, push the real
/// node out. Views are now taken from configured seeds only, and records claiming a start
/// far in the future are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_from_a_node_that_is_not_a_seed_is_ignored() {
    use mesh_core::discovery::DISCOVERY_CHANNEL;
    use mesh_core::transport::{Transport, TransportConfig};

    let port = free_udp_port();
    let seeds = Discovery::seeds([format!("127.0.0.1:{port}")]);
    let start =
        |b: mesh_core::MeshBuilder| b.discovery(seeds.clone()).update_interval(TICK).start();
    let seed = start(Mesh::builder().node_type("seed").port(port))
        .await
        .unwrap();
    let a = start(Mesh::builder().node_type("game")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.nodes().len() < 2 {
        assert!(Instant::now() < deadline, "a did not join");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let real = a.id();
    let fake = "127.0.0.1:7#0000000000000007";
    let evictor = format!("{}#00000000000000ee", real.addr);
    let view = format!(
        r#"{{"View":{{"nodes":[[{{"id":"{fake}","node_type":"game"}},0],[{{"id":"{evictor}","node_type":"game","started_at_ms":18446744073709551615}},0]]}}}}"#
    );
    let mut bytes = vec![0x5d, 1];
    bytes.extend_from_slice(view.as_bytes());
    let stray = Transport::bind(TransportConfig::default()).await.unwrap();
    for to in [seed.addr(), a.addr()] {
        stray
            .send(to, DISCOVERY_CHANNEL, bytes.clone().into())
            .await
            .unwrap();
    }
    // Announcements from a stray node that claims to start in the future do not count either.
    let announce = format!(
        r#"{{"Announce":{{"me":{{"id":"{}#00000000000000ef","node_type":"game","started_at_ms":18446744073709551615}},"want_view":false}}}}"#,
        stray.local_addr()
    );
    let mut bytes = vec![0x5d, 1];
    bytes.extend_from_slice(announce.as_bytes());
    stray
        .send(seed.addr(), DISCOVERY_CHANNEL, bytes.into())
        .await
        .unwrap();
    // At no moment of the next few update intervals does a fake node show, or the real one
    // go (the fakes would expire again after `expiry`, so the views are watched throughout).
    let until = Instant::now() + TICK * 4;
    while Instant::now() < until {
        for m in [&seed, &a] {
            let listed: Vec<String> = m.nodes().iter().map(|r| r.id.to_string()).collect();
            assert!(
                !listed.iter().any(|id| id == fake || *id == evictor),
                "{listed:?}"
            );
            assert!(m.node(real).is_some(), "the real node is still listed");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stray.close();
    a.stop().await;
    seed.stop().await;
}
