//! A multi-process cluster on Redis, started by one command.
//!
//! `cargo run --example cluster -- --nodes 5` starts a `redis-server` on a free 127.0.0.1 port
//! (unless `--redis URL` names one), then N node processes: this same binary re-executed with
//! `--node I`. Each node registers in Redis (type "node", its index and pid as values) and
//! serves `Cluster`. This process joins as a guest (it calls, it is not listed), waits until
//! every node sees every other one, has each node call every other one, prints a table, and
//! keeps the cluster running for `--for SECS` seconds or until Ctrl-C (printing joins and
//! leaves meanwhile). Then it stops every node (each leaves the view gracefully) and Redis.
//!
//! The children cannot outlive this process: each reads its stdin, a pipe only this process
//! holds, and stops when it ends (this process exited, however: also `kill -9`), and
//! `redis-server` runs under a keeper that does the same (see `mesh_examples::procs`).
//!
//! Run: `cargo run --example cluster -- --nodes 5 [--redis redis://127.0.0.1:6379] [--for 30]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mesh_core::prelude::*;
use mesh_examples::procs::{self, Redis, Supervised};
use tokio::process::Command;

type Error = Box<dyn std::error::Error>;

/// The node type every node process registers as.
const NODE_TYPE: &str = "node";
/// Calls each node makes to each other node (for the round-trip figures).
const ROUNDS: u32 = 10;

/// How one node reached another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reach {
    /// The callee's index.
    pub peer: u64,
    /// Calls made.
    pub calls: u32,
    /// Calls answered (by the right node).
    pub answered: u32,
    /// Round trips of the answered calls, in microseconds, sorted.
    pub rtt_us: Vec<u64>,
    /// The first error, if any.
    pub error: Option<String>,
}

/// What the nodes serve: methods get command ids 3000, 3001, 3002.
#[mesh_service(id = 3000)]
pub trait Cluster {
    /// Answers with this node's index.
    async fn hello(&self, from: u64) -> u64;
    /// Waits (within the call's deadline) until this node sees `n` nodes serving `Cluster`
    /// (itself included); returns their indices.
    async fn wait_for_peers(&self, ctx: CallContext, n: usize) -> Vec<u64>;
    /// Calls `hello` on every other node it sees, `rounds` times each.
    async fn call_all(&self, rounds: u32) -> Vec<Reach>;
}

struct Node {
    index: u64,
    mesh: Mesh,
}

impl Node {
    /// The indices of the nodes serving `Cluster` in this node's view, by node id.
    fn peers(&self) -> BTreeMap<u64, NodeId> {
        self.mesh
            .nodes_serving(NODE_TYPE, ClusterClient::HELLO)
            .into_iter()
            .filter_map(|r| Some((self.mesh.node_value::<u64>(r.id, "index")?, r.id)))
            .collect()
    }
}

impl Cluster for Node {
    async fn hello(&self, _from: u64) -> u64 {
        self.index
    }

    async fn wait_for_peers(&self, ctx: CallContext, n: usize) -> Vec<u64> {
        let mut events = self.mesh.events();
        let wait = ctx.remaining().unwrap_or(Duration::from_secs(10));
        let _ = tokio::time::timeout(wait, async {
            // Each join or update event is a chance that the view now has them all.
            while self.peers().len() < n {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                    break;
                }
            }
        })
        .await;
        self.peers().into_keys().collect()
    }

    async fn call_all(&self, rounds: u32) -> Vec<Reach> {
        let mut out = Vec::new();
        for (peer, id) in self.peers() {
            if peer == self.index {
                continue;
            }
            let mut reach = Reach {
                peer,
                calls: 0,
                answered: 0,
                rtt_us: Vec::new(),
                error: None,
            };
            for _ in 0..rounds {
                reach.calls += 1;
                let t = Instant::now();
                match ClusterClient::for_node(id)
                    .on(&self.mesh)
                    .hello(self.index)
                    .await
                {
                    Ok(i) if i == peer => {
                        reach.answered += 1;
                        reach
                            .rtt_us
                            .push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                    Ok(i) => {
                        reach
                            .error
                            .get_or_insert(format!("node {i} answered for {peer}"));
                    }
                    Err(e) => {
                        reach.error.get_or_insert(e.to_string());
                    }
                }
            }
            reach.rtt_us.sort_unstable();
            out.push(reach);
        }
        out
    }
}

/// What the command line asked for.
enum Mode {
    /// The parent: start the cluster.
    Parent {
        nodes: usize,
        redis: Option<String>,
        run_for: Option<Duration>,
    },
    /// One node process.
    Node {
        index: u64,
        redis: String,
        prefix: String,
    },
}

const USAGE: &str = "usage: cluster [--nodes N] [--redis URL] [--for SECS]
  --nodes N    node processes to start (default 5)
  --redis URL  use this Redis instead of starting a redis-server on a free loopback port
  --for SECS   stop after SECS seconds (default: run until Ctrl-C)";

