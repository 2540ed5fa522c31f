//! Fan-out: one node reaches N others at once, the two ways a generated `<Trait>Broadcast`
//! offers.
//!
//! N "worker" nodes (12 unless `--nodes N`) serve `Fleet`; a "ctl" node broadcasts to them:
//!
//! 1. a one-way method (`deploy`) through the relay tree: the arguments are encoded once, the
//!    ctl node sends at most `limit` copies (the mesh's `relay_limit`, 2 by default) and each
//!    worker that gets one forwards it to at most `limit` more. The example counts, per node,
//!    the copies it sent (the transport's `messages_sent`): they add up to exactly one copy per
//!    worker, and no node sends more than `limit`;
//! 2. the same with other limits (1: a chain, N: every worker directly), with the time until
//!    the last worker had the message;
//! 3. 200 one-way messages in a row, which every worker gets in the order they were sent;
//! 4. a request method (`status`): one call per worker, every answer collected, and one error
//!    for a worker that stopped.
//!
//! Discovery is the in-process registry: every node runs in this process, on its own UDP
//! socket on 127.0.0.1.
//!
//! Run: `cargo run --example fanout` (or `cargo run --example fanout -- --nodes 30`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mesh_core::prelude::*;
use tokio::sync::mpsc;

/// What a worker reports about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The worker's name.
    pub name: String,
    /// The last version deployed to it.
    pub version: u64,
    /// How many deploys it heard.
    pub heard: u64,
    /// Whether every deploy came in the order it was sent (each version one more than the last).
    pub in_order: bool,
    /// The node type the relayed messages named as their sender (the node that started the
    /// broadcast, not the hop that forwarded them).
    pub sender: String,
}

/// The workers' service: methods get command ids 2000 and 2001.
#[mesh_service(id = 2000)]
pub trait Fleet {
    /// Deploys `version` (one-way: sent through the relay tree by a broadcast).
    #[mesh(oneway)]
    async fn deploy(&self, ctx: CallContext, version: u64);
    /// What this worker has (a request: a broadcast collects one answer per worker).
    async fn status(&self) -> Status;
}

struct Worker {
    index: usize,
    state: Mutex<Status>,
    /// Tells `main` which worker got which version (so it awaits deliveries, never sleeps).
    got: mpsc::UnboundedSender<(usize, u64)>,
}

impl Fleet for Worker {
    async fn deploy(&self, ctx: CallContext, version: u64) {
        {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.in_order &= version == s.version + 1;
            s.version = version;
            s.heard += 1;
            s.sender = ctx.sender_type().unwrap_or("not listed").to_owned();
        }
        let _ = self.got.send((self.index, version));
    }

    async fn status(&self) -> Status {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

type Error = Box<dyn std::error::Error>;

/// `--nodes N` (default 12).
fn parse_nodes() -> Result<usize, Error> {
    let mut args = std::env::args().skip(1);
    let mut nodes = 12;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" => {
                let v = args.next().ok_or("--nodes needs a number")?;
                nodes = v.parse().map_err(|e| format!("--nodes {v:?}: {e}"))?;
            }
            "-h" | "--help" => {
                println!("usage: fanout [--nodes N]   (N workers, default 12)");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    if !(2..=200).contains(&nodes) {
        return Err(format!("--nodes {nodes}: use 2 to 200").into());
    }
    Ok(nodes)
}

/// Every reliable message a node has queued since it started.
fn sent(mesh: &Mesh) -> u64 {
    mesh.stats().transport.messages_sent
}

/// Waits until every one of `n` workers reported `version`; returns how long that took.
async fn all_got(
    rx: &mut mpsc::UnboundedReceiver<(usize, u64)>,
    n: usize,
    version: u64,
) -> Result<Duration, Error> {
    let start = Instant::now();
    let mut missing = n;
    while missing > 0 {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some((_, v))) if v == version => missing -= 1,
            Ok(Some(_)) => {}
            _ => return Err(format!("{missing} workers did not get version {version}").into()),
        }
    }
    Ok(start.elapsed())
}

/// One round trip to every worker: it answers once it has handled everything that reached
/// it before (its own copy and the copies it forwarded included), so counters read after it
/// are settled. Each answer is one message its worker sends.
async fn barrier(ctl: &Mesh) -> Result<(), Error> {
    for (target, r) in FleetBroadcast::to_type("worker").on(ctl).status().await? {
        r.map_err(|e| format!("{target}: {e}"))?;
    }
    Ok(())
}

