//! Discovery over Redis under faults and at scale: Redis killed and restarted empty, a
//! Sentinel failover, a 3-master Redis Cluster, 200 nodes on one Redis.

#[path = "discovery_redis_util.rs"]
mod util;

use std::time::{Duration, Instant};

use mesh_core::discovery::redis::{RedisConfig, RedisStats};
use mesh_core::{Discovery, Health, LeaveReason, Mesh, MeshEvent};
use mesh_tests::redis::{RedisCluster, RedisServer, SentinelSetup};
use redis::Commands as _;
use tokio::sync::broadcast;
use tokio::task::block_in_place;
use util::{
    EXPIRY, INTERVAL, TestResult, WAIT, builder, init_tracing, node, plain, wait_event, wait_for,
    wait_views,
};

/// Every `Left` event queued in `rx`.
fn lefts(rx: &mut broadcast::Receiver<MeshEvent>) -> Vec<MeshEvent> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e @ MeshEvent::Left { .. }) => out.push(e),
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return out,
        }
    }
}

fn degraded(e: &MeshEvent) -> bool {
    matches!(e, MeshEvent::Health(Health::Degraded { .. }))
}

fn healthy(e: &MeshEvent) -> bool {
    matches!(e, MeshEvent::Health(Health::Healthy))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_freezes_then_everyone_reregisters() -> TestResult {
    init_tracing();
    let mut redis = RedisServer::start()?;
    let url = redis.url();
    let nodes = [
        node(&url, "o", "game").await?,
        node(&url, "o", "game").await?,
        node(&url, "o", "lobby").await?,
    ];
    let ids: Vec<_> = nodes.iter().map(Mesh::id).collect();
    let refs: Vec<&Mesh> = nodes.iter().collect();
    wait_views(&refs, &ids, WAIT).await?;
    let mut events: Vec<_> = nodes.iter().map(Mesh::events).collect();

    redis.kill();
    for rx in &mut events {
        wait_event(rx, WAIT, degraded).await?;
    }
    assert!(nodes.iter().all(|m| !m.health().is_healthy()));
    // Frozen, never emptied, for several expiries.
    tokio::time::sleep(EXPIRY * 4).await;
    wait_views(&refs, &ids, Duration::ZERO).await?;
    assert!(nodes[0].wait_for_latest_view().await.is_err());

    block_in_place(|| redis.restart())?;
    for rx in &mut events {
        wait_event(rx, WAIT, healthy).await?;
    }
    let mut con = plain(&url)?;
    wait_for("every node to re-register", WAIT, || {
        con.hlen::<_, usize>("{o}:nodes").ok() == Some(3)
            && con.zcard::<_, usize>("{o}:hb").ok() == Some(3)
    })
    .await?;
    // Past the grace period: still nobody evicted, nobody left any view.
    tokio::time::sleep(EXPIRY * 4).await;
    wait_views(&refs, &ids, Duration::ZERO).await?;
    for rx in &mut events {
        let l = lefts(rx);
        assert!(l.is_empty(), "{l:?}");
    }
    nodes[0].wait_for_latest_view().await?;

    // And changes flow again in the new epoch.
    let [a, b, c] = nodes;
    let mut rx = a.events();
    c.stop().await;
    wait_event(&mut rx, WAIT, |e| {
        matches!(e, MeshEvent::Left { node, reason: LeaveReason::Graceful } if node.id == ids[2])
    })
    .await?;
    a.stop().await;
    b.stop().await;
    Ok(())
}

/// The pid of the process serving `redis`.
fn pid(redis: &RedisServer) -> Result<String, Box<dyn std::error::Error>> {
    let info = redis.info("server")?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .ok_or("no process_id")?
        .trim()
        .to_string())
}