fn parse_args() -> Result<Mode, Error> {
    let mut args = std::env::args().skip(1);
    let (mut nodes, mut redis, mut run_for) = (5usize, None, None);
    let (mut index, mut prefix) = (None, None);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--nodes" => {
                let v = value()?;
                nodes = v.parse().map_err(|e| format!("--nodes {v:?}: {e}"))?;
            }
            "--redis" => redis = Some(value()?),
            "--for" => {
                let v = value()?;
                let secs: f64 = v.parse().map_err(|e| format!("--for {v:?}: {e}"))?;
                run_for = Some(
                    Duration::try_from_secs_f64(secs).map_err(|e| format!("--for {v:?}: {e}"))?,
                );
            }
            // Given by the parent to its children only.
            "--node" => {
                let v = value()?;
                index = Some(v.parse().map_err(|e| format!("--node {v:?}: {e}"))?);
            }
            "--prefix" => prefix = Some(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    if let Some(index) = index {
        return Ok(Mode::Node {
            index,
            redis: redis.ok_or("--node needs --redis")?,
            prefix: prefix.ok_or("--node needs --prefix")?,
        });
    }
    if !(1..=64).contains(&nodes) {
        return Err(format!("--nodes {nodes}: use 1 to 64").into());
    }
    Ok(Mode::Parent {
        nodes,
        redis,
        run_for,
    })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // This binary also runs the keeper of redis-server (see `mesh_examples::procs`).
    procs::run_keeper_if_asked().await;
    match parse_args()? {
        Mode::Node {
            index,
            redis,
            prefix,
        } => node_main(index, &redis, &prefix).await,
        Mode::Parent {
            nodes,
            redis,
            run_for,
        } => parent_main(nodes, redis, run_for).await,
    }
}

/// One node process: registers, serves, and stops when its parent closes its stdin.
async fn node_main(index: u64, redis: &str, prefix: &str) -> Result<(), Error> {
    let mesh = Mesh::builder()
        .node_type(NODE_TYPE)
        .discovery(Discovery::redis(redis))
        .prefix(prefix)
        .update_interval(Duration::from_millis(250))
        .value("index", index)
        .value("pid", std::process::id())
        .start()
        .await?;
    let serving = mesh.serve(ClusterServer::new(Node {
        index,
        mesh: mesh.clone(),
    }))?;
    procs::parent_gone().await;
    drop(serving);
    mesh.stop().await;
    Ok(())
}

/// Starts `n` node processes.
fn spawn_nodes(n: usize, redis: &str, prefix: &str) -> Result<Vec<Supervised>, Error> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::with_capacity(n);
    for i in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--node",
            &i.to_string(),
            "--redis",
            redis,
            "--prefix",
            prefix,
        ]);
        children.push(Supervised::spawn(format!("n{i}"), cmd, true)?);
    }
    Ok(children)
}

/// Waits (bounded) until `guest` sees `n` nodes serving `Cluster`, on its events.
async fn wait_seen(guest: &Mesh, n: usize, within: Duration) -> Result<(), Error> {
    let mut events = guest.events();
    let seen = || guest.nodes_serving(NODE_TYPE, ClusterClient::HELLO).len();
    tokio::time::timeout(within, async {
        while seen() < n {
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                break;
            }
        }
    })
    .await
    .map_err(|_| format!("saw {} of {n} nodes after {within:?}", seen()))?;
    Ok(())
}

