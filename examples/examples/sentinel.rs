//! Discovery through Redis Sentinel, and a failover survived.
//!
//! Starts a Redis master, a replica of it and three sentinels watching it as "mymaster"
//! (each on a free 127.0.0.1 port, under keepers that stop them with this process), then three
//! nodes that find Redis only through the sentinels: `Discovery::sentinel(urls, "mymaster")`.
//! Then it kills the master (SIGKILL), and shows that:
//!
//! - calls between the nodes keep working meanwhile (they never go through Redis);
//! - the sentinels promote the replica (the example awaits their `+switch-master` message and
//!   prints how long the failover took);
//! - the nodes follow the new master without losing anyone from their views, and a node
//!   started after the failover is seen by all of them.
//!
//! The sentinels are tuned for a fast failover (`down-after-milliseconds 300`,
//! `failover-timeout 2000`); production setups use larger values.
//!
//! Run: `cargo run --example sentinel`

use std::hash::{BuildHasher as _, RandomState};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use mesh_core::prelude::*;
use mesh_examples::procs::{self, Redis};

type Error = Box<dyn std::error::Error>;

/// The name the sentinels know the master by.
const MASTER: &str = "mymaster";
const SENTINELS: usize = 3;
/// Every wait of this example is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

/// A service to call across the nodes.
#[mesh_service(id = 4000)]
pub trait Hello {
    /// Answers with the node's name.
    async fn hello(&self) -> String;
}

struct Named(String);

impl Hello for Named {
    async fn hello(&self) -> String {
        self.0.clone()
    }
}

/// A random 40-hex-digit sentinel id (so each sentinel can be told about the others up front).
fn sentinel_id() -> String {
    let r = RandomState::new();
    format!(
        "{:016x}{:016x}{:08x}",
        r.hash_one(1u8),
        r.hash_one(2u8),
        r.hash_one(3u8) as u32
    )
}

/// A flat `[field, value, ...]` reply: the value of `field`.
fn field<'a>(flat: &'a [String], name: &str) -> Option<&'a str> {
    flat.chunks(2)
        .find(|kv| kv.first().map(String::as_str) == Some(name))
        .and_then(|kv| kv.get(1))
        .map(String::as_str)
}

