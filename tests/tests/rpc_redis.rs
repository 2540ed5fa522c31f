//! Typed calls (`#[mesh_service]`) across nodes discovered through a spawned Redis, over real
//! UDP on 127.0.0.1: plain, remote error, balanced over the nodes that serve the service,
//! broadcast, and a node process killed with -9 mid-call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use mesh_core::prelude::*;
use mesh_core::{MeshEvent, rpc::Client};
use mesh_tests::mesh::redis_node;
use mesh_tests::node::NodeProcess;
use mesh_tests::redis::RedisServer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// The counter's own error.
pub enum CounterError {
    /// Adding a negative number.
    Negative,
}

impl std::fmt::Display for CounterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("negative")
    }
}

#[mesh_service(id = 2000)]
/// A counter service.
pub trait Counter {
    /// Adds one to `n`.
    async fn add(&self, n: i64) -> Result<i64, CounterError>;
    /// The serving node's name.
    async fn name(&self) -> String;
}

struct MyCounter(String);

impl Counter for MyCounter {
    async fn add(&self, n: i64) -> Result<i64, CounterError> {
        if n < 0 {
            Err(CounterError::Negative)
        } else {
            Ok(n + 1)
        }
    }
    async fn name(&self) -> String {
        self.0.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_between_nodes_found_through_redis() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let c1 = redis_node(&url, "rpc", "counter").await;
    let c2 = redis_node(&url, "rpc", "counter").await;
    let idle = redis_node(&url, "rpc", "counter").await; // same type, does not serve
    let web = redis_node(&url, "rpc", "web").await;
    let _s1 = c1
        .serve(CounterServer::new(MyCounter("c1".into())))
        .unwrap();
    let _s2 = c2
        .serve(CounterServer::new(MyCounter("c2".into())))
        .unwrap();
    // The services reach web's view through Redis.
    let deadline = Instant::now() + Duration::from_secs(5);
    while web.nodes_serving("counter", CounterClient::ADD).len() < 2 {
        assert!(Instant::now() < deadline, "services not visible");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(web.nodes_by_type("counter").len(), 3);

    assert_eq!(
        CounterClient::for_node(c1.id()).on(&web).add(1).await,
        Ok(2)
    );
    assert_eq!(
        CounterClient::for_node(c2.addr()).on(&web).add(-1).await,
        Err(CallError::Remote(CounterError::Negative))
    );
    // Balanced: spread evenly over the two that serve, never the idle one.
    let mut names = Vec::new();
    for _ in 0..10 {
        names.push(
            CounterClient::for_type("counter")
                .on(&web)
                .name()
                .await
                .unwrap(),
        );
    }
    assert_eq!(names.iter().filter(|n| *n == "c1").count(), 5);
    assert_eq!(names.iter().filter(|n| *n == "c2").count(), 5);
    let all = CounterBroadcast::to_type("counter")
        .on(&web)
        .name()
        .await
        .unwrap();
    let mut got: Vec<String> = all.into_iter().map(|(_, r)| r.unwrap()).collect();
    got.sort();
    assert_eq!(got, vec!["c1".to_string(), "c2".to_string()]);

    for m in [web, idle, c2, c1] {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_call_fails_the_call_as_unreachable() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let me = redis_node(&url, "kill", "caller").await;
    let mut events = me.events();
    let env_url = url.clone();
    let mut victim = tokio::task::spawn_blocking(move || {
        NodeProcess::spawn(&[
            ("MESH_REDIS_URL", env_url.as_str()),
            ("MESH_PREFIX", "kill"),
            ("MESH_NODE_TYPE", "victim"),
            ("MESH_UPDATE_INTERVAL", "100ms"),
        ])
    })
    .await
    .unwrap()
    .unwrap();
    let vid = victim.id;
    tokio::time::timeout(Duration::from_secs(5), async {
        while !me.exists(vid) {
            let _ = events.recv().await;
        }
    })
    .await
    .unwrap();
    // Command 2 of mesh-node sleeps for the given milliseconds.
    let call = {
        let me = me.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = Client::for_node(vid)
                .on(&me)
                .with_timeout(Duration::from_secs(20))
                .call::<_, u64>(2, &30_000u64)
                .await;
            (r, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    victim.kill();
    let (r, took) = call.await.unwrap();
    let e = r.unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // And discovery drops it.
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(MeshEvent::Left { node, .. }) = events.recv().await
                && node.id == vid
            {
                break;
            }
        }
    })
    .await
    .unwrap();
    me.stop().await;
}

/// A keyed cluster across processes: a `mesh-node` process given the key through
/// `MESH_CLUSTER_KEY` answers; killed with -9 and restarted at the same port, its new
/// incarnation answers again over a new authenticated session; a process with another key
/// on the same Redis is not even listed (its record's MAC does not verify).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_node_process_killed_and_restarted_answers_again() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let key = mesh_core::ClusterKey::generate();
    let stats = mesh_core::discovery::redis::RedisStats::new();
    let me = Mesh::builder()
        .node_type("caller")
        .discovery(mesh_core::Discovery::Redis(
            mesh_core::discovery::redis::RedisConfig::standalone(&url).with_stats(stats.clone()),
        ))
        .prefix("keyed")
        .update_interval(Duration::from_millis(100))
        .cluster_key(key.clone())
        .start()
        .await
        .unwrap();
    let port = mesh_tests::redis::free_port().unwrap().to_string();
    let spawn = |hex: String| {
        let (url, port) = (url.clone(), port.clone());
        tokio::task::spawn_blocking(move || {
            NodeProcess::spawn(&[
                ("MESH_REDIS_URL", url.as_str()),
                ("MESH_PREFIX", "keyed"),
                ("MESH_NODE_TYPE", "victim"),
                ("MESH_PORT", port.as_str()),
                ("MESH_UPDATE_INTERVAL", "100ms"),
                ("MESH_CLUSTER_KEY", hex.as_str()),
            ])
        })
    };
    let listed = async |id: mesh_core::NodeId| {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !me.exists(id) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    };
    // Command 3 of mesh-node answers with its node id.
    let whoami = async |id: mesh_core::NodeId| {
        Client::for_node(id)
            .on(&me)
            .with_timeout(Duration::from_secs(5))
            .call::<_, String>(3, &())
            .await
    };
    let mut first = spawn(key.to_hex()).await.unwrap().unwrap();
    listed(first.id).await;
    assert_eq!(whoami(first.id).await.unwrap(), first.id.to_string());
    let old = first.id;
    first.kill();
    let second = spawn(key.to_hex()).await.unwrap().unwrap();
    assert_eq!(second.id.addr, old.addr);
    assert_ne!(second.id.incarnation, old.incarnation);
    listed(second.id).await;
    assert_eq!(whoami(second.id).await.unwrap(), second.id.to_string());
    drop(second);
    // Another key: its record is refused, so it is never listed.
    let before = stats.forged_records();
    let stranger = spawn(mesh_core::ClusterKey::generate().to_hex())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while stats.forged_records() == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert!(!me.exists(stranger.id));
    me.stop().await;
}
