//! Discovery over Redis standalone: each test spawns its own `redis-server` on a free loopback
//! port (see `mesh_tests::redis`), nodes heartbeat every 100 ms and expire after 300 ms.

#[path = "discovery_redis_util.rs"]
mod util;

use std::time::{Duration, Instant};

use mesh_core::discovery::redis::{RedisConfig, RedisStats};
use mesh_core::{Discovery, Health, LeaveReason, MeshError, MeshEvent, NodeId, NodeStatus};
use mesh_tests::redis::RedisServer;
use redis::Commands as _;
use util::{
    EXPIRY, INTERVAL, NodeProcess, TestResult, WAIT, builder, init_tracing, node, node_with, plain,
    wait_event, wait_for, wait_views,
};

fn is_left(id: NodeId, reason: LeaveReason) -> impl FnMut(&MeshEvent) -> bool {
    move |e| matches!(e, MeshEvent::Left { node, reason: r } if node.id == id && *r == reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_leave_gracefully() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let a = node(&url, "j", "game").await?;
    let b = node(&url, "j", "game").await?;
    let mut a_events = a.events();
    let mut b_events = b.events();
    let c = node(&url, "j", "lobby").await?;
    // Visible in the others' views soon after start() returned.
    let joined = wait_views(&[&a, &b, &c], &[a.id(), b.id(), c.id()], WAIT).await?;
    assert!(joined < Duration::from_millis(500), "join took {joined:?}");
    wait_event(
        &mut a_events,
        WAIT,
        |e| matches!(e, MeshEvent::Joined(r) if r.id == c.id()),
    )
    .await?;
    assert_eq!(a.health(), Health::Healthy);

    // A graceful stop: the others see Left(Graceful) at once, not after the expiry.
    let c_id = c.id();
    let stopped = Instant::now();
    c.stop().await;
    wait_event(&mut a_events, WAIT, is_left(c_id, LeaveReason::Graceful)).await?;
    wait_event(&mut b_events, WAIT, is_left(c_id, LeaveReason::Graceful)).await?;
    let took = stopped.elapsed();
    assert!(took < EXPIRY, "the leave took {took:?}");
    wait_views(&[&a, &b], &[a.id(), b.id()], WAIT).await?;
    // Deregistered in Redis.
    let mut con = plain(&url)?;
    let n: usize = con.hlen("{j}:nodes")?;
    assert_eq!(n, 2);
    let n: usize = con.zcard("{j}:hb")?;
    assert_eq!(n, 2);
    a.stop().await;
    b.stop().await;
    let n: usize = con.hlen("{j}:nodes")?;
    assert_eq!(n, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_expires() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let a = node(&url, "k", "game").await?;
    let mut events = a.events();
    let mut p = NodeProcess::spawn(&[("MESH_REDIS_URL", &url), ("MESH_PREFIX", "k")])?;
    wait_views(&[&a], &[a.id(), p.id], WAIT).await?;
    let killed = Instant::now();
    p.kill9();
    wait_event(&mut events, WAIT, is_left(p.id, LeaveReason::Expired)).await?;
    let took = killed.elapsed();
    // The deadline is at most an expiry after the kill; the reaper acts on it at once.
    assert!(took < EXPIRY + 4 * INTERVAL, "expiry took {took:?}");
    assert_eq!(a.nodes().len(), 1);
    a.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_and_status_propagate() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let a = node(&url, "v", "game").await?;
    let b = node(&url, "v", "game").await?;
    wait_views(&[&a, &b], &[a.id(), b.id()], WAIT).await?;
    let mut events = b.events();
    let set = Instant::now();
    a.set_value("load", 42)?;
    wait_event(&mut events, WAIT, |e| {
        matches!(e, MeshEvent::Updated { new, .. } if new.id == a.id() && new.value("load").is_some())
    })
    .await?;
    let took = set.elapsed();
    assert!(took < INTERVAL, "a value change took {took:?} to arrive");
    assert_eq!(b.node_value::<i64>(a.id(), "load"), Some(42));
    a.set_status(NodeStatus::Taken);
    wait_for("the status to arrive", WAIT, || {
        b.node_status(a.id()) == Some(NodeStatus::Taken)
    })
    .await?;
    // A burst of changes is rate-limited but the last one always arrives.
    for i in 0..50 {
        a.set_value("counter", i)?;
    }
    wait_for("the last value of a burst", WAIT, || {
        b.node_value::<i64>(a.id(), "counter") == Some(49)
    })
    .await?;
    a.stop().await;
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_by_type_and_role() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let g1 = util::builder(Discovery::redis(&url), "q", "game")
        .role("UDP")
        .start()
        .await?;
    let g2 = util::builder(Discovery::redis(&url), "q", "game")
        .role("TCP")
        .start()
        .await?;
    let l = node(&url, "q", "lobby").await?;
    wait_views(&[&g1, &g2, &l], &[g1.id(), g2.id(), l.id()], WAIT).await?;
    let mut games: Vec<NodeId> = l.nodes_by_type("game").iter().map(|r| r.id).collect();
    games.sort();
    let mut want = vec![g1.id(), g2.id()];
    want.sort();
    assert_eq!(games, want);
    assert_eq!(l.nodes_by_role("UDP").len(), 1);
    assert_eq!(l.nodes_by_role("UDP")[0].id, g1.id());
    assert_eq!(
        g1.node_types(),
        vec!["game".to_string(), "lobby".to_string()]
    );
    assert!(g2.random_node("lobby").is_some_and(|r| r.id == l.id()));
    for m in [g1, g2, l] {
        m.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_are_isolated() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let a1 = node(&url, "blue", "game").await?;
    let a2 = node(&url, "blue", "game").await?;
    let b1 = node(&url, "green", "game").await?;
    let b2 = node(&url, "green", "game").await?;
    wait_views(&[&a1, &a2], &[a1.id(), a2.id()], WAIT).await?;
    wait_views(&[&b1, &b2], &[b1.id(), b2.id()], WAIT).await?;
    // Still isolated after a few heartbeats.
    tokio::time::sleep(INTERVAL * 3).await;
    wait_views(&[&a1, &a2], &[a1.id(), a2.id()], Duration::ZERO).await?;
    wait_views(&[&b1, &b2], &[b1.id(), b2.id()], Duration::ZERO).await?;
    let mut con = plain(&url)?;
    let keys: Vec<String> = con.keys("*")?;
    assert!(
        keys.iter()
            .all(|k| k.starts_with("{blue}:") || k.starts_with("{green}:")),
        "{keys:?}"
    );
    for m in [a1, a2, b1, b2] {
        m.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_replace_a_dead_node() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let start = |ty: &'static str| {
        util::builder(Discovery::redis(&url), "bk", ty)
            .backups("game", 1)
            .start()
    };
    let g1 = start("game").await?;
    let g2 = start("game").await?;
    let g3 = start("game").await?;
    let client = start("client").await?;
    wait_views(
        &[&g1, &g2, &g3, &client],
        &[g1.id(), g2.id(), g3.id(), client.id()],
        WAIT,
    )
    .await?;
    let mut ring = [g1.id(), g2.id(), g3.id()];
    ring.sort();
    // The backup of a game node is its successor in the ring, the same on every node.
    let victim = ring[0];
    let backup = ring[1];
    for m in [&g1, &g2, &g3, &client] {
        let b: Vec<NodeId> = m.backups(victim).iter().map(|r| r.id).collect();
        assert_eq!(b, vec![backup]);
    }
    let mut events = client.events();
    for m in [&g1, &g2, &g3] {
        if m.id() == victim {
            m.stop().await;
        }
    }
    wait_event(&mut events, WAIT, is_left(victim, LeaveReason::Graceful)).await?;
    let prepared: Vec<NodeId> = client
        .prepare_nodes("game", [victim, ring[2]])
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(prepared, vec![backup, ring[2]]);
    for m in [g1, g2, g3, client] {
        m.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_sees_everyone_but_is_not_listed() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let a = node(&url, "g", "game").await?;
    let guest = util::builder(Discovery::redis(&url), "g", "tool")
        .guest(true)
        .start()
        .await?;
    let b = node(&url, "g", "game").await?;
    // The guest sees a and b (not itself); a and b see only each other.
    wait_views(&[&guest], &[a.id(), b.id()], WAIT).await?;
    wait_views(&[&a, &b], &[a.id(), b.id()], WAIT).await?;
    let mut con = plain(&url)?;
    let n: usize = con.hlen("{g}:nodes")?;
    assert_eq!(n, 2);
    let mut events = guest.events();
    b.stop().await;
    wait_event(&mut events, WAIT, is_left(b.id(), LeaveReason::Graceful)).await?;
    guest.stop().await;
    tokio::time::sleep(INTERVAL * 2).await;
    wait_views(&[&a], &[a.id()], Duration::ZERO).await?;
    a.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_alone_still_see_dead_nodes_leave() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let guest = util::builder(Discovery::redis(&url), "ga", "tool")
        .guest(true)
        .start()
        .await?;
    let mut events = guest.events();
    let mut p = NodeProcess::spawn(&[("MESH_REDIS_URL", &url), ("MESH_PREFIX", "ga")])?;
    wait_views(&[&guest], &[p.id], WAIT).await?;
    p.kill9();
    // No registered node is left to reap it: the guest does (it can hold the lease).
    wait_event(&mut events, WAIT, is_left(p.id, LeaveReason::Expired)).await?;
    guest.stop().await;
    let mut con = plain(&url)?;
    let holder: Option<String> = con.get("{ga}:lease")?;
    assert_eq!(holder, None, "the guest gave the lease up when it stopped");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_records_are_skipped() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let a = node(&url, "x", "game").await?;
    let mut con = plain(&url)?;
    // Junk under a junk id, junk under a valid-looking id, a record under the wrong id.
    let () = con.hset("{x}:nodes", "junk", "{not json")?;
    let () = con.hset("{x}:nodes", "127.0.0.1:9#0000000000000009", "[]")?;
    let () = con.hset(
        "{x}:nodes",
        "127.0.0.1:8#0000000000000008",
        r#"{"id":"127.0.0.1:7#07","node_type":"x"}"#,
    )?;
    let stats = RedisStats::new();
    let b = node_with(
        RedisConfig::standalone(&url).with_stats(stats.clone()),
        "x",
        "game",
    )
    .await?;
    let c = node(&url, "x", "game").await?;
    wait_views(&[&a, &b, &c], &[a.id(), b.id(), c.id()], WAIT).await?;
    assert!(stats.garbled_records() >= 3, "{stats:?}");
    // A garbled change notification does not stop the others either.
    let () = redis::cmd("PUBLISH")
        .arg("{x}:chg")
        .arg("nonsense")
        .query(&mut con)?;
    let mut events = b.events();
    c.stop().await;
    wait_event(&mut events, WAIT, is_left(c.id(), LeaveReason::Graceful)).await?;
    a.stop().await;
    b.stop().await;
    Ok(())
}

/// Security finding 11: a record written straight into Redis, with no heartbeat entry,
/// used to stay for ever (the reaper only looked at expired heartbeats). The lease holder
/// now removes it within a few intervals, and every node sees it leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_a_heartbeat_is_reaped() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let a = node(&url, "o", "game").await?;
    let forged: NodeId = "127.0.0.1:7#0000000000000007".parse()?;
    let mut con = plain(&url)?;
    let () = con.hset(
        "{o}:nodes",
        forged.to_string(),
        format!(r#"{{"id":"{forged}","node_type":"game"}}"#),
    )?;
    // A node that joins now reads the forged record in its first snapshot ...
    let b = node(&url, "o", "game").await?;
    let listed = b.node(forged).is_some();
    // ... and it goes.
    let deadline = Instant::now() + WAIT;
    while b.node(forged).is_some() || a.node(forged).is_some() {
        if Instant::now() > deadline {
            return Err("the forged record is still listed".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: bool = con.hexists("{o}:nodes", forged.to_string())?;
    assert!(!left, "still in Redis");
    eprintln!("forged record listed by the joining node before the reap: {listed}");
    wait_views(&[&a, &b], &[a.id(), b.id()], WAIT).await?;
    a.stop().await;
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_clearly_when_redis_is_unreachable() -> TestResult {
    init_tracing();
    let port = mesh_tests::redis::free_port()?;
    let started = Instant::now();
    let r = node(&format!("redis://127.0.0.1:{port}/"), "u", "game").await;
    let Err(e) = r else {
        return Err("start() succeeded without Redis".into());
    };
    let text = e.to_string();
    eprintln!("{text}");
    assert!(text.contains("cannot connect"), "{text}");
    assert!(text.contains(&port.to_string()), "{text}");
    assert!(
        e.downcast_ref::<MeshError>()
            .is_some_and(|e| matches!(e, MeshError::Discovery(_)))
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_db_from_the_url() -> TestResult {
    init_tracing();
    let redis = RedisServer::with_password("s3cret")?;
    let url = format!("redis://:s3cret@127.0.0.1:{}/3", redis.port());
    let a = node(&url, "pw", "game").await?;
    let b = node_with(
        RedisConfig::standalone(redis.url())
            .password("s3cret")
            .db(3),
        "pw",
        "game",
    )
    .await?;
    wait_views(&[&a, &b], &[a.id(), b.id()], WAIT).await?;
    let mut con = plain(&url)?;
    let n: usize = con.hlen("{pw}:nodes")?;
    assert_eq!(n, 2, "the records are in db 3");
    // The wrong password is a clear start error.
    let bad = format!("redis://:nope@127.0.0.1:{}/3", redis.port());
    let e = node(&bad, "pw", "game")
        .await
        .err()
        .ok_or("started with a bad password")?;
    eprintln!("{e}");
    assert!(e.to_string().contains("discovery"), "{e}");
    a.stop().await;
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_takes_over_from_a_killed_reaper() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let env = [("MESH_REDIS_URL", url.as_str()), ("MESH_PREFIX", "r")];
    // The first node takes the lease.
    let mut reaper = NodeProcess::spawn(&env)?;
    let mut con = plain(&url)?;
    let holder: Option<String> = con.get("{r}:lease")?;
    assert_eq!(holder, Some(reaper.id.to_string()));
    let mut victim = NodeProcess::spawn(&env)?;
    let a = node(&url, "r", "game").await?;
    let b = node(&url, "r", "game").await?;
    wait_views(&[&a, &b], &[a.id(), b.id(), reaper.id, victim.id], WAIT).await?;
    let mut events = a.events();
    // Both die: the reaper first, so nobody holds a live lease when the victim expires.
    reaper.kill9();
    victim.kill9();
    let killed = Instant::now();
    wait_event(&mut events, WAIT, is_left(victim.id, LeaveReason::Expired)).await?;
    wait_views(&[&a, &b], &[a.id(), b.id()], WAIT).await?;
    let took = killed.elapsed();
    // The lease lapses an expiry after the reaper's last renewal; then the next heartbeat
    // of a or b takes it over.
    assert!(took < EXPIRY * 2 + INTERVAL * 4, "took {took:?}");
    let holder: Option<String> = con.get("{r}:lease")?;
    let holder = holder.ok_or("nobody holds the lease")?;
    assert!(
        holder == a.id().to_string() || holder == b.id().to_string(),
        "{holder}"
    );
    a.stop().await;
    b.stop().await;
    Ok(())
}

/// With a cluster key, records in Redis carry a MAC: a record written by someone without
/// the key, one with a made-up MAC and a real node's record altered in Redis are refused
/// and counted, while keyed nodes see each other, also after a key rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_forged_and_altered_records_are_refused() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let key = mesh_core::ClusterKey::generate();
    let keyed = |stats: Option<RedisStats>| {
        let mut c = RedisConfig::standalone(&url);
        if let Some(s) = stats {
            c = c.with_stats(s);
        }
        builder(Discovery::Redis(c), "k", "game").cluster_key(key.clone())
    };
    let a = keyed(None).start().await?;
    let mut con = plain(&url)?;
    let stored: String = con.hget("{k}:nodes", a.id().to_string())?;
    assert!(stored.starts_with("m1."), "{stored}");
    assert!(stored.contains(r#""node_type":"game""#), "{stored}");
    // Forgeries: no MAC; a made-up MAC; the real record with its type changed.
    let plain_id: NodeId = "127.0.0.1:7#0000000000000007".parse()?;
    let fake_mac: NodeId = "127.0.0.1:8#0000000000000008".parse()?;
    let () = con.hset(
        "{k}:nodes",
        plain_id.to_string(),
        format!(r#"{{"id":"{plain_id}","node_type":"game"}}"#),
    )?;
    let () = con.hset(
        "{k}:nodes",
        fake_mac.to_string(),
        format!(
            r#"m1.{}.{{"id":"{fake_mac}","node_type":"game"}}"#,
            "0".repeat(32)
        ),
    )?;
    // Heartbeat entries far in the future: neither expiry nor the orphan scan removes the
    // forgeries, so every node that joins reads them.
    let forever = |con: &mut redis::Connection, ns: &str, id: &NodeId| -> redis::RedisResult<()> {
        con.zadd(format!("{{{ns}}}:hb"), id.to_string(), 9.0e15)
    };
    forever(&mut con, "k", &plain_id)?;
    forever(&mut con, "k", &fake_mac)?;
    let stats = RedisStats::new();
    let b = keyed(Some(stats.clone())).start().await?;
    wait_views(&[&a, &b], &[a.id(), b.id()], WAIT).await?;
    assert!(b.node(plain_id).is_none() && b.node(fake_mac).is_none());
    assert!(stats.forged_records() >= 2, "{stats:?}");
    // a's genuine sealed record altered (listed under another id, with another type), and
    // copied as is into another namespace: both refused.
    let moved: NodeId = format!(
        "127.0.0.1:{}#{:016x}",
        a.addr().port() + 1,
        a.id().incarnation
    )
    .parse()?;
    let altered = stored
        .replace(&a.id().to_string(), &moved.to_string())
        .replace(r#""node_type":"game""#, r#""node_type":"admin""#);
    let () = con.hset("{k}:nodes", moved.to_string(), &altered)?;
    let () = con.hset("{k2}:nodes", a.id().to_string(), &stored)?;
    forever(&mut con, "k", &moved)?;
    forever(&mut con, "k2", &a.id())?;
    let c_stats = RedisStats::new();
    let c = keyed(Some(c_stats.clone())).start().await?;
    let other_ns = builder(
        Discovery::Redis(RedisConfig::standalone(&url).with_stats(c_stats.clone())),
        "k2",
        "game",
    )
    .cluster_key(key.clone())
    .start()
    .await?;
    wait_views(&[&a, &b, &c], &[a.id(), b.id(), c.id()], WAIT).await?;
    assert!(c.node(moved).is_none() && other_ns.node(a.id()).is_none());
    assert!(c_stats.forged_records() >= 4, "{c_stats:?}");
    other_ns.stop().await;
    // Rotate the key: records are sealed under the new one, and all still see all.
    let new = mesh_core::ClusterKey::generate();
    for m in [&a, &b, &c] {
        m.install_key(new.clone())?;
    }
    for m in [&a, &b, &c] {
        m.use_key(new.id())?;
    }
    for m in [&a, &b, &c] {
        m.remove_key(key.id())?;
    }
    let d = builder(Discovery::redis(&url), "k", "game")
        .cluster_key(new.clone())
        .start()
        .await?;
    wait_views(&[&a, &b, &c, &d], &[a.id(), b.id(), c.id(), d.id()], WAIT).await?;
    for m in [d, c, b, a] {
        m.stop().await;
    }
    Ok(())
}