/// Polls `check` every 20 ms until it holds, for at most [`WAIT`] (Redis has no event for
/// "a replica synced" or "the sentinels see each other").
async fn poll_until<F, Fut>(what: &str, mut check: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, std::io::Error>>,
{
    let start = Instant::now();
    loop {
        if matches!(check().await, Ok(true)) {
            return Ok(());
        }
        if start.elapsed() > WAIT {
            return Err(format!("timed out after {WAIT:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the master, its replica and the sentinels, and waits until every sentinel sees
/// the master, the replica with its link up and every other sentinel.
async fn start_redis() -> Result<(Redis, Redis, Vec<Redis>), Error> {
    let master = Redis::start(&[]).await?;
    let replica = Redis::start(
        &[
            "--replicaof",
            "127.0.0.1",
            &master.port().to_string(),
            "--replica-announce-ip",
            "127.0.0.1",
        ]
        .map(str::to_owned),
    )
    .await?;
    poll_until("the replica to sync", || async {
        Ok(replica
            .info_field("replication", "master_link_status")
            .await?
            == Some("up".to_owned()))
    })
    .await?;

    // Each sentinel is told about the others up front (ports chosen before any starts), so
    // the setup does not wait for their hello messages; the wait below checks the truth.
    let ids: Vec<String> = (0..SENTINELS).map(|_| sentinel_id()).collect();
    let ports = (0..SENTINELS)
        .map(|_| procs::free_port())
        .collect::<Result<Vec<u16>, _>>()?;
    let mut sentinels: Vec<Redis> = Vec::with_capacity(SENTINELS);
    for (i, id) in ids.iter().enumerate() {
        let mut conf = format!(
            "sentinel myid {id}\n\
             sentinel announce-ip 127.0.0.1\n\
             sentinel monitor {MASTER} 127.0.0.1 {} {}\n\
             sentinel down-after-milliseconds {MASTER} 300\n\
             sentinel failover-timeout {MASTER} 2000\n\
             sentinel parallel-syncs {MASTER} 1\n\
             sentinel known-replica {MASTER} 127.0.0.1 {}\n",
            master.port(),
            SENTINELS / 2 + 1,
            replica.port()
        );
        for j in (0..SENTINELS).filter(|&j| j != i) {
            conf.push_str(&format!(
                "sentinel known-sentinel {MASTER} 127.0.0.1 {} {}\n",
                ports[j], ids[j]
            ));
        }
        sentinels.push(Redis::sentinel_on(ports[i], &conf).await?);
    }
    for s in &sentinels {
        poll_until("the sentinels to see the setup", || async {
            let m: Vec<String> = s
                .query(redis::cmd("SENTINEL").arg("MASTER").arg(MASTER))
                .await?;
            let replicas: Vec<Vec<String>> = s
                .query(redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER))
                .await?;
            let replica_ok = replicas.iter().any(|r| {
                field(r, "flags") == Some("slave") && field(r, "master-link-status") == Some("ok")
            });
            let others = (SENTINELS - 1).to_string();
            Ok(field(&m, "flags") == Some("master")
                && field(&m, "num-other-sentinels") == Some(others.as_str())
                && replica_ok)
        })
        .await?;
    }
    Ok((master, replica, sentinels))
}

/// The master's address as a sentinel reports it.
async fn master_addr(sentinel: &Redis) -> Result<String, Error> {
    let (ip, port): (String, u16) = sentinel
        .query(
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER),
        )
        .await?;
    Ok(format!("{ip}:{port}"))
}

/// Waits (on `mesh`'s events, bounded) until it sees `n` nodes serving `Hello`.
async fn wait_seen(mesh: &Mesh, n: usize) -> Result<(), Error> {
    let mut events = mesh.events();
    tokio::time::timeout(WAIT, async {
        while mesh.nodes_serving("hello", HelloClient::HELLO).len() < n {
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                break;
            }
        }
    })
    .await
    .map_err(|_| format!("{} did not see {n} nodes", mesh.addr()).into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // This binary also runs the keepers of the redis-servers (see `mesh_examples::procs`).
    procs::run_keeper_if_asked().await;
    let started = Instant::now();
    let (mut master, replica, mut sentinels) = start_redis().await?;
    println!(
        "redis: master {}, replica {}, sentinels {} (ready in {:?})",
        master.addr(),
        replica.addr(),
        sentinels
            .iter()
            .map(|s| s.addr().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        started.elapsed()
    );
    let urls: Vec<String> = sentinels.iter().map(Redis::url).collect();
    let prefix = format!("sentinel-{}", std::process::id());

    // Nodes know only the sentinels; they ask them where the master is.
    let start_node = |name: &str| {
        let discovery = Discovery::sentinel(urls.clone(), MASTER);
        let (prefix, name) = (prefix.clone(), name.to_owned());
        async move {
            let mesh = Mesh::builder()
                .node_type("hello")
                .discovery(discovery)
                .prefix(prefix)
                .update_interval(Duration::from_millis(250))
                .start()
                .await?;
            let serving = mesh.serve(HelloServer::new(Named(name)))?;
            Ok::<_, Error>((mesh, serving))
        }
    };
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(start_node(name).await?);
    }
    for (m, _) in &nodes {
        wait_seen(m, 3).await?;
    }
    println!(
        "discovery through Sentinel: 3 nodes see each other (master {})",
        master_addr(&sentinels[0]).await?
    );
    let mut left = Vec::new();
    for (m, _) in &nodes {
        left.push(m.events());
    }

    // Listen for the sentinels' announcement of a new master before killing the old one.
    let client = redis::Client::open(sentinels[0].url())?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe("+switch-master").await?;

    let old = master.addr();
    let t = Instant::now();
    master.kill().await;
    println!("killed the master {old} (SIGKILL)");

    // Calls between nodes do not go through Redis.
    let (a, b) = (&nodes[0].0, &nodes[1].0);
    let r = HelloClient::for_node(b.id()).on(a).hello().await?;
    println!("a call from a to b while the master is down: answered by {r}");

    let mut messages = pubsub.on_message();
    let switched = tokio::time::timeout(WAIT, messages.next())
        .await
        .map_err(|_| format!("no failover within {WAIT:?}"))?
        .ok_or("the sentinel closed the subscription")?;
    let payload: String = switched.get_payload()?;
    println!("failover: +switch-master {payload} after {:?}", t.elapsed());
    drop(messages);
    let role = replica.info_field("replication", "role").await?;
    println!(
        "the replica {} now reports role:{}",
        replica.addr(),
        role.as_deref().unwrap_or("?")
    );

    // A node started now registers in the new master; every node sees it.
    nodes.push(start_node("d").await?);
    for (m, _) in &nodes {
        wait_seen(m, 4).await?;
    }
    println!(
        "after the failover a new node d joined: all 4 nodes see 4 (discovery {:?} after the kill)",
        t.elapsed()
    );
    let mut lost = 0;
    for rx in &mut left {
        while let Ok(e) = rx.try_recv() {
            if matches!(e, MeshEvent::Left { .. }) {
                lost += 1;
            }
        }
    }
    println!("nodes that left any view during the failover: {lost}");
    // A node that hit the dead master reports Degraded until a heartbeat on the new one
    // succeeds: wait (on its events, bounded) until every node is healthy again.
    for (m, _) in &nodes {
        let mut events = m.events();
        tokio::time::timeout(WAIT, async {
            while !m.health().is_healthy() {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                    break;
                }
            }
        })
        .await
        .map_err(|_| format!("{} still degraded: {:?}", m.addr(), m.health()))?;
    }
    println!(
        "all {} nodes healthy {:?} after the kill",
        nodes.len(),
        t.elapsed()
    );
    for (m, _) in &nodes {
        let r = HelloClient::for_node(nodes[3].0.id()).on(m).hello().await?;
        if r != "d" {
            return Err(format!("d's address answered as {r}").into());
        }
    }
    println!("every node called d: ok");

    for (m, serving) in nodes {
        drop(serving);
        m.stop().await;
    }
    for s in &mut sentinels {
        s.shutdown().await?;
    }
    drop(replica);
    println!("done in {:?}", started.elapsed());
    Ok(())
}
