//! Discovery benchmark: `cargo run --release -p mesh-bench -- discovery [kills]`.
//!
//! Spawns its own `redis-server` on a free loopback port and runs the Redis backend with its
//! defaults (update interval 1 s, expiry 2 intervals). Observers are nodes in this process,
//! started first (so one of them holds the reaper lease); the nodes killed with `kill -9` are
//! child processes (this binary re-executed as `discovery node ...`). Figures:
//!
//! * `discovery.kill9.ms`: median over the kills of the time from SIGKILL until every
//!   observer has dropped the node (`Left` event);
//! * `discovery.join.ms`: median time from calling `start()` until every observer lists the
//!   new node (the whole start, Redis round trips included);
//! * `discovery.leave.ms`: median time from calling `stop()` until every observer dropped it;
//! * `discovery.redis_roundtrips_per_node_s`: client round trips to Redis per node per second
//!   with 200 nodes in steady state (the backend's own counter, [`RedisStats`]);
//! * `discovery.redis_cmds_per_node_s`: commands Redis executed per node per second in the
//!   same window (`INFO commandstats`, which counts the commands scripts run).
//!
//! Every wait is bounded; loopback only.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_core::discovery::redis::{RedisConfig, RedisStats};
use mesh_core::{Discovery, LeaveReason, Mesh, MeshEvent, NodeId};
use tokio::sync::broadcast;

use crate::stats::median;

const INTERVAL: Duration = Duration::from_secs(1);
const OBSERVERS: usize = 4;
const SCALE_NODES: usize = 200;
const SCALE_WINDOW: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(15);

/// Entry point of `mesh-bench discovery ...`.
pub(crate) fn run(args: &[&str]) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("cannot build the runtime: {e}")),
    };
    let result = match args {
        ["node", url, prefix] => rt.block_on(child_node(url, prefix)),
        [] => rt.block_on(bench(10)),
        [kills] => rt.block_on(bench(kills.parse().unwrap_or(10))),
        _ => fail("usage: mesh-bench discovery [kills]"),
    };
    if let Err(e) = result {
        fail(&e);
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("discovery bench: {msg}");
    std::process::exit(2)
}

/// A child node: starts, prints `READY <id>`, runs until killed or stdin closes.
async fn child_node(url: &str, prefix: &str) -> Result<(), String> {
    let mesh = Mesh::builder()
        .node_type("victim")
        .discovery(Discovery::redis(url))
        .prefix(prefix)
        .update_interval(INTERVAL)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    println!("READY {}", mesh.id());
    let _ = io::stdout().flush();
    let mut sink = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
    mesh.stop().await;
    Ok(())
}