/// Sends `signal` to process `pid`.
fn signal(pid: &str, signal: &str) -> TestResult {
    let status = std::process::Command::new("kill")
        .args([signal, pid])
        .status()?;
    if !status.success() {
        return Err(format!("kill {signal} {pid} failed").into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_then_back_evicts_nobody() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    // Short timeouts so the freeze is noticed quickly.
    let config = RedisConfig::standalone(&url)
        .timeouts(Duration::from_millis(200), Duration::from_millis(200));
    let fast = || util::node_with(config.clone(), "f", "game");
    let (a, b) = (fast().await?, fast().await?);
    // A slower node: it reconnects later than a and b after the outage, and its heartbeat
    // in Redis is long stale by then.
    let slow_interval = Duration::from_millis(500);
    let c = builder(Discovery::Redis(config.clone()), "f", "slow")
        .update_interval(slow_interval)
        .expiry(slow_interval * 2)
        .start()
        .await?;
    let mut d = util::NodeProcess::spawn(&[("MESH_REDIS_URL", &url), ("MESH_PREFIX", "f")])?;
    let nodes = [a, b, c];
    let ids: Vec<_> = nodes.iter().map(Mesh::id).collect();
    let refs: Vec<&Mesh> = nodes.iter().collect();
    let mut with_d = ids.clone();
    with_d.push(d.id);
    wait_views(&refs, &with_d, WAIT).await?;
    let mut events: Vec<_> = nodes.iter().map(Mesh::events).collect();
    // Frozen (SIGSTOP) longer than the slow node's expiry: Redis keeps its data, and every
    // deadline in it passes. d dies meanwhile.
    let pid = pid(&redis)?;
    signal(&pid, "-STOP")?;
    let frozen = async {
        for rx in &mut events {
            wait_event(rx, WAIT, degraded).await?;
        }
        d.kill9();
        tokio::time::sleep(slow_interval * 3).await;
        wait_views(&refs, &with_d, Duration::ZERO).await
    }
    .await;
    signal(&pid, "-CONT")?;
    frozen?;
    for rx in &mut events {
        wait_event(rx, WAIT, healthy).await?;
    }
    // After the grace the dead node goes, the live ones stay although every heartbeat in
    // Redis looked stale when it came back.
    for rx in &mut events {
        let e = wait_event(rx, WAIT, |e| matches!(e, MeshEvent::Left { .. })).await?;
        assert!(
            matches!(&e, MeshEvent::Left { node, reason: LeaveReason::Expired } if node.id == d.id),
            "{e:?}"
        );
    }
    wait_views(&refs, &ids, Duration::ZERO).await?;
    tokio::time::sleep(INTERVAL * 3).await;
    for rx in &mut events {
        let l = lefts(rx);
        assert!(l.is_empty(), "{l:?}");
    }
    let n: usize = plain(&url)?.zcard("{f}:hb")?;
    assert_eq!(n, 3);
    for m in nodes {
        m.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_its_data_evicts_nobody() -> TestResult {
    init_tracing();
    let mut redis = RedisServer::start()?;
    let url = redis.url();
    let stats = RedisStats::new();
    let config = RedisConfig::standalone(&url).with_stats(stats.clone());
    let a = util::node_with(config, "d", "game").await?;
    let b = node(&url, "d", "game").await?;
    // A slower node reconnects later than a and b.
    let slow_interval = Duration::from_millis(500);
    let c = builder(Discovery::redis(&url), "d", "slow")
        .update_interval(slow_interval)
        .expiry(slow_interval * 2)
        .start()
        .await?;
    let mut d = util::NodeProcess::spawn(&[("MESH_REDIS_URL", &url), ("MESH_PREFIX", "d")])?;
    let nodes = [a, b, c];
    let ids: Vec<_> = nodes.iter().map(Mesh::id).collect();
    let refs: Vec<&Mesh> = nodes.iter().collect();
    let mut with_d = ids.clone();
    with_d.push(d.id);
    wait_views(&refs, &with_d, WAIT).await?;
    let mut events: Vec<_> = nodes.iter().map(Mesh::events).collect();
    // d dies; Redis saves its data (d still listed) and dies too, for longer than the slow
    // node's expiry, then comes back with that data: every deadline in it has passed.
    d.kill9();
    let () = redis::cmd("SAVE").query(&mut plain(&url)?)?;
    redis.kill();
    for rx in &mut events {
        wait_event(rx, WAIT, degraded).await?;
    }
    tokio::time::sleep(slow_interval * 3).await;
    block_in_place(|| redis.restart())?;
    for rx in &mut events {
        wait_event(rx, WAIT, healthy).await?;
    }
    // After the grace the dead node goes; the live ones stay.
    for rx in &mut events {
        let e = wait_event(rx, WAIT, |e| matches!(e, MeshEvent::Left { .. })).await?;
        assert!(
            matches!(&e, MeshEvent::Left { node, reason: LeaveReason::Expired } if node.id == d.id),
            "{e:?}"
        );
    }
    wait_views(&refs, &ids, Duration::ZERO).await?;
    tokio::time::sleep(INTERVAL * 3).await;
    for rx in &mut events {
        let l = lefts(rx);
        assert!(l.is_empty(), "{l:?}");
    }
    // Same epoch, and the server had a's last change: a continued from the log.
    assert_eq!(stats.full_syncs(), 1, "{stats:?}");
    for m in nodes {
        m.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_subscriptions_are_reestablished() -> TestResult {
    init_tracing();
    let redis = RedisServer::start()?;
    let url = redis.url();
    let stats = RedisStats::new();
    let a = util::node_with(
        RedisConfig::standalone(&url).with_stats(stats.clone()),
        "p",
        "game",
    )
    .await?;
    let b = node(&url, "p", "game").await?;
    wait_views(&[&a, &b], &[a.id(), b.id()], WAIT).await?;
    let mut rx = a.events();
    // Redis drops every subscriber: a and b notice, reconnect and resync.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut plain(&url)?)?;
    assert_eq!(killed, 2);
    let c = node(&url, "p", "lobby").await?;
    wait_views(&[&a, &b, &c], &[a.id(), b.id(), c.id()], WAIT).await?;
    wait_for("a reconnect", WAIT, || stats.reconnects() >= 1).await?;
    assert!(a.health().is_healthy());
    // The same server, which still has a's last change: a continued from the log.
    assert_eq!(stats.full_syncs(), 1, "{stats:?}");
    c.stop().await;
    wait_event(&mut rx, WAIT, |e| {
        matches!(e, MeshEvent::Left { node, reason: LeaveReason::Graceful } if node.id == c.id())
    })
    .await?;
    a.stop().await;
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_is_survived() -> TestResult {
    init_tracing();
    let mut setup = block_in_place(SentinelSetup::start)?;
    let (sentinels, master) = (setup.sentinel_urls(), setup.master_name().to_string());
    let discovery = || Discovery::sentinel(sentinels.clone(), master.clone());
    let a = builder(discovery(), "s", "game").start().await?;
    let b = builder(discovery(), "s", "game").start().await?;
    wait_views(&[&a, &b], &[a.id(), b.id()], WAIT).await?;
    let mut a_events = a.events();
    let mut b_events = b.events();

    let old = setup.kill_master()?;
    let new = block_in_place(|| setup.wait_failover(old, Duration::from_secs(15)))?;
    assert_ne!(old, new);
    wait_event(&mut a_events, WAIT, healthy).await?;
    wait_event(&mut b_events, WAIT, healthy).await?;

    // Discovery goes on against the new master.
    let c = builder(discovery(), "s", "lobby").start().await?;
    wait_views(&[&a, &b, &c], &[a.id(), b.id(), c.id()], WAIT).await?;
    for rx in [&mut a_events, &mut b_events] {
        let l = lefts(rx);
        assert!(l.is_empty(), "{l:?}");
    }
    let mut rx = a.events();
    c.stop().await;
    wait_event(&mut rx, WAIT, |e| {
        matches!(e, MeshEvent::Left { node, reason: LeaveReason::Graceful } if node.id == c.id())
    })
    .await?;
    a.stop().await;
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_of_three_masters() -> TestResult {
    init_tracing();
    let cluster = block_in_place(|| RedisCluster::start(3))?;
    // A slow heartbeat: what arrives sooner came by pub/sub (published on the slot's master,
    // received on whichever node the subscription is on).
    let interval = Duration::from_secs(2);
    let start = |ty: &'static str| {
        builder(Discovery::cluster(cluster.urls()), "c", ty)
            .update_interval(interval)
            .expiry(interval * 2)
            .start()
    };
    let fast = Duration::from_millis(500);
    let a = start("game").await?;
    let b = start("game").await?;
    let c = start("lobby").await?;
    let joined = wait_views(&[&a, &b, &c], &[a.id(), b.id(), c.id()], WAIT).await?;
    assert!(joined < fast, "{joined:?}");
    a.set_value("x", 1)?;
    let took = wait_for("a value", WAIT, || {
        b.node_value::<i64>(a.id(), "x") == Some(1)
    })
    .await?;
    assert!(took < fast, "{took:?}");
    let mut rx = a.events();
    let stopped = Instant::now();
    c.stop().await;
    wait_event(&mut rx, WAIT, |e| {
        matches!(e, MeshEvent::Left { node, reason: LeaveReason::Graceful } if node.id == c.id())
    })
    .await?;
    assert!(stopped.elapsed() < fast, "{:?}", stopped.elapsed());
    a.stop().await;
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_nodes_on_one_redis() -> TestResult {
    const N: usize = 200;
    // A slower heartbeat than the other tests: 200 nodes share this process's two cores.
    let interval = Duration::from_millis(500);
    init_tracing();
    let redis = RedisServer::start()?;
    let stats = RedisStats::new();
    // Generous timeouts: 200 nodes start at once in one debug-build process on two cores.
    let config = RedisConfig::standalone(redis.url())
        .timeouts(Duration::from_secs(5), Duration::from_secs(5))
        .with_stats(stats.clone());
    let started = Instant::now();
    let mut nodes = Vec::with_capacity(N);
    // In waves of 50 started concurrently.
    for wave in 0..N / 50 {
        let mut set = tokio::task::JoinSet::new();
        for i in wave * 50..(wave + 1) * 50 {
            let config = config.clone();
            set.spawn(async move {
                Mesh::builder()
                    .node_type(if i % 2 == 0 { "game" } else { "lobby" })
                    .discovery(Discovery::Redis(config))
                    .prefix("big")
                    .update_interval(interval)
                    .expiry(interval * 3)
                    .start_timeout(Duration::from_secs(20))
                    .start()
                    .await
            });
        }
        while let Some(r) = set.join_next().await {
            nodes.push(r??);
        }
    }
    let all_started = started.elapsed();
    let refs: Vec<&Mesh> = nodes.iter().collect();
    let ids: Vec<_> = nodes.iter().map(Mesh::id).collect();
    wait_views(&refs, &ids, Duration::from_secs(30)).await?;
    let all_seen = started.elapsed();
    // Steady state: about one round trip per node per heartbeat.
    let before = stats.round_trips();
    let window = interval * 6;
    tokio::time::sleep(window).await;
    let per_node_per_interval = (stats.round_trips() - before) as f64
        / N as f64
        / (window.as_secs_f64() / interval.as_secs_f64());
    eprintln!(
        "{N} nodes: all started after {all_started:?}, all views complete after {all_seen:?}; \
         {per_node_per_interval:.2} round trips per node per interval; {stats:?}"
    );
    assert!(per_node_per_interval < 1.5, "{per_node_per_interval}");
    assert_eq!(nodes[0].nodes_by_type("game").len(), N / 2);
    let mut set = tokio::task::JoinSet::new();
    for m in nodes {
        set.spawn(async move { m.stop().await });
    }
    while set.join_next().await.is_some() {}
    let n: usize = plain(&redis.url())?.hlen("{big}:nodes")?;
    assert_eq!(n, 0);
    Ok(())
}
