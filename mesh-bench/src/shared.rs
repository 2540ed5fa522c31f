//! `mesh-bench shared`: shared objects against the rpc layer they are built on, between one
//! pinned server process (it owns every object and serves the baselines) and one pinned
//! client process (it holds the replicas and measures both sides), rounds interleaved.
//!
//! Figures (each baseline measured in the same client process, against the same server
//! process, interleaved with the shared-object measurement):
//!
//! * `shared.inc.rtt.p50.{same,cross}.ratio`: one `inc_players(1)` from the client (a
//!   non-owner holding a replica) until it resolves (ordered by the owner and held by the
//!   local replica), over one typed 32-byte rpc echo call (as `mesh-bench rpc` measures it).
//!   Blocks of 100 incs and 100 echoes alternate.
//! * `shared.propagate.p50.ratio`: owner commit to the replica's `Updated` event in the
//!   other process, over one one-way message. The two processes share no clock, so both
//!   sides are measured as round trips that start and end in the client:
//!   - `T1`: the client sends a one-way "go" to the owner, whose handler does the
//!     `inc_players(1)` on its own handle (the owner commits and pushes the delta), and the
//!     client times until its replica's `Updated` event arrives;
//!   - `T0`: the client sends a one-way "ping", whose handler sends a one-way "pong" back,
//!     and the client times until the pong reaches it (a handler feeding a channel, so a
//!     task wakes as it does for the event).
//!
//!   Both start with the same kind of one-way leg (client -> server, one-way rpc message
//!   woken in a handler), taken as half of `T0`. So propagation = `T1 - T0/2` and one
//!   one-way message = `T0/2`; the ratio is `(T1.p50 - T0.p50/2) / (T0.p50/2)` and the p99
//!   printed is `T1.p99 - T0.p50/2`. The propagation so measured includes the owner's
//!   local ordering of the inc (handler to push queued), which is part of "the owner does
//!   the inc". Samples alternate (one T1, one T0).
//! * `shared.inc_per_s.vs_rpc`: 64 tasks in the client, each incrementing its own object
//!   (64 different objects, all owned by the server), incs per second, over 64 tasks doing
//!   typed echo calls (64 in flight), calls per second; same process pair, interleaved.
//!   The same 64 tasks on one object are printed too (`shared.inc_per_s.one_object`).
//! * `shared.bytes_per_object`: the client's RSS growth (`/proc/self/statm`) while it
//!   creates (on the server) and holds replicas of 10,000 `Room`s (3 fields: a counter, a
//!   10-byte name, an empty map), per object, minus the encoded size of one object as the
//!   owner reports it (`ObjectInfo::bytes`).
//!
//! Loopback only; every loop is bounded in count and each child in time.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use mesh_core::rpc::{CallContext, Client, handler};
use mesh_core::shared::{ObjectId, SharedEvent};
use mesh_core::{Mesh, MeshError, SharedObject};

use crate::stats::{median, percentile};
use crate::{CROSS, SAME, measure};

/// The shared object of every figure: three fields.
#[derive(SharedObject, Clone, Default, Debug)]
pub(crate) struct Room {
    /// A counter (unbounded).
    players: i64,
    /// A short name.
    name: String,
    /// A map (empty here).
    members: BTreeMap<String, u32>,
}

const ROLES: &[&str] = &[
    "shared-owner",
    "shared-rtt",
    "shared-prop",
    "shared-tput",
    "shared-mem",
];
/// Typed echo (rpc baseline).
const ECHO: u16 = 1;
/// One-way ping: the server answers with a one-way [`PONG`].
const PING: u16 = 2;
/// One-way pong, to the client.
const PONG: u16 = 3;
/// One-way "go": the owner increments the object named.
const GO: u16 = 4;
/// Call: the owner takes (and keeps) a handle on the object named.
const HOLD: u16 = 5;
const WARMUP: usize = 200;
const SAMPLES: usize = 2000;
/// Alternating blocks of this many incs and echoes.
const BLOCK: usize = 100;
const WRITERS: usize = 64;
/// Incs (or calls) per throughput phase, over all writers.
const TPUT_OPS: usize = 64_000;
const OBJECTS: usize = 10_000;
/// Every child exits on its own after this long.
const LIFETIME: Duration = Duration::from_secs(40);