/// Sends `version` through the relay tree with `limit`, and returns the copies each node
/// sent (the ctl node first), and the time until the last worker had it.
async fn relay_round(
    ctl: &Mesh,
    workers: &[Mesh],
    rx: &mut mpsc::UnboundedReceiver<(usize, u64)>,
    version: u64,
    limit: usize,
) -> Result<(u64, Vec<u64>, Duration), Error> {
    barrier(ctl).await?;
    let ctl_before = sent(ctl);
    let before: Vec<u64> = workers.iter().map(sent).collect();
    let start = Instant::now();
    FleetBroadcast::to_type("worker")
        .on(ctl)
        .with_limit(limit)
        .deploy(version)
        .await?;
    let ctl_copies = sent(ctl) - ctl_before;
    all_got(rx, workers.len(), version).await?;
    let took = start.elapsed();
    barrier(ctl).await?;
    // Minus the one answer each worker sent to the barrier.
    let copies = workers
        .iter()
        .zip(before)
        .map(|(w, b)| (sent(w) - b).saturating_sub(1))
        .collect();
    Ok((ctl_copies, copies, took))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let n = parse_nodes()?;
    let registry = LocalRegistry::new();
    let start = |node_type: &str| {
        Mesh::builder()
            .node_type(node_type)
            .discovery(Discovery::local_registry(&registry))
            .start()
    };

    let ctl = start("ctl").await?;
    let (got, mut rx) = mpsc::unbounded_channel();
    let mut workers = Vec::with_capacity(n);
    let mut serving = Vec::with_capacity(n);
    for index in 0..n {
        let w = start("worker").await?;
        serving.push(w.serve(FleetServer::new(Worker {
            index,
            state: Mutex::new(Status {
                name: format!("worker-{index:02}"),
                version: 0,
                heard: 0,
                in_order: true,
                sender: String::new(),
            }),
            got: got.clone(),
        }))?);
        workers.push(w);
    }
    // Wait (on the ctl node's events, bounded) until it sees every worker serving `deploy`.
    let mut events = ctl.events();
    tokio::time::timeout(Duration::from_secs(10), async {
        while ctl.nodes_serving("worker", FleetClient::DEPLOY).len() < n {
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                break;
            }
        }
    })
    .await
    .map_err(|_| "the ctl node did not see every worker")?;
    println!("ctl {} sees {n} workers serving Fleet", ctl.addr());
    let names: BTreeMap<std::net::SocketAddr, usize> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| (w.addr(), i))
        .collect();

    // 1. One message through the relay tree, with the default limit (relay_limit = 2).
    let (ctl_copies, copies, took) = relay_round(&ctl, &workers, &mut rx, 1, 0).await?;
    println!("1. deploy v1 through the relay tree (limit 2): every worker got it in {took:?}");
    println!("   node       copies sent");
    println!("   ctl        {ctl_copies}");
    for (i, c) in copies.iter().enumerate() {
        let role = match c {
            0 => "leaf",
            _ => "relay",
        };
        println!("   worker-{i:02}  {c} ({role})");
    }
    let total = ctl_copies + copies.iter().sum::<u64>();
    let busiest = copies
        .iter()
        .copied()
        .chain([ctl_copies])
        .max()
        .unwrap_or(0);
    println!(
        "   {total} copies in all for {n} workers; no node sent more than {busiest}; {} leaves",
        copies.iter().filter(|&&c| c == 0).count()
    );

    // 2. Other limits: a chain, a wider tree, every worker directly.
    let mut version = 1;
    for limit in [1, 4, n] {
        version += 1;
        let (ctl_copies, copies, took) =
            relay_round(&ctl, &workers, &mut rx, version, limit).await?;
        let total = ctl_copies + copies.iter().sum::<u64>();
        let busiest = copies.iter().copied().max().unwrap_or(0);
        println!(
            "2. limit {limit:>3}: ctl sent {ctl_copies}, the busiest worker forwarded {busiest}, \
             {total} copies in all; the last worker had it after {took:?}"
        );
    }

    // 3. Many broadcasts in a row arrive in order everywhere.
    let burst = 200;
    let t = Instant::now();
    for _ in 0..burst {
        version += 1;
        FleetBroadcast::to_type("worker")
            .on(&ctl)
            .deploy(version)
            .await?;
    }
    all_got(&mut rx, n, version).await?;
    println!(
        "3. {burst} deploys in a row reached all {n} workers in {:?}",
        t.elapsed()
    );

    // 4. A request broadcast collects one answer per worker.
    let answers = FleetBroadcast::to_type("worker").on(&ctl).status().await?;
    let mut in_order = 0;
    for (target, r) in &answers {
        let s = r.as_ref().map_err(|e| format!("{target}: {e}"))?;
        in_order += usize::from(s.in_order && s.version == version);
        println!(
            "4. status {}: v{} after {} deploys, in order: {}, sender seen: {}",
            s.name, s.version, s.heard, s.in_order, s.sender
        );
    }
    println!(
        "   {} answers, {in_order} workers at v{version} with every deploy in order",
        answers.len()
    );

    // A broadcast to a list of nodes reports each target's own result: stop one worker and
    // ask every node of the list again.
    let ids: Vec<NodeId> = workers.iter().map(Mesh::id).collect();
    let gone = workers[n - 1].id();
    workers[n - 1].stop().await;
    let t = Instant::now();
    let answers = FleetBroadcast::to_nodes(ids)
        .on(&ctl)
        .with_timeout(Duration::from_secs(3))
        .status()
        .await?;
    let ok = answers.iter().filter(|(_, r)| r.is_ok()).count();
    println!(
        "4. to_nodes after stopping {gone}: {ok} answers, {} errors, in {:?}",
        answers.len() - ok,
        t.elapsed()
    );
    for (target, r) in &answers {
        if let Err(e) = r {
            let name = match target {
                Target::Node(id) => names.get(&id.addr).map(|i| format!("worker-{i:02}")),
                _ => None,
            };
            println!(
                "   {} failed: {e} (retryable: {})",
                name.unwrap_or_else(|| target.to_string()),
                e.is_retryable()
            );
        }
    }

    drop(serving);
    for w in &workers {
        w.stop().await;
    }
    ctl.stop().await;
    println!("done");
    Ok(())
}