/// A `redis-server` on a free loopback port, killed on drop.
struct RedisProcess {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisProcess {
    fn start() -> Result<RedisProcess, String> {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = std::env::temp_dir().join(format!("mesh-bench-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot spawn redis-server (is it on PATH?): {e}"))?;
        let r = RedisProcess { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.command(&["PING"]).is_err() {
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {port} did not answer"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// One command over a fresh connection; the reply as text (simple or bulk strings).
    fn command(&self, args: &[&str]) -> io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end();
        match line.as_bytes().first() {
            Some(b'+') | Some(b':') => Ok(line[1..].to_string()),
            Some(b'$') => {
                let len: usize = line[1..].parse().map_err(io::Error::other)?;
                let mut buf = vec![0; len + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(len);
                String::from_utf8(buf).map_err(io::Error::other)
            }
            _ => Err(io::Error::other(format!("redis replied {line:?}"))),
        }
    }

    /// Commands executed so far (sum of `calls` in `INFO commandstats`).
    fn commands(&self) -> io::Result<u64> {
        let info = self.command(&["INFO", "commandstats"])?;
        Ok(info
            .lines()
            .filter(|l| l.starts_with("cmdstat_"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum())
    }
}

/// A child node process, killed on drop.
struct Victim {
    child: Child,
    id: NodeId,
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_victim(url: &str, prefix: &str) -> Result<Victim, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["discovery", "node", url, prefix])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(WAIT).unwrap_or_default();
    let id = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("victim printed {line:?}"));
    match id {
        Ok(id) => Ok(Victim { child, id }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

async fn observer(url: &str, prefix: &str) -> Result<Mesh, String> {
    Mesh::builder()
        .node_type("observer")
        .discovery(Discovery::redis(url))
        .prefix(prefix)
        .update_interval(INTERVAL)
        .start()
        .await
        .map_err(|e| e.to_string())
}

/// Waits until `done` holds for every observer, polling every millisecond; the elapsed time.
async fn until_all(
    observers: &[Mesh],
    since: Instant,
    done: impl Fn(&Mesh) -> bool,
) -> Result<Duration, String> {
    loop {
        if observers.iter().all(&done) {
            return Ok(since.elapsed());
        }
        if since.elapsed() > WAIT {
            return Err(format!("not every observer agreed within {WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits for a `Left` of `id` on every receiver; the time of the last.
async fn all_left(
    rxs: &mut [broadcast::Receiver<MeshEvent>],
    id: NodeId,
    since: Instant,
) -> Result<(Duration, Vec<LeaveReason>), String> {
    let mut reasons = Vec::new();
    for rx in rxs {
        let reason = tokio::time::timeout(WAIT, async {
            loop {
                match rx.recv().await {
                    Ok(MeshEvent::Left { node, reason }) if node.id == id => return Ok(reason),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| format!("{id} did not leave a view within {WAIT:?}"))??;
        reasons.push(reason);
    }
    Ok((since.elapsed(), reasons))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn bench(kills: usize) -> Result<(), String> {
    let kills = kills.clamp(1, 50);
    let redis = RedisProcess::start()?;
    let url = redis.url();
    let prefix = "bench";
    let observers: Vec<Mesh> = {
        let mut v = Vec::new();
        for _ in 0..OBSERVERS {
            v.push(observer(&url, prefix).await?);
        }
        v
    };
    let expiry = observers[0].config().effective_expiry();
    let version = redis
        .command(&["INFO", "server"])
        .ok()
        .and_then(|i| {
            i.lines()
                .find_map(|l| l.strip_prefix("redis_version:").map(str::to_string))
        })
        .unwrap_or_default();
    println!(
        "# discovery benchmark: redis-server {version} on loopback; update_interval {} ms, \
         expiry {} ms (the default, 2 intervals); {OBSERVERS} observer nodes in this process",
        INTERVAL.as_millis(),
        expiry.as_millis()
    );

    // kill -9: child processes, killed one after the other at random heartbeat phases.
    eprintln!("kill -9: {kills} child processes");
    let mut victims = Vec::new();
    for _ in 0..kills {
        victims.push(spawn_victim(&url, prefix)?);
    }
    let ids: Vec<NodeId> = victims.iter().map(|v| v.id).collect();
    until_all(&observers, Instant::now(), |m| {
        ids.iter().all(|id| m.exists(*id))
    })
    .await?;
    let mut kill_ms = Vec::new();
    for (i, mut v) in victims.into_iter().enumerate() {
        tokio::time::sleep(INTERVAL.mul_f64(rand::random_range(0.0..1.0))).await;
        let mut rxs: Vec<_> = observers.iter().map(Mesh::events).collect();
        let t0 = Instant::now();
        let _ = v.child.kill();
        let (took, reasons) = all_left(&mut rxs, v.id, t0).await?;
        let _ = v.child.wait();
        if reasons.iter().any(|r| *r != LeaveReason::Expired) {
            return Err(format!("a killed node left with {reasons:?}"));
        }
        eprintln!("  kill {}: {:.0} ms", i + 1, ms(took));
        kill_ms.push(ms(took));
    }

    // join and graceful leave: nodes in this process.
    eprintln!("join and leave: 10 nodes");
    let mut join_ms = Vec::new();
    let mut joined = Vec::new();
    for _ in 0..10 {
        // From calling `start()`: by the time it returns the join is already published, so
        // timing from its return would leave out the Redis round trips.
        let t0 = Instant::now();
        let m = observer(&url, prefix).await?;
        let id = m.id();
        join_ms.push(ms(until_all(&observers, t0, |o| o.exists(id)).await?));
        joined.push(m);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut leave_ms = Vec::new();
    for m in joined {
        let mut rxs: Vec<_> = observers.iter().map(Mesh::events).collect();
        let t0 = Instant::now();
        let id = m.id();
        let stop = tokio::spawn(async move { m.stop().await });
        let (took, reasons) = all_left(&mut rxs, id, t0).await?;
        let _ = stop.await;
        if reasons.iter().any(|r| *r != LeaveReason::Graceful) {
            return Err(format!("a stopped node left with {reasons:?}"));
        }
        leave_ms.push(ms(took));
    }
    for o in &observers {
        o.stop().await;
    }
    drop(observers);

    // Redis load with 200 nodes, steady state.
    eprintln!("load: {SCALE_NODES} nodes");
    let stats = RedisStats::new();
    let config = RedisConfig::standalone(&url).with_stats(stats.clone());
    let mut nodes = Vec::new();
    for wave in 0..SCALE_NODES / 50 {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let config = config.clone();
            set.spawn(async move {
                Mesh::builder()
                    .node_type(format!("w{wave}"))
                    .discovery(Discovery::Redis(config))
                    .prefix("scale")
                    .update_interval(INTERVAL)
                    .start()
                    .await
            });
        }
        while let Some(r) = set.join_next().await {
            nodes.push(r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?);
        }
    }
    until_all(&nodes, Instant::now(), |m| m.nodes().len() == SCALE_NODES).await?;
    // Let the start-up burst settle for two intervals.
    tokio::time::sleep(INTERVAL * 2).await;
    let (rt0, cmd0, t0) = (
        stats.round_trips(),
        redis.commands().map_err(|e| e.to_string())?,
        Instant::now(),
    );
    tokio::time::sleep(SCALE_WINDOW).await;
    let (rt1, cmd1, secs) = (
        stats.round_trips(),
        redis.commands().map_err(|e| e.to_string())?,
        t0.elapsed().as_secs_f64(),
    );
    let per = |n: u64| n as f64 / SCALE_NODES as f64 / secs;
    // The INFO call itself is one command.
    let rt_rate = per(rt1 - rt0);
    let cmd_rate = per(cmd1.saturating_sub(cmd0 + 1));
    let mut set = tokio::task::JoinSet::new();
    for m in nodes {
        set.spawn(async move { m.stop().await });
    }
    while set.join_next().await.is_some() {}

    let kill = median(&kill_ms);
    let join = median(&join_ms);
    let leave = median(&leave_ms);
    println!("discovery.kill9.ms: {kill:.0} ms (median of {kills}; target <= 2000)");
    println!("discovery.join.ms: {join:.2} ms (median of 10; target <= 200)");
    println!("discovery.leave.ms: {leave:.2} ms (median of 10; target <= 100)");
    println!(
        "discovery.redis_roundtrips_per_node_s: {rt_rate:.3} round trips (with {SCALE_NODES} nodes; target <= 2)"
    );
    println!(
        "discovery.redis_cmds_per_node_s: {cmd_rate:.2} commands (INFO commandstats, script \
         internals included; informative)"
    );
    println!(
        "# kill9 range {:.0}-{:.0} ms; {stats:?}",
        kill_ms.iter().copied().fold(f64::INFINITY, f64::min),
        kill_ms.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "# baseline mesh-link 0.13.6 (BASELINES.md, 1 s interval): kill -9 2290 ms, graceful \
         stop 520 ms, join 970 ms"
    );
    Ok(())
}