type Res = Result<(), Box<dyn std::error::Error>>;

/// Whether `r` names a shared-bench role.
pub(crate) fn is_role(r: &str) -> bool {
    ROLES.contains(&r)
}

/// Runs role `r` on a single-threaded runtime (the server port is the last argument).
pub(crate) fn run(r: &str, args: &[&str]) {
    let Some((rt, server)) = crate::role_setup(args) else {
        return;
    };
    let role = r.to_string();
    rt.block_on(async move {
        let task = tokio::spawn(async move {
            let fut = async {
                match role.as_str() {
                    "shared-owner" => owner().await,
                    "shared-rtt" => inc_rtt(server).await,
                    "shared-prop" => propagate(server).await,
                    "shared-tput" => tput(server).await,
                    "shared-mem" => memory(server).await,
                    _ => Ok(()),
                }
            };
            match tokio::time::timeout(LIFETIME, fut).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    eprintln!("{role}: {e}");
                    println!("nan");
                }
                Err(_) => println!("nan"),
            }
        });
        let _ = task.await;
    });
}

async fn mesh() -> Result<Mesh, MeshError> {
    // The default configuration (as `mesh-bench rpc`); each process has its own in-process
    // registry and names the other by address. 10,000 objects are within the default
    // `SharedLimits::max_objects` (100,000).
    Mesh::builder().node_type("bench").start().await
}

/// The server: owns every object, echoes, pongs, and increments on "go".
async fn owner() -> Res {
    let m = mesh().await?;
    let held: Arc<Mutex<HashMap<ObjectId, RoomHandle>>> = Arc::default();
    let _echo = m.handle(ECHO, handler(|_c: CallContext, b: Bytes| async move { b }))?;
    let mm = m.clone();
    let _ping = m.handle(
        PING,
        handler(move |c: CallContext, (): ()| {
            let back = Client::for_node(c.sender_addr()).on(&mm);
            async move {
                let _ = back.send(PONG, &()).await;
            }
        }),
    )?;
    let (mm, h) = (m.clone(), held.clone());
    let _hold = m.handle(
        HOLD,
        handler(move |_c: CallContext, id: ObjectId| {
            let (mm, h) = (mm.clone(), h.clone());
            async move {
                if let Ok(room) = mm.shared().get::<Room>(id).await {
                    h.lock().unwrap_or_else(|p| p.into_inner()).insert(id, room);
                }
            }
        }),
    )?;
    let h = held.clone();
    let _go = m.handle(
        GO,
        handler(move |_c: CallContext, id: ObjectId| {
            let room = h
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned();
            async move {
                if let Some(room) = room {
                    let _ = room.inc_players(1).await;
                }
            }
        }),
    )?;
    println!("{}", m.addr().port());
    std::future::pending::<()>().await;
    Ok(())
}

/// A room created on (owned by) `server`, replicated here.
async fn room_on(
    m: &Mesh,
    server: SocketAddr,
    i: usize,
) -> Result<RoomHandle, Box<dyn std::error::Error>> {
    let room = Room {
        players: 0,
        name: format!("room-{i:05}"),
        members: BTreeMap::new(),
    };
    Ok(m.shared().create(room).on(server).await?)
}

fn us(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

/// Prints `inc.p50 inc.p99 echo.p50 echo.p99` (us).
async fn inc_rtt(server: SocketAddr) -> Res {
    let m = mesh().await?;
    let room = room_on(&m, server, 0).await?;
    let client = Client::for_node(server).on(&m);
    let msg = Bytes::from_static(&[7u8; 32]);
    let (mut inc, mut echo) = (Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES));
    for block in 0..(WARMUP + SAMPLES) / BLOCK {
        let keep = block * BLOCK >= WARMUP;
        for _ in 0..BLOCK {
            let t = Instant::now();
            room.inc_players(1).await?;
            if keep {
                inc.push(us(t));
            }
        }
        for _ in 0..BLOCK {
            let t = Instant::now();
            let back: Bytes = client.call(ECHO, &msg).await?;
            if keep {
                echo.push(us(t));
            }
            if back.len() != 32 {
                return Err("bad echo".into());
            }
        }
    }
    if room.players() != ((WARMUP + SAMPLES) / BLOCK * BLOCK) as i64 {
        return Err("lost incs".into());
    }
    println!(
        "{:.2} {:.2} {:.2} {:.2}",
        percentile(&inc, 50.0),
        percentile(&inc, 99.0),
        percentile(&echo, 50.0),
        percentile(&echo, 99.0)
    );
    Ok(())
}