async fn parent_main(
    n: usize,
    redis: Option<String>,
    run_for: Option<Duration>,
) -> Result<(), Error> {
    let started = Instant::now();
    let (mut own_redis, url) = match redis {
        Some(url) => {
            println!("redis: {url} (given)");
            (None, url)
        }
        None => {
            let r = Redis::start(&[]).await?;
            println!(
                "redis: started redis-server on {} (keeper pid {})",
                r.addr(),
                r.keeper_pid().unwrap_or(0)
            );
            let url = r.url();
            (Some(r), url)
        }
    };
    // A prefix of its own: runs sharing a Redis do not see each other.
    let prefix = format!("cluster-{}", std::process::id());
    let children = spawn_nodes(n, &url, &prefix)?;
    for c in &children {
        println!("started node {} as pid {}", c.name(), c.pid().unwrap_or(0));
    }

    // This process joins as a guest: it sees the nodes and calls them, it is not listed.
    let guest = Mesh::builder()
        .guest(true)
        .discovery(Discovery::redis(&url))
        .prefix(&prefix)
        .update_interval(Duration::from_millis(250))
        .start()
        .await?;
    wait_seen(&guest, n, Duration::from_secs(30)).await?;

    // Every node waits until it sees all n, then calls every other one.
    let peers = ClusterBroadcast::to_type(NODE_TYPE)
        .on(&guest)
        .with_timeout(Duration::from_secs(15))
        .wait_for_peers(n)
        .await?;
    let index_of = |t: &Target| match t {
        Target::Node(id) => guest.node_value::<u64>(*id, "index"),
        _ => None,
    };
    let mut sees = BTreeMap::new();
    for (t, r) in &peers {
        let seen = r.as_ref().map_err(|e| format!("{t}: {e}"))?;
        sees.insert(
            index_of(t).ok_or("a node without an index")?,
            (t.clone(), seen.len()),
        );
    }
    let all_see_all = sees.values().all(|(_, s)| *s == n);
    println!(
        "every node sees {}: {} (in {:?} since start)",
        if all_see_all {
            "all the others"
        } else {
            "only some"
        },
        sees.values()
            .map(|(_, s)| s.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        started.elapsed()
    );

    let reaches = ClusterBroadcast::to_type(NODE_TYPE)
        .on(&guest)
        .with_timeout(Duration::from_secs(15))
        .call_all(ROUNDS)
        .await?;
    let mut table: BTreeMap<u64, (Target, Vec<Reach>)> = BTreeMap::new();
    for (t, r) in reaches {
        let r = r.map_err(|e| format!("{t}: {e}"))?;
        table.insert(index_of(&t).ok_or("a node without an index")?, (t, r));
    }
    print_table(&guest, &sees, &table, n);

    // Run until --for passes or Ctrl-C, reporting joins and leaves.
    match run_for {
        Some(d) => println!("running for {d:?} (or until Ctrl-C)"),
        None => println!("running until Ctrl-C"),
    }
    let stop_at = async {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop_at);
    let mut events = guest.events();
    loop {
        tokio::select! {
            () = &mut stop_at => break,
            r = tokio::signal::ctrl_c() => {
                r?;
                println!("Ctrl-C");
                break;
            }
            e = events.recv() => match e {
                Ok(MeshEvent::Joined(r)) => println!("joined: {} ({})", r.id, r.node_type),
                Ok(MeshEvent::Left { node, reason }) => println!("left: {} ({reason:?})", node.id),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }

    // Stop: each node leaves the view gracefully when its stdin closes.
    let mut stops = tokio::task::JoinSet::new();
    for mut c in children {
        stops.spawn(async move { (c.name().to_owned(), c.stop(Duration::from_secs(10)).await) });
    }
    let mut clean = 0;
    while let Some(done) = stops.join_next().await {
        match done? {
            (_, Ok((status, false))) if status.success() => clean += 1,
            (name, Ok((status, killed))) => println!("node {name}: {status} (killed: {killed})"),
            (name, Err(e)) => println!("node {name}: {e}"),
        }
    }
    println!("stopped {clean} of {n} nodes cleanly");
    guest.stop().await;
    if let Some(r) = own_redis.as_mut() {
        r.shutdown().await?;
        println!("redis-server stopped");
    }
    println!("done in {:?}", started.elapsed());
    Ok(())
}

fn print_table(
    guest: &Mesh,
    sees: &BTreeMap<u64, (Target, usize)>,
    table: &BTreeMap<u64, (Target, Vec<Reach>)>,
    n: usize,
) {
    println!();
    println!(
        "{:<5} {:<22} {:>7} {:>5} {:>9}   round trip us: min median max",
        "node", "address", "pid", "sees", "answered"
    );
    let (mut calls, mut answered) = (0, 0);
    for (i, (t, reaches)) in table {
        let pid = match t {
            Target::Node(id) => guest.node_value::<u32>(*id, "pid").unwrap_or(0),
            _ => 0,
        };
        let addr = match t {
            Target::Node(id) => id.addr.to_string(),
            other => other.to_string(),
        };
        let mut all: Vec<u64> = reaches
            .iter()
            .flat_map(|r| r.rtt_us.iter().copied())
            .collect();
        all.sort_unstable();
        let c: u32 = reaches.iter().map(|r| r.calls).sum();
        let a: u32 = reaches.iter().map(|r| r.answered).sum();
        calls += c;
        answered += a;
        let fig = |q: usize| all.get(q).map_or("-".to_owned(), u64::to_string);
        println!(
            "n{i:<4} {addr:<22} {pid:>7} {:>5} {:>9}   {} {} {}",
            sees.get(i).map_or(0, |(_, s)| *s),
            format!("{a}/{c}"),
            fig(0),
            fig(all.len() / 2),
            fig(all.len().saturating_sub(1)),
        );
        for r in reaches {
            if let Some(e) = &r.error {
                println!("      n{i} -> n{}: {e}", r.peer);
            }
        }
    }
    println!();
    println!("median round trip in us, caller (row) -> callee (column):");
    let head: String = (0..n).map(|j| format!("{:>7}", format!("n{j}"))).collect();
    println!("      {head}");
    for (i, (_, reaches)) in table {
        let row: String = (0..n as u64)
            .map(|j| {
                let cell = reaches
                    .iter()
                    .find(|r| r.peer == j)
                    .and_then(|r| r.rtt_us.get(r.rtt_us.len() / 2))
                    .map_or("-".to_owned(), u64::to_string);
                format!("{cell:>7}")
            })
            .collect();
        println!("  n{i:<3}{row}");
    }
    println!();
    println!(
        "{answered} of {calls} calls across {n} processes answered ({} pairs, {ROUNDS} calls each)",
        n * n.saturating_sub(1)
    );
}