/// Prints `T1.p50 T1.p99 T0.p50 T0.p99` (us): see the module docs.
async fn propagate(server: SocketAddr) -> Res {
    let m = mesh().await?;
    let room = room_on(&m, server, 0).await?;
    let (tx, mut pongs) = tokio::sync::mpsc::unbounded_channel::<()>();
    let _pong = m.handle(
        PONG,
        handler(move |_c: CallContext, (): ()| {
            let _ = tx.send(());
            async {}
        }),
    )?;
    let client = Client::for_node(server).on(&m);
    let id = room.id();
    client.call::<_, ()>(HOLD, &id).await?;
    let mut events = room.events();
    let wait = Duration::from_secs(2);
    let (mut t1, mut t0) = (Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES));
    for i in 0..WARMUP + SAMPLES {
        let start = Instant::now();
        let seen = async {
            loop {
                match events.next().await {
                    Some(SharedEvent::Updated { .. }) => return Ok(us(start)),
                    Some(_) => {}
                    None => return Err("object gone"),
                }
            }
        };
        let (sent, seen) = tokio::join!(client.send(GO, &id), tokio::time::timeout(wait, seen));
        sent?;
        let d1 = seen??;
        let start = Instant::now();
        let back = async {
            pongs.recv().await;
            us(start)
        };
        let (sent, back) = tokio::join!(client.send(PING, &()), tokio::time::timeout(wait, back));
        sent?;
        let d0 = back?;
        if i >= WARMUP {
            t1.push(d1);
            t0.push(d0);
        }
    }
    println!(
        "{:.2} {:.2} {:.2} {:.2}",
        percentile(&t1, 50.0),
        percentile(&t1, 99.0),
        percentile(&t0, 50.0),
        percentile(&t0, 99.0)
    );
    Ok(())
}

/// Runs `WRITERS` tasks doing `TPUT_OPS` operations in all (`op(writer)`); ops per second.
async fn per_second<F, Fut>(op: F) -> Result<f64, Box<dyn std::error::Error>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(WRITERS);
    for w in 0..WRITERS {
        let ops: Vec<Fut> = (0..TPUT_OPS / WRITERS).map(|_| op(w)).collect();
        tasks.push(tokio::spawn(async move {
            for f in ops {
                f.await?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((TPUT_OPS / WRITERS * WRITERS) as f64 / start.elapsed().as_secs_f64())
}

/// Prints `rpc_calls/s incs/s(64 objects) incs/s(one object)`, each the best of two
/// interleaved passes.
async fn tput(server: SocketAddr) -> Res {
    let m = mesh().await?;
    let mut rooms = Vec::with_capacity(WRITERS);
    for i in 0..WRITERS {
        rooms.push(room_on(&m, server, i).await?);
    }
    let rooms = Arc::new(rooms);
    let client = Client::for_node(server).on(&m);
    let msg = Bytes::from_static(&[7u8; 32]);
    let rpc = || {
        per_second(|_| {
            let (c, msg) = (client.clone(), msg.clone());
            async move {
                let _: Bytes = c.call(ECHO, &msg).await.map_err(|e| e.to_string())?;
                Ok(())
            }
        })
    };
    let incs = |one: bool| {
        let rooms = rooms.clone();
        per_second(move |w| {
            let room = rooms[if one { 0 } else { w }].clone();
            async move {
                room.inc_players(1).await.map_err(|e| e.to_string())?;
                Ok(())
            }
        })
    };
    let (mut r, mut d, mut o) = (0.0f64, 0.0f64, 0.0f64);
    for _ in 0..2 {
        r = r.max(rpc().await?);
        d = d.max(incs(false).await?);
        o = o.max(incs(true).await?);
    }
    println!("{r:.0} {d:.0} {o:.0}");
    Ok(())
}

/// The resident set size of this process, in bytes.
fn rss() -> Result<f64, Box<dyn std::error::Error>> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("no rss in statm")?
        .parse()?;
    Ok(pages * 4096.0)
}

/// Prints `rss_growth_per_object encoded_bytes_per_object` (bytes).
async fn memory(server: SocketAddr) -> Res {
    let m = mesh().await?;
    // Warm up the paths (and the allocator) with a few objects kept out of the count.
    let mut warm = Vec::new();
    for i in 0..WRITERS {
        warm.push(room_on(&m, server, i).await?);
    }
    let mut held: Vec<RoomHandle> = Vec::with_capacity(OBJECTS);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = rss()?;
    let mut made = futures::stream::iter(0..OBJECTS)
        .map(|i| {
            let m = m.clone();
            async move { room_on(&m, server, i).await }
        })
        .buffer_unordered(WRITERS);
    while let Some(r) = made.next().await {
        held.push(r?);
    }
    drop(made);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = rss()?;
    if m.shared().stats().replicas < OBJECTS {
        return Err("replicas missing".into());
    }
    let list = m.shared().list(server).await?;
    let sizes: Vec<f64> = list.iter().map(|o| o.bytes as f64).collect();
    println!(
        "{:.1} {:.1}",
        (after - before) / OBJECTS as f64,
        median(&sizes)
    );
    drop((held, warm));
    Ok(())
}

/// The `shared` benchmark: prints the table.
pub(crate) fn bench(rounds: usize) {
    let mut r: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut push = |k: &'static str, v: Option<f64>| {
        if let Some(v) = v
            && v.is_finite()
        {
            r.entry(k).or_default().push(v);
        }
    };
    let owner = ["shared-owner"];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (cpus, same) in [(SAME, true), (CROSS, false)] {
            let x = measure(&owner, &["shared-rtt"], cpus, None);
            let p = measure(&owner, &["shared-prop"], cpus, None);
            let k = |s: &'static str, c: &'static str| if same { s } else { c };
            push(k("inc.p50.same", "inc.p50.cross"), x.first().copied());
            push(k("inc.p99.same", "inc.p99.cross"), x.get(1).copied());
            push(k("echo.p50.same", "echo.p50.cross"), x.get(2).copied());
            push(k("echo.p99.same", "echo.p99.cross"), x.get(3).copied());
            if let (Some(i), Some(e)) = (x.first(), x.get(2)) {
                push(k("ratio.inc.same", "ratio.inc.cross"), Some(i / e));
            }
            if let (Some(t1), Some(t1p99), Some(t0)) = (p.first(), p.get(1), p.get(2)) {
                let one_way = t0 / 2.0;
                push(k("oneway.p50.same", "oneway.p50.cross"), Some(one_way));
                push(k("prop.p50.same", "prop.p50.cross"), Some(t1 - one_way));
                push(k("prop.p99.same", "prop.p99.cross"), Some(t1p99 - one_way));
                push(
                    k("ratio.prop.same", "ratio.prop.cross"),
                    Some((t1 - one_way) / one_way),
                );
            }
        }
        let t = measure(&owner, &["shared-tput"], CROSS, None);
        push("rpc.calls_per_s", t.first().copied());
        push("inc.per_s.64_objects", t.get(1).copied());
        push("inc.per_s.one_object", t.get(2).copied());
        if let (Some(c), Some(i), Some(o)) = (t.first(), t.get(1), t.get(2)) {
            push("ratio.tput", Some(i / c));
            push("ratio.tput.one", Some(o / c));
        }
        let mem = measure(&owner, &["shared-mem"], CROSS, None);
        push("rss.per_object", mem.first().copied());
        push("encoded.per_object", mem.get(1).copied());
        if let (Some(rss), Some(enc)) = (mem.first(), mem.get(1)) {
            push("over.per_object", Some(rss - enc));
        }
    }
    let med = |k: &str| median(r.get(k).map(Vec::as_slice).unwrap_or(&[]));
    let spread = |k: &str| {
        let v = r.get(k).map(Vec::as_slice).unwrap_or(&[]);
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    };
    println!(
        "# shared benchmark: {rounds} rounds, medians [min..max of the rounds]; inc = inc_players(1) from the replica process on an object the server process owns; echo = typed 32-byte rpc echo between the same processes"
    );
    println!(
        "# same = both processes on cpu 0; cross = server cpu 0, client cpu 1; throughput and memory cross"
    );
    for (k, name, unit) in [
        ("echo.p50.same", "rpc.echo.rtt.p50.same", "us"),
        ("echo.p99.same", "rpc.echo.rtt.p99.same", "us"),
        ("echo.p50.cross", "rpc.echo.rtt.p50.cross", "us"),
        ("echo.p99.cross", "rpc.echo.rtt.p99.cross", "us"),
        ("inc.p50.same", "shared.inc.rtt.p50.same", "us"),
        ("inc.p99.same", "shared.inc.rtt.p99.same", "us"),
        ("inc.p50.cross", "shared.inc.rtt.p50.cross", "us"),
        ("inc.p99.cross", "shared.inc.rtt.p99.cross", "us"),
        ("oneway.p50.same", "oneway.p50.same (ping-pong/2)", "us"),
        ("oneway.p50.cross", "oneway.p50.cross (ping-pong/2)", "us"),
        ("prop.p50.same", "shared.propagate.p50.same", "us"),
        ("prop.p99.same", "shared.propagate.p99.same", "us"),
        ("prop.p50.cross", "shared.propagate.p50.cross", "us"),
        ("prop.p99.cross", "shared.propagate.p99.cross", "us"),
        (
            "rpc.calls_per_s",
            "rpc.echo.64_in_flight.calls_per_s",
            "calls/s",
        ),
        (
            "inc.per_s.64_objects",
            "shared.inc_per_s.64_writers.64_objects",
            "incs/s",
        ),
        (
            "inc.per_s.one_object",
            "shared.inc_per_s.64_writers.one_object",
            "incs/s",
        ),
        ("encoded.per_object", "shared.encoded_bytes_per_object", "B"),
        ("rss.per_object", "shared.rss_growth_per_object", "B"),
    ] {
        let (lo, hi) = spread(k);
        println!("{name}: {:.2} {unit} [{lo:.2}..{hi:.2}]", med(k));
    }
    for (k, name, unit, target, pass) in [
        (
            "ratio.inc.same",
            "shared.inc.rtt.p50.same.ratio",
            "ratio",
            "<= 1.1",
            (|v: f64| v <= 1.1) as fn(f64) -> bool,
        ),
        (
            "ratio.inc.cross",
            "shared.inc.rtt.p50.cross.ratio",
            "ratio",
            "-",
            |_| true,
        ),
        (
            "ratio.prop.same",
            "shared.propagate.p50.ratio",
            "ratio",
            "<= 1.3",
            |v| v <= 1.3,
        ),
        (
            "ratio.prop.cross",
            "shared.propagate.p50.cross.ratio",
            "ratio",
            "-",
            |_| true,
        ),
        (
            "ratio.tput",
            "shared.inc_per_s.vs_rpc",
            "ratio",
            ">= 0.8",
            |v| v >= 0.8,
        ),
        (
            "ratio.tput.one",
            "shared.inc_per_s.one_object.vs_rpc",
            "ratio",
            "-",
            |_| true,
        ),
        (
            "over.per_object",
            "shared.bytes_per_object",
            "B over encoded",
            "<= 512",
            |v| v <= 512.0,
        ),
    ] {
        let (lo, hi) = spread(k);
        let v = med(k);
        let verdict = if target == "-" {
            ""
        } else if pass(v) {
            " PASS"
        } else {
            " MISS"
        };
        println!("{name}: {v:.3} {unit} [{lo:.3}..{hi:.3}] (target {target}){verdict}");
    }
}
